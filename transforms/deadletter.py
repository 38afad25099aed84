"""Dead-letter output: every unusable record as one JSON line with reason and source position."""
from __future__ import annotations

import json

import apache_beam as beam

from core import layout

deadletter_prefix = layout.deadletter_run_prefix


class WriteDeadLetters(beam.PTransform):
    """DeadLetter -> <root>/deadletter/<date>/<run_id>-SSSSS-of-NNNNN.jsonl (Beam's atomic finalize).

    A run without dead letters writes no file: an empty object cannot be written to S3 through
    Beam (its uploader completes a multipart upload with no parts, which S3 refuses)."""

    def __init__(self, root: str, run_id: str):
        super().__init__()
        self._prefix = deadletter_prefix(root, run_id)

    def expand(self, dead):
        return (dead
                | "ToJson" >> beam.Map(lambda d: json.dumps(d.to_json(), sort_keys=True))
                | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl", num_shards=1,
                                                  skip_if_empty=True))
