"""The in-memory backend: a registry held by this process, for unit tests of code that needs one.

``memory://<name>`` names a store that every :class:`MemoryRegistry` of that name in this process
shares (so a test's controller and its ``ctpipe registry`` call see the same versions). A store
lives until the process ends or :meth:`MemoryRegistry.forget` drops it; nothing is persisted.

Pushes go through the same validation and checksums as the other backends, and fetch through
the same verify-then-rename step (:class:`~training.registry.base.Registry`): a version keeps
every file as bytes, and a test that damages one (:meth:`MemoryRegistry.stored_files`) gets the
same IntegrityError a damaged file or MLflow store gives. Pushes and alias moves are serialized
by one lock per store.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from typing import Mapping

from core.errors import ConfigError, RegistryError
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

SCHEME = "memory://"


class _Store:
    """Everything one named in-memory registry holds."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        #: model -> version -> the version's COMMITTED.json document (bytes)
        self.committed: dict[str, dict[int, bytes]] = {}
        #: model -> version -> every file of the version by POSIX relative path
        self.files: dict[str, dict[int, dict[str, bytes]]] = {}
        #: model -> alias -> the alias's AliasState document (bytes)
        self.aliases: dict[str, dict[str, bytes]] = {}


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


def _store_name(uri: str) -> str:
    name = uri[len(SCHEME):] if uri.startswith(SCHEME) else ""
    if not name or "/" in name:
        raise ConfigError(f"registry uri {uri!r} names no in-memory store; use memory://<name> "
                          "with a name free of '/', e.g. memory://tests")
    return name


class MemoryRegistry(Registry):
    """Registry whose versions and aliases live in this process's memory."""

    def __init__(self, uri: str, *, clock: Clock | None = None, user: str | None = None):
        """Args:
          uri: ``memory://<name>``; registries of the same name share one store.
          clock, user: see :class:`~training.registry.base.Registry`.
        """
        super().__init__(clock=clock, user=user)
        self._name = _store_name(uri)
        with _STORES_LOCK:
            self._store = _STORES.setdefault(self._name, _Store())

    @property
    def uri(self) -> str:
        """The registry's ``memory://<name>``."""
        return SCHEME + self._name

    def forget(self) -> None:
        """Drops this store from the process: registries opened on the name later start empty."""
        with _STORES_LOCK:
            if _STORES.get(self._name) is self._store:
                del _STORES[self._name]

    def stored_files(self, model: str, version: int) -> dict[str, bytes]:
        """The stored files of a committed version, by POSIX relative path: the live mapping,
        so that a test can change or delete entries to damage the version on purpose."""
        self.get(model, version)
        return self._store.files[model][int(version)]

    def _alias_lock(self, model: str) -> contextlib.AbstractContextManager:
        return self._store.lock

    # -- versions
    def push(self, model: str, local_dir: str, *, metrics: dict, lineage: dict,
             blessing: dict) -> ModelVersion:
        """See :meth:`Registry.push`."""
        payload = self._prepare_push(model, local_dir, metrics, lineage, blessing)
        files = {}
        for rel in payload.files:
            with open(os.path.join(payload.local_dir, rel), "rb") as f:
                files[rel] = f.read()
        files.update(payload.docs)
        self._check_fence(f"model {model!r} (next version)")
        with self._store.lock:
            committed = self._store.committed.setdefault(model, {})
            version = 1 + max(committed, default=0)
            doc = {"model": model, "version": version, "created_at": payload.created_at,
                   "by": payload.by, "checksums_sha256": payload.checksums_sha256,
                   "metrics": json.loads(payload.docs[METRICS_FILE]),
                   "lineage": json.loads(payload.docs[LINEAGE_FILE]),
                   "blessing": json.loads(payload.docs[BLESSING_FILE])}
            self._store.files.setdefault(model, {})[version] = files
            committed[version] = json_bytes(doc, COMMITTED_FILE)
        return self._to_model_version(doc, self.aliases(model))

    def _committed(self, model: str, version: int) -> dict | None:
        with self._store.lock:
            data = self._store.committed.get(model, {}).get(int(version))
        return None if data is None else json.loads(data)

    def _to_model_version(self, doc: dict, aliases: Mapping[str, int]) -> ModelVersion:
        version = int(doc["version"])
        return ModelVersion(
            model=doc["model"], version=version,
            uri=f"{self.uri}/{doc['model']}/versions/{version}", created_at=doc["created_at"],
            metrics=doc["metrics"], lineage=doc["lineage"], blessing=doc["blessing"],
            aliases=tuple(sorted(a for a, v in aliases.items() if v == version)))

    def list_versions(self, model: str) -> list[ModelVersion]:
        """See :meth:`Registry.list_versions`."""
        validate_model_name(model)
        with self._store.lock:
            docs = [json.loads(data) for _, data in sorted(self._store.committed.get(model, {}).items())]
            aliases = self.aliases(model)
        return [self._to_model_version(doc, aliases) for doc in docs]

    def get(self, model: str, version: int) -> ModelVersion:
        """See :meth:`Registry.get`."""
        validate_model_name(model)
        doc = self._committed(model, version)
        if doc is None:
            with self._store.lock:
                known = sorted(self._store.committed.get(model, {}))
            raise RegistryError(f"model {model!r} has no committed version {version!r} in "
                                f"{self.uri!r}; committed versions: {known}")
        return self._to_model_version(doc, self.aliases(model))

    def fetch(self, model: str, version: int, dest_dir: str) -> str:
        """See :meth:`Registry.fetch`."""
        mv = self.get(model, version)
        with self._store.lock:
            files = dict(self._store.files[model][mv.version])
        dest, tmp = self._fetch_target(dest_dir)
        try:
            os.makedirs(tmp)
            for rel, data in files.items():
                path = local_target(tmp, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self._finish_fetch(tmp, dest, model=model, version=mv.version,
                                  checksums_sha256=self._committed(model, version)["checksums_sha256"])

    # -- aliases
    def _read_alias(self, model: str, alias: str) -> AliasState | None:
        with self._store.lock:
            data = self._store.aliases.get(model, {}).get(alias)
        return None if data is None else AliasState.from_json(json.loads(data))

    def _write_alias(self, model: str, alias: str, state: AliasState) -> None:
        data = json_bytes(state.to_json(), f"alias {alias!r}")
        with self._store.lock:
            self._store.aliases.setdefault(model, {})[alias] = data

    def aliases(self, model: str) -> dict[str, int]:
        """See :meth:`Registry.aliases`."""
        validate_model_name(model)
        with self._store.lock:
            docs = dict(self._store.aliases.get(model, {}))
        return {alias: AliasState.from_json(json.loads(data)).version
                for alias, data in sorted(docs.items())}
