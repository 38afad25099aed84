"""Config -> the small typed specs the stages take (stages never see the whole Config)."""
from __future__ import annotations

from typing import Optional

from core import layout
from core.version import code_version


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
    ``fence``: the root's lease (core.lock.Fence) the workers check before they publish."""
    from transforms.seal import SealSpec, TransformSpec
    from transforms.validate_windows import ValidationSettings

    root = config.storage.root
    transform = (TransformSpec(fingerprint=fingerprint) if fingerprint is not None else
                 TransformSpec(preprocessing_fn=config.transform.preprocessing_fn,
                               scratch=layout.run_scratch_dir(root, run_id)))
    return SealSpec(root=root, window_size_s=config.window.size_s, schema_text=schema_text,
                    schema_version=schema_version, validation=ValidationSettings.from_config(config, schema_text),
                    transform=transform, code_version=code_version(),
                    sources=tuple(sorted((sources or {}).items())), compare_within_run=compare_within_run,
                    id_field=config.id_field, fence=fence)
