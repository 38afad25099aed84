"""End to end: every poison record of a backfill is a dead letter with its reason and position;
everything else seals normally, byte-identically on a rerun (nothing lost, nothing duplicated)."""
from __future__ import annotations

import glob
import json
import os

import pytest

from core import window_store
from pipeline.backfill import run_backfill
from tests._stores import read_ids_with_schema, tree_digest

pytestmark = pytest.mark.slow


def _valid(i: int, **changes) -> dict:
    event = {"id": f"ok-{i}", "ts": f"2026-11-27T00:{i % 60:02d}:00Z", "device_id": f"dev-{i % 5:03d}",
             "firmware": ("v1", "v2", "v3")[i % 3], "temperature": 55.0 + i % 10, "vibration": 1.0 + (i % 7) / 10,
             "humidity": 40.0 + i % 20, "label": i % 2}
    event.update(changes)
    return event


def _line(event: dict) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode()


POISON = [  # (line, reason): one bad record each (most of them crashed a backfill before)
    (b'{"id": "deep", "ts": "2026-11-27T00:10:00Z", "temperature": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
     "bad_json"),
    (_line(_valid(1000, id="int64", label=99999999999999999999)), "value_out_of_range"),
    (_line(_valid(1001, id="micros", ts=1795741200000000)), "event_time_out_of_range"),
    (_line(_valid(1002, id="nanos", ts=1795741200000000000)), "event_time_out_of_range"),
    (_line(_valid(1003, id="year10000", ts=253402300800000)), "event_time_out_of_range"),
    (_line(_valid(1004, id="year999", ts="0999-11-27T00:00:00Z")), "event_time_out_of_range"),
    (_line(_valid(1005, id="float32", temperature=1e39)), "value_out_of_range"),
    (_line(_valid(1006, id="nan", temperature="@")).replace(b'"@"', b"NaN"), "type_mismatch"),
    (_line(_valid(1007, id="inf", temperature="@")).replace(b'"@"', b"-Infinity"), "type_mismatch"),
    (_line(_valid(1008, id={"nested": 1})), "bad_id"),
    (_line(_valid(1009, id="dupkey")).replace(b'"label": 1', b'"label": 1, "label": 0'), "duplicate_key"),
    (_line(_valid(1010, id="surrogate", device_id="@")).replace(b'"@"', b'"dev-\\ud800"'), "not_utf8"),
    (_line(_valid(1011, id="list-for-scalar", temperature=[50.0, 51.0])), "shape_mismatch"),
    (_line(_valid(1012, id="nested-list", humidity=[[1.0]])), "type_mismatch"),
    (_line(_valid(1013, id="huge", firmware="v1" * 600_000)), "oversize"),
    (b'\xff\xfe{"id": "latin1"}', "not_utf8"),
    (_line(_valid(1014, id=12345)), "type_mismatch"),  # the id is a feature too: BYTES here, 12345 is an INT
]

ODD_BUT_VALID = [  # decoded by a documented rule and sealed
    _valid(2000, id="../../escape/../attempt"),
    _valid(2001, id="i" * 5_000),
    _valid(2002, id="bool-label", label=True),
    _valid(2004, id="int-temperature", temperature=61),
    {**_valid(2005, id="odd-keys"), "weird key": 1.5, "a/b": "x", "": 2, "ünï": "ü", "k" * 300: 3, "0lead": 1},
]


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory):
    from pipeline.config import config_from_dict
    from pipeline.options import pipeline_options

    base = tmp_path_factory.mktemp("poison")
    events = base / "events"
    events.mkdir()
    good = [_valid(i) for i in range(120)]
    for i, event in enumerate(good):
        if i % 2:
            event["ts"] = event["ts"].replace("T00:", "T01:")
    lines = [_line(e) for e in good[:60]] + [line for line, _ in POISON] + [_line(e) for e in ODD_BUT_VALID]
    (events / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n\r\n")
    (events / "b.jsonl").write_bytes(b"\n".join(_line(e) for e in good[60:]) + b"\n")
    config = config_from_dict({"storage": {"root": str(base / "store")},
                               "source": {"files": {"uri": str(events / "*.jsonl")}}})
    options = pipeline_options(os.path.join(os.path.dirname(__file__), "..", "..", "runner_configs", "direct.yaml"))
    first = run_backfill(config, options, None, None)
    return config, options, first, [e["id"] for e in good + ODD_BUT_VALID]


def _dead_letters(root):
    return [json.loads(line) for path in sorted(glob.glob(os.path.join(root, "deadletter", "*", "*.jsonl")))
            for line in open(path, encoding="utf-8")]


def test_every_poison_record_is_one_dead_letter_with_its_reason_and_line(poisoned):
    config, _options, result, _ids = poisoned
    dead = sorted(_dead_letters(config.storage.root), key=lambda d: int(d["position"]))
    expected = [(str(61 + i), reason) for i, (_line, reason) in enumerate(POISON)]
    assert [(d["position"], d["reason"]) for d in dead] == expected
    assert all(d["source"].endswith("a.jsonl") and d["detail"] for d in dead)
    assert all(d["event_time_ms"] is None for d in dead if d["reason"].startswith("event_time"))
    counters = result.record["counters"]
    assert sum(v for k, v in counters.items() if k.startswith("deadletter:")) == len(POISON)


def test_the_rest_seals_normally_each_valid_id_once(poisoned):
    config, _options, result, ids = poisoned
    windows = window_store.list_sealed(config.storage.root)
    assert [w.window_id for w in windows] == ["20261127T0000Z", "20261127T0100Z"]
    assert sorted(read_ids_with_schema(config.storage.root)) == sorted(str(i) for i in ids)
    assert sum(w["records"] for w in result.record["windows"]) == len(ids)


def test_rerun_is_a_no_op_with_the_same_dead_letters(poisoned, tmp_path):
    config, options, _result, _ids = poisoned
    before = tree_digest(config.storage.root)
    again = run_backfill(config, options, None, None)
    assert all(not w["written"] for w in again.record["windows"])
    assert tree_digest(config.storage.root) == before
    counters = again.record["counters"]
    assert sum(v for k, v in counters.items() if k.startswith("deadletter:")) == len(POISON)
