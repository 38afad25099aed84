"""`ctpipe schema`, `ctpipe windows release`, record-level range checks and the report, through the CLI
on one small real backfill (curated schema: humidity in [0, 100])."""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import re

import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from core import schema_store, window_store
from pipeline import cli, synthetic

pytestmark = pytest.mark.slow

HOURS, ROWS = 3, 200


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schema_cmd")
    data = tmp / "in"
    gen = synthetic.write_jsonl(str(data), synthetic.generate(dt.datetime(2026, 11, 27), HOURS, ROWS, seed=3),
                                per_file_hours=HOURS, rows_per_hour=ROWS + 3)
    config = tmp / "ctpipe.yaml"
    config.write_text(f"storage: {{root: {tmp / 'store'}}}\nsource: {{files: {{uri: '{data}/*.jsonl'}}}}\n")
    return {"tmp": tmp, "config": str(config), "root": str(tmp / "store"), "gen": gen}


def ctpipe(store, capsys, *argv):
    code = cli.main(list(argv) + ["--config", store["config"], "--json"])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


def test_schema_lifecycle_and_range_violations(store, capsys):
    root = store["root"]
    # First run infers schema v1 (no ranges); the 150% humidity values pass.
    assert ctpipe(store, capsys, "backfill")[0] == 0
    code, shown, _ = ctpipe(store, capsys, "schema", "show")
    assert code == 0 and shown["version"] == 1
    schema = text_format.Parse(shown["schema"], schema_pb2.Schema())
    assert not schema.feature[[f.name for f in schema.feature].index("humidity")].HasField("float_domain")

    # Curate: humidity in [0, 100]; `schema set` stores v2, `schema diff` shows the change.
    humidity = next(f for f in schema.feature if f.name == "humidity")
    humidity.float_domain.min, humidity.float_domain.max = 0, 100
    curated = store["tmp"] / "curated.pbtxt"
    curated.write_text(text_format.MessageToString(schema))
    code, result, _ = ctpipe(store, capsys, "schema", "set", str(curated))
    assert (code, result) == (0, {"version": 2, "unchanged": False})
    code, diff, _ = ctpipe(store, capsys, "schema", "diff", "v1", "v2")
    assert code == 0 and diff["added"] == [] and diff["removed"] == [] and list(diff["changed"]) == ["humidity"]
    assert "max: 100" in diff["changed"]["humidity"]["to"]

    # A broken schema is refused with the reason, nothing stored.
    bad = store["tmp"] / "bad.pbtxt"
    bad.write_text('feature { name: "humidity" type: FLOAT }\n')
    code, _, err = ctpipe(store, capsys, "schema", "set", str(bad))
    assert code == 2 and "'id'" in err and "is not a feature" in err
    assert schema_store.versions(root) == [1, 2]

    # The rerun checks records against v2: every humidity > 100 goes to dead-letter as a range violation.
    assert ctpipe(store, capsys, "backfill")[0] == 0
    dead = [json.loads(line) for path in glob.glob(os.path.join(root, "deadletter", "*", "*.jsonl"))
            for line in open(path, encoding="utf-8")]
    ranges = [d for d in dead if d["reason"] == "range_violation"]
    assert len(ranges) == store["gen"].out_of_range == HOURS
    assert all("'humidity'" in d["detail"] and "above the schema maximum 100" in d["detail"] for d in ranges)
    windows = window_store.list_sealed(root)
    assert [w.manifest["schema_version"] for w in windows] == [2] * HOURS
    assert all(w.manifest["quality"]["dead_letter_reasons"].get("range_violation") == 1 for w in windows)

    # infer from chosen windows: the raw examples of those windows only.
    code, inferred, _ = ctpipe(store, capsys, "schema", "infer", "--window", windows[0].window_id)
    assert code == 0 and inferred["windows"] == [windows[0].window_id] and inferred["stored_version"] is None
    inferred_schema = text_format.Parse(inferred["schema"], schema_pb2.Schema())
    label = next(f for f in inferred_schema.feature if f.name == "label")
    assert list(label.not_in_environment) == ["SERVING"]


def test_release_records_who_why_when(store, capsys, monkeypatch):
    root = store["root"]
    window = window_store.list_sealed(root)[0]
    code, _, err = ctpipe(store, capsys, "windows", "release", window.window_id, "--reason", "ok")
    assert code == 4 and "not QUARANTINED" in err
    # Quarantine the window the way a strict rule would, as a new version of its manifest.
    manifest = dict(window.manifest, validation=dict(window.manifest["validation"], verdict="QUARANTINED"))
    with open(os.path.join(window.path, window_store.MANIFEST), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    assert not window_store.latest_sealed(root, window.window_id).usable_for_training
    monkeypatch.setenv("LOGNAME", "alice")  # the default of --by: the login name
    monkeypatch.setenv("USER", "alice")
    code, record, _ = ctpipe(store, capsys, "windows", "release", window.window_id, "--reason", "sensor recalibrated")
    assert code == 0 and record["by"] == "alice" and record["reason"] == "sensor recalibrated"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["at"])
    released = window_store.latest_sealed(root, window.window_id)
    assert released.released and released.usable_for_training
    assert json.load(open(os.path.join(window.path, "RELEASE.json")))["by"] == "alice"
    code, _, err = ctpipe(store, capsys, "windows", "release", window.window_id, "--reason", "again")
    assert code == 4 and "already released by alice" in err


def test_consistency_of_the_same_window_in_two_roots(store, capsys, tmp_path):
    import shutil

    root = store["root"]
    window = window_store.list_sealed(root)[1]
    other = tmp_path / "other"
    shutil.copytree(os.path.join(root, "windows", window.window_id), other / "windows" / window.window_id)
    code, result, _ = ctpipe(store, capsys, "windows", "consistency", window.window_id, "--against", str(other))
    assert code == 0 and result["consistent"] and result["a"]["records"] == result["b"]["records"] == ROWS
    # The other copy lost records: counts and ids disagree, and the command says so.
    other_window = window_store.latest_sealed(str(other), window.window_id)
    raw = other_window.file_paths("raw")[0]
    import tensorflow as tf

    from transforms.write_window import tfrecord_gz_bytes

    records = [r.numpy() for r in tf.data.TFRecordDataset([raw], compression_type="GZIP")][:-2]
    with open(raw, "wb") as handle:
        handle.write(tfrecord_gz_bytes(records))
    code, result, _ = ctpipe(store, capsys, "windows", "consistency", window.window_id, "--against", str(other))
    assert code == 11 and not result["counts_agree"] and result["only_in_a"] == 2 and result["only_in_b"] == 0


def test_help_of_every_new_command(capsys):
    for argv in (["schema", "infer"], ["schema", "show"], ["schema", "diff"], ["schema", "set"],
                 ["windows", "release"], ["windows", "consistency"], ["report"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv + ["--help"])
        assert exit_info.value.code == 0
        assert "usage: ctpipe" in capsys.readouterr().out
