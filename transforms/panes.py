"""Event-time panes of the unbounded graph, with nothing dropped for being late.

    (window_id, Event | DeadLetter), in the global window, each stamped with its event time
      -> WindowPanes
         panes:     (window_id, (items...), timing)   ON_TIME once the watermark passes the window's
                                                      end; then a LATE pane at each later watermark
                                                      advance that brought records within the allowed
                                                      lateness (accumulating: the pane holds every
                                                      record seen so far)
         too_late:  (window_id, item)                 records that arrive once the window has closed
                                                      (the watermark passed end + allowed lateness)

Too-late records follow ``window.late_data`` (pipeline/streaming_graph.py): with
``reseal_too_late`` (new_version) they come out as LATE panes of only them, one per window and
watermark advance, which sealing merges with the window's sealed version (v<N+1>); otherwise
(side_output) each comes out on ``too_late`` and is written under <root>/late/.

Why not Beam's FixedWindows + GroupByKey with allowed lateness: the runner's GroupByKey drops the
records whose window's end + allowed lateness is behind its input watermark and only counts them,
and a Python DoFn placed before it cannot read the watermark, so it cannot tell which records the
GroupByKey will drop. Here the one stateful DoFn that decides what is too late also does the
grouping, and nothing after it has a windowing that can drop:

- The DoFn runs in the global window, keyed by window id. Per key: a bag of the window's items, a
  phase (OPEN, FIRED, CLOSED) and one event-time timer, set at end - 1 ms (the window's last
  instant) when the first item arrives, and re-set at end - 1 ms + allowed lateness when it fires;
  a second event-time timer, set at a late record's own timestamp (which the watermark has
  passed), fires at the next watermark advance and emits the LATE pane of what came since.
  An event-time timer fires only once the DoFn's input watermark has reached its time, and the
  runner fires a key's due timers when the watermark arrives, before the elements that come
  behind it (Flink: on the watermark, in the operator's one thread): so a record is too late
  exactly when its window's close timer fired before it, i.e. when the watermark it came behind
  was at or past end - 1 ms + allowed lateness (Beam's own rule for a GroupByKey with that
  lateness drops a record only when that instant is *before* the watermark: a record arriving at
  exactly that watermark is too late here and kept by Beam, the one millisecond where they differ).
- Every output goes to steps in the global window (sealing, pre-grouped: transforms/seal.py, and
  the writers of late files and dead letters); no GroupByKey or window with a lateness follows,
  so no runner drops what this DoFn emits, whatever the watermark. (The window timer's watermark
  hold, which the Python SDK sets at an event-time timer's firing time, keeps the DoFn's output
  watermark at or before the window's end - 1 ms until the ON_TIME pane, stamped end - 1 ms, is
  out; LATE panes carry a late record's time, behind the output watermark, which nothing
  downstream looks at.)
- A pane firing replayed after the runner restores a checkpoint carries the same content: the
  window writer makes it a no-op.

What the DoFn cannot know: whether a window whose *first* record this job sees arrives before or
after the watermark passed that window's end + lateness (a window that a backfill or an earlier
job sealed, and of which this job read nothing before). Its timers are then set in the past and
fire at the next watermark advances: the records that reach it until then are sealed as panes,
i.e. the window gets a new version with the previous version's records and these (the
``new_version`` outcome), whatever ``window.late_data`` says; records after that follow
``late_data``. Nothing is dropped in either case. A closed window keeps one small
state entry (its phase) for the job's lifetime, so later records keep being recognised as too late.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from core.layout import window_id_start_ms

OPEN, FIRED, CLOSED = 0, 1, 2
ON_TIME, LATE = "ON_TIME", "LATE"
TOO_LATE = "too_late"


def close_time_ms(window_id: str, size_s: int, lateness_s: int) -> int:
    """The instant from which records for ``window_id`` are too late: end - 1 ms + lateness."""
    return window_id_start_ms(window_id) + size_s * 1000 - 1 + lateness_s * 1000


def _at(ms: int) -> Timestamp:
    return Timestamp(micros=ms * 1000)


class _WindowPanesDoFn(beam.DoFn):
    ITEMS = BagStateSpec("items", PickleCoder())
    TOO_LATE_ITEMS = BagStateSpec("too_late", PickleCoder())
    PHASE = ReadModifyWriteStateSpec("phase", VarIntCoder())
    DIRTY = ReadModifyWriteStateSpec("dirty", VarIntCoder())
    TIMER = TimerSpec("window", TimeDomain.WATERMARK)
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, size_s: int, lateness_s: int, reseal_too_late: bool):
        self._size_s = size_s
        self._lateness_s = lateness_s
        self._reseal_too_late = reseal_too_late
        self._too_late = beam.metrics.Metrics.counter("ctpipe", "late_records")

    def process(self, element, timestamp=beam.DoFn.TimestampParam, items=beam.DoFn.StateParam(ITEMS),
                too_late=beam.DoFn.StateParam(TOO_LATE_ITEMS), phase=beam.DoFn.StateParam(PHASE),
                dirty=beam.DoFn.StateParam(DIRTY), timer=beam.DoFn.TimerParam(TIMER),
                flush=beam.DoFn.TimerParam(FLUSH)):
        wid, item = element
        now = phase.read()
        if now == CLOSED:
            self._too_late.inc()
            if not self._reseal_too_late:
                yield beam.pvalue.TaggedOutput(TOO_LATE, (wid, item))
                return
            too_late.add(item)
            flush.set(timestamp)
            return
        items.add(item)
        if now is None:
            phase.write(OPEN)
            timer.set(_at(close_time_ms(wid, self._size_s, 0)))
        elif now == FIRED:
            # A late record within the lateness: the next LATE pane fires at the next watermark
            # advance (a timer at the record's own time, which the watermark has passed), so the
            # late records of one advance make one new version, as Beam's late firings of a
            # bundle do, not one reseal each.
            dirty.write(1)
            flush.set(timestamp)

    @on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, items=beam.DoFn.StateParam(ITEMS),
                 too_late=beam.DoFn.StateParam(TOO_LATE_ITEMS), phase=beam.DoFn.StateParam(PHASE),
                 dirty=beam.DoFn.StateParam(DIRTY)):
        if phase.read() == FIRED and dirty.read():
            dirty.clear()
            yield key, tuple(items.read()), LATE
        late = tuple(too_late.read())
        if late:
            too_late.clear()
            yield key, late, LATE

    @on_timer(TIMER)
    def on_window_timer(self, key=beam.DoFn.KeyParam, items=beam.DoFn.StateParam(ITEMS),
                        phase=beam.DoFn.StateParam(PHASE), dirty=beam.DoFn.StateParam(DIRTY),
                        timer=beam.DoFn.TimerParam(TIMER)):
        now = phase.read()
        if now == OPEN:
            yield key, tuple(items.read()), ON_TIME
            if self._lateness_s > 0:
                phase.write(FIRED)
                timer.set(_at(close_time_ms(key, self._size_s, self._lateness_s)))
                return
        elif now == FIRED and dirty.read():
            yield key, tuple(items.read()), LATE  # late records not flushed yet
        dirty.clear()
        items.clear()
        phase.write(CLOSED)


class WindowPanes(beam.PTransform):
    """(window_id, item) in the global window -> tagged outputs ``panes`` and ``too_late``.

    ``reseal_too_late`` (window.late_data new_version): too-late records come out as LATE panes of
    their own (one per window and watermark advance), which sealing merges with the window's
    sealed version; otherwise each comes out on ``too_late``."""

    def __init__(self, size_s: int, lateness_s: int, reseal_too_late: bool = False):
        super().__init__()
        self._size_s = size_s
        self._lateness_s = lateness_s
        self._reseal_too_late = reseal_too_late

    def expand(self, keyed):
        return keyed | "FirePanes" >> beam.ParDo(
            _WindowPanesDoFn(self._size_s, self._lateness_s, self._reseal_too_late)).with_outputs(TOO_LATE, main="panes")
