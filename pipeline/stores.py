"""The config's ``object_store`` section -> every client that reaches s3:// or gs://.

The one place the endpoint, region and network limits go from the config to their users:

- Beam pipeline options (``pipeline.options.pipeline_options`` adds ``object_store_flags``), and
  with them Beam's FileSystems, which core/storage.py, the window writers and tf.Transform's
  storage use in the driver and on every worker;
- the file registry (``open_registry``: its own Beam file system built from the same flags);
- MLflow's S3 artifact client (``open_registry`` puts the endpoint in the environment MLflow reads);
- ctpipe's reachability check (``check_uris``), which every command that touches a store runs
  before anything else.

Credentials never pass through here (core/object_store.py says where they come from).
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

from core.object_store import ObjectStoreSettings, beam_flags, check_reachable, mlflow_environment, scheme, use


def settings(config) -> ObjectStoreSettings:
    """The ObjectStoreSettings of ``config.object_store``."""
    section = config.object_store
    connect_s, read_s = section.timeouts_s()
    return ObjectStoreSettings(s3_endpoint_url=section.s3.endpoint_url, s3_region=section.s3.region,
                               connect_timeout_s=connect_s, read_timeout_s=read_s,
                               max_attempts=section.max_attempts)


def object_store_flags(config) -> list[str]:
    """Beam pipeline-option flags (S3 endpoint and region; no credentials) for ``config``; also
    makes its settings this process's for ctpipe's own S3 requests (core.object_store.current)."""
    current = settings(config)
    use(current)
    return beam_flags(current)


def configured_uris(config) -> list[tuple[str, Optional[str]]]:
    """(config key, URI) of every place ``config`` names that may be an object store."""
    validation = config.validation
    return [("storage.root", config.storage.root), ("source.files.uri", config.source.files.uri),
            ("registry.uri", config.registry.uri),
            ("validation.serving_stats_uri", validation.serving_stats_uri),
            ("validation.serving_data", validation.serving_data)]


def uses_object_store(uris: Iterable[tuple[str, Optional[str]]]) -> bool:
    return any(scheme(uri) is not None for _what, uri in uris)


def check_uris(config, uris: Iterable[tuple[str, Optional[str]]]) -> None:
    """Ask every object-store bucket among ``uris`` once, within config's limits (ObjectStoreError)."""
    check_reachable(settings(config), uris)


def registry_options(config):
    """Beam PipelineOptions for the file registry's object store (the object_store flags only)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(object_store_flags(config))


def open_registry(config, **kw):
    """The registry ``config.registry.uri`` names, reaching its object store with ``config``'s
    object_store settings (a file registry on s3:// or gs://, or MLflow's S3 artifact store)."""
    from training.registry import open_registry as open_backend

    uri = config.registry.uri
    if uri.startswith("mlflow"):
        # MLflow's artifact client reads its S3 endpoint and region from the environment only.
        os.environ.update(mlflow_environment(settings(config)))
    elif scheme(uri) is not None:
        kw.setdefault("pipeline_options", registry_options(config))
    return open_backend(uri, **kw)


def use_filesystems(config) -> None:
    """Point Beam's FileSystems (what core/storage.py uses for s3:// and gs://) at ``config``'s
    object_store settings, for callers outside the CLI (the CLI does it with the runner options)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(object_store_flags(config)))
