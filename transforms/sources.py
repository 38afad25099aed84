"""Reading event files (JSONL, CSV, Parquet; local, s3://, gs://) with their source positions.

A file that cannot be read at all (missing, corrupt compression, not Parquet) fails the run with
InputError; inside a readable file, a bad record never does: the reader passes it on with its
problem (``SourceRecord.error``) and decoding makes it a dead letter with that reason.

JSONL: one JSON value per line; blank lines are skipped (line numbers still count them); ``\\r\\n``
line ends are fine; a line longer than ``max_record_bytes`` is an ``oversize`` record holding its
first ``max_record_bytes`` bytes.

CSV: a header row names the columns; a UTF-8 byte-order mark before it is dropped; a column whose
header is empty (pandas writes its index that way) is not read. Values are untyped text, typed
while decoding (by the schema, or by their form before the first schema); an empty value is null.
Per row (its position is its first line): blank lines are skipped; ``bad_row`` the wrong number
of columns, or not valid CSV (a stray quote, an unterminated quoted field, a field over the csv
module's 128 KiB field limit); ``not_utf8`` bytes that are not UTF-8; ``oversize`` a row over
``max_record_bytes`` (reading goes on at the next line); ``duplicate_key`` every row of a file
whose header repeats a column name.

Parquet: see ``transforms/arrow_values.py`` for how each Arrow type becomes a value.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import zlib
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from core.errors import InputError
from core.records import SourceRecord

DEFAULT_MAX_RECORD_BYTES = 1_000_000
_CHUNK_BYTES = 1 << 20


def match_files(pattern: str) -> list[tuple[str, int]]:
    """(path, size) of the files matching ``pattern``; an empty match is an error."""
    try:
        result = FileSystems.match([pattern])[0]
    except Exception as exc:
        raise InputError(f"cannot list input files {pattern!r}: {exc}") from exc
    files = sorted((m.path, m.size_in_bytes) for m in result.metadata_list)
    if not files:
        raise InputError.no_match(pattern)
    return files


def _open(path: str):
    return FileSystems.open(path)  # compression detected from the extension (.gz, .bz2, ...)


def physical_lines(handle, max_bytes: int):
    """(line, length) per line of a binary file: the line without its ``\\n`` (cut to
    ``max_bytes + 1`` bytes) and its full length, so a caller can tell a line over the limit
    without ever holding it whole. Each chunk read is split in C; only a line that runs across
    chunks is put together piece by piece."""
    keep = max_bytes + 1
    kept, length = bytearray(), 0  # the line that runs on past the last chunk: its first bytes, its length
    while True:
        chunk = handle.read(_CHUNK_BYTES)
        if not chunk:
            break
        lines = chunk.split(b"\n")
        rest = lines.pop()  # after the chunk's last newline: the start of the next line
        if lines:
            first = lines[0]
            if length:
                room = keep - len(kept)
                if room > 0:
                    kept += first[:room]
                yield bytes(kept), length + len(first)
            else:
                yield (first if len(first) <= keep else first[:keep]), len(first)
            for line in lines[1:]:
                yield (line if len(line) <= keep else line[:keep]), len(line)
            kept, length = bytearray(), 0
        if rest:
            room = keep - len(kept)
            if room > 0:
                kept += rest[:room]
            length += len(rest)
    if length:
        yield bytes(kept), length


def _oversize(kind: str, length: int, max_bytes: int) -> tuple:
    return ("oversize", f"{kind} of {length} bytes exceeds the limit of {max_bytes} bytes "
                        f"(the first {max_bytes} bytes are kept)")


def read_jsonl(path: str, max_bytes: int = DEFAULT_MAX_RECORD_BYTES):
    with _open(path) as handle:
        for lineno, (line, length) in enumerate(physical_lines(handle, max_bytes), start=1):
            if length > max_bytes:
                yield SourceRecord(path, str(lineno), line[:max_bytes], error=_oversize("line", length, max_bytes))
                continue
            line = line.rstrip(b"\r")
            if line and not line.isspace():  # what ``line.strip()`` leaves is not empty
                yield SourceRecord(path, str(lineno), line)


class _RowTooLong(Exception):
    pass


class _CsvFeed:
    """Feeds ``csv.reader`` one physical line at a time and keeps the lines of the row being read
    (number, bytes, problem), so every row keeps its exact bytes and first line number."""

    def __init__(self, handle, max_bytes: int):
        self._lines = physical_lines(handle, max_bytes)
        self._max = max_bytes
        self._lineno = 0
        self.row: list = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line, length = next(self._lines)
        self._lineno += 1
        problem = _oversize("line", length, self._max) if length > self._max else None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = line.decode("utf-8", "surrogateescape")
            problem = problem or ("not_utf8", f"line {self._lineno} is not UTF-8 ({exc.reason} at byte {exc.start})")
        if self._lineno == 1:
            text = text.lstrip("\ufeff")
        self.row.append((self._lineno, line[:self._max], problem))
        if sum(len(raw) for _n, raw, _p in self.row) > self._max:
            raise _RowTooLong()
        return text + "\n"

    def take(self) -> tuple:
        """(first line number, raw bytes, first problem) of the row read so far; starts a new row."""
        lines, self.row = self.row, []
        if not lines:
            return self._lineno, b"", None
        problems = [p for _n, _raw, p in lines if p is not None]
        return lines[0][0], b"\n".join(raw for _n, raw, _p in lines), problems[0] if problems else None


def _csv_header(row: list, path: str) -> tuple:
    """(columns to read as (index, name), number of columns, problem for every row or None)."""
    columns = [(i, name) for i, name in enumerate(row) if name != ""]
    names = [name for _i, name in columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    problem = None
    if repeated:
        problem = ("duplicate_key", f"the header of {path} names column {repeated[0]!r} more than once")
    return columns, len(row), problem


def read_csv(path: str, max_bytes: int = DEFAULT_MAX_RECORD_BYTES):
    with _open(path) as handle:
        feed = _CsvFeed(handle, max_bytes)
        reader = csv.reader(feed, strict=True)
        header = None
        while True:
            row, problem = None, None
            try:
                row = next(reader)
            except StopIteration:
                break
            except _RowTooLong:
                problem = ("oversize", f"row exceeds the limit of {max_bytes} bytes (reading goes on at the next line)")
            except csv.Error as exc:
                problem = ("bad_row", f"not valid CSV: {exc}")
            lineno, raw, line_problem = feed.take()
            if header is None:
                if row is None:
                    raise ValueError(f"the header row of {path} is not valid CSV ({problem[1]})")
                header = _csv_header(row, path)
                continue
            record = _csv_record(path, lineno, raw, row, header, problem or line_problem)
            if record is not None:
                yield record


def _csv_record(path: str, lineno: int, raw: bytes, row, header: tuple, problem):
    columns, width, header_problem = header
    if problem is None and row is not None and not row:
        return None  # blank line
    problem = problem or header_problem
    if problem is None and len(row) != width:
        problem = ("bad_row", f"{len(row)} columns, the header has {width}")
    if problem is not None:
        return SourceRecord(path, str(lineno), raw, error=problem)
    fields = {name: (row[i] if row[i] != "" else None) for i, name in columns}
    return SourceRecord(path, str(lineno), raw, fields, text_values=True)


def read_parquet(path: str, max_bytes: int = DEFAULT_MAX_RECORD_BYTES):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.arrow_values import table_rows

    with _open(path) as handle:
        try:
            table = pq.read_table(io.BytesIO(handle.read()))
        except pa.ArrowException as exc:  # not Parquet, or a type this pyarrow cannot read at all
            raise ValueError(f"not a readable Parquet file: {exc}") from exc
    for index, (row, problem) in enumerate(table_rows(table)):
        raw = json.dumps(row, default=str, sort_keys=True).encode()
        yield SourceRecord(path, str(index), raw, row, error=problem)


_READERS = {"jsonl": read_jsonl, "csv": read_csv, "parquet": read_parquet}


def read_file(path: str, fmt: str, max_bytes: int, per_file: Optional[int] = None):
    """The SourceRecords of one file (only the first ``per_file``, when given). A file that cannot
    be read at all raises InputError: retrying cannot help, and skipping it would silently lose
    its records, so the run fails and nothing is sealed."""
    try:
        records = _READERS[fmt](path, max_bytes)
        yield from records if per_file is None else itertools.islice(records, per_file)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise InputError(f"input file {path} is unreadable or corrupt ({type(exc).__name__}: {exc}); "
                         "fix or remove it and rerun") from exc


def check_format(fmt: str) -> None:
    if fmt not in _READERS:
        raise InputError(f"unknown file format {fmt!r}; use jsonl, csv or parquet")


def spread_files(pbegin, files: list):
    """The file paths as a PCollection, spread over the runner's workers."""
    return pbegin | "ListFiles" >> beam.Create(list(files)) | "SpreadFiles" >> beam.Reshuffle()


class _ReadFileDoFn(beam.DoFn):
    def __init__(self, fmt: str, max_bytes: int, per_file: Optional[int] = None):
        self._fmt = fmt
        self._max_bytes = max_bytes
        self._per_file = per_file
        self._records = beam.metrics.Metrics.counter("ctpipe", "records_in")

    def process(self, path: str):
        for record in read_file(path, self._fmt, self._max_bytes, self._per_file):
            self._records.inc()
            yield record


class ReadEventFiles(beam.PTransform):
    """Reads every file of ``files`` as SourceRecords; the file list is fixed at construction.
    ``per_file``: only the first that many records of each file (a sample)."""

    def __init__(self, files: list[str], fmt: str, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 per_file: Optional[int] = None):
        super().__init__()
        check_format(fmt)
        self._files = list(files)
        self._fmt = fmt
        self._max_bytes = max_record_bytes
        self._per_file = per_file

    def expand(self, pbegin):
        return (spread_files(pbegin, self._files)
                | "ReadLines" >> beam.ParDo(_ReadFileDoFn(self._fmt, self._max_bytes, self._per_file)))
