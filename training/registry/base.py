"""The registry interface: model versions, aliases, validation and the behaviour every backend shares.

A *model version* is a directory holding a TF SavedModel written by the trainer, plus four
documents the registry stores beside it:

``metrics.json``, ``lineage.json``, ``blessing.json``
    The dicts given to :meth:`Registry.push`. ``blessing`` must carry a boolean ``blessed``.
``CHECKSUMS.json``
    sha256 and size of every file of the version (see :mod:`training.registry.checksums`),
    computed by the registry at push time. :meth:`Registry.fetch` verifies every entry.

Aliases (``production``, ``candidate`` ...) name one version each. Every alias keeps a history
stack of the moves still in effect (``{version, at, by, reason}``, newest last);
:meth:`Registry.rollback` pops it back to the most recent earlier *blessed* version, and records
the rollback in a separate ``rollbacks`` log.

A backend implements storage only: push/list_versions/get/fetch and three alias primitives.
Push validation, the fetch-then-verify-then-rename sequence and the alias semantics (history,
promote, rollback) live here once. This module imports no backend.
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
import uuid
from typing import Any, Callable, Mapping

from core.errors import ConfigError, RegistryError
from training.registry.checksums import CHECKSUMS_FILE, checksums_document, local_tree, verify_version_dir

METRICS_FILE = "metrics.json"
LINEAGE_FILE = "lineage.json"
BLESSING_FILE = "blessing.json"
COMMITTED_FILE = "COMMITTED.json"
#: Names the registry writes itself; a pushed SavedModel directory must not contain them.
RESERVED_FILES = frozenset({METRICS_FILE, LINEAGE_FILE, BLESSING_FILE, CHECKSUMS_FILE,
                            COMMITTED_FILE})
DEFAULT_ALIAS = "production"
#: Oldest entries beyond this many are dropped from an alias history / rollback log.
MAX_ALIAS_HISTORY = 500

_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# MLflow reserves "latest" and "v<digits>" as alias names; every backend applies the same rule.
_ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_RESERVED_ALIAS_RE = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)

Clock = Callable[[], datetime.datetime]


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


def json_bytes(obj: Any, what: str) -> bytes:
    """``obj`` as the registry stores a document; RegistryError naming ``what`` if it is not JSON."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise RegistryError(f"{what} is not JSON-serializable ({e}); pass plain dicts of "
                            "str/int/float/bool/list/dict values, no NaN") from e
    return text.encode("utf-8") + b"\n"


def utc_iso(clock: Clock) -> str:
    """The clock's time as ISO 8601 UTC with milliseconds, e.g. ``2026-11-27T01:30:00.000Z``."""
    now = clock().astimezone(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid-{os.getuid()}"


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
        self._fence = None

    # -- fencing
    def fenced_by(self, fence) -> "Registry":
        """Check ``fence`` (the storage root's lease, core.lock: anything with
        ``check_publish(what)``) before every publish: a version's commit and every alias move.
        A writer whose lease was taken over is refused with FencedError. Returns self."""
        self._fence = fence
        return self

    def _check_fence(self, what: str) -> None:
        if self._fence is not None:
            self._fence.check_publish(what)

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

    def alias_rollbacks(self, model: str, alias: str) -> list[dict]:
        """The alias's rollbacks, oldest first: ``{from, to, at, by, reason}``."""
        state = self._read_alias(validate_model_name(model), validate_alias(alias))
        return [] if state is None else [dict(e) for e in state.rollbacks]

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
            entry = {"version": int(version), "at": utc_iso(self._clock),
                     "by": by or self._user, "reason": reason}
            history = (state.history if state else ()) + (entry,)
            self._check_fence(f"alias {alias!r} of model {model!r} -> v{int(version)}")
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
            log = {"from": state.version, "to": v, "at": utc_iso(self._clock),
                   "by": by or self._user, "reason": reason or "rollback"}
            self._check_fence(f"rollback of alias {alias!r} of model {model!r} -> v{v}")
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
        docs = {METRICS_FILE: json_bytes(metrics, "metrics"),
                LINEAGE_FILE: json_bytes(lineage, "lineage"),
                BLESSING_FILE: json_bytes(blessing, "blessing")}
        checksums = json_bytes(checksums_document(local_dir, docs), CHECKSUMS_FILE)
        docs[CHECKSUMS_FILE] = checksums
        return PushPayload(local_dir=local_dir, files=tuple(files), docs=docs,
                           checksums_sha256=hashlib.sha256(checksums).hexdigest(),
                           created_at=utc_iso(self._clock), by=self._user)

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
