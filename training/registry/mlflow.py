"""The MLflow backend: the :class:`~training.registry.base.Registry` interface over the MLflow Model Registry.

Mapping:

* a push is one MLflow run (experiment ``ctpipe-registry`` by default) whose artifacts under
  ``model/`` are the SavedModel files plus metrics.json, lineage.json, blessing.json and
  CHECKSUMS.json; numeric metrics are logged as run metrics and the lineage, flattened to
  dotted keys, as run params (values cut at 500 characters: the full lineage is in
  lineage.json and in a tag). The run then becomes a registered model version, which MLflow
  numbers; the version's tags carry the documents (``ctpipe.metrics``, ``ctpipe.lineage``,
  ``ctpipe.blessing``), ``ctpipe.created_at`` and ``ctpipe.checksums_sha256``.
  A push killed before ``create_model_version`` leaves at most an unfinished run: no version.
* an alias is an MLflow registered-model alias (the source of truth for where it points); its
  history and rollback log live in the registered-model tag ``ctpipe.alias.<alias>``. The tag is
  written before the alias moves; a history whose top disagrees with the live alias (a move
  interrupted between the two writes) is reconciled on read.
* fetch downloads ``model/`` and verifies it with the checksum code every backend shares
  (:mod:`training.registry.checksums`).

Concurrency: MLflow allocates version numbers itself, so concurrent pushers never collide.
Alias moves from several writers race on the history tag (last write wins); run one controller.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import uuid
from typing import Any, Iterator, Mapping

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode

from core.errors import RegistryError
from training.registry.base import AliasState, Clock, ModelVersion, Registry, validate_model_name

ARTIFACT_PATH = "model"
TAG_PREFIX = "ctpipe."
_TAG_VALUE_LIMIT = 100_000  # MLflow's limit for registered model / model version tag values
_PARAM_VALUE_LIMIT = 500
_PARAM_KEY_RE = re.compile(r"[^A-Za-z0-9_\-. /]")
_BATCH = 100  # MLflow's log_batch limit on params per request


def _is(e: MlflowException, code: int) -> bool:
    return e.error_code == ErrorCode.Name(code)


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


def _compact(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


class MlflowRegistry(Registry):
    """Registry backed by an MLflow tracking server's Model Registry."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None, *,
                 experiment: str = "ctpipe-registry", clock: Clock | None = None,
                 user: str | None = None):
        """Args:
          tracking_uri: MLflow tracking URI, e.g. ``http://127.0.0.1:5000``.
          registry_uri: Model Registry URI when it differs from ``tracking_uri``.
          experiment: experiment holding the push runs (created on first push).
          clock, user: see :class:`~training.registry.base.Registry`.
        """
        super().__init__(clock=clock, user=user)
        self._tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri,
                                    registry_uri=registry_uri or tracking_uri)
        self._experiment = experiment

    @property
    def client(self) -> MlflowClient:
        """The underlying MLflow client."""
        return self._client

    # -- helpers
    def _experiment_id(self) -> str:
        exp = self._client.get_experiment_by_name(self._experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return self._client.create_experiment(self._experiment)
        except MlflowException as e:
            if not _is(e, RESOURCE_ALREADY_EXISTS):
                raise
            return self._client.get_experiment_by_name(self._experiment).experiment_id

    def _ensure_registered_model(self, model: str) -> None:
        try:
            self._client.create_registered_model(model)
        except MlflowException as e:
            if not _is(e, RESOURCE_ALREADY_EXISTS):
                raise

    def _registered_model(self, model: str):
        try:
            return self._client.get_registered_model(model)
        except MlflowException as e:
            if _is(e, RESOURCE_DOES_NOT_EXIST):
                return None
            raise

    def _to_model_version(self, mv) -> ModelVersion | None:
        tags = mv.tags or {}
        if TAG_PREFIX + "checksums_sha256" not in tags:
            return None
        return ModelVersion(
            model=mv.name, version=int(mv.version), uri=f"models:/{mv.name}/{mv.version}",
            created_at=tags[TAG_PREFIX + "created_at"],
            metrics=json.loads(tags[TAG_PREFIX + "metrics"]),
            lineage=json.loads(tags[TAG_PREFIX + "lineage"]),
            blessing=json.loads(tags[TAG_PREFIX + "blessing"]),
            aliases=tuple(sorted(mv.aliases or ())))

    # -- versions
    def push(self, model: str, local_dir: str, *, metrics: dict, lineage: dict,
             blessing: dict) -> ModelVersion:
        """See :meth:`Registry.push` and the module docstring for the mapping."""
        payload = self._prepare_push(model, local_dir, metrics, lineage, blessing)
        tags = {TAG_PREFIX + "metrics": _compact(metrics),
                TAG_PREFIX + "lineage": _compact(lineage),
                TAG_PREFIX + "blessing": _compact(blessing),
                TAG_PREFIX + "blessed": str(bool(blessing["blessed"])).lower(),
                TAG_PREFIX + "created_at": payload.created_at,
                TAG_PREFIX + "by": payload.by,
                TAG_PREFIX + "checksums_sha256": payload.checksums_sha256}
        for key, value in tags.items():
            if len(value) > _TAG_VALUE_LIMIT:
                raise RegistryError(
                    f"{key[len(TAG_PREFIX):]} is {len(value)} characters as JSON, over MLflow's "
                    f"tag limit of {_TAG_VALUE_LIMIT}; keep large data in files the lineage "
                    "points to")
        self._ensure_registered_model(model)
        run = self._client.create_run(self._experiment_id(), run_name=f"push-{model}",
                                      tags={TAG_PREFIX + "model": model})
        run_id = run.info.run_id
        try:
            self._client.log_artifacts(run_id, payload.local_dir, ARTIFACT_PATH)
            with tempfile.TemporaryDirectory(prefix="ctpipe-push-") as docs_dir:
                for name, data in payload.docs.items():
                    with open(os.path.join(docs_dir, name), "wb") as f:
                        f.write(data)
                self._client.log_artifacts(run_id, docs_dir, ARTIFACT_PATH)
            now_ms = int(self._clock().timestamp() * 1000)
            metric_rows = [Metric(_PARAM_KEY_RE.sub("_", k), float(v), now_ms, 0)
                           for k, v in _flatten(metrics)
                           if isinstance(v, (int, float)) and not isinstance(v, bool)]
            param_rows = [Param(_PARAM_KEY_RE.sub("_", k)[:250],
                                (v if isinstance(v, str) else _compact(v))[:_PARAM_VALUE_LIMIT])
                          for k, v in _flatten(lineage)]
            for i in range(0, max(len(metric_rows), len(param_rows)), _BATCH):
                self._client.log_batch(run_id, metrics=metric_rows[i:i + _BATCH],
                                       params=param_rows[i:i + _BATCH])
        except BaseException:
            self._client.set_terminated(run_id, "FAILED")
            raise
        self._client.set_terminated(run_id, "FINISHED")
        self._check_fence(f"model {model!r} (a new MLflow model version)")
        mv = self._client.create_model_version(
            name=model, source=f"{run.info.artifact_uri}/{ARTIFACT_PATH}", run_id=run_id,
            tags=tags)
        return self._to_model_version(self._client.get_model_version(model, mv.version))

    def list_versions(self, model: str) -> list[ModelVersion]:
        """See :meth:`Registry.list_versions`; versions not pushed through ctpipe are skipped."""
        validate_model_name(model)
        out, token = [], None
        while True:
            page = self._client.search_model_versions(f"name = '{model}'", page_token=token)
            out.extend(v for v in map(self._to_model_version, page) if v is not None)
            token = page.token
            if not token:
                break
        # MLflow's search_model_versions leaves ModelVersion.aliases empty (get_model_version fills
        # it): take them from the registered model, one call for all versions.
        by_version: dict[int, list[str]] = {}
        for alias, version in self.aliases(model).items():
            by_version.setdefault(version, []).append(alias)
        out = [dataclasses.replace(v, aliases=tuple(sorted(by_version.get(v.version, ())))) for v in out]
        return sorted(out, key=lambda v: v.version)

    def get(self, model: str, version: int) -> ModelVersion:
        """See :meth:`Registry.get`."""
        validate_model_name(model)
        try:
            mv = self._client.get_model_version(model, str(int(version)))
        except MlflowException as e:
            if not _is(e, RESOURCE_DOES_NOT_EXIST):
                raise
            known = [v.version for v in self.list_versions(model)]
            raise RegistryError(f"model {model!r} has no version {version!r} in the MLflow "
                                f"registry at {self._tracking_uri!r}; versions: {known}") from e
        result = self._to_model_version(mv)
        if result is None:
            raise RegistryError(f"model {model!r} version {version} was not pushed through "
                                "ctpipe (it has no ctpipe.* tags); push it with Registry.push")
        return result

    def fetch(self, model: str, version: int, dest_dir: str) -> str:
        """See :meth:`Registry.fetch`."""
        self.get(model, version)
        mv = self._client.get_model_version(model, str(int(version)))
        dest, tmp = self._fetch_target(dest_dir)
        download = f"{dest}.download-{uuid.uuid4().hex}"
        os.makedirs(download)
        try:
            got = self._client.download_artifacts(mv.run_id, ARTIFACT_PATH, download)
            os.rename(got, tmp)
        finally:
            shutil.rmtree(download, ignore_errors=True)
        return self._finish_fetch(tmp, dest, model=model, version=int(version),
                                  checksums_sha256=mv.tags.get(TAG_PREFIX + "checksums_sha256"))

    # -- aliases
    def _read_alias(self, model: str, alias: str) -> AliasState | None:
        rm = self._registered_model(model)
        if rm is None or alias not in (rm.aliases or {}):
            return None
        live = int(rm.aliases[alias])
        doc = json.loads(rm.tags.get(TAG_PREFIX + f"alias.{alias}", "{}"))
        history = list(doc.get("history", ()))
        while history and int(history[-1]["version"]) != live:
            history.pop()
        if not history:
            history = [{"version": live, "at": None, "by": None,
                        "reason": "set outside ctpipe (no history recorded)"}]
        return AliasState(version=live, history=tuple(history),
                          rollbacks=tuple(doc.get("rollbacks", ())))

    def _write_alias(self, model: str, alias: str, state: AliasState) -> None:
        doc = {"history": list(state.history), "rollbacks": list(state.rollbacks)}
        text = _compact(doc)
        while len(text) > _TAG_VALUE_LIMIT and (len(doc["history"]) > 1 or doc["rollbacks"]):
            key = "rollbacks" if doc["rollbacks"] else "history"
            doc[key] = doc[key][1:]
            text = _compact(doc)
        self._client.set_registered_model_tag(model, TAG_PREFIX + f"alias.{alias}", text)
        self._client.set_registered_model_alias(model, alias, str(state.version))

    def aliases(self, model: str) -> dict[str, int]:
        """See :meth:`Registry.aliases`."""
        validate_model_name(model)
        rm = self._registered_model(model)
        return {} if rm is None else {a: int(v) for a, v in sorted((rm.aliases or {}).items())}
