"""A window's next version keeps every record of the one before: merging a run with the sealed version.

The rule (README, "Window versions"):

* A record is identified by where it was read: (source, position), e.g. a file and its line, or a
  Kafka partition and offset. A new version of a window holds the previous version's records,
  with those read again at the same (source, position) replaced by this run's reading (an event,
  or a dead letter: then the record leaves the window), plus this run's other records. Nothing a previous version held is dropped because a later run read only
  part of the window's sources (``--input`` over one late file, a stream cycle with late data).
* Ids are then de-duplicated exactly as one run over all those records would: the record first by
  (id, source, position) is kept, the others are ``duplicate_id`` dead letters. So how a window's
  sources are split over runs does not change what the window holds.
* Dead letters are counted per source, duplicates included. A source this run read is counted
  afresh (a run reads all of a source's records of a window: backfill ranges are whole windows, a
  stream reseal reads all of its parts); the counts of sources it did not read are carried over,
  plus any record of theirs that this merge finds to be a duplicate.

Where each record came from is kept beside the examples in ``provenance.json.gz`` (row-aligned
with the raw examples: id, event time, source, position, ingest time), so the next version can be
rebuilt without the original input. A version sealed before provenance existed is carried as a
whole, under the source name ``window:<id>/v<N>``.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional

from core import storage, window_store
from core.errors import StorageError
from core.records import DeadLetter, Event
from transforms.gzip_files import gzip_member

PROVENANCE_FILE = "provenance.json.gz"
PROVENANCE_FORMAT = "ctpipe.provenance/1"


# --------------------------------------------------------------------------- files


def provenance_bytes(events: Iterable[Event]) -> bytes:
    """Deterministic gzip JSON of ``events``' identity and origin, in row order."""
    return gzip_member(provenance_json(events))


def provenance_json(events: Iterable[Event]) -> bytes:
    """The JSON ``provenance_bytes`` compresses (``transforms.gzip_files.gzip_member``)."""
    rows, sources = [], {}
    events = list(events)
    for event in events:
        sources.setdefault(event.source, None)
    names = sorted(sources)
    index = {name: i for i, name in enumerate(names)}
    for event in events:
        rows.append([event.id, event.event_time_ms, index[event.source], event.position, event.ingest_time_ms])
    return json.dumps({"format": PROVENANCE_FORMAT, "sources": names, "rows": rows},
                      separators=(",", ":")).encode("utf-8")


def read_tfrecords(data: bytes) -> list[bytes]:
    """Records of a GZIP TFRecord file's content (length-prefixed frames; CRCs are not checked
    here: the caller checks the file's sha256 against its manifest)."""
    raw = gzip.decompress(data)
    out, at, end = [], 0, len(raw)
    while at < end:
        if end - at < 12:
            raise ValueError("truncated TFRecord frame header")
        (length,) = struct.unpack_from("<Q", raw, at)
        start = at + 12
        if start + length + 4 > end:
            raise ValueError("truncated TFRecord frame")
        out.append(raw[start:start + length])
        at = start + length + 4
    return out


def _read_checked(window: window_store.SealedWindow, entry: dict) -> bytes:
    path = storage.join(window.path, entry["path"])
    data = storage.read_bytes(path)
    if entry.get("sha256") and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise StorageError(f"{path}: content does not match the sha256 in its MANIFEST.json; the sealed window "
                           f"{window.window_id} v{window.version} is corrupt (restore it from a backup before "
                           "sealing a new version over it)")
    return data


# --------------------------------------------------------------------------- the previous version


@dataclass
class PreviousVersion:
    version: int
    events: list
    dead_by_source: dict
    """{source: {reason: n}} from the previous manifest."""
    sources: dict = field(default_factory=dict)
    """{uri: description} from the previous manifest."""


def _example_features(example, types: dict) -> dict:
    """Feature values of a stored example, as the current schema types them (a version sealed
    under an earlier schema may hold an INT feature that is FLOAT now: its values are converted;
    text an INT or FLOAT cannot hold is absent under the new schema, as a missing value)."""
    features = {}
    feature_map = example.features.feature
    for name, kind in types.items():
        if name not in feature_map:
            continue
        value = feature_map[name]
        held = value.WhichOneof("kind")
        values = list(getattr(value, held).value) if held else []
        try:
            if kind == "INT":
                features[name] = [int(v) for v in values]
            elif kind == "FLOAT":
                features[name] = [float(v) for v in values]
        except ValueError:  # text the new type cannot hold: the value is absent under this schema
            continue
        if kind == "BYTES":
            features[name] = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]
    return features


def load_previous(root: str, wid: str, types: dict, id_field: Optional[str],
                  lazy: bool = False) -> Optional[PreviousVersion]:
    """The newest sealed version of ``wid`` as events (None when the window was never sealed).
    ``id_field`` gives the ids of a version sealed before provenance was kept. ``lazy``: its
    ``events`` are an iterator that parses each stored example as it is consumed (once)."""
    from tensorflow.core.example import example_pb2

    latest = window_store.latest_sealed(root, wid)
    if latest is None:
        return None
    manifest = latest.manifest
    files = {f["kind"]: f for f in manifest["files"]}
    examples = read_tfrecords(_read_checked(latest, files["raw"]))
    if "provenance" in files:
        prov = json.loads(gzip.decompress(_read_checked(latest, files["provenance"])).decode("utf-8"))
        names, rows = prov["sources"], prov["rows"]
        if len(rows) != len(examples):
            raise StorageError(f"window {wid} v{latest.version}: {len(rows)} provenance rows for {len(examples)} "
                               "raw examples; the sealed window is corrupt")
        origin = [(r[0], r[1], names[r[2]], r[3], r[4]) for r in rows]
        dead = {s: dict(c) for s, c in (manifest.get("dead_letters_by_source") or {}).items()}
    else:
        carried = f"window:{wid}/v{latest.version}"
        start = manifest["start_ms"]
        origin = [(None, start, carried, str(i), None) for i in range(len(examples))]
        dead = {carried: {"carried": int(manifest.get("dead_letters", 0))}} if manifest.get("dead_letters") else {}
    def parsed():
        for (rid, when, source, position, ingest), data in zip(origin, examples):
            features = _example_features(example_pb2.Example.FromString(data), types)
            if rid is None:
                rid = _id_of(features, id_field, wid)
            yield Event(rid, when, features, source, position, ingest)

    sources = {s["uri"]: {k: v for k, v in s.items() if k != "records"} for s in manifest.get("sources", [])}
    return PreviousVersion(latest.version, parsed() if lazy else list(parsed()), dead, sources)


def _id_of(features: dict, id_field: Optional[str], wid: str) -> str:
    values = features.get(id_field) if id_field else None
    if not values:
        raise StorageError(f"window {wid}: a record of its sealed version (kept without provenance) has no "
                           f"id feature {id_field!r}, so a new version cannot be merged with it; reseal the "
                           "window from its input into a fresh storage root")
    value = values[0]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- merging


def merge_records(previous: Optional[PreviousVersion], events: list, dead: Iterable[DeadLetter] = ()) -> list:
    """Previous records, replaced by this run's reading of the same (source, position), plus this
    run's other records (not yet de-duplicated by id). A reading is an event or a dead letter: a
    record the previous version held that this run read again and rejected (a stricter schema, a
    corrected file) leaves the window, as it would in one run over everything. A record this run
    read twice at the same position (a stream replanned from scratch writes the same offsets into
    parts of other ranges) is one record, not a duplicate."""
    by_origin = {} if previous is None else {(e.source, e.position): e for e in previous.events}
    for letter in dead:
        by_origin.pop((letter.source, letter.position), None)
    for event in events:
        by_origin[(event.source, event.position)] = event
    return list(by_origin.values())


def unique_dead_letters(dead: Iterable[DeadLetter]) -> list:
    """One dead letter per (source, position): a record read twice is counted once."""
    return list({(d.source, d.position): d for d in dead}.values())


def merge_dead_counts(previous: Optional[PreviousVersion], letters: Iterable[DeadLetter], run_sources: set) -> dict:
    """{source: {reason: n}} of the new version: ``letters`` (this run's dead letters of the window
    and the duplicates found by this merge) plus the previous counts of every source this run did
    not read (a source it read is counted afresh)."""
    merged = {} if previous is None else {s: Counter(c) for s, c in previous.dead_by_source.items()
                                          if s not in run_sources}
    for letter in letters:
        merged.setdefault(letter.source, Counter())[letter.reason] += 1
    return {s: dict(sorted(merged[s].items())) for s in sorted(merged) if merged[s]}


def dead_by_reason(dead_by_source: dict) -> dict:
    total = Counter()
    for counts in dead_by_source.values():
        total.update(counts)
    return dict(sorted(total.items()))
