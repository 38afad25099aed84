"""core.storage: local paths without Beam, Beam's glob rules, atomic writes, hostile names."""
from __future__ import annotations

import os

import pytest

from core import storage
from core.errors import StorageError


@pytest.fixture
def tree(tmp_path):
    for rel in ("windows/20261127T0000Z/v1/MANIFEST.json", "windows/20261127T0000Z/v2/MANIFEST.json",
                "windows/20261127T0100Z/v1/.hidden", "windows/20261127T0100Z/v1/data.gz", "top.json"):
        storage.write_bytes_atomic(str(tmp_path / rel), rel.encode())
    return tmp_path


def test_glob_follows_beams_rules(tree):
    root = str(tree)
    assert storage.glob(f"{root}/windows/*/v*/MANIFEST.json") == [
        f"{root}/windows/20261127T0000Z/v1/MANIFEST.json", f"{root}/windows/20261127T0000Z/v2/MANIFEST.json"]
    assert storage.glob(f"{root}/windows/*/MANIFEST.json") == []          # * stays within a segment
    assert storage.glob(f"{root}/windows/**/data.gz") == [f"{root}/windows/20261127T0100Z/v1/data.gz"]
    assert len(storage.glob(f"{root}/**")) == 5                          # hidden files included
    assert storage.glob(f"{root}/missing/*") == [] and storage.glob(f"{root}/top.json") == [f"{root}/top.json"]


def test_atomic_write_leaves_no_temporary_and_replaces(tree):
    path = str(tree / "top.json")
    storage.write_bytes_atomic(path, b"new")
    assert storage.read_bytes(path) == b"new"
    assert sorted(os.listdir(tree)) == ["top.json", "windows"]


def test_copy_and_delete_tree(tree, tmp_path):
    names = storage.copy_tree(str(tree / "windows"), str(tmp_path / "copy"))
    assert names == ["20261127T0000Z/v1/MANIFEST.json", "20261127T0000Z/v2/MANIFEST.json",
                     "20261127T0100Z/v1/.hidden", "20261127T0100Z/v1/data.gz"]
    assert storage.read_bytes(str(tmp_path / "copy/20261127T0100Z/v1/data.gz")) == b"windows/20261127T0100Z/v1/data.gz"
    storage.delete_tree(str(tmp_path / "copy"))
    assert not os.path.exists(tmp_path / "copy")


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/etc/passwd", "a//b", "..", "a/..", ""])
def test_local_target_refuses_names_that_escape(tmp_path, name):
    with pytest.raises(StorageError, match="escapes|outside"):
        storage.local_target(str(tmp_path / "dest"), name)


def test_local_target_refuses_a_symlink_out(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(tmp_path)
    with pytest.raises(StorageError, match="outside"):
        storage.local_target(str(dest), "link/evil")
    assert storage.local_target(str(dest), "a/b.pb") == str(dest / "a" / "b.pb")


def test_download_tree_refuses_a_crafted_object_name(s3_server, tmp_path):
    """An object store listing is not trusted: a key with ../ must not write outside the target."""
    from apache_beam.io.aws.clients.s3 import boto3_client  # noqa: F401  (Beam's S3 support present)

    from pipeline.options import pipeline_options

    bucket = s3_server.create_bucket()
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="t/ok.txt", Body=b"ok")
    client.put_object(Bucket=bucket, Key="t/../../../escaped.txt", Body=b"evil")
    options = pipeline_options(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "runner_configs",
                                            "direct.yaml"),
                               [f"--s3_endpoint_url={s3_server.endpoint_url}",
                                f"--s3_access_key_id={s3_server.access_key}",
                                f"--s3_secret_access_key={s3_server.secret_key}",
                                f"--s3_region_name={s3_server.region}"])
    from apache_beam.io.filesystems import FileSystems

    FileSystems.set_options(options)
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(StorageError, match="escapes"):
        storage.download_tree(f"s3://{bucket}/t", str(dest))
    assert not any(p.name == "escaped.txt" for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("wid", ["*", "2026112*", "../20261127T0000Z", "20261127T0000Z/v1", "20261127t0000z", ""])
def test_window_ids_are_never_patterns(tmp_path, wid):
    from core import window_store
    from core.errors import ConfigError

    storage.write_json_atomic(str(tmp_path / "windows/20261127T0000Z/v1/MANIFEST.json"),
                              {"window_id": "20261127T0000Z", "version": 1})
    with pytest.raises(ConfigError, match="not a window id"):
        window_store.latest_sealed(str(tmp_path), wid)
    assert window_store.latest_sealed(str(tmp_path), "20261127T0000Z").version == 1
