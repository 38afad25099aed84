"""The file backend: a registry on a local directory (plain ``os``), ``s3://`` or ``gs://`` (Beam).

Layout::

    <uri>/<model>/versions/<N>/       SavedModel files, metrics.json, lineage.json, blessing.json,
                                      CHECKSUMS.json, and COMMITTED.json (written last)
    <uri>/<model>/aliases/<alias>.json
    <uri>/<model>/.staging/<stamp>-<uuid>/   uploads in progress (or dead ones, see gc_incomplete)
    <uri>/<model>/.lock               the model lock of a local-filesystem registry (core.lock)

:class:`FileRegistry` documents the publication protocol. On object stores the registry talks
through Beam's file systems (training/registry/s3fs.py: on S3 one boto3 client per thread); a
local registry never imports Beam.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from typing import Callable, Iterator, Mapping

from core.errors import LockError, RegistryError
from core.lock import StorageLock
from core.storage import local_target
from training.registry.base import (
    BLESSING_FILE,
    COMMITTED_FILE,
    LINEAGE_FILE,
    METRICS_FILE,
    AliasState,
    Clock,
    ModelVersion,
    Registry,
    json_bytes,
    validate_model_name,
)
from training.registry.checksums import CHUNK_BYTES, local_tree

#: ``on_progress(event, path)``: ``("staged", relpath)`` after each uploaded file,
#: ``("published", version_dir)`` before the commit marker.
ProgressHook = Callable[[str, str], None]


def _extract_version_dir_number(name: str) -> int | None:
    return int(name) if name.isdigit() else None


_UNCOMPRESSED = "uncompressed"
"""Beam's CompressionTypes.UNCOMPRESSED, without importing Beam for local registries."""


class FileRegistry(Registry):
    """Registry on a local directory or an object store, through Beam's FileSystem classes.

    Publication protocol of :meth:`push`:

    1. Upload the SavedModel and the registry documents to ``<model>/.staging/<stamp>-<uuid>/``.
    2. Under the model lock, allocate ``N = 1 + max(version dirs)`` counting committed *and*
       partial version dirs (so a dead attempt's number is never reused), and move the staging
       dir to ``versions/<N>/`` (one atomic directory rename on a local filesystem; a
       server-side copy per object on object stores).
    3. Write ``versions/<N>/COMMITTED.json`` last (temp + rename locally; one PUT on object
       stores). Listing, get and fetch see only versions that have it.

    A push killed at any point leaves no visible version; :meth:`gc_incomplete` removes what
    it left.

    Cost: listing scans every object under ``<model>/versions/`` (one LIST page per 1,000
    objects on S3), and get/list read one COMMITTED.json per version.

    Concurrency: on a local (or NFS) filesystem pushes and alias moves are serialized by the
    project's one lease, :class:`core.lock.StorageLock`, at ``<model>/.lock`` (a lease directory):
    a lease whose holder process is dead on this host, or that a waiter saw unrenewed for its
    TTL, is taken over. Writers that hold the storage root's lease (``ctpipe train``) also fence
    the commit marker and alias moves with it (:meth:`Registry.fenced_by`). Object stores offer no such primitive through Beam: there, run one writer per
    model (the CT controller is a single leader) — two concurrent pushers could pick the same
    version number, and two concurrent alias moves race (last write wins). Readers are always
    safe: they see a version only after its COMMITTED.json, and an alias document is one object.
    """

    def __init__(self, uri: str, *, pipeline_options=None,
                 clock: Clock | None = None, user: str | None = None,
                 on_progress: ProgressHook | None = None, lock_timeout_s: float = 60.0):
        """Args:
          uri: registry root: a local path (``file://`` accepted), ``s3://bucket/prefix`` or
            ``gs://bucket/prefix``.
          pipeline_options: Beam options for the object store (``--s3_endpoint_url``,
            ``--s3_access_key_id``, ``--s3_secret_access_key``, ``--s3_region_name`` ...).
          clock, user: see :class:`Registry`.
          on_progress: called as ``on_progress(event, path)`` with ``("staged", relpath)`` after
            each uploaded file and ``("published", version_dir)`` before the commit marker.
          lock_timeout_s: how long a local push waits for another one to release the lock.
        """
        super().__init__(clock=clock, user=user)
        if uri.startswith("file://"):
            uri = uri[len("file://"):]
        self._local = "://" not in uri
        self._uri = os.path.abspath(os.path.expanduser(uri)) if self._local else uri.rstrip("/")
        if self._local:
            self._fs = None
        else:
            from training.registry.s3fs import filesystem_for

            self._fs = filesystem_for(self._uri, pipeline_options)
        self._on_progress = on_progress or (lambda event, path: None)
        self._lock_timeout_s = lock_timeout_s

    @property
    def uri(self) -> str:
        """The registry root."""
        return self._uri

    # -- paths
    def _join(self, base: str, *parts: str) -> str:
        return os.path.join(base, *parts) if self._local else self._fs.join(base, *parts)

    def _path(self, *parts: str) -> str:
        return self._join(self._uri, *parts)

    def _version_dir(self, model: str, version: int) -> str:
        return self._path(model, "versions", str(int(version)))

    # -- storage primitives
    def _write_bytes(self, path: str, data: bytes) -> None:
        """Writes one object; atomically (temp + rename) on a local filesystem."""
        if self._local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            with self._fs.create(path, compression_type=_UNCOMPRESSED) as f:
                f.write(data)

    def _read_bytes(self, path: str) -> bytes | None:
        """The object's bytes, None when it does not exist."""
        if self._local:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None
        if not self._fs.exists(path):
            return None
        with self._fs.open(path, compression_type=_UNCOMPRESSED) as f:
            return f.read()

    def _list_files(self, prefix: str) -> list[tuple[str, float]]:
        """(path relative to prefix, last-updated seconds) of every object under ``prefix``."""
        if self._local:
            if not os.path.isdir(prefix):
                return []
            files, _ = local_tree(prefix)
            return [(rel, os.path.getmtime(os.path.join(prefix, rel))) for rel in files]
        base = prefix.rstrip("/") + "/"
        result = self._fs.match([base + "**"])[0]
        return [(m.path[len(base):], m.last_updated_in_seconds) for m in result.metadata_list]

    def _upload(self, local_path: str, path: str) -> None:
        if self._local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.copyfile(local_path, path)
            return
        with open(local_path, "rb") as src, self._fs.create(path, compression_type=_UNCOMPRESSED) as dst:
            shutil.copyfileobj(src, dst, CHUNK_BYTES)

    def _download(self, path: str, local_path: str) -> None:
        os.makedirs(os.path.dirname(local_path), exist_ok=True)
        if self._local:
            shutil.copyfile(path, local_path)
            return
        with self._fs.open(path, compression_type=_UNCOMPRESSED) as src, open(local_path, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK_BYTES)

    def _delete_tree(self, prefix: str) -> None:
        if self._local:
            shutil.rmtree(prefix, ignore_errors=True)
            return
        paths = [self._join(prefix, rel) for rel, _ in self._list_files(prefix)]
        if paths:
            self._fs.delete(paths)

    def _move_tree(self, src: str, dst: str) -> None:
        if self._local:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.rename(src, dst)
            return
        rels = [rel for rel, _ in self._list_files(src)]
        self._fs.rename([self._join(src, r) for r in rels], [self._join(dst, r) for r in rels])

    @contextlib.contextmanager
    def _model_lock(self, model: str) -> Iterator[StorageLock | None]:
        """Holds ``<model>/.lock`` on a local filesystem, waiting up to ``lock_timeout_s`` for it;
        yields the lock (None on object stores, which have no lock: see the class docstring)."""
        if not self._local:
            yield None
            return
        lock = StorageLock(self._path(model), "model", path=self._path(model, ".lock"))
        try:
            lock.acquire(timeout_s=self._lock_timeout_s)
        except LockError:
            holder = {k: v for k, v in (lock.owner() or {}).items() if k in ("pid", "host")}
            raise RegistryError(
                f"lock {lock.path!r} is still held after {self._lock_timeout_s:.0f} s "
                f"(holder: {holder}); wait for that push to finish (a holder that died is taken over "
                f"once its lease went {lock.ttl_s:.0f} s without renewal)") from None
        try:
            yield lock
        finally:
            lock.release()

    _alias_lock = _model_lock

    def _version_dirs(self, model: str) -> dict[int, bool]:
        """Every version dir (committed or partial) -> whether it holds COMMITTED.json."""
        dirs: dict[int, bool] = {}
        for rel, _ in self._list_files(self._path(model, "versions")):
            head, _, tail = rel.partition("/")
            n = _extract_version_dir_number(head)
            if n is not None:
                dirs[n] = dirs.get(n, False) or tail == COMMITTED_FILE
        if self._local:  # a renamed-in but empty or file-less dir still claims its number
            root = self._path(model, "versions")
            for name in os.listdir(root) if os.path.isdir(root) else ():
                n = _extract_version_dir_number(name)
                if n is not None:
                    dirs.setdefault(n, False)
        return dirs

    # -- versions
    def push(self, model: str, local_dir: str, *, metrics: dict, lineage: dict,
             blessing: dict) -> ModelVersion:
        """See :meth:`Registry.push` and the class docstring for the publication protocol."""
        payload = self._prepare_push(model, local_dir, metrics, lineage, blessing)
        stamp = payload.created_at.replace("-", "").replace(":", "").replace(".", "")
        staging = self._path(model, ".staging", f"{stamp}-{uuid.uuid4().hex}")
        for rel in payload.files:
            self._upload(os.path.join(payload.local_dir, rel), self._join(staging, rel))
            self._on_progress("staged", rel)
        for name, data in payload.docs.items():
            self._write_bytes(self._join(staging, name), data)
            self._on_progress("staged", name)
        with self._model_lock(model) as lock:
            version = 1 + max(self._version_dirs(model), default=0)
            vdir = self._version_dir(model, version)
            self._move_tree(staging, vdir)
            self._on_progress("published", vdir)
            committed = {"model": model, "version": version, "created_at": payload.created_at,
                         "by": payload.by, "checksums_sha256": payload.checksums_sha256,
                         "metrics": json.loads(payload.docs[METRICS_FILE]),
                         "lineage": json.loads(payload.docs[LINEAGE_FILE]),
                         "blessing": json.loads(payload.docs[BLESSING_FILE])}
            if lock is not None:
                lock.check()  # taken over while this process stalled: leave the version uncommitted
            self._check_fence(f"model {model!r} version {version}")
            self._write_bytes(self._join(vdir, COMMITTED_FILE),
                              json_bytes(committed, COMMITTED_FILE))
        return self._to_model_version(committed, self.aliases(model))

    def _committed(self, model: str, version: int) -> dict | None:
        data = self._read_bytes(self._join(self._version_dir(model, version), COMMITTED_FILE))
        return None if data is None else json.loads(data)

    def _to_model_version(self, doc: dict, aliases: Mapping[str, int]) -> ModelVersion:
        version = int(doc["version"])
        return ModelVersion(
            model=doc["model"], version=version,
            uri=self._version_dir(doc["model"], version), created_at=doc["created_at"],
            metrics=doc["metrics"], lineage=doc["lineage"], blessing=doc["blessing"],
            aliases=tuple(sorted(a for a, v in aliases.items() if v == version)))

    def list_versions(self, model: str) -> list[ModelVersion]:
        """See :meth:`Registry.list_versions`."""
        validate_model_name(model)
        aliases = self.aliases(model)
        out = []
        for n, committed in sorted(self._version_dirs(model).items()):
            doc = self._committed(model, n) if committed else None
            if doc is not None:
                out.append(self._to_model_version(doc, aliases))
        return out

    def get(self, model: str, version: int) -> ModelVersion:
        """See :meth:`Registry.get`."""
        validate_model_name(model)
        doc = self._committed(model, version)
        if doc is None:
            known = [n for n, c in sorted(self._version_dirs(model).items()) if c]
            raise RegistryError(f"model {model!r} has no committed version {version!r} in "
                                f"{self._uri!r}; committed versions: {known}")
        return self._to_model_version(doc, self.aliases(model))

    def fetch(self, model: str, version: int, dest_dir: str) -> str:
        """See :meth:`Registry.fetch`."""
        mv = self.get(model, version)
        dest, tmp = self._fetch_target(dest_dir)
        try:
            for rel, _ in self._list_files(mv.uri):
                if rel != COMMITTED_FILE:
                    self._download(self._join(mv.uri, rel), local_target(tmp, rel))
            os.makedirs(tmp, exist_ok=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        committed = self._committed(model, version) or {}
        return self._finish_fetch(tmp, dest, model=model, version=mv.version,
                                  checksums_sha256=committed.get("checksums_sha256"))

    def gc_incomplete(self, model: str, *, min_age_s: float = 3600.0) -> list[str]:
        """Removes leftovers of dead pushes: staging dirs and uncommitted version dirs.

        On a local filesystem this runs under the model lock, so an uncommitted version dir is
        certainly dead and goes regardless of age. Staging dirs (and, on object stores, partial
        version dirs) go only once their newest file is ``min_age_s`` old, so a push still
        uploading is left alone.

        Returns:
          The removed directories.
        """
        validate_model_name(model)
        removed = []
        now = time.time()
        with self._model_lock(model):
            staging_root = self._path(model, ".staging")
            newest: dict[str, float] = {}
            for rel, mtime in self._list_files(staging_root):
                head = rel.partition("/")[0]
                newest[head] = max(newest.get(head, 0.0), mtime)
            if self._local and os.path.isdir(staging_root):
                for name in os.listdir(staging_root):
                    newest.setdefault(name, os.path.getmtime(os.path.join(staging_root, name)))
            for name, mtime in sorted(newest.items()):
                if now - mtime >= min_age_s:
                    self._delete_tree(self._join(staging_root, name))
                    removed.append(self._join(staging_root, name))
            versions_root = self._path(model, "versions")
            vnewest: dict[int, float] = {}
            for rel, mtime in self._list_files(versions_root):
                n = _extract_version_dir_number(rel.partition("/")[0])
                if n is not None:
                    vnewest[n] = max(vnewest.get(n, 0.0), mtime)
            for n, committed in sorted(self._version_dirs(model).items()):
                if committed or (not self._local and now - vnewest.get(n, now) < min_age_s):
                    continue
                self._delete_tree(self._version_dir(model, n))
                removed.append(self._version_dir(model, n))
        return removed

    # -- aliases
    def _alias_path(self, model: str, alias: str) -> str:
        return self._path(model, "aliases", f"{alias}.json")

    def _read_alias(self, model: str, alias: str) -> AliasState | None:
        data = self._read_bytes(self._alias_path(model, alias))
        return None if data is None else AliasState.from_json(json.loads(data))

    def _write_alias(self, model: str, alias: str, state: AliasState) -> None:
        self._write_bytes(self._alias_path(model, alias),
                          json_bytes(state.to_json(), f"alias {alias!r}"))

    def aliases(self, model: str) -> dict[str, int]:
        """See :meth:`Registry.aliases`."""
        validate_model_name(model)
        out = {}
        for rel, _ in self._list_files(self._path(model, "aliases")):
            if "/" in rel or not rel.endswith(".json"):
                continue
            state = self._read_alias(model, rel[:-len(".json")])
            if state is not None:
                out[rel[:-len(".json")]] = state.version
        return dict(sorted(out.items()))
