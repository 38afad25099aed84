"""Config -> the small typed specs the stages take (stages never see the whole Config)."""
from __future__ import annotations

import os
import tempfile
from typing import Optional

from core import layout, storage
from core.errors import ConfigError
from core.version import code_version

#: Object-store schemes TensorFlow's own file system layer (tf.io.gfile) reads and writes.
TENSORFLOW_SCHEMES = ("gs://",)
#: Runners whose workers share the driver's machine (and so its temporary directory).
LOCAL_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner", "PrismRunner",
                 "ForkedDirectRunner")


def transform_scratch(config, run_id: str) -> str:
    """Where tf.Transform's temp dir and the staged transform_fn of run ``run_id`` go: TensorFlow
    writes them itself, so never on an s3:// root (see ``transform.scratch_dir``)."""
    root = config.storage.root
    if storage.is_local(root) or root.startswith(TENSORFLOW_SCHEMES):
        return layout.run_scratch_dir(root, run_id)
    base = config.transform.scratch_dir or os.path.join(tempfile.gettempdir(), "ctpipe-tft")
    return storage.join(base, run_id)


def check_transform_scratch(config, options) -> None:
    """ConfigError when the run would analyze a transform on an s3:// root with its scratch in the
    driver's temporary directory but on a runner whose workers run elsewhere."""
    root = config.storage.root
    if storage.is_local(root) or root.startswith(TENSORFLOW_SCHEMES) or config.transform.scratch_dir:
        return
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    name = runner if isinstance(runner, str) else type(runner).__name__
    if name.split(".")[-1] not in LOCAL_RUNNERS:
        raise ConfigError(f"storage.root {root} is on S3, which tf.Transform cannot write (TensorFlow has no S3 "
                          f"file system), and runner {name} runs workers elsewhere: set transform.scratch_dir to "
                          "a directory every worker shares (a shared mount, or gs://)")


def max_future_ms(config) -> Optional[int]:
    """How far ahead of its ingest time an event time may be (``event_time.max_future``), in ms."""
    from pipeline.config import parse_duration

    text = config.event_time.max_future
    if text is None:
        return None
    return int(parse_duration(text, key="event_time.max_future") * 1000)


def decode_spec(config, schema=None, now_ms: Optional[int] = None):
    """DecodeSpec of ``config``; feature types from ``schema`` once one is stored; ``now_ms``:
    when the stream cycle was planned (a second reference for the future bound)."""
    from transforms.decode import DecodeSpec
    from transforms.validation import feature_types

    return DecodeSpec(event_time_field=config.event_time.field, id_field=config.id_field,
                      event_time_format=config.event_time.format,
                      feature_types=feature_types(schema) if schema is not None else {},
                      max_value_bytes=(config.source.kafka.max_message_bytes if config.source.kafka else 1_000_000),
                      max_future_ms=max_future_ms(config), now_ms=now_ms)


def seal_spec(config, schema_text: str, schema_version: int, run_id: str, fingerprint: Optional[str] = None,
              sources: Optional[dict] = None, compare_within_run: bool = True, fence=None):
    """SealSpec for sealing windows of ``config``'s root: apply ``fingerprint``, or (None) analyze
    ``transform.preprocessing_fn`` over the sealed windows with scratch space of ``run_id``;
    ``fence``: the root's lease (core.lock.Fence) the workers check before they publish.
    A bounded run (``compare_within_run``) stages each window's rows between stages under its
    scratch directory (``core.layout.run_staging_dir``), so its memory does not grow with its windows."""
    from transforms.seal import SealSpec, TransformSpec
    from transforms.validate_windows import ValidationSettings

    root = config.storage.root
    transform = (TransformSpec(fingerprint=fingerprint) if fingerprint is not None else
                 TransformSpec(preprocessing_fn=config.transform.preprocessing_fn,
                               scratch=transform_scratch(config, run_id)))
    return SealSpec(root=root, window_size_s=config.window.size_s, schema_text=schema_text,
                    schema_version=schema_version, validation=ValidationSettings.from_config(config, schema_text),
                    transform=transform, code_version=code_version(),
                    sources=tuple(sorted((sources or {}).items())), compare_within_run=compare_within_run,
                    id_field=config.id_field, fence=fence, batch_rows=config.window.batch_rows,
                    staging=layout.run_staging_dir(root, run_id) if compare_within_run else None)
