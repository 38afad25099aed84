"""tf.Transform: analyze over the run's windows, apply to every window, publish the transform.

The user's ``preprocessing_fn`` is plain TF code loaded from ``module:function``. Data enters TFT
as Arrow RecordBatches (TFXIO TensorAdapterConfig), about twice as fast as instance dicts
(shared/ENVIRONMENT.md). Two hidden passthrough columns, ``__window__`` and ``__id__``, ride along
so every transformed row can be routed back to its window and sorted deterministically.

Transform version: a fingerprint of what determines the transform's content — the source of
the preprocessing_fn's module, the raw schema, the TFT version and the digest of every analyzed
window — so the same inputs give the same fingerprint on every run (the SavedModel bytes TF
writes are not byte-stable, so they cannot serve as the fingerprint themselves).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import tempfile
from typing import Callable, Iterable

import apache_beam as beam
import pyarrow as pa
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tfx_bsl.coders import example_coder
from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

from core import storage
from core.errors import ConfigError, StorageError
from core.transform_store import COMPLETE_MARKER, set_current, transform_dir
from transforms.arrow import canonical_examples

WINDOW_COLUMN = "__window__"
ID_COLUMN = "__id__"
PASSTHROUGH = (WINDOW_COLUMN, ID_COLUMN)


def load_function(spec: str, what: str) -> Callable:
    """Import ``module:function``; errors name the spec and the config key to fix."""
    if ":" not in spec:
        raise ConfigError(f"{what}: {spec!r} must be 'module:function'")
    module_name, func_name = spec.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import module {module_name!r} ({exc}); is it on PYTHONPATH?") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(f"{what}: module {module_name!r} has no function {func_name!r}")
    return func


def code_digest(spec: str) -> str:
    """sha256 of the source of the module that defines ``spec``."""
    module = importlib.import_module(spec.split(":", 1)[0])
    return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()


def transform_fingerprint(preprocessing_fn: str, schema_text: str, window_digests: Iterable[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    h.update(f"tft={tft.__version__}\n".encode())
    h.update(f"code={code_digest(preprocessing_fn)}\n".encode())
    h.update(f"schema={hashlib.sha256(schema_text.encode()).hexdigest()}\n".encode())
    for wid, digest in sorted(window_digests):
        h.update(f"window={wid}:{digest}\n".encode())
    return h.hexdigest()[:16]


def tensor_adapter_config(schema, arrow_schema: pa.Schema) -> tensor_adapter.TensorAdapterConfig:
    reps = tensor_representation_util.InferTensorRepresentationsFromSchema(schema)
    return tensor_adapter.TensorAdapterConfig(arrow_schema, reps)


def transformed_examples(batch: pa.RecordBatch) -> list[tuple[str, tuple[str, bytes]]]:
    """(window_id, (id, serialized tf.Example)) for each row of a transformed RecordBatch."""
    names = [n for n in batch.schema.names if n not in PASSTHROUGH]
    payload = pa.RecordBatch.from_arrays([batch.column(n) for n in names], names)
    examples = canonical_examples(example_coder.RecordBatchToExamples(payload))
    windows = batch.column(WINDOW_COLUMN).flatten().to_pylist()
    ids = batch.column(ID_COLUMN).flatten().to_pylist()
    return [(w.decode(), (i.decode(), ex)) for w, i, ex in zip(windows, ids, examples)]


def _publish(_unused, fingerprint: str, staging: str, root: str, raw_schema_text: str) -> str:
    """Copy the staged transform output to <root>/transforms/<fingerprint>/ (COMPLETE last), then
    point <root>/transforms/CURRENT at it (what ``ctpipe stream`` applies).

    The raw schema goes to ``metadata/schema.pbtxt`` as TFX lays it out, so
    ``tft.TFTransformOutput.raw_feature_spec()`` works for the serving signature."""
    target = transform_dir(root, fingerprint)
    if not storage.exists(storage.join(target, COMPLETE_MARKER)):
        storage.copy_tree(staging, target)
        storage.write_bytes_atomic(storage.join(target, "metadata", "schema.pbtxt"), raw_schema_text.encode())
        storage.write_bytes_atomic(storage.join(target, COMPLETE_MARKER), fingerprint.encode())
    set_current(root, fingerprint)
    return fingerprint


class AnalyzeAndTransform(beam.PTransform):
    """(window_id, RecordBatch with passthrough columns) -> (transformed, fingerprint).

    ``transformed``: (window_id, (id, serialized transformed tf.Example)).
    ``fingerprint``: singleton PCollection with the published transform's fingerprint.
    ``digests``: PCollection of (window_id, raw content digest) for the fingerprint.
    """

    def __init__(self, preprocessing_fn: str, schema, schema_text: str, arrow_schema: pa.Schema,
                 root: str, digests, temp_dir: str | None = None):
        super().__init__()
        self._fn_spec = preprocessing_fn
        self._fn = load_function(preprocessing_fn, "transform.preprocessing_fn")
        self._schema = schema
        self._schema_text = schema_text
        self._arrow_schema = arrow_schema
        self._root = root
        self._digests = digests
        self._temp_dir = temp_dir

    def expand(self, batches):
        temp = self._temp_dir or tempfile.mkdtemp(prefix="ctpipe-tft-")
        staging = os.path.join(temp, "transform_output")
        config = tensor_adapter_config(self._schema, self._arrow_schema)
        with tft_beam.Context(temp_dir=os.path.join(temp, "tft_tmp"), passthrough_keys=set(PASSTHROUGH),
                              force_tf_compat_v1=False):
            data = batches | "DropKeys" >> beam.Values()
            (transformed, _meta), transform_fn = (data, config) | "AnalyzeAndTransform" >> \
                tft_beam.AnalyzeAndTransformDataset(self._fn, output_record_batches=True)
            written = transform_fn | "StageTransformFn" >> tft_beam.WriteTransformFn(staging)
        fn_spec, schema_text = self._fn_spec, self._schema_text
        fingerprint = (self._digests
                       | "CollectDigests" >> beam.combiners.ToList()
                       | "Fingerprint" >> beam.Map(lambda d: transform_fingerprint(fn_spec, schema_text, d)))
        published = written | "PublishTransform" >> beam.Map(
            _publish, fingerprint=beam.pvalue.AsSingleton(fingerprint), staging=staging, root=self._root,
            raw_schema_text=self._schema_text)
        examples = (transformed
                    | "TakeBatch" >> beam.Map(lambda t: t[0] if isinstance(t, tuple) else t)
                    | "ToExamples" >> beam.FlatMap(transformed_examples))
        return examples, published


class ApplyTransform(beam.PTransform):
    """Apply a published transform: (window_id, RecordBatch) -> (transformed, fingerprint).

    Same inputs and outputs as ``AnalyzeAndTransform`` (``transformed``: (window_id, (id,
    serialized transformed tf.Example)); ``fingerprint``: a singleton PCollection), but nothing is
    analyzed: the transform_fn stored under <root>/transforms/<fingerprint>/ is loaded
    (``tft.TFTransformOutput``, copied to a local directory first when the root is an object
    store) and run over the batches by TFT's own TransformDataset DoFn. Using TFT's DoFn rather
    than a hand-written one keeps the tensor <-> Arrow conversion identical to analyze mode, so a
    window transformed either way gives the same examples.
    """

    def __init__(self, root: str, fingerprint: str, schema, arrow_schema: pa.Schema, temp_dir: str | None = None):
        super().__init__()
        source = transform_dir(root, fingerprint)
        if not storage.exists(storage.join(source, COMPLETE_MARKER)):
            raise StorageError(f"transform {fingerprint!r} is not published under {source} (no "
                               f"{COMPLETE_MARKER} marker); run `ctpipe backfill` to publish a transform")
        self._fingerprint = fingerprint
        self._schema = schema
        self._arrow_schema = arrow_schema
        self._temp_dir = temp_dir or tempfile.mkdtemp(prefix="ctpipe-apply-")
        local = source if storage.is_local(source) else storage.download_tree(
            source, os.path.join(self._temp_dir, "transform", fingerprint))
        self.output = tft.TFTransformOutput(local)
        self._local = local

    def expand(self, batches):
        config = tensor_adapter_config(self._schema, self._arrow_schema)
        with tft_beam.Context(temp_dir=os.path.join(self._temp_dir, "tft_tmp"), passthrough_keys=set(PASSTHROUGH),
                              force_tf_compat_v1=False):
            transform_fn = batches.pipeline | "ReadTransformFn" >> tft_beam.ReadTransformFn(self._local)
            data = batches | "DropKeys" >> beam.Values()
            transformed, _meta = ((data, config), transform_fn) | "TransformDataset" >> \
                tft_beam.TransformDataset(output_record_batches=True)
        examples = (transformed
                    | "TakeBatch" >> beam.Map(lambda t: t[0] if isinstance(t, tuple) else t)
                    | "ToExamples" >> beam.FlatMap(transformed_examples))
        fingerprint = batches.pipeline | "Fingerprint" >> beam.Create([self._fingerprint])
        return examples, fingerprint
