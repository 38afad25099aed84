"""ctpipe: continuous-training data pipeline on Apache Beam + TFX libraries.

This file is what Beam's --setup_file stages to remote workers (Flink, Dataflow): the code
packages (core, pipeline with pipeline.cli, transforms, training, examples) install from it.
Exact versions live in requirements.lock; the ranges below only say what the code needs, so a
worker image built from the lock satisfies them.
"""
from glob import glob

from setuptools import find_packages, setup

setup(
    name="ctpipe",
    version="0.1.0",
    description="Continuous-training data pipeline: Kafka/object storage -> validated TFRecord windows -> gated models",
    packages=find_packages(include=["core", "core.*", "pipeline", "pipeline.*", "transforms", "transforms.*",
                                    "training", "training.*", "examples", "examples.*"]),
    package_data={"examples": ["ctpipe.yaml"]},  # the documented example config
    # The runner configs, installed under <prefix>/share/ctpipe/runner_configs/: a relative
    # --runner-config (e.g. the default runner_configs/direct.yaml) resolves there when the current
    # directory has none, as in a scheduler's temporary task directory (pipeline/options.py).
    data_files=[("share/ctpipe/runner_configs", sorted(glob("runner_configs/*.yaml")))],
    python_requires=">=3.11,<3.12",
    install_requires=[
        "apache-beam[gcp,aws]>=2.68,<2.69",
        "tensorflow>=2.16,<2.17",
        "tf-keras>=2.16,<2.17",
        "tensorflow-transform>=1.16,<1.17",
        "tensorflow-data-validation>=1.16,<1.17",
        "kafka-python>=3.0,<3.1",
        "prometheus-client",
        "pyyaml",
        "tqdm",
    ],
    entry_points={"console_scripts": ["ctpipe=pipeline.cli:main"]},
)
