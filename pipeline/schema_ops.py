"""The curated schema's lifecycle, without the command line (``ctpipe schema`` is pipeline/cli/schema.py).

Schemas live at <root>/schema/v<N>/schema.pbtxt (TFMD text format, core.schema_store).
``statistics_of_windows`` recomputes TFDV statistics from the raw examples of chosen sealed windows
(window statistics cannot be merged exactly: their histograms and quantiles are per window), from
which a schema with TRAINING/SERVING environments is inferred; ``validate_schema_text`` checks a
curated file before it is stored as a new version; ``schema_diff`` compares two versions feature by
feature.
"""
from __future__ import annotations

from core import storage, window_store
from core.errors import ConfigError, StorageError


def statistics_of_windows(windows):
    """TFDV statistics over the raw examples of ``windows`` (SealedWindow list), in one pass."""
    import pyarrow as pa
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    from transforms.validation import window_statistics

    serialized = []
    for window in windows:
        for path in window.file_paths("raw"):
            data = storage.read_bytes(path)
            serialized += [r.numpy() for r in tf.data.TFRecordDataset([tf.constant(_local_copy(path, data))],
                                                                      compression_type="GZIP")]
    if not serialized:
        raise StorageError("the chosen windows hold no records; pick other windows (see `ctpipe windows list`)")
    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(serialized)
    return window_statistics(pa.RecordBatch.from_arrays(batch.columns, batch.schema.names), "+".join(
        w.window_id for w in windows))


def _local_copy(path, data):
    """A local file holding ``data`` for ``path`` (``path`` itself when it is local)."""
    import os
    import tempfile

    if "://" not in path:
        return path
    fd, local = tempfile.mkstemp(suffix=".tfrecord.gz")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return local


def choose_windows(root, window_ids=None, last=None):
    """The sealed windows named by ``window_ids``, else the newest ``last`` usable ones (all when None)."""
    sealed = window_store.list_sealed(root)
    if window_ids:
        by_id = {w.window_id: w for w in sealed}
        missing = [w for w in window_ids if w not in by_id]
        if missing:
            raise StorageError(f"no sealed window {missing[0]!r} under {root}; see `ctpipe windows list`")
        chosen = [by_id[w] for w in window_ids]
    else:
        chosen = [w for w in sealed if w.usable_for_training]
        if last:
            chosen = chosen[-last:]
    if not chosen:
        raise StorageError(f"no sealed, non-quarantined windows under {root}; run `ctpipe backfill` first")
    return chosen


def validate_schema_text(text: str, source: str, config):
    """Parse and check a curated schema; errors name the file and the fix."""
    from google.protobuf import text_format

    from core.schema_store import schema_from_text
    from transforms.validation import SERVING, TRAINING

    try:
        schema = schema_from_text(text)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source} is not a TFMD Schema in text format: {exc}") from exc
    names = [f.name for f in schema.feature]
    if not names:
        raise ConfigError(f"{source} declares no feature")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: feature {dupes[0]!r} is declared twice")
    for required in (config.id_field, config.event_time.field):
        if required not in names:
            raise ConfigError(f"{source}: the id/event-time field {required!r} is not a feature; add it")
    domains = {d.name for d in schema.string_domain}
    for f in schema.feature:
        if f.HasField("domain") and f.domain not in domains:
            raise ConfigError(f"{source}: feature {f.name!r} refers to string_domain {f.domain!r}, which is not "
                              "declared")
        if f.HasField("float_domain") and f.float_domain.HasField("min") and f.float_domain.HasField("max") \
                and f.float_domain.min > f.float_domain.max:
            raise ConfigError(f"{source}: feature {f.name!r} has float_domain min {f.float_domain.min} above max "
                              f"{f.float_domain.max}")
        for env in list(f.in_environment) + list(f.not_in_environment):
            if env not in schema.default_environment:
                raise ConfigError(f"{source}: feature {f.name!r} names environment {env!r}, not one of "
                                  f"default_environment {list(schema.default_environment)}")
    if config.label_field in names and not {TRAINING, SERVING} <= set(schema.default_environment):
        raise ConfigError(f"{source}: declare default_environment: \"TRAINING\" and \"SERVING\" so the label "
                          f"{config.label_field!r} may be absent from serving data")
    return schema


def _feature_summary(schema) -> dict:
    from google.protobuf import text_format

    out = {}
    domains = {d.name: list(d.value) for d in schema.string_domain}
    for f in schema.feature:
        copy = type(f)()
        copy.CopyFrom(f)
        if copy.HasField("domain"):
            copy.ClearField("domain")
            copy.string_domain.value.extend(domains.get(f.domain, []))
        out[f.name] = text_format.MessageToString(copy, as_one_line=True)
    return out


def schema_diff(a, b) -> dict:
    """Feature-level differences from schema ``a`` to ``b``: added, removed and changed features
    (with the old and new one-line text of each changed feature, string domains resolved)."""
    fa, fb = _feature_summary(a), _feature_summary(b)
    return {
        "added": sorted(set(fb) - set(fa)),
        "removed": sorted(set(fa) - set(fb)),
        "changed": {n: {"from": fa[n], "to": fb[n]} for n in sorted(set(fa) & set(fb)) if fa[n] != fb[n]},
        "environments": {"from": list(a.default_environment), "to": list(b.default_environment)},
    }
