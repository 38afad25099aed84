"""Beam file systems for the file registry's object-store roots (imported only for s3:// and gs://).

Kept apart from training/registry/file.py so that a registry on a local directory never imports
Beam: ``ctpipe registry list`` on a local registry answers in well under a second. On S3 the
registry uses core/beam_s3.py's file system (one boto3 client per thread).
"""
from __future__ import annotations

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from core.beam_s3 import shared_client_s3_filesystem_class
from core.errors import ConfigError


def filesystem_for(uri: str, pipeline_options) -> FileSystem:
    """The Beam FileSystem serving ``uri``, constructed with ``pipeline_options``.

    ``FileSystems.get_filesystem`` takes its options from process-global state; constructing the
    class directly keeps a registry's S3/GCS endpoint and credentials its own.
    """
    scheme = FileSystems.get_scheme(uri)
    if scheme == "s3":
        return shared_client_s3_filesystem_class()(pipeline_options or PipelineOptions([]))
    classes = [c for c in FileSystem.get_all_subclasses() if c.scheme() == scheme]
    if len(classes) != 1:
        raise ConfigError(f"registry uri {uri!r}: no single Beam filesystem for scheme "
                          f"{scheme!r} (found {len(classes)}); use a local path, s3:// or gs://")
    return classes[0](pipeline_options=pipeline_options or PipelineOptions([]))
