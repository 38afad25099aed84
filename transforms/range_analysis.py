"""tf.Transform analysis over a training range, one cached dataset per window version.

``AnalyzeRange`` reads each window's raw tf.Examples (its ``raw-*`` parts, through Beam's file
systems, so workers read the store themselves) as a tf.Transform dataset keyed by its analyzer
cache entry key (core/analysis_cache.py), and runs ``AnalyzeDatasetWithCache``:

- the accumulators of windows whose entry is in the cache are read from it
  (``ReadAnalysisCacheFromFS``) and their examples are not read at all (tf.Transform's
  ``get_analysis_dataset_keys`` says which datasets the analysis still needs);
- the other windows are read and analyzed, and their new accumulators are written to
  ``cache_out`` (``WriteAnalysisCacheToFS``, in the run's scratch space: the driver publishes
  them under the root after the pipeline finished, ENTRY.json last);
- the transform_fn is staged under ``transform_out`` (published by the driver).

Rows read per dataset are counted in the Beam counter ``ctpipe_analysis:rows[<entry key>]``, so
the driver (and tests) see which windows were really analyzed. A preprocessing_fn with an
analyzer that tf.Transform cannot cache needs every dataset: then every window is read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import apache_beam as beam
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.beam import analyzer_cache
from tensorflow_transform.beam.analysis_graph_builder import get_analysis_dataset_keys
from tfx_bsl.public import tfxio
from tfx_bsl.tfxio.tensor_adapter import TensorAdapter

from transforms.preprocess import load_function

COUNTER_NAMESPACE = "ctpipe_analysis"


def rows_counter_name(entry_key: str) -> str:
    return f"rows[{entry_key}]"


@dataclass(frozen=True)
class RangeDataset:
    """One window version of the range: its cache entry key and raw part files."""

    entry_key: str
    raw_files: tuple


def _count_rows(batch, entry_key: str):
    beam.metrics.Metrics.counter(COUNTER_NAMESPACE, rows_counter_name(entry_key)).inc(batch.num_rows)
    return batch


class AnalyzeRange(beam.PTransform):
    """pipeline -> the written transform_fn (tf.Transform's WriteTransformFn output).

    ``datasets``: RangeDataset per window version, ``cached``: entry keys to read from
    ``cache_in`` (a folder tf.Transform can read: local or gs://); ``cache_out`` and
    ``transform_out``: scratch folders. After expansion ``needed`` holds the entry keys whose
    examples the analysis reads (tf.Transform's ``get_analysis_dataset_keys`` given the cache)."""

    def __init__(self, preprocessing_fn: str, schema, datasets, cached: set,
                 cache_in: Optional[str], cache_out: str, transform_out: str, temp_dir: str):
        super().__init__()
        self._fn = load_function(preprocessing_fn, "transform.preprocessing_fn")
        self._schema = schema
        self._datasets = tuple(datasets)
        self._cached = set(cached)
        self.needed: set = set()
        self._cache_in = cache_in
        self._cache_out = cache_out
        self._transform_out = transform_out
        self._temp_dir = temp_dir

    def expand(self, pbegin):
        pipeline = pbegin.pipeline
        keys = {d.entry_key: analyzer_cache.DatasetKey(d.entry_key) for d in self._datasets}
        sources = {d.entry_key: tfxio.TFExampleRecord(file_pattern=list(d.raw_files), schema=self._schema)
                   for d in self._datasets}
        config = next(iter(sources.values())).TensorAdapterConfig()
        with tft_beam.Context(temp_dir=self._temp_dir, force_tf_compat_v1=False):
            cached_keys = [keys[k] for k in sorted(self._cached)]
            input_cache = (pbegin | "ReadAnalyzerCache" >> analyzer_cache.ReadAnalysisCacheFromFS(
                self._cache_in, cached_keys)) if cached_keys else {}
            specs = TensorAdapter(config).OriginalTypeSpecs()
            self.needed = {k.key for k in get_analysis_dataset_keys(self._fn, specs, list(keys.values()),
                                                                    input_cache, force_tf_compat_v1=False)}
            data = {}
            for d in self._datasets:
                if d.entry_key in self.needed:
                    data[keys[d.entry_key]] = (pbegin
                                               | f"Read[{d.entry_key}]" >> sources[d.entry_key].BeamSource()
                                               | f"Count[{d.entry_key}]" >> beam.Map(_count_rows, d.entry_key))
                else:
                    data[keys[d.entry_key]] = None  # fully covered by the cache: never read
            transform_fn, output_cache = ((data, input_cache, config)
                                          | "AnalyzeWithCache" >> tft_beam.AnalyzeDatasetWithCache(self._fn,
                                                                                                    pipeline=pipeline))
            written = transform_fn | "StageTransformFn" >> tft_beam.WriteTransformFn(self._transform_out)
            if output_cache:
                _ = output_cache | "StageAnalyzerCache" >> analyzer_cache.WriteAnalysisCacheToFS(
                    pipeline, self._cache_out, dataset_keys=list(keys.values()))
        return written
