"""core/object_store.py and core/window_staging.py: the connection settings every object-store
client is built from, the reachability check (against the real local S3 server), and the verified
local copies training reads."""
from __future__ import annotations

import hashlib
import os

import pytest

from core import storage
from core.errors import ObjectStoreError, StorageError
from core.object_store import ObjectStoreSettings, beam_flags, bucket_of, check_reachable, mlflow_environment, scheme
from core.window_staging import _copy_verified, stage_windows
from core.window_store import SealedWindow


def test_beam_flags_carry_the_endpoint_and_region_and_never_credentials():
    settings = ObjectStoreSettings(s3_endpoint_url="http://127.0.0.1:9000", s3_region="eu-west-1")
    assert beam_flags(settings) == ["--s3_endpoint_url=http://127.0.0.1:9000", "--s3_region_name=eu-west-1"]
    assert beam_flags(ObjectStoreSettings()) == []
    assert mlflow_environment(settings) == {"MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
                                            "AWS_DEFAULT_REGION": "eu-west-1"}


@pytest.mark.parametrize("uri, expected", [("s3://b/x", "s3"), ("gs://b", "gs"), ("/tmp/x", None),
                                           ("mlflow+http://h:5000", None), ("memory://r", None),
                                           ("file:///tmp/r", None), ("", None), (None, None)])
def test_scheme_tells_object_stores_from_local_paths_and_other_backends(uri, expected):
    assert scheme(uri) == expected


def test_bucket_of():
    assert bucket_of("s3://my-bucket/a/b") == "my-bucket" and bucket_of("gs://b") == "b"


def test_local_uris_are_not_checked():
    check_reachable(ObjectStoreSettings(s3_endpoint_url="http://127.0.0.1:1"), [("storage.root", "/tmp/x"),
                                                                                ("registry.uri", None)])


def _s3_settings(s3_server, **kw) -> ObjectStoreSettings:
    return ObjectStoreSettings(s3_endpoint_url=s3_server.endpoint_url, s3_region=s3_server.region,
                               connect_timeout_s=2, read_timeout_s=5, **kw)


def test_reachability_check_names_a_missing_bucket_and_refused_keys(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    bucket = s3_server.create_bucket()
    check_reachable(_s3_settings(s3_server), [("storage.root", f"s3://{bucket}/store")])
    with pytest.raises(ObjectStoreError, match=r"bucket 'ctpipe-no-such' of registry.uri s3://ctpipe-no-such/r "
                                               r"does not exist"):
        check_reachable(_s3_settings(s3_server), [("registry.uri", "s3://ctpipe-no-such/r")])
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ObjectStoreError, match="no S3 credentials for storage.root .*AWS_ACCESS_KEY_ID"):
        check_reachable(_s3_settings(s3_server), [("storage.root", f"s3://{bucket}/store")])


def _window(path: str, data: bytes, **entry) -> SealedWindow:
    file = {"path": "data-00000.tfrecord.gz", "kind": "transformed", "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "records": 1, **entry}
    return SealedWindow("20261127T0000Z", 1, path, {"files": [file, dict(file, path="stats.pb", kind="stats")]})


def test_a_copy_that_does_not_match_its_manifest_is_refused_and_leaves_nothing(tmp_path):
    src = tmp_path / "part"
    src.write_bytes(b"the stored bytes")
    entry = {"bytes": 16, "sha256": hashlib.sha256(b"other bytes here").hexdigest()}
    target = tmp_path / "out" / "part"
    with pytest.raises(StorageError, match="does not match its window manifest"):
        _copy_verified(str(src), str(target), entry)
    assert sorted(os.listdir(tmp_path / "out")) == []


def test_local_windows_are_not_copied(tmp_path):
    window = _window(str(tmp_path / "w"), b"x")
    assert stage_windows([window], str(tmp_path / "staged")) == [window]
    assert not (tmp_path / "staged").exists()


def test_windows_on_s3_are_staged_verified_and_a_tampered_part_stops_the_run(s3_server, tmp_path, monkeypatch):
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    FileSystems.set_options(PipelineOptions(beam_flags(_s3_settings(s3_server))))
    bucket = s3_server.create_bucket()
    client = s3_server.client()
    data = os.urandom(3 << 19)  # more than one read chunk
    client.put_object(Bucket=bucket, Key="w/v1/data-00000.tfrecord.gz", Body=data)
    window = _window(f"s3://{bucket}/w/v1", data)
    [staged] = stage_windows([window], str(tmp_path / "staged"))
    assert staged.path == str(tmp_path / "staged" / "20261127T0000Z" / "v1")
    assert (tmp_path / "staged" / "20261127T0000Z" / "v1" / "data-00000.tfrecord.gz").read_bytes() == data
    assert storage.join(staged.path, "data-00000.tfrecord.gz") == staged.file_paths("transformed")[0]
    assert not (tmp_path / "staged" / "20261127T0000Z" / "v1" / "stats.pb").exists()  # only what training reads

    client.put_object(Bucket=bucket, Key="w/v1/data-00000.tfrecord.gz", Body=data[:-1] + b"!")
    with pytest.raises(StorageError, match=f"s3://{bucket}/w/v1/data-00000.tfrecord.gz does not match"):
        stage_windows([window], str(tmp_path / "again"))
    assert not list((tmp_path / "again").rglob("data-*"))


def test_an_empty_file_can_be_written_to_s3(s3_server, monkeypatch):
    """Beam's S3 uploader cannot write zero bytes (S3 refuses a multipart upload without parts)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from core import object_store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    settings = _s3_settings(s3_server)
    monkeypatch.setattr(object_store, "_current", settings)
    FileSystems.set_options(PipelineOptions(beam_flags(settings)))
    bucket = s3_server.create_bucket()
    storage.write_bytes_atomic(f"s3://{bucket}/x/empty.txt", b"")
    assert s3_server.client().get_object(Bucket=bucket, Key="x/empty.txt")["Body"].read() == b""
    assert storage.read_bytes(f"s3://{bucket}/x/empty.txt") == b""


def test_gcs_without_credentials_fails_with_one_line_naming_where_they_come_from(monkeypatch, tmp_path):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud user credentials either
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:1")  # and no metadata server
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:1")
    with pytest.raises(ObjectStoreError, match="no GCS credentials for storage.root gs://ctpipe-x/store: set "
                                               "GOOGLE_APPLICATION_CREDENTIALS"):
        check_reachable(ObjectStoreSettings(connect_timeout_s=1, read_timeout_s=1),
                        [("storage.root", "gs://ctpipe-x/store")])
