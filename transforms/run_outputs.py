"""Results a pipeline hands back to its driver, through the storage root.

Workers may run on other machines (Flink TaskManagers, a Beam worker pool), so nothing returns
to the driver through its local disk. A graph ends in ``WriteRunOutputs``: each result is a small
JSON object written atomically under ``<root>/runs/<run_id>/<kind>/<name>.json``, the name
deterministic (a window id, a source range), so a replayed attempt overwrites rather than adds.
After ``wait_until_finish`` the driver reads them with ``read_run_outputs``.
"""
from __future__ import annotations

from typing import Callable

import apache_beam as beam

from core import layout, storage


def _write(item, prefix: str, name_of: Callable) -> str:
    path = storage.join(prefix, f"{name_of(item)}.json")
    storage.write_json_atomic(path, item)
    return path


class WriteRunOutputs(beam.PTransform):
    """JSON-able dicts -> one object each under <root>/runs/<run_id>/<kind>/, named ``name_of(item)``."""

    def __init__(self, root: str, run_id: str, kind: str, name_of: Callable):
        super().__init__()
        self._prefix = layout.run_output_dir(root, run_id, kind)
        self._name_of = name_of

    def expand(self, items):
        return items | "WriteOutput" >> beam.Map(_write, self._prefix, self._name_of)


def read_run_outputs(root: str, run_id: str, kind: str) -> list:
    """The objects a run's graph wrote with WriteRunOutputs(kind), sorted by name."""
    prefix = layout.run_output_dir(root, run_id, kind)
    return [storage.read_json(p) for p in storage.glob(storage.join(prefix, "*.json"))]
