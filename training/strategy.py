"""Distribution strategy from the environment (the usual TF conventions).

- ``TF_CONFIG`` with a cluster of more than one worker: MultiWorkerMirroredStrategy.
- Several local GPUs: MirroredStrategy.
- Otherwise the default strategy (one CPU or GPU).
"""
from __future__ import annotations

import json
import os

import tensorflow as tf


def describe_environment() -> dict:
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    workers = len(tf_config.get("cluster", {}).get("worker", []))
    gpus = len(tf.config.list_physical_devices("GPU"))
    return {"workers": workers, "gpus": gpus, "task": tf_config.get("task")}


_STRATEGIES: dict = {}


def strategy_from_environment():
    """(strategy, its name) for this process's environment, created once per environment.

    MultiWorkerMirroredStrategy configures TF's collective runtime, which must happen before the
    process runs any TF op and only once: a training run therefore calls this first, before it
    screens windows with the production model or reads evaluation examples (pipeline/controller.py),
    and the trainer's later call gets the same strategy back."""
    env = describe_environment()
    key = (os.environ.get("TF_CONFIG", ""), env["gpus"])
    if key not in _STRATEGIES:
        if env["workers"] > 1:
            _STRATEGIES[key] = tf.distribute.MultiWorkerMirroredStrategy(), "MultiWorkerMirroredStrategy"
        elif env["gpus"] > 1:
            _STRATEGIES[key] = tf.distribute.MirroredStrategy(), "MirroredStrategy"
        else:
            _STRATEGIES[key] = tf.distribute.get_strategy(), "default"
    return _STRATEGIES[key]


def task_name() -> str:
    """``<type>-<index>`` of this process in TF_CONFIG (``chief-0`` without TF_CONFIG)."""
    task = describe_environment()["task"] or {}
    return f"{task.get('type', 'chief')}-{task.get('index', 0)}"


def is_chief() -> bool:
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = tf_config.get("task") or {}
    return task.get("type", "chief") == "chief" or (task.get("type") == "worker" and task.get("index", 0) == 0
                                                     and "chief" not in tf_config.get("cluster", {}))
