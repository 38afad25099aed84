"""Python's garbage collector tuned for the length of a pipeline run in this process.

A DirectRunner run allocates tens of millions of short-lived objects (records, dicts, tuples)
while the process holds millions of long-lived ones (TensorFlow, Beam, tf.Transform and TFDV as
imported). With the default thresholds the collector runs a young-generation pass every 700
allocations and, every so often, a full pass over everything alive; at 200k rows the full
passes alone were a fifth of a backfill's time (docs/BENCHMARKS.md, "Garbage collection").

``tuned()`` freezes what is alive when the run starts (imports, configuration: never garbage,
never scanned again) and raises the young threshold to 50,000 allocations for the run. Reference
counting still frees almost everything at once; only cyclic garbage waits a little longer. On
leaving, the previous thresholds are restored and the frozen objects go back to the collector.
Runs nest (the demo runs a backfill, then stream cycles): only the outermost one tunes.
"""
from __future__ import annotations

import contextlib
import gc
import threading

RUN_THRESHOLDS = (50_000, 20, 100)
_lock = threading.Lock()
_depth = 0


@contextlib.contextmanager
def tuned():
    global _depth
    with _lock:
        _depth += 1
        outermost = _depth == 1
        if outermost:
            previous = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(*RUN_THRESHOLDS)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if outermost:
                gc.set_threshold(*previous)
                gc.unfreeze()
