"""Sealing windows: the one composite every graph uses (backfill, ``ctpipe stream``, unbounded).

    (window_id, Event | DeadLetter)
      -> GroupByWindow     (the caller's windowing decides when a group fires; the unbounded
                           graph's panes come grouped already: ``grouped``)
      -> PrepareWindow     de-duplicate (duplicates -> output ``duplicates``), count dead letters by
                           reason, Arrow batch, raw examples, statistics, timeliness
      -> ValidateWindow    schema, drift against the nearest earlier window, skew, bad fraction
      -> Transform         apply a published transform, or analyze one over these windows first
      -> WriteWindow       parts, stats, anomalies, MANIFEST last (transforms/write_window.py)
    -> one summary dict per window written (or found unchanged)

Dead letters enter with the events, keyed by their window, only to be counted toward their
window's bad fraction and quality; writing them is the caller's business (each graph has its
own replay-safe naming). Every step is per window, with no join, so the composite works under
any windowing and trigger: in the global window of a bounded run and per pane of an unbounded one.

Which earlier window a window is compared with (drift): the nearest earlier window among the
windows of this run and the windows sealed in storage, this run's content winning for the same
id. A bounded run passes the run's statistics as a side input (``compare_within_run``); the
unbounded graph compares with storage only, so windows sealed in event-time order give the same
comparisons in both modes.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Optional

import apache_beam as beam

from core import storage, window_store
from core.lock import Fence
from core.records import DeadLetter, Event, pack_records, unpack_records
from transforms.validate_windows import ValidationSettings, WindowValidator, load_window_stats


@dataclass(frozen=True)
class TransformSpec:
    """Apply the published transform ``fingerprint``, or (fingerprint None) analyze
    ``preprocessing_fn`` over the sealed windows, staging under ``scratch`` (a storage URI)."""

    fingerprint: Optional[str] = None
    preprocessing_fn: Optional[str] = None
    scratch: Optional[str] = None

    def __post_init__(self):
        if self.fingerprint is None and not (self.preprocessing_fn and self.scratch):
            raise ValueError("TransformSpec: give a fingerprint to apply, or preprocessing_fn and scratch to analyze")


@dataclass(frozen=True)
class SealSpec:
    """Everything sealing needs, and nothing more (not the whole Config)."""

    root: str
    window_size_s: int
    schema_text: str
    schema_version: int
    validation: ValidationSettings
    transform: TransformSpec
    code_version: str
    sources: tuple = ()
    """((uri, {"uri": ..., coverage details}), ...): how each source is described in manifests."""
    compare_within_run: bool = True
    """Bounded runs: compare with this run's windows too (side input); unbounded: storage only."""
    id_field: Optional[str] = None
    """The id feature: ids of a version sealed before provenance was kept (transforms/versions.py)."""
    fence: Optional[Fence] = None
    """The storage root's lease as the run's driver holds it (core.lock.Fence): checked on the
    worker before each MANIFEST and transform publish, so a run whose lease was taken over
    publishes nothing more. None: unfenced (unit tests of sealing alone)."""
    staging: Optional[str] = None
    """A storage URI private to this run where each window's rows wait between stages
    (transforms/window_parts.py), so memory does not grow with the number of windows; None:
    they travel in the window's state (the unbounded graph, where one window's panes may be in
    flight at once)."""

    batch_rows: int = 8192
    """Rows handled at a time in a window (window.batch_rows): examples, provenance, transform."""

    def parts_for(self, wid: str):
        from transforms.window_parts import WindowParts

        return WindowParts(None if self.staging is None else storage.join(self.staging, wid))


@dataclass
class WindowState:
    """One window as it moves through the composite."""

    window_id: str
    prepared: object            # transforms.prepare.PreparedWindow: rows, provenance, parts
    stats: object               # DatasetFeatureStatisticsList
    dead_by_reason: dict
    lags_s: list
    dead_by_source: dict = field(default_factory=dict)
    """{source: {reason: n}}, written to the manifest (transforms/versions.py)."""
    label_profile: Optional[dict] = None
    """transforms.label_checks.label_profile of the window (None: label checks off)."""
    timing: Optional[str] = None
    """Which firing of its window this is (ON_TIME, LATE), when the input came pre-grouped as
    panes (transforms/panes.py); otherwise the runner's pane info says it."""
    verdict: object = None      # transforms.validation.Verdict
    quality: dict = field(default_factory=dict)
    fingerprint: Optional[str] = None
    transformed_count: int = 0
    """Transformed examples, in the parts (``window_parts.TRANSFORMED``) once transformed."""


class WindowStateCoder(beam.coders.Coder):
    """Pickles a WindowState. Beam samples the encoded size of the elements of every PCollection
    (the first ten always): the default estimate pickles the whole window once more per sample,
    and a run has few WindowStates, large when their parts are held in them. This estimate adds
    up the sizes of the parts the state holds instead."""

    def encode(self, value):
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded):
        return pickle.loads(encoded)

    def is_deterministic(self):
        return False

    def estimate_size(self, value):
        # (the rest of a WindowState is a few hundred bytes, its statistics a few kB)
        return value.prepared.parts.held_bytes


beam.coders.registry.register_coder(WindowState, WindowStateCoder)


class SealOutputs(NamedTuple):
    windows: beam.PCollection
    """One summary dict per window: window_id, version, written, records, verdict, dead_letters,
    timing (the pane that sealed it: ON_TIME, LATE...)."""
    duplicates: beam.PCollection
    """DeadLetters (reason duplicate_id) found while grouping; the caller writes them."""


class _PrepareWindowDoFn(beam.DoFn):
    DUPLICATES = "duplicates"

    def __init__(self, spec: SealSpec, packed: bool):
        self._spec = spec
        self._packed = packed
        """Input from GroupByWindow (packed chunks), not pre-grouped panes of records."""

    def setup(self):
        from core.schema_store import schema_from_text
        from transforms.validation import feature_types

        self._types = feature_types(schema_from_text(self._spec.schema_text))
        self._sources = dict(self._spec.sources)

    def process(self, element):
        from transforms.prepare import lags_of, prepare_sorted
        from transforms.validation import window_statistics
        from transforms.versions import dead_by_reason, load_previous, merge_dead_counts, unique_dead_letters
        from transforms.window_rows import WindowRows, is_packed_rows

        wid, items = element[0], element[1]
        timing = element[2] if len(element) > 2 else None
        rows, dead, chunk = WindowRows(self._types), [], []
        # Each chunk becomes Arrow columns as soon as it is read: the window's records are never
        # all Python objects at once (transforms/window_rows.py).
        if self._packed:  # chunks, or where ingest spilled them (transforms.ingest.WindowChunks)
            from transforms.window_parts import unspill

            for item in items:
                data = unspill(item)
                if is_packed_rows(data):
                    rows.add_packed(data)
                    continue
                events, letters = unpack_records([data])
                rows.add(events)
                dead.extend(letters)
        else:
            for item in items:
                if isinstance(item, Event):
                    chunk.append(item)
                    if len(chunk) >= self._spec.batch_rows:
                        rows.add(chunk)
                        chunk = []
                else:
                    dead.append(item)
            rows.add(chunk)
        del chunk
        dead = unique_dead_letters(dead)
        # A new version keeps what the previous one held (transforms/versions.py has the rule).
        previous = load_previous(self._spec.root, wid, self._types, self._spec.id_field, lazy=True)
        run_sources = set(self._sources) | rows.sources | {d.source for d in dead}
        earlier = None
        if previous is not None:
            earlier = WindowRows(self._types)
            earlier.add_all(previous.events, self._spec.batch_rows)
        window = rows.sorted_unique(earlier, dead)
        del rows, earlier
        dupes = window.duplicates
        for d in dupes:
            yield beam.pvalue.TaggedOutput(self.DUPLICATES, d)
        if not window.keys.num_rows:
            return
        by_source = merge_dead_counts(previous, dead + dupes, run_sources)
        described = dict(previous.sources) if previous is not None else {}
        described.update(self._sources)
        pending = prepare_sorted(window, described, self._spec.parts_for(wid), self._spec.batch_rows)
        batch = pending.batch
        lags = lags_of(window)
        del window, dead, previous
        labels = self._spec.validation.labels
        profile = None
        if labels is not None:
            from transforms.label_checks import label_profile

            profile = label_profile(batch, labels)
        stats = window_statistics(batch, wid)
        yield WindowState(wid, pending.finish(), stats, dead_by_reason(by_source), lags, by_source,
                          label_profile=profile, timing=timing)


class _ValidateWindowDoFn(beam.DoFn):
    def __init__(self, spec: SealSpec):
        self._spec = spec

    def setup(self):
        self._validator = WindowValidator(self._spec.validation)
        self._memo_key, self._memo = None, {}  # this run's earlier windows as label candidates

    def _previous(self, wid: str, run_stats: dict):
        in_run = max((i for i in run_stats if i < wid), default=None)
        stored = window_store.previous_sealed(self._spec.root, wid)
        if stored is not None and (in_run is None or stored.window_id > in_run):
            return load_window_stats(stored), stored.window_id
        if in_run is not None:
            return run_stats[in_run], in_run
        return None, None

    def _label_candidates(self, wid: str, run_side: dict):
        """Earlier windows as label-reference candidates, newest first: this run's windows (their
        content wins for the same id) and the sealed ones. A window of this run is usable as a
        reference exactly when it will be once sealed: its own verdict, computed here in id order
        with the same validator (so one run over many windows and one run per window choose the
        same references, and a flipped window of this run is no reference for the clean ones after
        it). Memoised per run."""
        from transforms.label_checks import Candidate, feature_drift
        from transforms.validate_windows import merge_candidates, stored_label_candidates

        labels = self._spec.validation.labels
        if labels is None:
            return ()
        key = tuple(sorted(run_side))
        if self._memo_key != key:
            self._memo_key, self._memo = key, {}
        run_ids = frozenset(run_side)
        for i in sorted(i for i in run_side if i < wid):
            if i in self._memo:
                continue
            stats, profile, dead_by_reason, records = run_side[i]
            previous, previous_id = self._previous(i, {j: v[0] for j, v in run_side.items()})
            earlier = merge_candidates([self._memo[j] for j in self._memo if j < i],
                                       stored_label_candidates(self._spec.root, i, labels, run_ids))
            verdict, quality = self._validator.validate(i, stats, previous, previous_id, dead_by_reason, records,
                                                        (), profile, earlier)
            self._memo[i] = Candidate(i, profile, verdict.verdict != "QUARANTINED",
                                      feature_drift(quality["drift"]["features"], labels), previous_id,
                                      quality["labels"]["regime"]["start"])
        return merge_candidates([c for i, c in self._memo.items() if i < wid],
                                stored_label_candidates(self._spec.root, wid, labels, run_ids))

    def process(self, state: WindowState, run_side=None):
        run_side = run_side or {}  # window_id -> (stats, label profile, dead by reason, records) of this run
        previous, previous_id = self._previous(state.window_id, {i: v[0] for i, v in run_side.items()})
        verdict, quality = self._validator.validate(
            state.window_id, state.stats, previous, previous_id, state.dead_by_reason,
            state.prepared.records, state.lags_s, state.label_profile,
            self._label_candidates(state.window_id, run_side))
        yield replace(state, verdict=verdict, quality=quality)


class _ApplyTransformDoFn(beam.DoFn):
    """Transforms each window's batch with the published transform (loaded on the worker)."""

    def __init__(self, spec: SealSpec):
        self._spec = spec
        self._applier = None

    def process(self, state: WindowState, fingerprint: Optional[str] = None):
        from transforms.prepare import arrow_schema_for
        from transforms.preprocess import TransformApplier

        fingerprint = fingerprint or self._spec.transform.fingerprint
        if self._applier is None or self._applier.fingerprint != fingerprint:
            from core.schema_store import schema_from_text
            from transforms.validation import feature_types

            types = feature_types(schema_from_text(self._spec.schema_text))
            self._applier = TransformApplier(self._spec.root, fingerprint, self._spec.schema_text,
                                             arrow_schema_for(types))
        from transforms import window_parts

        part, count = self._applier.tfrecord_part(state.prepared.batch(), self._spec.batch_rows)
        parts = state.prepared.parts.with_part(window_parts.TRANSFORMED, part)
        yield replace(state, prepared=replace(state.prepared, parts=parts), fingerprint=fingerprint,
                      transformed_count=count)


_TIMING = {0: "EARLY", 1: "ON_TIME", 2: "LATE", 3: "UNKNOWN"}
"""PaneInfoTiming values: which firing of its window a sealed version came from."""


class _WriteWindowDoFn(beam.DoFn):
    def __init__(self, spec: SealSpec):
        self._spec = spec
        self._sealed = beam.metrics.Metrics.counter("ctpipe", "windows_sealed")
        self._records = beam.metrics.Metrics.counter("ctpipe", "records_out")
        self._late_panes = beam.metrics.Metrics.counter("ctpipe", "late_firings")

    def process(self, state: WindowState, pane=beam.DoFn.PaneInfoParam):
        from transforms import window_parts
        from transforms.write_window import WindowContent, write_window

        s, verdict, parts = self._spec, state.verdict, state.prepared.parts
        dead = sum(state.dead_by_reason.values())
        content = WindowContent(
            window_id=state.window_id, window_size_s=s.window_size_s, raw_examples=(), transformed_examples=(),
            raw_part=parts.get(window_parts.RAW), raw_hashes=parts.get(window_parts.HASHES),
            record_count=state.prepared.records, transformed_part=parts.get(window_parts.TRANSFORMED),
            transformed_count=state.transformed_count, stats=state.stats, anomalies=verdict.anomalies,
            verdict=verdict.verdict, reasons=verdict.reasons,
            dead_letters=dead, sources=tuple(state.prepared.sources), schema_version=s.schema_version,
            dead_letters_by_source=state.dead_by_source, provenance=parts.get(window_parts.PROVENANCE),
            transform_fingerprint=state.fingerprint, code_version=s.code_version, quality=state.quality)
        wid, version, written = write_window(s.root, content, fence=s.fence)
        if written:
            self._sealed.inc()
            self._records.inc(state.prepared.records)
        timing = state.timing or (_TIMING.get(pane.timing) if pane is not None else None)
        if timing == "LATE":
            self._late_panes.inc()
        yield {"window_id": wid, "version": version, "written": written, "records": state.prepared.records,
               "verdict": verdict.verdict, "dead_letters": dead, "timing": timing}


class _BatchByWindowDoFn(beam.DoFn):
    """(window_id, item) -> (window_id, chunk): up to ``max_items`` items of one window per
    element, packed by ``core.records.pack_records``, so the shuffle before sealing encodes one
    byte string per chunk instead of every record on its own (per-element coding was a fifth of a
    backfill's time). Buffers are per Beam window as well as per window id, and emitted in the
    window they came from."""

    def __init__(self, max_items: int):
        self._max = max_items

    def start_bundle(self):
        self._buffers = {}

    def process(self, element, window=beam.DoFn.WindowParam):
        wid, item = element
        buffer = self._buffers.get((wid, window))
        if buffer is None:
            buffer = self._buffers[(wid, window)] = ([], [])
        buffer[type(item) is DeadLetter].append(item)
        if len(buffer[0]) + len(buffer[1]) >= self._max:
            del self._buffers[(wid, window)]
            yield wid, pack_records(*buffer)

    def finish_bundle(self):
        from apache_beam.utils.windowed_value import WindowedValue

        buffers, self._buffers = self._buffers, {}
        for (wid, window), buffer in buffers.items():
            yield WindowedValue((wid, pack_records(*buffer)), window.max_timestamp(), [window])


class ChunkByWindow(beam.PTransform):
    """(window_id, Event | DeadLetter) -> (window_id, packed chunk) of up to ``max_items`` items of
    one window (``core.records.pack_records``), what ``GroupByWindow`` groups."""

    def __init__(self, max_items: int = 4096):
        super().__init__()
        self._max = max_items

    def expand(self, keyed):
        return keyed | "Chunk" >> beam.ParDo(_BatchByWindowDoFn(self._max))


class GroupByWindow(beam.PTransform):
    """(window_id, Event | DeadLetter) -> (window_id, [packed chunks]): one group per window
    id (per Beam window and firing), moved through the shuffle in packed chunks of up to
    ``max_items`` records. PrepareWindow unpacks them (``core.records.unpack_records``) where it
    uses them, so no PCollection holds a whole window's records as Python objects: Beam samples
    the encoded size of a PCollection's elements, and for a list of records that is a pickle of
    each. ``chunked``: the input is chunks already (``ChunkByWindow``, ``transforms.ingest``)."""

    def __init__(self, max_items: int = 4096, chunked: bool = False):
        super().__init__()
        self._max = max_items
        self._chunked = chunked

    def expand(self, keyed):
        if isinstance(keyed, beam.PCollection):
            chunks = keyed if self._chunked else keyed | ChunkByWindow(self._max)
        else:  # several inputs: chunk each where it is produced, then flatten the (few) chunks
            chunks = ([pcoll if self._chunked else pcoll | f"Chunk{i}" >> ChunkByWindow(self._max)
                       for i, pcoll in enumerate(keyed)]
                      | "FlattenChunks" >> beam.Flatten())
        return chunks | "Group" >> beam.GroupByKey()


class SealWindows(beam.PTransform):
    """(window_id, Event | DeadLetter) -> SealOutputs(window summaries, duplicate dead letters).

    The input is one PCollection or a tuple of them (say keyed events and keyed dead letters):
    a tuple is chunked input by input, so no Flatten of single records stands before the shuffle
    (on the FnApiRunner a Flatten of two stages' outputs is materialized record by record).

    ``grouped``: the input is already one element per window firing, (window_id, items, timing)
    (the unbounded graph's panes, transforms/panes.py), so there is no GroupByWindow step.
    ``chunked``: the inputs are (window_id, packed chunk) already (``ChunkByWindow``)."""

    def __init__(self, spec: SealSpec, grouped: bool = False, chunked: bool = False):
        super().__init__()
        self._spec = spec
        self._grouped = grouped
        self._chunked = chunked

    def expand(self, keyed):
        spec = self._spec
        groups = keyed if self._grouped else keyed | "GroupByWindow" >> GroupByWindow(chunked=self._chunked)
        prepared = (groups
                    | "PrepareWindow" >> beam.ParDo(_PrepareWindowDoFn(spec, packed=not self._grouped))
                    .with_output_types(WindowState).with_outputs(
                        _PrepareWindowDoFn.DUPLICATES, main="windows"))
        states = prepared.windows
        if spec.compare_within_run:
            run_side = beam.pvalue.AsDict(states | "RunStats" >> beam.Map(
                lambda st: (st.window_id, (st.stats, st.label_profile, st.dead_by_reason, st.prepared.records))))
            validate = beam.ParDo(_ValidateWindowDoFn(spec), run_side=run_side)
        else:
            validate = beam.ParDo(_ValidateWindowDoFn(spec))
        validated = states | "ValidateWindow" >> validate.with_output_types(WindowState)
        if spec.transform.fingerprint is not None:
            apply = beam.ParDo(_ApplyTransformDoFn(spec))
        else:
            from core.schema_store import schema_from_text
            from transforms.prepare import arrow_schema_for
            from transforms.preprocess import AnalyzeTransform
            from transforms.validation import feature_types

            types = feature_types(schema_from_text(spec.schema_text))
            batches = validated | "Batches" >> beam.Map(lambda st: st.prepared.batch())
            digests = validated | "Digests" >> beam.Map(lambda st: (st.window_id, st.prepared.digest))
            fingerprint = (batches, digests) | "AnalyzeTransform" >> AnalyzeTransform(
                spec.transform.preprocessing_fn, spec.schema_text, arrow_schema_for(types), spec.root,
                spec.transform.scratch, fence=spec.fence)
            apply = beam.ParDo(_ApplyTransformDoFn(spec), fingerprint=beam.pvalue.AsSingleton(fingerprint))
        transformed = validated | "Transform" >> apply.with_output_types(WindowState)
        summaries = transformed | "WriteWindow" >> beam.ParDo(_WriteWindowDoFn(spec))
        return SealOutputs(summaries, prepared[_PrepareWindowDoFn.DUPLICATES])


def key_by_window(item, window_size_s: int):
    """(window_id, item) for an Event, or a DeadLetter with an event time; nothing otherwise."""
    from core.layout import window_id, window_start_ms

    when = item.event_time_ms
    if when is None:
        return []
    return [(window_id(window_start_ms(when, window_size_s)), item)]


def is_dead_letter(item) -> bool:
    return isinstance(item, DeadLetter)
