"""The gzip files a window version holds, encoded without holding the interpreter.

A sealed window's raw and transformed examples are GZIP TFRecord files and its provenance is gzip
JSON. TensorFlow's ``TFRecordWriter`` deflates record by record with Python's global lock held
(the largest self-time entry of a 1M-row backfill's profile, 7 % of it), so nothing else could run
meanwhile. Here the TFRecord frames (length, masked CRC32C of the
length, data, masked CRC32C of the data: TensorFlow's record format) are built in one pass and
deflated by zlib in a single call, which releases the lock: ``in_background`` runs that call on a
thread while the caller goes on with the window's statistics on the other core.

Bytes are deterministic: the same records give the same file on every run (gzip header with
mtime 0 and no name, as ``gzip.GzipFile(mtime=0)`` writes it), which is what the manifests' sha256
and byte-identical reruns rely on.
"""
from __future__ import annotations

import struct
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable

import google_crc32c

GZIP_LEVEL = 6
"""zlib's default: a third of level 9's time on provenance JSON for under 1 % more bytes; level 3
deflated raw examples 2.9x faster for 9 % more bytes (measured 2026-12-03), not taken."""

_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of ``data``."""
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def tfrecord_frames(records: Iterable[bytes]) -> bytes:
    """The uncompressed TFRecord stream of ``records``. Headers depend only on a record's length,
    so each distinct length's header is computed once."""
    headers: dict[int, bytes] = {}
    out: list = []
    append, value, pack = out.append, google_crc32c.value, _U32.pack
    for record in records:
        size = len(record)
        header = headers.get(size)
        if header is None:
            length = _U64.pack(size)
            header = headers[size] = length + pack(masked_crc32c(length))
        crc = value(record)
        append(header)
        append(record)
        append(pack(((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF))
    return b"".join(out)


def _gzip_header(level: int) -> bytes:
    flags = b"\x02" if level == 9 else b"\x04" if level == 1 else b"\x00"
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + flags + b"\xff"


def gzip_member(data: bytes, level: int = GZIP_LEVEL) -> bytes:
    """One gzip member of ``data``: the bytes ``gzip.GzipFile(mtime=0, compresslevel=level)``
    writes, from a single zlib call (which runs without the interpreter lock)."""
    body = zlib.compress(data, level, -zlib.MAX_WBITS)
    return _gzip_header(level) + body + _U32.pack(zlib.crc32(data)) + _U32.pack(len(data) & 0xFFFFFFFF)


class GzipWriter:
    """One gzip member fed piece by piece, in order (``add`` may run on the compression thread:
    zlib works without the interpreter lock); ``finish`` returns the bytes ``gzip_member`` gives
    for all the pieces joined: zlib's stream does not depend on how its input was cut
    (tests/transforms/test_gzip_files.py holds it to that)."""

    def __init__(self, level: int = GZIP_LEVEL):
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._out = [_gzip_header(level)]
        self._crc, self._size = 0, 0

    def add(self, data: bytes) -> None:
        self._out.append(self._deflate.compress(data))
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)

    def finish(self) -> bytes:
        self._out += [self._deflate.flush(), _U32.pack(self._crc), _U32.pack(self._size & 0xFFFFFFFF)]
        return b"".join(self._out)


def tfrecord_gz_bytes(records: Iterable[bytes]) -> bytes:
    """GZIP TFRecord file content of ``records`` (what tf.data.TFRecordDataset(..., 'GZIP') reads)."""
    return gzip_member(tfrecord_frames(records))


_POOL: list = []
_POOL_LOCK = threading.Lock()


def in_background(fn: Callable, *args) -> Future:
    """``fn(*args)`` on this process's compression thread (one: the machines this runs on have
    few cores, and each runner worker process has its own)."""
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctpipe-gzip"))
        pool = _POOL[0]
    return pool.submit(fn, *args)
