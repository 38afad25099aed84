"""tf.Transform: analyze over the run's windows, apply to every window, publish the transform.

The user's ``preprocessing_fn`` is plain TF code loaded from ``module:function``. Data enters TFT
as Arrow RecordBatches (TFXIO TensorAdapterConfig), about twice as fast as instance dicts
(shared/ENVIRONMENT.md). The transform is analyzed over a run's windows (``AnalyzeTransform``),
published under the storage root, and applied window by window (``TransformApplier``) by
loading it from there, so workers need nothing from the driver's disk.

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
from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

from core import storage
from core.errors import ConfigError, StorageError
from core.transform_store import (
    CHECKSUMS_FILE,
    COMPLETE_MARKER,
    set_current,
    transform_dir,
    verify_copy,
    write_checksums,
)
from transforms.example_encoding import deterministic_examples
from transforms.gzip_files import GzipWriter, in_background, tfrecord_frames

APPLY_SLICE_ROWS = 8192
"""Rows transformed at once when a window's transformed part is built (``TransformApplier.tfrecord_part``)."""


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


def publish_transform(staging: str, root: str, fingerprint: str, raw_schema_text: str, fence=None) -> str:
    """Copy a staged transform output (any file system) to <root>/transforms/<fingerprint>/, COMPLETE
    last; CURRENT is left alone. Returns the fingerprint.

    The raw schema goes to ``metadata/schema.pbtxt`` as TFX lays it out, so
    ``tft.TFTransformOutput.raw_feature_spec()`` works for the serving signature. CHECKSUMS.json
    (every file's sha256) is written before COMPLETE; loaders verify against it. A transform
    published before checksums existed is republished from this staging (same fingerprint: same
    inputs). ``fence`` (core.lock.Fence of the root's lease) is checked before COMPLETE."""
    target = transform_dir(root, fingerprint)
    complete = storage.exists(storage.join(target, COMPLETE_MARKER))
    if not complete or not storage.exists(storage.join(target, CHECKSUMS_FILE)):
        storage.copy_tree(staging, target)
        storage.write_bytes_atomic(storage.join(target, "metadata", "schema.pbtxt"), raw_schema_text.encode())
        write_checksums(target, fingerprint)
        if fence is not None:
            fence.check_publish(f"transform {fingerprint}")
        storage.write_bytes_atomic(storage.join(target, COMPLETE_MARKER), fingerprint.encode())
    return fingerprint


def _publish(_unused, fingerprint: str, staging: str, root: str, raw_schema_text: str, fence=None) -> str:
    """``publish_transform``, then point <root>/transforms/CURRENT at it (what ``ctpipe stream``
    applies); ``fence`` is checked before COMPLETE and before CURRENT."""
    publish_transform(staging, root, fingerprint, raw_schema_text, fence=fence)
    set_current(root, fingerprint, fence=fence)
    return fingerprint


class AnalyzeTransform(beam.PTransform):
    """Analyze ``preprocessing_fn`` over the windows' RecordBatches and publish the transform.

    Input: (batches, digests): plain RecordBatches of every window of the run, and
    (window_id, raw content digest) pairs for the fingerprint. Output: a singleton PCollection
    with the published fingerprint. The transform_fn is staged under ``scratch`` (a storage URI,
    like tf.Transform's own temp dir, so workers on other machines can write it) and copied to
    <root>/transforms/<fingerprint>/ with COMPLETE last; nothing passes through the driver's disk.
    """

    def __init__(self, preprocessing_fn: str, schema_text: str, arrow_schema: pa.Schema, root: str,
                 scratch: str, fence=None):
        super().__init__()
        self._fn_spec = preprocessing_fn
        self._fn = load_function(preprocessing_fn, "transform.preprocessing_fn")
        self._schema_text = schema_text
        self._arrow_schema = arrow_schema
        self._root = root
        self._scratch = scratch
        self._fence = fence

    def expand(self, inputs):
        from core.schema_store import schema_from_text

        batches, digests = inputs
        staging = storage.join(self._scratch, "transform_output")
        config = tensor_adapter_config(schema_from_text(self._schema_text), self._arrow_schema)
        with tft_beam.Context(temp_dir=storage.join(self._scratch, "tft_tmp"), force_tf_compat_v1=False):
            transform_fn = (batches, config) | "Analyze" >> tft_beam.AnalyzeDataset(self._fn)
            written = transform_fn | "StageTransformFn" >> tft_beam.WriteTransformFn(staging)
        fn_spec, schema_text = self._fn_spec, self._schema_text
        fingerprint = (digests
                       | "CollectDigests" >> beam.combiners.ToList()
                       | "Fingerprint" >> beam.Map(lambda d: transform_fingerprint(fn_spec, schema_text, d)))
        return written | "PublishTransform" >> beam.Map(
            _publish, fingerprint=beam.pvalue.AsSingleton(fingerprint), staging=staging, root=self._root,
            raw_schema_text=self._schema_text, fence=self._fence)


class TransformApplier:
    """Applies a published transform to one RecordBatch at a time, on a worker.

    The transform is loaded from <root>/transforms/<fingerprint>/ by its storage URI (copied to a
    worker-local directory first when the root is an object store). The tensors are converted
    back to Arrow by tf.Transform's own converter for the transformed schema and encoded by
    tfx_bsl, the same path ``TransformDataset`` takes, so a window gives the same examples
    whichever graph seals it.
    """

    def __init__(self, root: str, fingerprint: str, schema_text: str, arrow_schema: pa.Schema):
        from tensorflow_transform import impl_helper

        from core.schema_store import schema_from_text

        source = transform_dir(root, fingerprint)
        if not storage.exists(storage.join(source, COMPLETE_MARKER)):
            raise StorageError(f"transform {fingerprint!r} is not published under {source} (no "
                               f"{COMPLETE_MARKER} marker); run `ctpipe backfill` to publish a transform")
        self.fingerprint = fingerprint
        local = source if storage.is_local(source) else storage.download_tree(
            source, os.path.join(tempfile.mkdtemp(prefix="ctpipe-transform-"), fingerprint))
        verify_copy(local, fingerprint)
        self.output = tft.TFTransformOutput(local)
        self._adapter = tensor_adapter.TensorAdapter(
            tensor_adapter_config(schema_from_text(schema_text), arrow_schema))
        self._converter = impl_helper.make_tensor_to_arrow_converter(self.output.transformed_metadata.schema)

    def transformed_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        outputs = self.output.transform_raw_features(self._adapter.ToBatchTensors(batch),
                                                     drop_unused_features=True)
        return self._converter.convert(outputs)

    def examples(self, batch: pa.RecordBatch) -> list:
        """Serialized transformed tf.Examples of ``batch``'s rows, in row order."""
        if batch.num_rows == 0:
            return []
        return deterministic_examples(self.transformed_batch(batch))

    def tfrecord_part(self, batch: pa.RecordBatch, slice_rows: int = APPLY_SLICE_ROWS) -> tuple[bytes, int]:
        """(GZIP TFRecord file of ``batch``'s transformed examples, their count): the bytes of
        ``tfrecord_gz_bytes(self.examples(batch))``. The rows are transformed ``slice_rows`` at a
        time, as TFT's own Beam apply batches them (a transform is applied row by row; only its
        analyzers see many rows), and each slice's frames are deflated on the compression thread
        while the next slice is transformed, so only a slice's examples are held at once."""
        writer, added, count = GzipWriter(), [], 0
        for start in range(0, batch.num_rows, slice_rows):
            examples = self.examples(batch.slice(start, slice_rows))
            count += len(examples)
            added.append(in_background(writer.add, tfrecord_frames(examples)))
        for done in added:
            done.result()
        return writer.finish(), count
