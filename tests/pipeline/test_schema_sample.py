"""The first backfill infers its schema from a sample: the first records of every file
(``source.files.schema_sample_records``), while the main pass still reads everything."""
import datetime as dt
import glob
import json
import os

import pytest

from core import schema_store
from tests._stores import read_ids_with_schema

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RARE = "fw-late"


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """Two files of one hour each; after its 20th line every file also holds firmware RARE."""
    from pipeline import synthetic

    base = tmp_path_factory.mktemp("sample")
    (base / "events").mkdir()
    ids = []
    lines = [ev for _line, ev in synthetic.generate(dt.datetime(2026, 11, 27), 2, 150, malformed_per_hour=0,
                                                     out_of_range_per_hour=0)]
    for n, hour in enumerate((lines[:150], lines[150:])):
        with open(base / "events" / f"events-{n}.jsonl", "w", encoding="utf-8") as handle:
            for i, ev in enumerate(hour):
                if i >= 20 and i % 3 == 0:
                    ev["firmware"] = RARE
                handle.write(json.dumps(ev, sort_keys=True) + "\n")
                ids.append(ev["id"])
    return base, ids


def _backfill(base, store: str, sample):
    from pipeline.backfill import run_backfill
    from pipeline.config import config_from_dict
    from pipeline.options import pipeline_options

    config = config_from_dict({"storage": {"root": str(base / store)},
                               "source": {"files": {"uri": str(base / "events" / "*.jsonl"),
                                                    "schema_sample_records": sample}}})
    run_backfill(config, pipeline_options(os.path.join(REPO, "runner_configs", "direct.yaml")), None, None)
    return str(base / store)


def _firmware_domain(root: str) -> set:
    schema, _text, _version = schema_store.load(root)
    feature = next(f for f in schema.feature if f.name == "firmware")
    return set(next(d for d in schema.string_domain if d.name == feature.domain).value)


def test_a_sampled_schema_sees_only_the_first_records_of_each_file_and_the_run_reads_all(events):
    base, ids = events
    root = _backfill(base, "sampled", 40)  # 20 per file: none of them is RARE
    domain = _firmware_domain(root)
    assert RARE not in domain and domain, domain
    # The main pass read every record: the records holding RARE are domain_violation dead letters
    # (with their position), every other one is sealed; none is lost.
    dead = [json.loads(line) for path in glob.glob(os.path.join(root, "deadletter", "*", "*.jsonl"))
            for line in open(path, encoding="utf-8")]
    assert dead and {d["reason"] for d in dead} == {"domain_violation"}
    assert all(d["position"].isdigit() for d in dead)
    # A record checked against the schema is kept as the decoded event: {"id", "features", ...}.
    dead_events = [json.loads(d["raw_utf8"]) for d in dead]
    dead_ids = [e["id"] for e in dead_events]
    assert len(dead_ids) == len(set(dead_ids))
    # Every RARE record is one of them (so are records with another string feature's unsampled
    # value: device ids here).
    rare = {e["id"] for e in dead_events if e["features"]["firmware"] == RARE}
    assert len(rare) == 2 * len(range(21, 150, 3))
    sealed = read_ids_with_schema(root)
    assert not set(sealed) & set(dead_ids)
    assert sorted(sealed + dead_ids) == sorted(ids)


def test_without_a_sample_the_schema_is_inferred_from_every_record(events):
    base, ids = events
    root = _backfill(base, "full", None)
    assert RARE in _firmware_domain(root)
    assert sorted(read_ids_with_schema(root)) == sorted(ids)
