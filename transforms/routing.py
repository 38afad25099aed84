"""One DoFn for every stage that either passes a value on or turns it into a DeadLetter."""
from __future__ import annotations

from typing import Callable, Sequence

import apache_beam as beam

from core.records import DeadLetter

DEADLETTER = "deadletter"


class Steps:
    """Applies each ``(func, arg)`` of ``steps`` in turn (``func(element, arg)``) until one gives
    a DeadLetter, which is counted per reason (Beam counter ``deadletter:<reason>``)."""

    def __init__(self, steps: Sequence[tuple]):
        self._steps = tuple(steps)
        self._counters = {}

    def __call__(self, element):
        """The last step's result, or the first DeadLetter (counted)."""
        result = element
        for func, arg in self._steps:
            result = func(result, arg)
            if isinstance(result, DeadLetter):
                counter = self._counters.get(result.reason)
                if counter is None:
                    counter = self._counters[result.reason] = beam.metrics.Metrics.counter(
                        "ctpipe", f"deadletter:{result.reason}")
                counter.inc()
                return result
        return result


class RouteDoFn(beam.DoFn):
    """``Steps`` as a DoFn: DeadLetters go to the ``deadletter`` output, anything else to the main
    output. Several steps in one DoFn cost one runner hop per element instead of one per step (the
    runner's per-element work was a fifth of a backfill); what leaves, and the counters, are the
    same."""

    def __init__(self, steps: Sequence[tuple]):
        self._steps = tuple(steps)

    def setup(self):
        self._run = Steps(self._steps)

    def process(self, element):
        result = self._run(element)
        if isinstance(result, DeadLetter):
            yield beam.pvalue.TaggedOutput(DEADLETTER, result)
        else:
            yield result


def route(pcoll, label: str, func: Callable, arg):
    """(main, deadletter) PCollections of ``func`` applied to ``pcoll``."""
    return route_steps(pcoll, label, ((func, arg),))


def route_steps(pcoll, label: str, steps: Sequence[tuple]):
    """(main, deadletter) PCollections of the ``(func, arg)`` steps applied in turn, in one DoFn."""
    out = pcoll | label >> beam.ParDo(RouteDoFn(steps=steps)).with_outputs(DEADLETTER, main="main")
    return out.main, out[DEADLETTER]
