"""A run's counters are ctpipe's own (namespace ``ctpipe``): never the runner's system counters, nor
the libraries' internal ones, which differ between runners (tfx_bsl's ``binary_scalar_len_2`` is
reported by DirectRunner and not by Flink), so a run's record is the same on every runner."""
from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metricbase import MetricName

from pipeline.metrics import record_beam_counters


class _Metrics:
    def __init__(self, counters):
        self._counters = counters

    def query(self, filter=None):  # noqa: A002 (Beam's parameter name)
        # As Beam's MetricResults.query: a filter with namespaces keeps the counters of those only.
        names = filter.namespaces if filter is not None else None
        return {"counters": [c for c in self._counters if not names or c.key.metric.namespace in names]}


class _Result:
    """What a finished portable (Flink) pipeline's metrics() answers: user and system counters."""

    def __init__(self, counters):
        self._metrics = _Metrics(counters)

    def metrics(self):
        return self._metrics


def _counter(namespace, name, value, step="Decode"):
    return MetricResult(MetricKey(step, MetricName(namespace, name)), committed=value, attempted=value)


def test_only_ctpipe_counters_are_kept():
    result = _Result([
        _counter("ctpipe", "records_in", 40), _counter("ctpipe", "records_in", 2, step="Read"),
        _counter("ctpipe", "deadletter:bad_json", 3), _counter("tfx.Transform", "analysis_input_bytes", 7),
        _counter("tfx_bsl", "binary_scalar_len_2", 121),
        # what Flink's job server reports besides (URN-named, namespace "beam")
        _counter("beam", "metric:element_count:v1", 99), _counter("beam", "metric:data_channel:read_index:v1", 5)])
    assert record_beam_counters(result, "backfill", "files") == {
        "records_in": 42, "deadletter:bad_json": 3}
