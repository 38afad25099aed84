"""Checkpoint store of ``ctpipe stream``: <root>/checkpoints/<source_id>.json, written atomically.

A checkpoint is the only state that decides what the next cycle reads. Its fields:

- ``offsets``: partition -> next offset to read (everything before it is in window parts).
- ``max_event_time_ms``: partition -> newest event time seen in that partition (watermark input).
- ``watermark_ms``: the event-time watermark after the last completed cycle (None before any data).
- ``cycle``: number of completed cycles.
- ``in_flight``: the plan of a cycle that was started but not completed (its exact offset ranges
  and dead-letter date), or None. A rerun after a crash executes this plan again instead of
  planning a new one, so every part file and dead-letter file gets the same name as in the
  crashed attempt and overwrites it (see pipeline/stream.py, "Checkpoint protocol").
- ``late_records``: late records seen so far, by policy (new_version / side_output).
- ``topic_id``: the Kafka topic id the offsets belong to (None before the first cycle, or from a
  broker that reports none). A topic deleted and recreated under the same name has a new id and
  offsets that restart: the stream refuses to continue from this checkpoint (pipeline/stream.py).
- ``parts_collected_before_ms``: ``ctpipe gc`` removed the part files of windows ending at or
  before this time (None: none removed); late records for them go to <root>/late/.

Writes go through ``core.storage.write_json_atomic`` (temp + rename), so a reader sees the
old checkpoint or the new one, never a torn one.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from typing import Optional

from core import layout, storage
from core.errors import StorageError

FORMAT = "ctpipe.checkpoint/1"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def source_id(topic: str) -> str:
    """File-name-safe id of a Kafka source: ``kafka-<topic>`` (other characters become ``_``)."""
    return "kafka-" + _SAFE.sub("_", topic)


checkpoint_path = layout.checkpoint_path


@dataclass(frozen=True)
class Checkpoint:
    topic: str
    offsets: dict = field(default_factory=dict)           # int partition -> int next offset
    max_event_time_ms: dict = field(default_factory=dict)  # int partition -> int ms
    watermark_ms: Optional[int] = None
    cycle: int = 0
    in_flight: Optional[dict] = None
    late_records: dict = field(default_factory=dict)       # policy -> count
    last_records_at: dict = field(default_factory=dict)    # int partition -> unix s of its last read records
    topic_id: Optional[str] = None
    parts_collected_before_ms: Optional[int] = None

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "topic": self.topic,
            "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            "max_event_time_ms": {str(p): t for p, t in sorted(self.max_event_time_ms.items())},
            "watermark_ms": self.watermark_ms,
            "cycle": self.cycle,
            "in_flight": self.in_flight,
            "late_records": dict(sorted(self.late_records.items())),
            "last_records_at": {str(p): t for p, t in sorted(self.last_records_at.items())},
            "topic_id": self.topic_id,
            "parts_collected_before_ms": self.parts_collected_before_ms,
            "updated_at": round(time.time(), 3),
        }

    @classmethod
    def from_json(cls, data: dict, path: str) -> "Checkpoint":
        if data.get("format") != FORMAT:
            raise StorageError(f"{path}: format {data.get('format')!r} is not {FORMAT!r}; it was written "
                               "by something else: move it away to start from the beginning of the topic")
        try:
            return cls(
                topic=data["topic"],
                offsets={int(p): int(o) for p, o in data["offsets"].items()},
                max_event_time_ms={int(p): int(t) for p, t in data["max_event_time_ms"].items()},
                watermark_ms=data["watermark_ms"],
                cycle=int(data["cycle"]),
                in_flight=data.get("in_flight"),
                late_records=dict(data.get("late_records") or {}),
                last_records_at={int(p): float(t) for p, t in (data.get("last_records_at") or {}).items()},
                topic_id=data.get("topic_id"),
                parts_collected_before_ms=data.get("parts_collected_before_ms"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"{path}: checkpoint field missing or malformed ({exc!r}); restore it from "
                               "backup or move it away to start from the beginning of the topic") from exc

    def replace(self, **changes) -> "Checkpoint":
        return replace(self, **changes)


class CheckpointStore:
    """Load and save the checkpoint of one source under a storage root."""

    def __init__(self, root: str, topic: str):
        self.root = root
        self.topic = topic
        self.source_id = source_id(topic)
        self.path = checkpoint_path(root, self.source_id)

    def load(self) -> Checkpoint:
        """The stored checkpoint, or an empty one (read from the beginning) when there is none."""
        if not storage.exists(self.path):
            return Checkpoint(topic=self.topic)
        checkpoint = Checkpoint.from_json(storage.read_json(self.path), self.path)
        if checkpoint.topic != self.topic:
            raise StorageError(f"{self.path} belongs to topic {checkpoint.topic!r}, not {self.topic!r}; "
                               "the storage root is shared by two sources with the same id")
        return checkpoint

    def save(self, checkpoint: Checkpoint, fence=None) -> None:
        """Write ``checkpoint``; ``fence`` (the root's lease, core.lock) is checked first, so a
        stream whose lease was taken over never moves the checkpoint."""
        if fence is not None:
            fence.check_publish(f"checkpoint {self.path} (cycle {checkpoint.cycle})")
        storage.write_json_atomic(self.path, checkpoint.to_json())
