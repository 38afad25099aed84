"""Reading event files (JSONL, CSV, Parquet; local, s3://, gs://) with their source positions."""
from __future__ import annotations

import csv
import io
import json
import zlib

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from core.errors import InputError
from core.records import SourceRecord


def match_files(pattern: str) -> list[tuple[str, int]]:
    """(path, size) of the files matching ``pattern``; an empty match is an error."""
    try:
        result = FileSystems.match([pattern])[0]
    except Exception as exc:
        raise InputError(f"cannot list input files {pattern!r}: {exc}") from exc
    files = sorted((m.path, m.size_in_bytes) for m in result.metadata_list)
    if not files:
        raise InputError(f"no input files match {pattern!r}; check source.files.uri in the config")
    return files


def _open(path: str):
    return FileSystems.open(path)  # compression detected from the extension (.gz, .bz2, ...)


def read_jsonl(path: str):
    with _open(path) as handle:
        lineno = 0
        while True:
            line = handle.readline()
            if not line:
                break
            lineno += 1
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield SourceRecord(path, str(lineno), line)


def read_csv(path: str):
    with _open(path) as handle:
        lines = io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(lines)
        header = next(reader, None)
        if not header:
            return
        for row in reader:
            lineno = reader.line_num
            raw = ",".join(row).encode("utf-8", "surrogateescape")
            if len(row) != len(header):
                yield SourceRecord(path, str(lineno), raw, {"__csv_error__": f"{len(row)} columns, header has {len(header)}"})
                continue
            yield SourceRecord(path, str(lineno), raw, {k: (v if v != "" else None) for k, v in zip(header, row)})


def read_parquet(path: str):
    import pyarrow.parquet as pq

    with _open(path) as handle:
        table = pq.read_table(io.BytesIO(handle.read()))
    for index, row in enumerate(table.to_pylist()):
        yield SourceRecord(path, str(index), json.dumps(row, default=str).encode(), row)


_READERS = {"jsonl": read_jsonl, "csv": read_csv, "parquet": read_parquet}


class _ReadFileDoFn(beam.DoFn):
    def __init__(self, fmt: str):
        self._fmt = fmt
        self._records = beam.metrics.Metrics.counter("ctpipe", "records_in")

    def process(self, path: str):
        try:
            for record in _READERS[self._fmt](path):
                self._records.inc()
                yield record
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            # A file we cannot read at all fails the run (nothing is sealed): retrying cannot help
            # and skipping it would silently lose its records.
            raise InputError(f"input file {path} is unreadable or corrupt ({type(exc).__name__}: {exc}); "
                             "fix or remove it and rerun") from exc


class ReadEventFiles(beam.PTransform):
    """Reads every file of ``files`` as SourceRecords; the file list is fixed at construction."""

    def __init__(self, files: list[str], fmt: str):
        super().__init__()
        if fmt not in _READERS:
            raise InputError(f"unknown file format {fmt!r}; use jsonl, csv or parquet")
        self._files = list(files)
        self._fmt = fmt

    def expand(self, pbegin):
        return (pbegin
                | "ListFiles" >> beam.Create(self._files)
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadLines" >> beam.ParDo(_ReadFileDoFn(self._fmt)))
