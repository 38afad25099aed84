"""One DoFn for every stage that either passes a value on or turns it into a DeadLetter."""
from __future__ import annotations

from typing import Callable

import apache_beam as beam

from core.records import DeadLetter

DEADLETTER = "deadletter"


class RouteDoFn(beam.DoFn):
    """Applies ``func(element, arg)``: DeadLetters go to the ``deadletter`` output and are counted
    per reason (Beam counter ``deadletter:<reason>``); anything else goes to the main output."""

    def __init__(self, func: Callable, arg):
        self._func = func
        self._arg = arg
        self._counters = {}

    def process(self, element):
        result = self._func(element, self._arg)
        if isinstance(result, DeadLetter):
            counter = self._counters.get(result.reason)
            if counter is None:
                counter = self._counters[result.reason] = beam.metrics.Metrics.counter(
                    "ctpipe", f"deadletter:{result.reason}")
            counter.inc()
            yield beam.pvalue.TaggedOutput(DEADLETTER, result)
        else:
            yield result


def route(pcoll, label: str, func: Callable, arg):
    """(main, deadletter) PCollections of ``func`` applied to ``pcoll``."""
    out = pcoll | label >> beam.ParDo(RouteDoFn(func, arg)).with_outputs(DEADLETTER, main="main")
    return out.main, out[DEADLETTER]
