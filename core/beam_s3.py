"""Beam's S3 file system with one boto3 client per thread (imported only for s3:// paths).

Beam 2.68's S3FileSystem builds a fresh boto3 session and client (about 0.5 s of botocore model
loading on a small machine, several seconds on a loaded one) inside every call; listing the
windows of a root or staging them for training makes dozens of calls. ``SharedClientS3FileSystem``
routes the calls ctpipe makes (list, open/create, exists, rename, delete) through a per-thread
``S3IO`` built once; everything else is Beam's. core/storage.py and the file registry use it.

The class is built on first use (``shared_client_s3_filesystem_class``) so that importing this
module, like every core module, loads no Beam.
"""
from __future__ import annotations

import functools
import threading


@functools.lru_cache(maxsize=None)
def shared_client_s3_filesystem_class():
    """The SharedClientS3FileSystem class (Beam's S3FileSystem, one boto3 client per thread)."""
    from apache_beam.io.aws import s3io
    from apache_beam.io.aws.clients.s3 import boto3_client
    from apache_beam.io.aws.s3filesystem import S3FileSystem
    from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata, FileSystem

    class SharedClientS3FileSystem(S3FileSystem):
        """Beam's S3FileSystem with one boto3 client per thread instead of one per call."""

        def __init__(self, pipeline_options):
            super().__init__(pipeline_options)
            self._local_io = threading.local()

        @classmethod
        def scheme(cls):
            """Not a second handler of s3://: Beam's FileSystems looks file systems up by scheme
            among all subclasses and refuses a scheme with two; ctpipe builds this one itself."""
            return "ctpipe-registry-s3"

        def _io(self) -> s3io.S3IO:
            io = getattr(self._local_io, "io", None)
            if io is None:
                io = self._local_io.io = s3io.S3IO(client=boto3_client.Client(options=self._options))
            return io

        def _list(self, dir_or_prefix):
            try:
                for path, (size, updated) in self._io().list_files(dir_or_prefix,
                                                                   with_metadata=True):
                    yield FileMetadata(path, size, updated)
            except Exception as e:  # Beam's contract: listing errors surface as BeamIOError
                raise BeamIOError("List operation failed", {dir_or_prefix: e}) from e

        def _path_open(self, path, mode, mime_type="application/octet-stream",
                       compression_type=CompressionTypes.AUTO):
            if FileSystem._get_compression_type(path, compression_type) != \
                    CompressionTypes.UNCOMPRESSED:
                return super()._path_open(path, mode, mime_type, compression_type)
            return self._io().open(path, mode, mime_type=mime_type)

        def exists(self, path):
            try:
                return self._io().exists(path)
            except Exception as e:  # Beam's contract: errors surface as BeamIOError
                raise BeamIOError("exists() operation failed", {path: e}) from e

        def rename(self, source_file_names, destination_file_names):
            results = self._io().rename_files(list(zip(source_file_names, destination_file_names)))
            failed = {(src, dst): err for src, dst, err in results if err is not None}
            if failed:
                raise BeamIOError("Rename operation failed", failed)

        def delete(self, paths):
            failed = {p: err for p, err in self._io().delete_paths(paths).items() if err is not None}
            if failed:
                raise BeamIOError("Delete operation failed", failed)

    return SharedClientS3FileSystem


_shared: dict = {}
_shared_lock = threading.Lock()


def shared_s3_filesystem(pipeline_options):
    """The process's SharedClientS3FileSystem for ``pipeline_options`` (built once per options object)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    key = id(pipeline_options)
    with _shared_lock:
        entry = _shared.get(key)
        if entry is None or entry[0] is not pipeline_options:
            entry = _shared[key] = (pipeline_options,
                                    shared_client_s3_filesystem_class()(pipeline_options or PipelineOptions([])))
        return entry[1]
