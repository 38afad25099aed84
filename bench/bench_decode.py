"""Per-record cost of ctpipe's hot steps outside Beam, each next to the general path it replaces.

    .venv/bin/python bench/bench_decode.py [--rows 40000] [--repeats 3]

On synthetic JSONL events (pipeline/synthetic.py) and a schema TFDV infers from them:

- read: ``transforms.sources.read_jsonl`` (lines of a file);
- decode, no schema: ``decode_record`` as the first backfill's schema pass runs it, with orjson
  first and with Python's parser only (``_fast_json_object`` disabled);
- decode + record checks, with the schema: the main pass's two steps, the same two ways;
- examples: ``example_encoding.deterministic_examples`` of the records' Arrow batch against
  ``canonical_examples(RecordBatchToExamples(batch))``, the path it replaced.

Prints JSON: microseconds per record (best of ``--repeats``) and the ratio of each pair.
Nothing here is asserted by a test.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pipeline  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)


def _best(func, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import pandas as pd
    import tensorflow_data_validation as tfdv
    from tfx_bsl.coders import example_coder

    from pipeline import synthetic
    from transforms import decode
    from transforms.arrow import canonical_examples, events_to_record_batch
    from transforms.decode import DecodeSpec, decode_record
    from transforms.example_encoding import deterministic_examples
    from transforms.record_checks import check_event, record_rules
    from transforms.routing import Steps
    from transforms.sources import read_jsonl
    from transforms.validation import feature_types, infer_schema

    work = tempfile.mkdtemp(prefix="bench-decode-")
    synthetic.write_jsonl(work, synthetic.generate(dt.datetime(2026, 11, 27), 1, args.rows, malformed_per_hour=0,
                                                   out_of_range_per_hour=0), rows_per_hour=args.rows)
    path = os.path.join(work, sorted(os.listdir(work))[0])
    records = list(read_jsonl(path))
    sample = pd.DataFrame([json.loads(r.raw) for r in records[:20_000]])
    schema = infer_schema(tfdv.generate_statistics_from_dataframe(sample), "label", "id", "ts")
    plain = DecodeSpec("ts", "id")
    typed = DecodeSpec("ts", "id", feature_types=feature_types(schema))
    rules = record_rules(schema)
    n = len(records)
    out = {"records": n, "repeats": args.repeats, "us_per_record": {}}
    us = out["us_per_record"]
    us["read_jsonl"] = _best(lambda: list(read_jsonl(path)), args.repeats) / n * 1e6
    fast_json = decode._fast_json_object
    for label, steps in (("decode_no_schema", ((decode_record, plain),)),
                         ("decode_and_check_with_schema", ((decode_record, typed), (check_event, rules)))):
        run = Steps(steps)
        us[label] = _best(lambda: [run(r) for r in records], args.repeats) / n * 1e6
        decode._fast_json_object = lambda raw: None
        try:
            us[label + "_python_json"] = _best(lambda: [run(r) for r in records], args.repeats) / n * 1e6
        finally:
            decode._fast_json_object = fast_json
    events = [e for e in (decode_record(r, typed) for r in records) if not hasattr(e, "reason")]
    batch = events_to_record_batch(events, feature_types(schema))
    canonical_examples(example_coder.RecordBatchToExamples(batch[:10]))  # imports outside the timing
    us["examples_deterministic_examples"] = _best(lambda: deterministic_examples(batch), args.repeats) / n * 1e6
    us["examples_tfx_bsl_then_reserialized"] = _best(
        lambda: canonical_examples(example_coder.RecordBatchToExamples(batch)), args.repeats) / n * 1e6
    assert deterministic_examples(batch) == canonical_examples(example_coder.RecordBatchToExamples(batch))
    out["us_per_record"] = {k: round(v, 2) for k, v in us.items()}
    out["ratios"] = {
        "decode_no_schema_python_json_over_orjson": round(
            us["decode_no_schema_python_json"] / us["decode_no_schema"], 2),
        "decode_and_check_python_json_over_orjson": round(
            us["decode_and_check_with_schema_python_json"] / us["decode_and_check_with_schema"], 2),
        "examples_reserialized_over_batch": round(
            us["examples_tfx_bsl_then_reserialized"] / us["examples_deterministic_examples"], 2),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
