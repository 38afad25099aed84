"""The model registry: versioned SavedModels with metrics, lineage, blessing, checksums and aliases.

Modules:

``base``
    The :class:`Registry` interface, :class:`ModelVersion`, :class:`AliasState`, name
    validation, and the behaviour every backend shares (push validation, fetch verification,
    alias history, promote, rollback).
``checksums``
    The CHECKSUMS.json document and its verification.
``file``
    :class:`FileRegistry`: local paths, ``s3://``, ``gs://`` through Beam FileSystems.
``mlflow``
    :class:`MlflowRegistry`: the MLflow Model Registry.
``memory``
    :class:`MemoryRegistry`: a store in this process's memory, for unit tests.

:func:`open_registry` picks a backend from a URI. Backends import ``base``; ``base`` imports no
backend, and this package imports a backend (Beam, MLflow) only when it is opened or its class
is first looked up here, so ``import training.registry`` stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

from core.errors import ConfigError
from training.registry.base import (
    BLESSING_FILE,
    COMMITTED_FILE,
    DEFAULT_ALIAS,
    LINEAGE_FILE,
    MAX_ALIAS_HISTORY,
    METRICS_FILE,
    RESERVED_FILES,
    AliasState,
    Clock,
    ModelVersion,
    PushPayload,
    Registry,
    is_blessed,
    validate_alias,
    validate_model_name,
)
from training.registry.checksums import CHECKSUMS_FILE, checksums_document, sha256_file, verify_version_dir

#: Backend classes this package names, and the module each lives in (imported on first use).
_BACKENDS = {"FileRegistry": "training.registry.file", "MlflowRegistry": "training.registry.mlflow",
             "MemoryRegistry": "training.registry.memory"}

__all__ = ["BLESSING_FILE", "CHECKSUMS_FILE", "COMMITTED_FILE", "DEFAULT_ALIAS", "LINEAGE_FILE",
           "MAX_ALIAS_HISTORY", "METRICS_FILE", "RESERVED_FILES", "AliasState", "Clock", "ModelVersion",
           "PushPayload", "Registry", "checksums_document", "is_blessed", "open_registry", "sha256_file",
           "validate_alias", "validate_model_name", "verify_version_dir", *_BACKENDS]


def __getattr__(name: str) -> Any:
    if name in _BACKENDS:
        return getattr(importlib.import_module(_BACKENDS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_registry(uri: str, **kw: Any) -> Registry:
    """Opens the registry a URI names.

    ``mlflow+http://host:port`` / ``mlflow+https://...`` or ``mlflow:<tracking uri>`` open an
    :class:`~training.registry.mlflow.MlflowRegistry`; ``memory://<name>`` a
    :class:`~training.registry.memory.MemoryRegistry`; anything else (local path, ``file://``,
    ``s3://``, ``gs://``) a :class:`~training.registry.file.FileRegistry`. ``kw`` goes to the
    backend's constructor.
    """
    if uri.startswith("mlflow+"):
        from training.registry.mlflow import MlflowRegistry
        return MlflowRegistry(uri[len("mlflow+"):], **kw)
    if uri.startswith("mlflow:"):
        tracking = uri[len("mlflow:"):]
        if not tracking:
            raise ConfigError(f"registry uri {uri!r} names no MLflow tracking uri; use "
                              "mlflow+http://host:port or mlflow:<tracking uri>")
        from training.registry.mlflow import MlflowRegistry
        return MlflowRegistry(tracking, **kw)
    if uri.startswith("memory://"):
        from training.registry.memory import MemoryRegistry
        return MemoryRegistry(uri, **kw)
    from training.registry.file import FileRegistry
    return FileRegistry(uri, **kw)
