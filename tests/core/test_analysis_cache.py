"""The analyzer cache's entries (core/analysis_cache.py): keys that never reuse a stale entry, and a
publication that a kill -9 cannot leave half-trusted. No TensorFlow: a few seconds in all."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from core import analysis_cache, layout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _manifest(wid="20261127T0100Z", version=1, raw_sha="a" * 64, nbytes=10):
    return {"window_id": wid, "version": version,
            "files": [{"path": "raw-00000.tfrecord.gz", "kind": "raw", "sha256": raw_sha, "bytes": nbytes},
                      {"path": "data-00000.tfrecord.gz", "kind": "transformed", "sha256": "b" * 64, "bytes": 5}]}


def _staged(directory, n_files=3) -> str:
    """A folder laid out as tf.Transform's WriteAnalysisCacheToFS leaves one dataset."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "MANIFEST"), "wb") as handle:
        handle.write(b"manifest")
    for i in range(n_files):
        with open(os.path.join(directory, f"{i}-00000-of-00001.gz"), "wb") as handle:
            handle.write(f"accumulator {i}".encode() * 100)
    return str(directory)


def test_entry_key_changes_with_version_and_raw_content_only():
    key = analysis_cache.entry_key(_manifest())
    assert analysis_cache.parse_entry_key(key) == ("20261127T0100Z", 1)
    assert analysis_cache.entry_key(_manifest(version=2)) != key             # a new version (late data)
    assert analysis_cache.entry_key(_manifest(raw_sha="c" * 64)) != key      # other raw content
    assert analysis_cache.entry_key(_manifest(nbytes=11)) != key
    other_transformed = _manifest()
    other_transformed["files"][1]["sha256"] = "d" * 64                       # resealed under another transform
    assert analysis_cache.entry_key(other_transformed) == key
    assert analysis_cache.parse_entry_key("20261127T0100Z.v1") is None


def test_cache_key_changes_with_the_function_its_source_the_schema_and_versions():
    base = dict(preprocessing_fn="m:f", code_digest="c1", schema_text="feature {}", tft_version="1.16.0",
                python_version="3.11")
    key = analysis_cache.cache_key(**base)
    assert analysis_cache.cache_key(**base) == key
    for field, value in (("preprocessing_fn", "m:g"), ("code_digest", "c2"), ("schema_text", "feature { }"),
                         ("tft_version", "1.17.0"), ("python_version", "3.12")):
        assert analysis_cache.cache_key(**dict(base, **{field: value})) != key, field


def test_published_entry_is_trusted_and_any_change_makes_it_untrusted(tmp_path, caplog):
    root = str(tmp_path / "store")
    ekey = analysis_cache.entry_key(_manifest())
    target = analysis_cache.publish_entry(root, "k1", ekey, _staged(tmp_path / "staged"))
    assert target == layout.analyzer_cache_entry(root, "k1", ekey)
    assert analysis_cache.check_entry(root, "k1", ekey) is None
    assert analysis_cache.check_entry(root, "k2", ekey) == "missing"
    assert analysis_cache.lookup(root, "k1", [ekey]).cached == (ekey,)

    with open(os.path.join(target, "1-00000-of-00001.gz"), "ab") as handle:   # altered after publication
        handle.write(b"x")
    assert "does not match" in analysis_cache.check_entry(root, "k1", ekey)
    with caplog.at_level(logging.WARNING, logger="ctpipe.analysis_cache"):
        found = analysis_cache.lookup(root, "k1", [ekey])
    assert found.cached == () and [e["entry"] for e in found.ignored] == [ekey]
    assert "ignored and analyzed again" in caplog.text

    analysis_cache.publish_entry(root, "k1", ekey, _staged(tmp_path / "staged"))  # republished: trusted again
    assert analysis_cache.check_entry(root, "k1", ekey) is None
    with open(os.path.join(target, "extra"), "wb") as handle:
        handle.write(b"added")
    assert "not part of" in analysis_cache.check_entry(root, "k1", ekey)
    os.remove(os.path.join(target, "extra"))
    os.remove(os.path.join(target, "0-00000-of-00001.gz"))
    assert "missing" in analysis_cache.check_entry(root, "k1", ekey)
    assert analysis_cache.list_entries(root) == [("k1", ekey)]


_CHILD = textwrap.dedent("""
    import os, sys, time
    from core import analysis_cache, storage
    root, staged, ekey, ready, replace = sys.argv[1:6]
    real, written = storage.write_bytes_atomic, []

    def slow_write(path, data):
        real(path, data)
        written.append(path)
        if len(written) == 2:          # two files of the entry are in place, the rest are not
            open(ready, "w").close()
            time.sleep(600)            # killed here with SIGKILL

    if replace == "1":
        analysis_cache.publish_entry(root, "k1", ekey, staged)
    storage.write_bytes_atomic = slow_write
    analysis_cache.publish_entry(root, "k1", ekey, staged)
""")


@pytest.mark.parametrize("replace", [False, True], ids=["new-entry", "replacing-a-trusted-entry"])
def test_kill_9_during_publication_leaves_no_trusted_entry(tmp_path, replace, caplog):
    root, ready = str(tmp_path / "store"), str(tmp_path / "ready")
    staged = _staged(tmp_path / "staged", n_files=6)
    ekey = analysis_cache.entry_key(_manifest())
    child = subprocess.Popen([sys.executable, "-c", _CHILD, root, staged, ekey, ready, "1" if replace else "0"],
                             cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(ready):           # wait on the condition (the child is mid-write)
            assert time.monotonic() < deadline, "the child never reached the middle of the write"
            try:
                child.wait(timeout=0.05)
                pytest.fail(f"the child ended (exit {child.returncode}) before it was mid-write")
            except subprocess.TimeoutExpired:
                pass
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    entry_dir = layout.analyzer_cache_entry(root, "k1", ekey)
    assert os.path.isdir(entry_dir) and len(os.listdir(entry_dir)) >= 2     # files of the interrupted write
    assert not os.path.exists(os.path.join(entry_dir, analysis_cache.ENTRY))
    assert "unfinished write" in analysis_cache.check_entry(root, "k1", ekey)
    with caplog.at_level(logging.WARNING, logger="ctpipe.analysis_cache"):
        found = analysis_cache.lookup(root, "k1", [ekey])
    assert found.cached == () and found.ignored[0]["entry"] == ekey
    analysis_cache.publish_entry(root, "k1", ekey, staged)                   # the next run's publication
    assert analysis_cache.check_entry(root, "k1", ekey) is None
