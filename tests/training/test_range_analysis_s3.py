"""tf.Transform's analyzer cache on an s3:// storage root (core/analysis_cache.py,
pipeline/range_transform.py), against the project's real local S3 server (moto).

A backfill of 3 small windows onto s3://<bucket>/store, then ``analyze_range`` twice: over the first
two windows (nothing cached), then over all three (two entries cached). What the second run read
is checked with a separate boto3 client, not with ctpipe's storage code: the entry folders under
``analyzer_cache/<cache key>/``, every object's sha256 against its ENTRY.json, the cached entries'
objects untouched (ETag and LastModified), and the rows tf.Transform's input really received (the
Beam counter per dataset). TensorFlow has no S3 file system, so the cache entries are staged into
the run's scratch (``transform.scratch_dir``, local) for tf.Transform to read, and published back.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import pytest

from core import analysis_cache, window_store
from pipeline import synthetic
from pipeline.backfill import run_backfill
from pipeline.config import config_from_dict
from pipeline.range_transform import analyze_range, range_fingerprint

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)


@pytest.fixture
def s3_store(s3_server, tmp_path, monkeypatch):
    from pipeline.options import pipeline_options
    from pipeline.stores import object_store_flags

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    bucket = s3_server.create_bucket()
    synthetic.write_jsonl(str(tmp_path / "events"), synthetic.generate(START, 3, 120), rows_per_hour=120)
    config = config_from_dict({
        "storage": {"root": f"s3://{bucket}/store"},
        "source": {"files": {"uri": str(tmp_path / "events" / "*.jsonl")}},
        "object_store": {"s3": {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region}},
        "transform": {"scratch_dir": str(tmp_path / "scratch")},
        "training": {"analyze_range": True, "backup_dir": str(tmp_path / "backup")},
        # small windows: no count-ratio bounds, nothing here is about validation
        "validation": {"min_count_ratio": None, "max_count_ratio": None},
    })
    options = pipeline_options(os.path.join(REPO, "runner_configs", "direct.yaml"),
                               object_store_flags=object_store_flags(config))
    run_backfill(config, options, None, None)
    windows = window_store.list_sealed(config.storage.root)
    assert len(windows) == 3
    return s3_server.client(), bucket, config, options, windows


def _cache_objects(client, bucket) -> dict:
    """{key: (ETag, LastModified)} of every object under store/analyzer_cache/, read with boto3."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="store/analyzer_cache/"):
        for o in page.get("Contents", []):
            out[o["Key"]] = (o["ETag"], o["LastModified"])
    return out


def _entries(objects: dict) -> dict:
    """{entry folder (<cache key>/<entry key>): [relative names of its objects]}."""
    out = {}
    for key in objects:
        ckey, ekey, rel = key[len("store/analyzer_cache/"):].split("/", 2)
        out.setdefault(f"{ckey}/{ekey}", []).append(rel)
    return {k: sorted(v) for k, v in out.items()}


def _check_checksums(client, bucket, entry: str, names: list) -> None:
    """Every object of the entry matches the sha256 and size its ENTRY.json records, and nothing
    else is there: computed here from the bytes boto3 returns."""
    marker = json.loads(client.get_object(Bucket=bucket, Key=f"store/analyzer_cache/{entry}/ENTRY.json")["Body"].read())
    assert marker["cache_key"] + "/" + marker["entry_key"] == entry
    assert sorted(marker["files"]) == sorted(n for n in names if n != "ENTRY.json")
    assert any(n.startswith("MANIFEST") for n in marker["files"]), marker["files"]
    for rel, recorded in marker["files"].items():
        data = client.get_object(Bucket=bucket, Key=f"store/analyzer_cache/{entry}/{rel}")["Body"].read()
        assert {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} == recorded, rel


def test_the_second_analysis_on_an_s3_root_reads_the_cached_entries_and_an_altered_one_is_redone(s3_store):
    client, bucket, config, options, windows = s3_store
    first = analyze_range(config, windows[0:2], range_fingerprint(config, windows[0:2]), options)
    assert (first["analyzed"], first["from_cache"]) == (2, 0)
    ckey = first["cache_key"]
    before = _cache_objects(client, bucket)
    entries = _entries(before)
    assert set(entries) == {f"{ckey}/{analysis_cache.entry_key(w.manifest)}" for w in windows[0:2]}
    for entry, names in entries.items():
        _check_checksums(client, bucket, entry, names)

    second = analyze_range(config, windows, range_fingerprint(config, windows), options)
    after = _cache_objects(client, bucket)
    new_entry = f"{ckey}/{analysis_cache.entry_key(windows[2].manifest)}"
    assert set(_entries(after)) == set(entries) | {new_entry}
    _check_checksums(client, bucket, new_entry, _entries(after)[new_entry])
    assert {k: v for k, v in after.items() if k in before} == before  # cached objects neither rewritten nor removed
    # the work done: tf.Transform received the rows of the new window only
    rows = {w["entry"]: w["rows_read"] for w in second["windows"]}
    assert rows == {analysis_cache.entry_key(w.manifest): (w.manifest["record_count"] if w is windows[2] else 0)
                    for w in windows}
    assert (second["analyzed"], second["from_cache"], second["ignored_entries"]) == (1, 2, [])
    # the transform is published on the root (COMPLETE last) and the run's scratch is gone
    published = client.list_objects_v2(Bucket=bucket, Prefix=f"store/transforms/{second['fingerprint']}/")
    assert any(o["Key"].endswith("/COMPLETE") for o in published.get("Contents", []))
    scratch = config.transform.scratch_dir
    assert not os.path.isdir(scratch) or not os.listdir(scratch), os.listdir(scratch)

    # an entry altered in the bucket is not trusted: analyzed again and published anew
    altered = f"{ckey}/{analysis_cache.entry_key(windows[1].manifest)}"
    part = next(n for n in _entries(after)[altered] if n.endswith(".gz"))
    client.put_object(Bucket=bucket, Key=f"store/analyzer_cache/{altered}/{part}", Body=b"not the accumulators")
    third = analyze_range(config, windows[1:3], range_fingerprint(config, windows[1:3]), options)
    assert [(e["entry"], e["reason"]) for e in third["ignored_entries"]] == [
        (altered.split("/")[1], f"{part} does not match its recorded sha256")]
    rows = {w["entry"]: w["rows_read"] for w in third["windows"]}
    assert rows == {analysis_cache.entry_key(windows[1].manifest): windows[1].manifest["record_count"],
                    analysis_cache.entry_key(windows[2].manifest): 0}
    _check_checksums(client, bucket, altered, _entries(_cache_objects(client, bucket))[altered])
