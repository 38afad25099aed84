"""IngestFiles (transforms/ingest.py): one DoFn per file leaves the same events, dead letters and
counters as reading, decoding, checking and assigning windows record by record, in chunks of one
window each, cut per file."""
import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from core.layout import window_id, window_start_ms
from core.records import DeadLetter, unpack_records
from tests.transforms.test_decode_and_check import LINES, SCHEMA, SPEC
from transforms.decode import decode_record
from transforms.ingest import IngestFiles, WindowChunks
from transforms.record_checks import check_event, record_rules
from transforms.sources import read_file

T0 = 1795737600000  # 2026-11-27T00:00Z
STEPS = ((decode_record, SPEC), (check_event, record_rules(SCHEMA)))


def _files(tmp_path):
    """LINES in one file, and a second file with events of three windows (one before the range)."""
    first = tmp_path / "a.jsonl"
    first.write_bytes(b"\n".join(LINES) + b"\n")
    second = tmp_path / "b.jsonl"
    second.write_bytes(b"\n".join(
        b'{"id": "w%d", "ts": "2026-11-27T0%d:0%d:00Z", "humidity": 1.0}' % (i, i % 3, i % 10) for i in range(12))
        + b"\n\n" + b'{"id": "late", "ts": "2026-11-26T23:59:00Z"}\n')
    return [str(first), str(second)]


def _one_by_one(paths, start_ms, size_s):
    """(sorted (window, id, source, position) of the events in range, sorted dead letters,
    counters) computed record by record."""
    events, dead, counters = [], [], {"records_in": 0, "outside_range": 0}
    for path in paths:
        for record in read_file(path, "jsonl", 10_000):
            counters["records_in"] += 1
            result = record
            for func, arg in STEPS:
                result = func(result, arg)
                if isinstance(result, DeadLetter):
                    break
            if isinstance(result, DeadLetter):
                dead.append((result.reason, result.source, result.position))
                key = f"deadletter:{result.reason}"
                counters[key] = counters.get(key, 0) + 1
            elif result.event_time_ms < start_ms:
                counters["outside_range"] += 1
            else:
                events.append((window_id(window_start_ms(result.event_time_ms, size_s)), result.id, result.source,
                               result.position))
    return sorted(events), sorted(dead), counters


def test_one_dofn_per_file_equals_record_by_record_and_chunks_hold_one_window_of_one_file(tmp_path):
    paths = _files(tmp_path)
    want_events, want_dead, want_counters = _one_by_one(paths, T0, 3600)
    assert want_counters["outside_range"] == 1 and len({w for w, *_ in want_events}) == 3

    def unpack(chunk):
        wid, payload = chunk
        events, dead = unpack_records([payload])
        assert not dead and 0 < len(events) <= 3 and len({e.source for e in events}) == 1
        return [(wid, e.id, e.source, e.position) for e in events]

    with TestPipeline(runner="DirectRunner") as p:
        chunks, dead = p | IngestFiles(paths, "jsonl", 10_000, STEPS, WindowChunks(3600, T0, None, max_items=3))
        assert_that(chunks | beam.FlatMap(unpack), equal_to(want_events), label="Events")
        assert_that(dead | beam.Map(lambda d: (d.reason, d.source, d.position)), equal_to(want_dead), label="Dead")
    counters = {}
    for c in p.result.metrics().query(MetricsFilter().with_namespace("ctpipe"))["counters"]:
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
    assert counters == want_counters


def test_a_file_that_fails_half_way_leaves_nothing_in_the_next_files_chunks(tmp_path, monkeypatch):
    import pytest

    from core.errors import InputError
    from transforms import ingest

    good = tmp_path / "good.jsonl"
    good.write_bytes(LINES[0] + b"\n")

    def reader(path, fmt, max_bytes, per_file=None):
        records = read_file(path, fmt, max_bytes, per_file)
        if path.endswith("broken.jsonl"):  # its valid records, then the reader fails
            yield from records
            raise InputError(f"input file {path} is unreadable or corrupt")
        yield from records

    monkeypatch.setattr(ingest, "read_file", reader)
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"\n".join(LINES[0].replace(b'"a"', b'"x%d"' % i) for i in range(50)) + b"\n")
    fn = ingest._IngestDoFn("jsonl", 10_000, STEPS, WindowChunks(3600, max_items=1000), None)
    fn.setup()
    with pytest.raises(InputError):
        list(fn.process(str(broken)))
    out = list(fn.process(str(good)))
    assert [e.id for _wid, payload in out for e in unpack_records([payload])[0]] == ["a"]


def test_spilled_chunks_are_files_of_the_same_chunks_named_by_file_window_and_place(tmp_path):
    """With ``spill`` every chunk goes to a file and the element carries its name; the files hold
    exactly the chunks an unspilled run emits, and a rerun of a file (a retried bundle) writes the
    same names with the same bytes."""
    from core import storage

    paths = _files(tmp_path)
    spill = str(tmp_path / "spill")
    fn_plain = WindowChunks(3600, T0, None, max_items=3)
    fn_spill = WindowChunks(3600, T0, None, max_items=3, spill=spill)

    def run(collector, path):
        collector.start(path)
        out = []
        for record in read_file(path, "jsonl", 10_000):
            result = record
            for func, arg in STEPS:
                result = func(result, arg)
                if isinstance(result, DeadLetter):
                    break
            if not isinstance(result, DeadLetter):
                out.extend(collector.add(result))
        return out + list(collector.flush())

    for path in paths:
        plain, spilled = run(fn_plain, path), run(fn_spill, path)
        assert [w for w, _ in plain] == [w for w, _ in spilled] and plain
        assert all(isinstance(uri, str) and uri.startswith(spill) for _, uri in spilled)
        assert len({uri for _, uri in spilled}) == len(spilled)
        assert [storage.read_bytes(uri) for _, uri in spilled] == [payload for _, payload in plain]
        assert all(f"/{wid}/" in uri for wid, uri in spilled)
        again = run(fn_spill, path)
        assert again == spilled
    other = run(fn_spill, paths[0])
    assert not {uri for _, uri in other} & {uri for _, uri in run(fn_spill, paths[1])}
