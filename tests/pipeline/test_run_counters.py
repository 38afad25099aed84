"""A run's counters are ctpipe's (and its libraries'), never the runner's own system counters."""
from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metricbase import MetricName

from pipeline.metrics import record_beam_counters


class _Metrics:
    def __init__(self, counters):
        self._counters = counters

    def query(self):
        return {"counters": self._counters}


class _Result:
    """What a finished portable (Flink) pipeline's metrics() answers: user and system counters."""

    def __init__(self, counters):
        self._metrics = _Metrics(counters)

    def metrics(self):
        return self._metrics


def _counter(namespace, name, value, step="Decode"):
    return MetricResult(MetricKey(step, MetricName(namespace, name)), committed=value, attempted=value)


def test_system_counters_of_portable_runners_are_left_out():
    result = _Result([
        _counter("ctpipe", "records_in", 40), _counter("ctpipe", "records_in", 2, step="Read"),
        _counter("ctpipe", "deadletter:bad_json", 3), _counter("tfx.Transform", "analysis_input_bytes", 7),
        # what Flink's job server reports besides (URN-named, namespace "beam")
        _counter("beam", "metric:element_count:v1", 99), _counter("beam", "metric:data_channel:read_index:v1", 5)])
    assert record_beam_counters(result, "backfill", "files") == {
        "records_in": 42, "deadletter:bad_json": 3, "analysis_input_bytes": 7}
