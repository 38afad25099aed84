"""What every Registry backend must do, as plain functions of a :class:`Backend`.

Not a test module: tests/training/test_registry.py (file, in-memory, S3 backends) and
tests/training/test_mlflow_registry.py (MLflow) bind a ``backend`` fixture and run every entry of
:data:`BEHAVIOURS` against it through :func:`run_behaviour`. The expectations are written out
here (version numbers, metric values, the SavedModel's output), never recomputed with the
registry code under test. Each behaviour takes ``(backend, model, saved_model_dir, tmp_path)``:
a fresh model name (:func:`fresh_model_name`) and a SavedModel (:func:`save_tiny_model`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import uuid
from typing import Callable

import pytest

from core.errors import ConfigError, IntegrityError, RegistryError
from training.registry import ModelVersion, Registry

#: A SavedModel file that every backend stores; the tamper checks damage it.
TAMPERED_FILE = "variables/variables.index"
#: The four files the registry writes beside the SavedModel files (COMMITTED.json is not fetched).
REGISTRY_DOCS = ("metrics.json", "lineage.json", "blessing.json", "CHECKSUMS.json")


@dataclasses.dataclass
class Backend:
    """A registry under test plus what the behaviour checks need to reach around it."""

    registry: Registry
    #: tamper(version, relpath, data): overwrite a stored file with ``data``, delete it
    #: when ``data`` is None.
    tamper: Callable[[ModelVersion, str, bytes | None], None]
    #: A second, independent registry object on the same store.
    reopen: Callable[[], Registry]


def overwrite_or_delete(path: str, data: bytes | None) -> None:
    """Tamper with a stored local file: replace its bytes, or delete it when ``data`` is None."""
    if data is None:
        os.unlink(path)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def push(reg: Registry, model: str, path: str, *, blessed: bool = True, auc: float = 0.9) -> ModelVersion:
    """Pushes ``path`` with fixed test documents (``auc`` and ``blessed`` vary)."""
    return reg.push(model, path, metrics={"auc": auc, "loss": {"train": 0.1}},
                    lineage={"windows": ["20261127T0100Z/v1"], "transform": "abc123"},
                    blessing={"blessed": blessed, "reason": "test"})


def save_tiny_model(path: str) -> str:
    """Writes a real, tiny SavedModel, f(x) = 3 * x, to ``path``; returns ``path``."""
    import tensorflow as tf

    class Scale(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(3.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return x * self.w

    tf.saved_model.save(Scale(), path)
    return path


def fresh_model_name() -> str:
    """A model name no earlier test used (backends shared across tests see no leftovers)."""
    return f"m-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------------------------
# The behaviours: each takes (backend, model, saved_model_dir, tmp_path).


def push_list_get_fetch(backend: Backend, model: str, saved_model_dir: str, tmp_path) -> None:
    import tensorflow as tf

    reg = backend.registry
    assert reg.list_versions(model) == []
    v1 = push(reg, model, saved_model_dir, auc=0.91)
    v2 = push(reg, model, saved_model_dir, blessed=False, auc=0.5)
    assert (v1.version, v2.version) == (1, 2)
    assert [v.version for v in reg.list_versions(model)] == [1, 2]
    got = reg.get(model, 1)
    assert got == v1
    assert got.metrics == {"auc": 0.91, "loss": {"train": 0.1}}
    assert got.lineage == {"windows": ["20261127T0100Z/v1"], "transform": "abc123"}
    assert got.blessing == {"blessed": True, "reason": "test"}
    assert got.blessed and not reg.get(model, 2).blessed
    assert got.created_at.endswith("Z") and got.created_at[:4].isdigit()

    dest = reg.fetch(model, 1, str(tmp_path / "fetched"))
    assert dest == str(tmp_path / "fetched")
    for name in REGISTRY_DOCS:
        assert os.path.isfile(os.path.join(dest, name)), name
    assert not os.path.exists(os.path.join(dest, "COMMITTED.json"))
    with open(os.path.join(dest, "metrics.json")) as f:
        assert json.load(f) == {"auc": 0.91, "loss": {"train": 0.1}}
    with open(os.path.join(dest, "CHECKSUMS.json")) as f:
        listed = set(json.load(f)["files"])
    assert {"saved_model.pb", TAMPERED_FILE, *REGISTRY_DOCS[:3]} <= listed
    assert "CHECKSUMS.json" not in listed and "COMMITTED.json" not in listed
    loaded = tf.saved_model.load(dest)
    assert loaded(tf.constant([2.0])).numpy().tolist() == [6.0]
    with pytest.raises(RegistryError, match="not an empty directory"):
        reg.fetch(model, 1, dest)


def unknown_version_names_known_ones(backend: Backend, model: str, saved_model_dir: str, tmp_path) -> None:
    push(backend.registry, model, saved_model_dir)
    with pytest.raises(RegistryError, match=r"no .*version 7.*\[1\]"):
        backend.registry.get(model, 7)
    with pytest.raises(RegistryError, match=r"no .*version 7"):
        backend.registry.fetch(model, 7, str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def a_second_registry_object_sees_the_same_store(backend: Backend, model: str, saved_model_dir: str,
                                                 tmp_path) -> None:
    push(backend.registry, model, saved_model_dir, auc=0.8)
    backend.registry.promote(model, 1, by="ci", reason="first")
    other = backend.reopen()
    assert other is not backend.registry
    assert [v.version for v in other.list_versions(model)] == [1]
    assert other.get(model, 1).metrics["auc"] == 0.8
    assert other.aliases(model) == {"production": 1}
    push(other, model, saved_model_dir)
    assert [v.version for v in backend.registry.list_versions(model)] == [1, 2]


def alias_moves_and_history(backend: Backend, model: str, saved_model_dir: str, tmp_path) -> None:
    reg = backend.registry
    push(reg, model, saved_model_dir)
    push(reg, model, saved_model_dir)
    assert reg.get_alias(model, "production") is None
    assert reg.aliases(model) == {}
    assert reg.alias_history(model, "production") == []
    reg.set_alias(model, "candidate", 2, by="ci", reason="canary")
    reg.promote(model, 1)
    assert reg.aliases(model) == {"candidate": 2, "production": 1}
    assert reg.get(model, 2).aliases == ("candidate",)
    assert [(v.version, v.aliases) for v in reg.list_versions(model)] == [(1, ("production",)),
                                                                          (2, ("candidate",))]
    reg.promote(model, 2, by="alice", reason="better auc")
    assert reg.get(model, 2).aliases == ("candidate", "production")
    reg.set_alias(model, "production", 2, by="bob", reason="again")  # already there: no new entry
    history = reg.alias_history(model, "production")
    assert [h["version"] for h in history] == [1, 2]
    assert history[-1]["by"] == "alice" and history[-1]["reason"] == "better auc"
    assert history[0]["reason"] == "promote"
    assert all(h["at"].endswith("Z") for h in history)
    with pytest.raises(RegistryError, match="version 9"):
        reg.set_alias(model, "production", 9)
    with pytest.raises(ConfigError, match="'latest'"):
        reg.set_alias(model, "latest", 1)
    with pytest.raises(ConfigError, match="'v2'"):
        reg.set_alias(model, "v2", 1)
    with pytest.raises(ConfigError, match="'bad/name'"):
        reg.get_alias("bad/name", "production")
    assert reg.get_alias(model, "production") == 2


def promote_refuses_unblessed(backend: Backend, model: str, saved_model_dir: str, tmp_path) -> None:
    reg = backend.registry
    push(reg, model, saved_model_dir, blessed=False)
    with pytest.raises(RegistryError, match="version 1 is not blessed.*force=True"):
        reg.promote(model, 1)
    assert reg.get_alias(model, "production") is None
    reg.promote(model, 1, force=True)
    assert reg.get_alias(model, "production") == 1
    assert reg.alias_history(model, "production")[-1]["reason"] == "promote (forced)"


def rollback_to_previous_blessed(backend: Backend, model: str, saved_model_dir: str, tmp_path) -> None:
    reg = backend.registry
    push(reg, model, saved_model_dir)                 # 1 blessed
    push(reg, model, saved_model_dir, blessed=False)  # 2 not blessed
    push(reg, model, saved_model_dir)                 # 3 blessed
    reg.promote(model, 1)
    reg.promote(model, 2, force=True)
    reg.promote(model, 3)
    assert reg.rollback(model) == 1  # skips the unblessed 2
    assert reg.get_alias(model, "production") == 1
    assert [h["version"] for h in reg.alias_history(model, "production")] == [1]
    with pytest.raises(RegistryError, match=r"no earlier blessed version"):
        reg.rollback(model)
    assert reg.get_alias(model, "production") == 1


def rollback_without_earlier_version_raises(backend: Backend, model: str, saved_model_dir: str,
                                            tmp_path) -> None:
    reg = backend.registry
    push(reg, model, saved_model_dir)
    with pytest.raises(RegistryError, match="'production'.*is not set"):
        reg.rollback(model)
    reg.promote(model, 1)
    with pytest.raises(RegistryError, match=r"points at version 1 .*history \[1\].*no earlier"):
        reg.rollback(model)
    assert reg.get_alias(model, "production") == 1


def tampered_version_raises_integrity_error(backend: Backend, model: str, saved_model_dir: str, tmp_path,
                                            *, damage: str) -> None:
    reg = backend.registry
    mv = push(reg, model, saved_model_dir)
    if damage == "changed":
        backend.tamper(mv, TAMPERED_FILE, b"not the index")
        expect = TAMPERED_FILE
    elif damage == "missing":
        backend.tamper(mv, TAMPERED_FILE, None)
        expect = TAMPERED_FILE
    elif damage == "extra":
        backend.tamper(mv, "assets/injected.txt", b"x")
        expect = "assets/injected.txt"
    else:  # a consistent forgery: file and CHECKSUMS.json rewritten together
        dest = reg.fetch(model, 1, str(tmp_path / "good"))
        with open(os.path.join(dest, "CHECKSUMS.json")) as f:
            doc = json.load(f)
        doc["files"].pop(TAMPERED_FILE)
        backend.tamper(mv, TAMPERED_FILE, None)
        backend.tamper(mv, "CHECKSUMS.json", json.dumps(doc).encode())
        expect = "CHECKSUMS.json"
    dest = tmp_path / "fetched"
    with pytest.raises(IntegrityError) as err:
        reg.fetch(model, 1, str(dest))
    assert expect in str(err.value)
    assert "tampered with or is corrupt" in str(err.value)
    assert "re-push" in str(err.value)
    assert not dest.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith("fetched")] == []


#: Every behaviour by test id.
BEHAVIOURS: dict[str, Callable[..., None]] = {
    "push-list-get-fetch": push_list_get_fetch,
    "unknown-version": unknown_version_names_known_ones,
    "second-registry-object": a_second_registry_object_sees_the_same_store,
    "alias-moves-and-history": alias_moves_and_history,
    "promote-refuses-unblessed": promote_refuses_unblessed,
    "rollback-to-previous-blessed": rollback_to_previous_blessed,
    "rollback-without-earlier-version": rollback_without_earlier_version_raises,
    **{f"tampered-{damage}": functools.partial(tampered_version_raises_integrity_error, damage=damage)
       for damage in ("changed", "missing", "extra", "checksums")},
}


def run_behaviour(name: str, backend: Backend, model: str, saved_model_dir: str, tmp_path) -> None:
    """Runs the behaviour ``name`` of :data:`BEHAVIOURS` against ``backend``."""
    BEHAVIOURS[name](backend, model, saved_model_dir, tmp_path)
