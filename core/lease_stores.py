"""Where a lease record lives, and the only two ways to change it: create-if-absent and
replace-if-unchanged.

A lease (core/lock.py) is one small JSON record. Every store below offers exactly three
operations, and the lease protocol is written against them alone:

``read()``
    ``(version, record)`` of the current record, or None when there is none. ``version`` is an
    opaque value that changes on every successful write (a sequence number, an ETag, a GCS
    generation).
``create(record)``
    Write the first record; raises :class:`Conflict` if any record exists.
``replace(version, record)``
    Write a new record only if the current one still has ``version``; raises :class:`Conflict`
    otherwise. Of two writers replacing the same version, exactly one succeeds.

None of them ever overwrites a record the caller has not seen: that is what makes a takeover
race and a heartbeat racing a takeover safe (the loser gets a Conflict, never a silent
overwrite).

Stores:

- :class:`LocalLeaseStore` (local or NFS paths): the lease is a directory of immutable files
  ``<seq>.json``; the record is the highest sequence number. A write prepares a temporary file
  and ``os.link``\\ s it to ``<seq + 1>.json``: link fails if the name exists, so of two writers of
  the same successor exactly one wins, and readers only ever see complete files. Old files are
  removed (all but the newest ``KEEP``); a writer that was so slow that its successor name had
  already been removed sees, when it lists again, that its file is not the newest and gives up.
- :class:`S3LeaseStore`: one object, PUT with ``If-None-Match: *`` (create) and ``If-Match:
  <etag>`` (replace) through boto3 (S3 has offered both since 2024). Every record carries a
  fresh ``write_id``, so two records never share an ETag (an ETag is the MD5 of the body).
- :class:`GcsLeaseStore`: one object, uploads with ``if_generation_match=0`` (create) and
  ``if_generation_match=<generation>`` (replace) through google-cloud-storage.
- :class:`core.kube_lease.KubernetesLeaseStore` (``kubernetes://<namespace>/<name>``): a
  ``coordination.k8s.io/v1`` Lease, POST (create) and PUT with ``metadata.resourceVersion``
  (replace); the controller's leader lease can live there (``controller.lease``).

:func:`read_record` reads the current record with what a Beam worker has (the pipeline options
of Beam's S3 file system, GCS default credentials): workers check the fencing token with it.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from typing import Optional

from core import storage
from core.errors import LeaseConflict, StorageError

KEEP = 8
"""Local store: how many of the newest record files are kept."""

_SEQ_RE = re.compile(r"^([0-9]{20})\.json$")


Conflict = LeaseConflict
"""The conditional write lost: the record exists (create) or changed (replace)."""


def _encode(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True).encode()


def _decode(data: bytes, where: str) -> dict:
    try:
        record = json.loads(data)
    except ValueError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("token"), int):
        raise StorageError(f"lease {where} holds something that is not a ctpipe lease record; it was written "
                           "by something else: stop every ctpipe process on this storage root, then remove it")
    return record


# --------------------------------------------------------------------------- local


class LocalLeaseStore:
    """A lease on a local (or NFS) file system: a directory of ``<seq>.json`` files."""

    def __init__(self, path: str):
        self.path = path

    def _seqs(self) -> list[int]:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            raise StorageError(f"{self.path} is a file, not a lease directory (a lock file of an older ctpipe); "
                               "stop every ctpipe process on this storage root, then remove it") from None
        return sorted(int(m.group(1)) for n in names if (m := _SEQ_RE.match(n)))

    def _file(self, seq: int) -> str:
        return os.path.join(self.path, f"{seq:020d}.json")

    def read(self) -> Optional[tuple[int, dict]]:
        while True:
            seqs = self._seqs()
            if not seqs:
                return None
            try:
                with open(self._file(seqs[-1]), "rb") as handle:
                    return seqs[-1], _decode(handle.read(), self._file(seqs[-1]))
            except FileNotFoundError:  # removed by a newer writer's clean-up: list again
                continue

    def create(self, record: dict) -> int:
        if self._seqs():
            raise Conflict(self.path)
        return self._link(1, record)

    def replace(self, version: int, record: dict) -> int:
        return self._link(int(version) + 1, record)

    def _link(self, seq: int, record: dict) -> int:
        os.makedirs(self.path, exist_ok=True)
        tmp = os.path.join(self.path, f".tmp-{uuid.uuid4().hex}")
        with open(tmp, "wb") as handle:
            handle.write(_encode(record))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, self._file(seq))  # fails if the name exists: one winner per successor
        except FileExistsError:
            raise Conflict(self._file(seq)) from None
        finally:
            os.unlink(tmp)
        seqs = self._seqs()
        if seqs[-1] != seq:
            # Our successor name had already been cleaned up after newer writes: we wrote a file
            # below the newest one, which nobody reads. Remove it and report the lost race.
            try:
                os.unlink(self._file(seq))
            except FileNotFoundError:
                pass
            raise Conflict(self._file(seq))
        for old in seqs[:-KEEP]:
            try:
                os.unlink(self._file(old))
            except FileNotFoundError:
                pass
        return seq


# --------------------------------------------------------------------------- S3


def _split(uri: str, scheme: str) -> tuple[str, str]:
    rest = uri[len(scheme):]
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        raise StorageError(f"{uri} does not name a bucket and an object")
    return bucket, key


def _beam_s3_client():
    """The boto3 client Beam's S3 file system would use (endpoint, keys, region from the pipeline
    options the CLI registered)."""
    from apache_beam.io.aws.clients.s3 import boto3_client
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    return boto3_client.Client(options=FileSystems._pipeline_options or PipelineOptions([])).client


class S3LeaseStore:
    """A lease on S3 (or an S3-compatible server): one object written with conditional PUTs."""

    def __init__(self, uri: str, client=None):
        self.uri = uri
        self.bucket, self.key = _split(uri, "s3://")
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = _beam_s3_client()
        return self._client

    @staticmethod
    def _code(exc) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    def read(self) -> Optional[tuple[str, dict]]:
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            if self._code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        return reply["ETag"], _decode(reply["Body"].read(), self.uri)

    def _put(self, record: dict, **condition) -> str:
        try:
            reply = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=_encode(record), **condition)
        except Exception as exc:
            # 412 PreconditionFailed: the condition is false; 409 ConditionalRequestConflict: a
            # concurrent conditional write to the same key is in progress (S3 lets one win).
            if self._code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409",
                                   "NoSuchKey", "404"):
                raise Conflict(self.uri) from exc
            raise
        return reply["ETag"]

    def create(self, record: dict) -> str:
        return self._put(record, IfNoneMatch="*")

    def replace(self, version: str, record: dict) -> str:
        return self._put(record, IfMatch=version)


# --------------------------------------------------------------------------- GCS


class GcsLeaseStore:
    """A lease on Google Cloud Storage: one object written with generation preconditions."""

    def __init__(self, uri: str, client=None):
        self.uri = uri
        self.bucket_name, self.name = _split(uri, "gs://")
        self._client = client

    @property
    def bucket(self):
        if self._client is None:
            from google.cloud import storage as gcs

            self._client = gcs.Client()
        return self._client.bucket(self.bucket_name)

    def read(self) -> Optional[tuple[int, dict]]:
        from google.api_core import exceptions

        while True:
            blob = self.bucket.get_blob(self.name)
            if blob is None:
                return None
            try:  # the generation read must be the one downloaded
                data = blob.download_as_bytes(if_generation_match=blob.generation)
            except (exceptions.PreconditionFailed, exceptions.NotFound):
                continue  # replaced or removed between the two calls: read again
            return int(blob.generation), _decode(data, self.uri)

    def _upload(self, record: dict, generation: int) -> int:
        from google.api_core import exceptions

        blob = self.bucket.blob(self.name)
        try:
            blob.upload_from_string(_encode(record), content_type="application/json",
                                    if_generation_match=generation)
        except exceptions.PreconditionFailed as exc:
            raise Conflict(self.uri) from exc
        return int(blob.generation)

    def create(self, record: dict) -> int:
        return self._upload(record, 0)  # generation 0: only if no live object exists

    def replace(self, version: int, record: dict) -> int:
        return self._upload(record, int(version))


# --------------------------------------------------------------------------- choosing, reading


def open_store(path: str):
    """The lease store for ``path``: a local directory, ``s3://bucket/key``, ``gs://bucket/key`` or a
    Kubernetes Lease, ``kubernetes://<namespace>/<name>`` (core/kube_lease.py)."""
    if path.startswith("kubernetes://"):
        from core.kube_lease import KubernetesLeaseStore

        return KubernetesLeaseStore(path)
    if storage.is_local(path):
        return LocalLeaseStore(path)
    if path.startswith("s3://"):
        return S3LeaseStore(path)
    if path.startswith("gs://"):
        return GcsLeaseStore(path)
    raise StorageError(f"no lease store for {path}: leases live on local paths, s3://, gs:// or kubernetes://")


_READERS: dict = {}


def read_record(path: str) -> Optional[dict]:
    """The current lease record at ``path``, for a fence check on a Beam worker: the store is
    built from what a worker has (the local path; for S3 the pipeline options Beam's S3 file system
    uses; for GCS the default credentials Beam's GCS file system uses) and kept per process."""
    store = _READERS.get(path)
    if store is None:
        store = _READERS[path] = open_store(path)
    found = store.read()
    return None if found is None else found[1]
