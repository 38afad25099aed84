"""Model registry: versioned SavedModels with metrics, lineage, blessing, checksums and aliases.

A *model version* is a directory holding a TF SavedModel written by the trainer, plus four
documents the registry stores beside it:

``metrics.json``, ``lineage.json``, ``blessing.json``
    The dicts given to :meth:`Registry.push`. ``blessing`` must carry a boolean ``blessed``.
``CHECKSUMS.json``
    ``{"algorithm": "sha256", "files": {relpath: {"sha256": ..., "bytes": ...}}, "dirs": [...]}``
    over every file of the version (the SavedModel files and the three documents above),
    computed by the registry at push time. :meth:`Registry.fetch` verifies every entry.

Aliases (``production``, ``candidate`` ...) name one version each. Every alias keeps a history
stack of the moves still in effect (``{version, at, by, reason}``, newest last);
:meth:`Registry.rollback` pops it back to the most recent earlier *blessed* version, and records
the rollback in a separate ``rollbacks`` log.

Backends: :class:`FileRegistry` (local paths, ``s3://``, ``gs://`` through Beam's FileSystem
classes) in this module, :class:`training.mlflow_registry.MlflowRegistry` (MLflow Model Registry).
:func:`open_registry` picks one from a URI.

File layout of :class:`FileRegistry`::

    <uri>/<model>/versions/<N>/       SavedModel files, metrics.json, lineage.json, blessing.json,
                                      CHECKSUMS.json, and COMMITTED.json (written last)
    <uri>/<model>/aliases/<alias>.json
    <uri>/<model>/.staging/<stamp>-<uuid>/   uploads in progress (or dead ones, see gc_incomplete)
    <uri>/<model>/.lock               O_EXCL lock file of a local-filesystem registry
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime
import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from typing import Any, Callable, Mapping

from apache_beam.io.aws import s3io
from apache_beam.io.aws.clients.s3 import boto3_client
from apache_beam.io.aws.s3filesystem import S3FileSystem
from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from core.errors import ConfigError, IntegrityError, RegistryError

METRICS_FILE = "metrics.json"
LINEAGE_FILE = "lineage.json"
BLESSING_FILE = "blessing.json"
CHECKSUMS_FILE = "CHECKSUMS.json"
COMMITTED_FILE = "COMMITTED.json"
#: Names the registry writes itself; a pushed SavedModel directory must not contain them.
RESERVED_FILES = frozenset({METRICS_FILE, LINEAGE_FILE, BLESSING_FILE, CHECKSUMS_FILE,
                            COMMITTED_FILE})
DEFAULT_ALIAS = "production"
#: Oldest entries beyond this many are dropped from an alias history / rollback log.
MAX_ALIAS_HISTORY = 500

_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# MLflow reserves "latest" and "v<digits>" as alias names; both backends apply the same rule.
_ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_RESERVED_ALIAS_RE = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)
_CHUNK = 8 << 20

Clock = Callable[[], datetime.datetime]
ProgressHook = Callable[[str, str], None]


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One committed model version as the registry sees it.

    Attributes:
      model: registered model name.
      version: integer version, 1-based, assigned by the registry.
      uri: where the version lives (a directory URI, or ``models:/<model>/<version>``).
      created_at: push time, ISO 8601 UTC (``2026-11-27T01:30:00.000Z``).
      metrics: the ``metrics.json`` document.
      lineage: the ``lineage.json`` document (windows, transform fingerprint, code version...).
      blessing: the ``blessing.json`` document; ``blessing["blessed"]`` is a bool.
      aliases: names of the aliases pointing at this version when it was read, sorted.
    """

    model: str
    version: int
    uri: str
    created_at: str
    metrics: dict
    lineage: dict
    blessing: dict
    aliases: tuple[str, ...] = ()

    @property
    def blessed(self) -> bool:
        """Whether the evaluation gate blessed this version."""
        return is_blessed(self.blessing)


@dataclasses.dataclass(frozen=True)
class AliasState:
    """What a backend stores for one alias.

    Attributes:
      version: the version the alias points at now.
      history: stack of moves still in effect, oldest first; the last entry is the current one.
        Each entry is ``{"version": int, "at": iso, "by": str, "reason": str}``.
      rollbacks: log of rollbacks, ``{"from", "to", "at", "by", "reason"}``, oldest first.
    """

    version: int
    history: tuple[dict, ...]
    rollbacks: tuple[dict, ...] = ()

    def to_json(self) -> dict:
        """The JSON document a backend stores."""
        return {"version": self.version, "history": list(self.history),
                "rollbacks": list(self.rollbacks)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "AliasState":
        """Inverse of :meth:`to_json`."""
        return cls(version=int(doc["version"]), history=tuple(doc.get("history", ())),
                   rollbacks=tuple(doc.get("rollbacks", ())))


# --------------------------------------------------------------------------------------------
# Validation and documents shared by every backend.


def is_blessed(blessing: Mapping[str, Any]) -> bool:
    """True when a blessing document says ``"blessed": true``."""
    return blessing.get("blessed") is True


def validate_model_name(model: str) -> str:
    """Returns ``model`` or raises ConfigError naming the bad name."""
    if not isinstance(model, str) or not _MODEL_NAME_RE.match(model):
        raise ConfigError(
            f"model name {model!r} is invalid: use 1-128 characters from [A-Za-z0-9._-], "
            "starting with a letter or digit")
    return model


def validate_alias(alias: str) -> str:
    """Returns ``alias`` or raises ConfigError naming the bad alias."""
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias) or _RESERVED_ALIAS_RE.match(alias):
        raise ConfigError(
            f"alias {alias!r} is invalid: use a letter then up to 63 of [A-Za-z0-9_-]; "
            "'latest' and 'v<number>' are reserved")
    return alias


def _json_bytes(obj: Any, what: str) -> bytes:
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise RegistryError(f"{what} is not JSON-serializable ({e}); pass plain dicts of "
                            "str/int/float/bool/list/dict values, no NaN") from e
    return text.encode("utf-8") + b"\n"


def _utc_iso(clock: Clock) -> str:
    now = clock().astimezone(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid-{os.getuid()}"


def sha256_file(path: str) -> tuple[str, int]:
    """sha256 hex digest and size in bytes of a local file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def local_tree(root: str) -> tuple[list[str], list[str]]:
    """(files, dirs) under a local directory as sorted POSIX relative paths."""
    files, dirs = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for d in dirnames:
            dirs.append(os.path.normpath(os.path.join(rel_dir, d)).replace(os.sep, "/"))
        for f in filenames:
            files.append(os.path.normpath(os.path.join(rel_dir, f)).replace(os.sep, "/"))
    return sorted(files), sorted(dirs)


def checksums_document(root: str, extra: Mapping[str, bytes] = {}) -> dict:
    """The CHECKSUMS.json document of a local directory plus in-memory ``extra`` files."""
    files, dirs = local_tree(root)
    entries = {}
    for rel in files:
        digest, size = sha256_file(os.path.join(root, rel))
        entries[rel] = {"sha256": digest, "bytes": size}
    for rel, data in extra.items():
        entries[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return {"algorithm": "sha256", "files": dict(sorted(entries.items())), "dirs": dirs}


def verify_version_dir(root: str, *, model: str, version: int,
                       checksums_sha256: str | None) -> None:
    """Verifies a fetched copy of a version against its CHECKSUMS.json.

    Args:
      root: local directory holding the fetched files.
      model, version: for the messages.
      checksums_sha256: the sha256 of CHECKSUMS.json recorded at commit time (catches a
        CHECKSUMS.json rewritten to match tampered files); None skips that check.

    Raises:
      IntegrityError: naming the first changed, missing or extra file.
    """
    fix = (f"model {model!r} version {version} was tampered with or is corrupt; re-push the "
           f"model, or move its aliases to another version (rollback / set_alias)")
    path = os.path.join(root, CHECKSUMS_FILE)
    if not os.path.isfile(path):
        raise IntegrityError(f"{CHECKSUMS_FILE} is missing: {fix}")
    if checksums_sha256 is not None and sha256_file(path)[0] != checksums_sha256:
        raise IntegrityError(f"{CHECKSUMS_FILE} does not match the digest recorded at commit "
                             f"({checksums_sha256}): {fix}")
    with open(path, "rb") as f:
        try:
            expected = json.load(f)["files"]
        except (ValueError, KeyError) as e:
            raise IntegrityError(f"{CHECKSUMS_FILE} is unreadable ({e}): {fix}") from e
    actual, _ = local_tree(root)
    actual = [rel for rel in actual if rel != CHECKSUMS_FILE]
    for rel in sorted(set(expected) - set(actual)):
        raise IntegrityError(f"file {rel!r} is missing: {fix}")
    for rel in sorted(set(actual) - set(expected)):
        raise IntegrityError(f"file {rel!r} is not listed in {CHECKSUMS_FILE} (extra file): {fix}")
    for rel in actual:
        digest, size = sha256_file(os.path.join(root, rel))
        want = expected[rel]
        if digest != want["sha256"] or size != want["bytes"]:
            raise IntegrityError(
                f"file {rel!r} has sha256 {digest} ({size} bytes), expected {want['sha256']} "
                f"({want['bytes']} bytes): {fix}")


@dataclasses.dataclass(frozen=True)
class PushPayload:
    """A validated push, ready for a backend to upload.

    Attributes:
      local_dir: absolute path of the SavedModel directory.
      files: SavedModel files as POSIX paths relative to ``local_dir``.
      docs: registry documents (metrics/lineage/blessing/CHECKSUMS) by file name.
      checksums_sha256: sha256 of ``docs[CHECKSUMS_FILE]``.
      created_at: ISO UTC push time.
      by: who pushed.
    """

    local_dir: str
    files: tuple[str, ...]
    docs: Mapping[str, bytes]
    checksums_sha256: str
    created_at: str
    by: str


def _extract_version_dir_number(name: str) -> int | None:
    return int(name) if name.isdigit() else None


# --------------------------------------------------------------------------------------------
# The interface.


class Registry(abc.ABC):
    """Versioned model store with checksummed fetch and movable, rollback-able aliases.

    Backends implement push/list_versions/get/fetch and three alias primitives; the alias
    semantics (history, promote, rollback) live here once.
    """

    def __init__(self, *, clock: Clock | None = None, user: str | None = None):
        """Args:
          clock: returns the current time (aware datetime); injected by tests.
          user: recorded as ``by`` in alias moves when a call does not give one.
        """
        self._clock = clock or (lambda: datetime.datetime.now(datetime.timezone.utc))
        self._user = user or _default_user()

    # -- abstract: versions
    @abc.abstractmethod
    def push(self, model: str, local_dir: str, *, metrics: dict, lineage: dict,
             blessing: dict) -> ModelVersion:
        """Stores a SavedModel directory as the next version of ``model``.

        Raises:
          RegistryError: ``local_dir`` is not a SavedModel directory, contains a reserved file
            name, or a document is not JSON; ConfigError: bad model name.
        """

    @abc.abstractmethod
    def list_versions(self, model: str) -> list[ModelVersion]:
        """Committed versions of ``model``, oldest first; [] for an unknown model."""

    @abc.abstractmethod
    def get(self, model: str, version: int) -> ModelVersion:
        """One committed version. Raises RegistryError naming the known versions."""

    @abc.abstractmethod
    def fetch(self, model: str, version: int, dest_dir: str) -> str:
        """Copies a version to the local ``dest_dir`` (absent or empty) and verifies it.

        The copy is made beside ``dest_dir`` and renamed into place only once every sha256
        in CHECKSUMS.json matched, so a failed fetch leaves nothing loadable behind.

        Returns:
          The absolute path of ``dest_dir``.
        Raises:
          IntegrityError: a changed, missing or extra file.
        """

    # -- abstract: alias storage
    @abc.abstractmethod
    def _read_alias(self, model: str, alias: str) -> AliasState | None:
        """The stored state of one alias, None when unset."""

    @abc.abstractmethod
    def _write_alias(self, model: str, alias: str, state: AliasState) -> None:
        """Replaces the state of one alias in a single atomic write."""

    @abc.abstractmethod
    def aliases(self, model: str) -> dict[str, int]:
        """Every alias of ``model`` and the version it points at."""

    def _alias_lock(self, model: str) -> contextlib.AbstractContextManager:
        """Serializes alias read-modify-writes where the backend can; no-op by default."""
        return contextlib.nullcontext()

    # -- shared behaviour
    def get_alias(self, model: str, alias: str) -> int | None:
        """The version ``alias`` points at, None when unset."""
        state = self._read_alias(validate_model_name(model), validate_alias(alias))
        return None if state is None else state.version

    def alias_history(self, model: str, alias: str) -> list[dict]:
        """The alias's moves still in effect, oldest first: ``{version, at, by, reason}``."""
        state = self._read_alias(validate_model_name(model), validate_alias(alias))
        return [] if state is None else [dict(e) for e in state.history]

    def set_alias(self, model: str, alias: str, version: int, *, by: str | None = None,
                  reason: str = "") -> None:
        """Points ``alias`` at ``version`` (which must exist) and records the move.

        Pointing an alias at the version it already names is a no-op (no history entry).
        Unlike :meth:`promote`, this does not look at the blessing.
        """
        validate_model_name(model)
        validate_alias(alias)
        self.get(model, version)
        with self._alias_lock(model):
            state = self._read_alias(model, alias)
            if state is not None and state.version == int(version):
                return
            entry = {"version": int(version), "at": _utc_iso(self._clock),
                     "by": by or self._user, "reason": reason}
            history = (state.history if state else ()) + (entry,)
            self._write_alias(model, alias, AliasState(
                version=int(version), history=history[-MAX_ALIAS_HISTORY:],
                rollbacks=state.rollbacks if state else ()))

    def promote(self, model: str, version: int, alias: str = DEFAULT_ALIAS, *,
                force: bool = False, by: str | None = None, reason: str = "") -> None:
        """Points ``alias`` at a blessed version.

        Raises:
          RegistryError: the version's blessing.json says not blessed and ``force`` is False.
        """
        mv = self.get(model, version)
        if not mv.blessed and not force:
            raise RegistryError(
                f"model {model!r} version {version} is not blessed (blessing.json: "
                f"{json.dumps(mv.blessing, sort_keys=True)}); refusing to point alias {alias!r} "
                "at it. Promote a blessed version, or pass force=True to override the gate")
        self.set_alias(model, alias, version, by=by,
                       reason=reason or ("promote (forced)" if force and not mv.blessed
                                         else "promote"))

    def rollback(self, model: str, alias: str = DEFAULT_ALIAS, *, by: str | None = None,
                 reason: str = "") -> int:
        """Moves ``alias`` back to the most recent earlier blessed version it pointed at.

        The history stack is popped to that entry; the rollback is logged in ``rollbacks``.

        Returns:
          The version the alias points at now.
        Raises:
          RegistryError: the alias is unset or its history holds no earlier blessed version.
        """
        validate_model_name(model)
        validate_alias(alias)
        with self._alias_lock(model):
            state = self._read_alias(model, alias)
            if state is None:
                raise RegistryError(
                    f"alias {alias!r} of model {model!r} is not set, so there is nothing to roll "
                    f"back; promote a version first (promote({model!r}, <version>))")
            known = {mv.version: mv for mv in self.list_versions(model)}
            for i in range(len(state.history) - 2, -1, -1):
                v = int(state.history[i]["version"])
                if v != state.version and v in known and known[v].blessed:
                    break
            else:
                seen = [int(e["version"]) for e in state.history]
                raise RegistryError(
                    f"cannot roll back alias {alias!r} of model {model!r}: it points at version "
                    f"{state.version} and its history {seen} holds no earlier blessed version; "
                    "point it at a known-good version explicitly (`ctpipe registry promote VERSION`, or promote() in Python)")
            log = {"from": state.version, "to": v, "at": _utc_iso(self._clock),
                   "by": by or self._user, "reason": reason or "rollback"}
            self._write_alias(model, alias, AliasState(
                version=v, history=state.history[:i + 1],
                rollbacks=(state.rollbacks + (log,))[-MAX_ALIAS_HISTORY:]))
            return v

    # -- helpers for backends
    def _prepare_push(self, model: str, local_dir: str, metrics: dict, lineage: dict,
                      blessing: dict) -> PushPayload:
        """Validates a push and computes its documents and checksums."""
        validate_model_name(model)
        local_dir = os.path.abspath(local_dir)
        if not os.path.isdir(local_dir):
            raise RegistryError(f"local_dir {local_dir!r} is not a directory; pass the "
                                "directory tf.saved_model.save wrote")
        if not any(os.path.isfile(os.path.join(local_dir, n))
                   for n in ("saved_model.pb", "saved_model.pbtxt")):
            raise RegistryError(f"local_dir {local_dir!r} holds no saved_model.pb; pass the "
                                "directory tf.saved_model.save wrote")
        for name, doc in ((METRICS_FILE, metrics), (LINEAGE_FILE, lineage),
                          (BLESSING_FILE, blessing)):
            if not isinstance(doc, dict):
                raise RegistryError(f"{name} must be a dict, got {type(doc).__name__}")
        if not isinstance(blessing.get("blessed"), bool):
            raise RegistryError(f"blessing {blessing!r} has no boolean 'blessed' key; pass the "
                                "evaluation gate's verdict, e.g. {'blessed': True, ...}")
        files, _ = local_tree(local_dir)
        clash = sorted(set(files) & RESERVED_FILES)
        if clash:
            raise RegistryError(f"local_dir {local_dir!r} contains {clash}, which the registry "
                                "writes itself; remove them from the SavedModel directory")
        docs = {METRICS_FILE: _json_bytes(metrics, "metrics"),
                LINEAGE_FILE: _json_bytes(lineage, "lineage"),
                BLESSING_FILE: _json_bytes(blessing, "blessing")}
        checksums = _json_bytes(checksums_document(local_dir, docs), CHECKSUMS_FILE)
        docs[CHECKSUMS_FILE] = checksums
        return PushPayload(local_dir=local_dir, files=tuple(files), docs=docs,
                           checksums_sha256=hashlib.sha256(checksums).hexdigest(),
                           created_at=_utc_iso(self._clock), by=self._user)

    @staticmethod
    def _fetch_target(dest_dir: str) -> tuple[str, str]:
        """(absolute dest_dir, a fresh sibling temp dir) after checking dest_dir is usable."""
        dest = os.path.abspath(dest_dir)
        if os.path.exists(dest) and (not os.path.isdir(dest) or os.listdir(dest)):
            raise RegistryError(f"dest_dir {dest!r} exists and is not an empty directory; "
                                "fetch into a new or empty directory")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        return dest, f"{dest}.partial-{uuid.uuid4().hex}"

    @staticmethod
    def _finish_fetch(tmp: str, dest: str, *, model: str, version: int,
                      checksums_sha256: str | None) -> str:
        """Verifies ``tmp``, recreates empty dirs, renames it to ``dest``; removes it on error."""
        try:
            verify_version_dir(tmp, model=model, version=version,
                               checksums_sha256=checksums_sha256)
            with open(os.path.join(tmp, CHECKSUMS_FILE), "rb") as f:
                for rel in json.load(f).get("dirs", ()):
                    os.makedirs(os.path.join(tmp, rel), exist_ok=True)
            if os.path.isdir(dest):
                os.rmdir(dest)
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest


# --------------------------------------------------------------------------------------------
# File / object-store backend.


class _SharedClientS3FileSystem(S3FileSystem):
    """Beam's S3FileSystem with one boto3 client per thread instead of one per call.

    Beam 2.68's S3FileSystem builds a fresh boto3 session and client (about 0.5 s of botocore
    model loading on a small machine) inside every call; a registry operation makes a dozen
    calls. This subclass routes the calls the registry makes (list, open/create, exists,
    rename, delete) through a per-thread ``S3IO`` built once; everything else is Beam's.
    """

    def __init__(self, pipeline_options):
        super().__init__(pipeline_options)
        self._local_io = threading.local()

    @classmethod
    def scheme(cls):
        """Not a second handler of s3://: Beam's FileSystems looks file systems up by scheme
        among all subclasses and refuses a scheme with two; the registry builds this one itself."""
        return "ctpipe-registry-s3"

    def _io(self) -> s3io.S3IO:
        io = getattr(self._local_io, "io", None)
        if io is None:
            io = self._local_io.io = s3io.S3IO(client=boto3_client.Client(options=self._options))
        return io

    def _list(self, dir_or_prefix):
        try:
            for path, (size, updated) in self._io().list_files(dir_or_prefix,
                                                               with_metadata=True):
                yield FileMetadata(path, size, updated)
        except Exception as e:  # Beam's contract: listing errors surface as BeamIOError
            raise BeamIOError("List operation failed", {dir_or_prefix: e}) from e

    def _path_open(self, path, mode, mime_type="application/octet-stream",
                   compression_type=CompressionTypes.AUTO):
        if FileSystem._get_compression_type(path, compression_type) != \
                CompressionTypes.UNCOMPRESSED:
            return super()._path_open(path, mode, mime_type, compression_type)
        return self._io().open(path, mode, mime_type=mime_type)

    def exists(self, path):
        try:
            return self._io().exists(path)
        except Exception as e:  # Beam's contract: errors surface as BeamIOError
            raise BeamIOError("exists() operation failed", {path: e}) from e

    def rename(self, source_file_names, destination_file_names):
        results = self._io().rename_files(list(zip(source_file_names, destination_file_names)))
        failed = {(src, dst): err for src, dst, err in results if err is not None}
        if failed:
            raise BeamIOError("Rename operation failed", failed)

    def delete(self, paths):
        failed = {p: err for p, err in self._io().delete_paths(paths).items() if err is not None}
        if failed:
            raise BeamIOError("Delete operation failed", failed)


def _filesystem_for(uri: str, pipeline_options: PipelineOptions | None) -> FileSystem:
    """The Beam FileSystem serving ``uri``, constructed with ``pipeline_options``.

    ``FileSystems.get_filesystem`` takes its options from process-global state; constructing the
    class directly keeps a registry's S3/GCS endpoint and credentials its own.
    """
    scheme = FileSystems.get_scheme(uri)
    if scheme == "s3":
        return _SharedClientS3FileSystem(pipeline_options or PipelineOptions([]))
    classes = [c for c in FileSystem.get_all_subclasses() if c.scheme() == scheme]
    if len(classes) != 1:
        raise ConfigError(f"registry uri {uri!r}: no single Beam filesystem for scheme "
                          f"{scheme!r} (found {len(classes)}); use a local path, s3:// or gs://")
    return classes[0](pipeline_options=pipeline_options or PipelineOptions([]))


class _LocalLock:
    """An O_EXCL lock file; a lock left by a dead process on this host is broken."""

    def __init__(self, path: str, timeout_s: float):
        self._path = path
        self._timeout_s = timeout_s

    def __enter__(self) -> "_LocalLock":
        os.makedirs(os.path.dirname(self._path), exist_ok=True)
        deadline = time.monotonic() + self._timeout_s
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        while True:
            try:
                fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._break_if_stale():
                    continue
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"lock {self._path!r} is still held after {self._timeout_s:.0f} s "
                        f"(holder: {self._holder()}); wait for that push to finish, or delete "
                        "the file if no process is using the registry") from None
                time.sleep(0.05)  # back-off between attempts on a held lock
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(me)
            return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)

    def _holder(self) -> dict:
        try:
            with open(self._path, "rb") as f:
                return json.loads(f.read() or b"{}")
        except (OSError, ValueError):
            return {}

    def _break_if_stale(self) -> bool:
        holder = self._holder()
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False
        try:
            os.kill(holder["pid"], 0)
            return False
        except ProcessLookupError:
            pass
        except PermissionError:
            return False
        stale = f"{self._path}.stale-{uuid.uuid4().hex}"
        try:
            os.rename(self._path, stale)
        except FileNotFoundError:
            return True
        os.unlink(stale)
        return True


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

    Concurrency: on a local (or NFS) filesystem pushes and alias moves are serialized by an
    O_EXCL lock file ``<model>/.lock``; a lock whose holder process is dead on this host is
    broken. Object stores offer no such primitive through Beam: there, run one writer per
    model (the CT controller is a single leader) — two concurrent pushers could pick the same
    version number, and two concurrent alias moves race (last write wins). Readers are always
    safe: they see a version only after its COMMITTED.json, and an alias document is one object.
    """

    def __init__(self, uri: str, *, pipeline_options: PipelineOptions | None = None,
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
        self._local = FileSystems.get_scheme(uri) is None
        self._uri = os.path.abspath(os.path.expanduser(uri)) if self._local else uri.rstrip("/")
        self._fs = _filesystem_for(self._uri, pipeline_options)
        self._on_progress = on_progress or (lambda event, path: None)
        self._lock_timeout_s = lock_timeout_s

    @property
    def uri(self) -> str:
        """The registry root."""
        return self._uri

    # -- paths
    def _path(self, *parts: str) -> str:
        return self._fs.join(self._uri, *parts)

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
            with self._fs.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
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
        with self._fs.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
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
        with open(local_path, "rb") as src, self._fs.create(
                path, compression_type=CompressionTypes.UNCOMPRESSED) as dst:
            shutil.copyfileobj(src, dst, _CHUNK)

    def _download(self, path: str, local_path: str) -> None:
        os.makedirs(os.path.dirname(local_path), exist_ok=True)
        with self._fs.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src, \
                open(local_path, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)

    def _delete_tree(self, prefix: str) -> None:
        if self._local:
            shutil.rmtree(prefix, ignore_errors=True)
            return
        paths = [self._fs.join(prefix, rel) for rel, _ in self._list_files(prefix)]
        if paths:
            self._fs.delete(paths)

    def _move_tree(self, src: str, dst: str) -> None:
        if self._local:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.rename(src, dst)
            return
        rels = [rel for rel, _ in self._list_files(src)]
        self._fs.rename([self._fs.join(src, r) for r in rels], [self._fs.join(dst, r) for r in rels])

    def _model_lock(self, model: str) -> contextlib.AbstractContextManager:
        if not self._local:
            return contextlib.nullcontext()
        return _LocalLock(self._path(model, ".lock"), self._lock_timeout_s)

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
            self._upload(os.path.join(payload.local_dir, rel), self._fs.join(staging, rel))
            self._on_progress("staged", rel)
        for name, data in payload.docs.items():
            self._write_bytes(self._fs.join(staging, name), data)
            self._on_progress("staged", name)
        with self._model_lock(model):
            version = 1 + max(self._version_dirs(model), default=0)
            vdir = self._version_dir(model, version)
            self._move_tree(staging, vdir)
            self._on_progress("published", vdir)
            committed = {"model": model, "version": version, "created_at": payload.created_at,
                         "by": payload.by, "checksums_sha256": payload.checksums_sha256,
                         "metrics": json.loads(payload.docs[METRICS_FILE]),
                         "lineage": json.loads(payload.docs[LINEAGE_FILE]),
                         "blessing": json.loads(payload.docs[BLESSING_FILE])}
            self._write_bytes(self._fs.join(vdir, COMMITTED_FILE),
                              _json_bytes(committed, COMMITTED_FILE))
        return self._to_model_version(committed, self.aliases(model))

    def _committed(self, model: str, version: int) -> dict | None:
        data = self._read_bytes(self._fs.join(self._version_dir(model, version), COMMITTED_FILE))
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
                    self._download(self._fs.join(mv.uri, rel), os.path.join(tmp, rel))
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
                    self._delete_tree(self._fs.join(staging_root, name))
                    removed.append(self._fs.join(staging_root, name))
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
                          _json_bytes(state.to_json(), f"alias {alias!r}"))

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


def open_registry(uri: str, **kw: Any) -> Registry:
    """Opens the registry a URI names.

    ``mlflow+http://host:port`` / ``mlflow+https://...`` or ``mlflow:<tracking uri>`` open an
    :class:`training.mlflow_registry.MlflowRegistry`; anything else (local path, ``s3://``,
    ``gs://``) a :class:`FileRegistry`. ``kw`` goes to the backend's constructor.
    """
    if uri.startswith("mlflow+"):
        from training.mlflow_registry import MlflowRegistry
        return MlflowRegistry(uri[len("mlflow+"):], **kw)
    if uri.startswith("mlflow:"):
        tracking = uri[len("mlflow:"):]
        if not tracking:
            raise ConfigError(f"registry uri {uri!r} names no MLflow tracking uri; use "
                              "mlflow+http://host:port or mlflow:<tracking uri>")
        from training.mlflow_registry import MlflowRegistry
        return MlflowRegistry(tracking, **kw)
    return FileRegistry(uri, **kw)
