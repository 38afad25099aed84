"""pipeline/forked_workers.py: the every-core local runner whose SDK workers are forked from a
helper that imported TensorFlow once. Pipelines run there; a worker that dies (at start, or
killed mid-bundle) fails the run with its exit status instead of leaving it waiting."""
import ast
import os
import re
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def _options(workers: int = 2):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(runner="pipeline.forked_workers.ForkedDirectRunner", direct_num_workers=workers,
                           direct_running_mode="multi_processing")


def _where(value):
    return value, os.getpid(), os.getppid()


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def test_elements_run_in_two_children_of_a_helper_that_loaded_tensorflow():
    import apache_beam as beam

    with beam.Pipeline(options=_options()) as p:
        rows = p | beam.Create(list(range(40))) | beam.Reshuffle() | beam.Map(_where)
        _ = rows | beam.io.WriteToText(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fw-{os.getpid()}"),
                                       shard_name_template="")
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fw-{os.getpid()}")
    with open(path, encoding="utf-8") as handle:
        reported = [ast.literal_eval(line) for line in handle]
    os.unlink(path)
    assert sorted(v for v, _pid, _ppid in reported) == list(range(40))
    pids = {pid for _v, pid, _ in reported}
    parents = {ppid for _v, _pid, ppid in reported}
    assert os.getpid() not in pids and len(pids) == 2, pids
    (helper,) = parents
    assert helper != os.getpid() and _ppid(helper) == os.getpid()
    with open(f"/proc/{helper}/cmdline", "rb") as handle:
        assert b"multiprocessing.forkserver" in handle.read()
    with open(f"/proc/{helper}/maps", encoding="utf-8", errors="replace") as handle:
        assert any("libtensorflow" in line for line in handle), "the helper never loaded TensorFlow"


def _exit_at_start(environment):
    os._exit(3)


def _killed(value):
    if value == 7:
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def _crashed(value):
    if value == 7:
        os.kill(os.getpid(), signal.SIGSEGV)
    return value


def test_a_worker_that_crashes_mid_bundle_fails_the_run_naming_its_signal():
    import apache_beam as beam

    with pytest.raises(RuntimeError) as raised:
        with beam.Pipeline(options=_options(1)) as p:
            _ = p | beam.Create(list(range(10))) | beam.Map(_crashed)
    assert re.search(r"SDK worker worker_\d+ \(pid \d+\) was killed by signal 11", str(raised.value)), raised.value


def test_a_data_channel_error_after_a_worker_died_is_replaced_by_the_death(monkeypatch):
    """A dead worker's data stream can end before its control answers; the runner then raises
    "Channel closed prematurely" (seen on a 1M-record stream cycle whose worker crashed). The run's
    error names the death instead; an error with no death, or one that already names it, stays."""
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    from pipeline import forked_workers

    death = "SDK worker worker_3 (pid 42) was killed by signal 11 before the pipeline finished"

    def dies(self, pipeline, options):
        with forked_workers._DEATHS_LOCK:
            forked_workers._DEATHS.append(death)
        raise RuntimeError("Channel closed prematurely.")

    runner, options = forked_workers.ForkedDirectRunner(), _options()
    monkeypatch.setattr(fn_runner.FnApiRunner, "run_pipeline", dies)
    with pytest.raises(RuntimeError, match="killed by signal 11") as raised:
        runner.run_pipeline(None, options)
    assert "Channel closed prematurely" in str(raised.value.__cause__)

    def fails(self, pipeline, options):
        raise ValueError("a DoFn's own error")

    monkeypatch.setattr(fn_runner.FnApiRunner, "run_pipeline", fails)
    with pytest.raises(ValueError, match="a DoFn's own error"):  # the death of the run before is forgotten
        runner.run_pipeline(None, options)


def test_a_worker_that_exits_before_connecting_fails_the_run_with_its_exit_code(monkeypatch):
    import apache_beam as beam

    from pipeline import forked_workers

    monkeypatch.setattr(forked_workers.ForkedWorkerHandler, "target", staticmethod(_exit_at_start))
    with pytest.raises(RuntimeError, match=r"SDK worker worker_\d+ \(pid \d+\) exited with code 3"):
        with beam.Pipeline(options=_options()) as p:
            _ = p | beam.Create([1, 2, 3]) | beam.Map(_where)


def test_a_worker_killed_mid_bundle_fails_the_run():
    import apache_beam as beam

    with pytest.raises(RuntimeError) as raised:
        with beam.Pipeline(options=_options(1)) as p:
            _ = p | beam.Create(list(range(10))) | beam.Map(_killed)
    assert "was killed by signal 9 before the pipeline finished" in str(raised.value), raised.value


def _variable(value):
    return os.environ.get("CTPIPE_TEST_FORKED_VARIABLE")


def test_workers_see_the_drivers_environment_as_it_is_when_they_start(monkeypatch, tmp_path):
    import apache_beam as beam

    from pipeline import forked_workers

    forked_workers.warm_up()  # the helper starts (and keeps) the environment of now
    monkeypatch.setenv("CTPIPE_TEST_FORKED_VARIABLE", "set after the helper started")
    with beam.Pipeline(options=_options(1)) as p:
        _ = (p | beam.Create([1]) | beam.Map(_variable)
             | beam.io.WriteToText(str(tmp_path / "seen"), shard_name_template=""))
    assert (tmp_path / "seen").read_text().splitlines() == ["set after the helper started"]


def _worker_view(value):
    import logging

    from apache_beam.internal import pickler
    from apache_beam.runners.worker import sdk_worker_main  # noqa: F401  (what set the pickler)

    return (logging.getLogger("apache_beam").getEffectiveLevel(), logging.getLogger().getEffectiveLevel(),
            pickler.desired_pickle_lib.__name__)


def test_workers_get_the_runs_options_and_the_drivers_logger_levels(monkeypatch, tmp_path):
    import logging

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setattr(logging.getLogger("apache_beam"), "level", logging.CRITICAL)
    options = PipelineOptions(runner="pipeline.forked_workers.ForkedDirectRunner", direct_num_workers=1,
                              pickle_library="dill")
    with beam.Pipeline(options=options) as p:
        _ = (p | beam.Create([1]) | beam.Map(_worker_view) | beam.Map(repr)
             | beam.io.WriteToText(str(tmp_path / "seen"), shard_name_template=""))
    beam_level, root_level, library = ast.literal_eval((tmp_path / "seen").read_text())
    assert beam_level == logging.CRITICAL and root_level == logging.getLogger().getEffectiveLevel()
    assert "dill" in library


_HOLDING_DRIVER = '''
import os, signal, sys
sys.path.insert(0, {repo!r})
import pipeline
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def hold(value):
    print("WORKER", os.getpid(), os.getppid(), flush=True)
    signal.pause()  # until the test's SIGKILL of the driver ends this worker


if __name__ == "__main__":
    options = PipelineOptions(runner="pipeline.forked_workers.ForkedDirectRunner", direct_num_workers=1)
    with beam.Pipeline(options=options) as p:
        _ = p | beam.Create([1]) | beam.Map(hold)
'''


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie left to be reaped
    except FileNotFoundError:
        return True


def test_a_driver_killed_with_sigkill_leaves_no_helper_or_worker_behind(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = tmp_path / "driver.py"
    script.write_text(_HOLDING_DRIVER.format(repo=repo))
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    try:
        line = driver.stdout.readline()
        _word, worker, helper = line.split()
        worker, helper = int(worker), int(helper)
        assert _ppid(helper) == driver.pid and not _gone(worker)
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 60
        while not (_gone(worker) and _gone(helper)) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling for the processes to leave, with a deadline
        assert _gone(worker) and _gone(helper), (worker, helper)
    finally:
        driver.kill()
        driver.stdout.close()
