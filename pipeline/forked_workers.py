"""A local runner on every core whose SDK workers start warm: forked, not started and imported anew.

Beam's DirectRunner in ``multi_processing`` mode starts one ``python -m sdk_worker_main`` per core
for every pipeline it runs, and each of those interpreters imports TensorFlow, tf.Transform and
TFDV again when it first unpickles a stage that uses them (~5 s each, and a first backfill runs
two pipelines). ``ForkedDirectRunner`` is the same FnApiRunner with the same bundle splitting,
but its workers are forked from one helper process that imported all of that once: Python's
``forkserver``. That helper is started fresh (it holds no thread, gRPC channel or TensorFlow
runtime of the driver, so forking it is safe), imports ``PRELOAD``, and forks one child per worker
request; a child builds the SDK harness exactly as ``sdk_worker_main`` does (pipeline options,
pickler, log level) and serves the runner's control endpoint until the runner closes it. The
children share the helper's imported pages until they write them.

Used by ``runner_configs/direct-multiprocess.yaml`` (``runner:
pipeline.forked_workers.ForkedDirectRunner``). The helper lives as long as the driver: it exits
when the driver does (kill -9 included: it reads the driver's end of a pipe), and a worker exits
when its control stream closes.
"""
from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import os
import threading

from apache_beam.portability.api import beam_fn_api_pb2, endpoints_pb2
from apache_beam.runners.job import utils as job_utils
from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers
from apache_beam.transforms import environments
from google.protobuf import json_format, text_format

URN = "ctpipe:env:forked_python_sdk:v1"

PRELOAD = (
    "pipeline",  # first: it sets TF_USE_LEGACY_KERAS before TensorFlow loads
    "apache_beam.runners.worker.sdk_worker_main",
    "tensorflow",
    "tensorflow_transform.beam",
    "tensorflow_data_validation",
    "tfx_bsl.public.tfxio",
    "transforms.ingest",
    "transforms.seal",
    "transforms.schema_inference",
    "transforms.validate_windows",
)
"""Modules the helper imports before its first fork (a missing one is skipped, not an error)."""

_context_lock = threading.Lock()
_context = None

LOG_LEVELS = "CTPIPE_WORKER_LOG_LEVELS"
"""The variable that carries the driver's logger levels to a worker (JSON: logger name -> level)."""

STOP_TIMEOUT_S = 60.0
"""How long closing a worker waits for it to leave after its control stream ended."""


def forking_context():
    """The ``forkserver`` multiprocessing context, its helper told what to import (once per process)."""
    global _context
    with _context_lock:
        if _context is None:
            _temp_dir_outside_the_commands()
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(PRELOAD))
            _context = context
        return _context


def _temp_dir_outside_the_commands() -> None:
    """Make multiprocessing's own temporary directory (the helper's socket) in the machine's temp
    dir, not in the ctpipe command's (pipeline/tempdirs.py), which goes when the command ends:
    multiprocessing removes its own at interpreter exit, and would fail on a directory gone."""
    import tempfile
    from multiprocessing import util

    from pipeline.tempdirs import system_temp_dir

    saved, tempfile.tempdir = tempfile.tempdir, system_temp_dir()
    try:
        util.get_temp_dir()  # made once per process, then kept
    finally:
        tempfile.tempdir = saved


def warm_up() -> None:
    """Start the helper now (it imports ``PRELOAD`` in the background) so the first worker request
    does not wait for it."""
    from multiprocessing import forkserver

    forking_context()
    forkserver.ensure_running()


def _serve(environment: dict) -> None:
    """In a forked child: the SDK harness of ``sdk_worker_main`` for ``environment`` (the driver's
    environment variables as they are when the worker starts, as Beam's subprocess workers get
    them, plus the harness's descriptors), run to the end."""
    from apache_beam.runners.worker import sdk_worker_main

    from pipeline.collector import RUN_THRESHOLDS

    os.environ.clear()  # the helper's are those of when it started
    os.environ.update(environment)
    gc.freeze()  # what the helper imported is never garbage
    gc.set_threshold(*RUN_THRESHOLDS)
    levels = json.loads(environment.get(LOG_LEVELS, "{}"))
    _set_levels(levels)
    _log_handler, harness, _options = sdk_worker_main.create_harness(environment)
    _set_levels(levels)  # the driver's, not the INFO the harness gives the root logger
    harness.run()


def _set_levels(levels: dict) -> None:
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)


def logger_levels() -> dict:
    """This process's logger levels: the root's and every logger's set explicitly (the ctpipe
    command quiets Beam and TensorFlow unless --debug); a worker sets the same."""
    levels = {"": logging.getLogger().level}
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels


@environments.Environment.register_urn(URN, bytes)
class ForkedWorkersEnvironment(environments.Environment):
    """The environment whose workers ``ForkedWorkerHandler`` starts (no payload: one helper per driver)."""

    def __eq__(self, other):
        return isinstance(other, ForkedWorkersEnvironment) and super().__eq__(other)

    def __hash__(self):
        return hash((super().__hash__(), URN))

    def to_runner_api_parameter(self, context):
        return URN, b""

    @staticmethod
    def from_runner_api_parameter(payload, capabilities, artifacts, resource_hints, context):
        return ForkedWorkersEnvironment(capabilities, artifacts, resource_hints)

    @classmethod
    def default(cls):
        return cls(capabilities=environments.python_sdk_capabilities())


@worker_handlers.WorkerHandler.register_environment(URN, bytes)
class ForkedWorkerHandler(worker_handlers.GrpcWorkerHandler):
    """Starts a worker as a child of the forkserver helper, pointed at this handler's control port.

    A worker that exits before the runner closes it (killed, out of memory, failed to start) fails
    the pipeline with its exit status: the runner's pending instructions are answered with it, so a worker
    that never connected cannot leave the run waiting for it."""

    target = staticmethod(_serve)
    """What the child runs (a test swaps it for one that fails)."""

    def __init__(self, payload: bytes, state, provision_info, grpc_server):
        super().__init__(state, provision_info, grpc_server)
        self._process = None
        self._stopping = threading.Event()

    def host_from_worker(self) -> str:
        return "localhost"  # the children run on this machine

    def start_worker(self) -> None:
        environment = {
            **os.environ,
            "CONTROL_API_SERVICE_DESCRIPTOR": text_format.MessageToString(
                endpoints_pb2.ApiServiceDescriptor(url=self.control_address)),
            "PIPELINE_OPTIONS": json_format.MessageToJson(self.provision_info.provision_info.pipeline_options),
            "WORKER_ID": self.worker_id,
            LOG_LEVELS: json.dumps(logger_levels()),
        }
        self._process = forking_context().Process(target=self.target, args=(environment,),
                                                  name=f"ctpipe-sdk-worker-{self.worker_id}")
        self._process.start()
        threading.Thread(target=self._watch, args=(self._process,), daemon=True,
                         name=f"watch-{self.worker_id}").start()

    def _watch(self, process) -> None:
        process.join()
        if not self._stopping.is_set():
            code = process.exitcode
            how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
            error = (f"SDK worker {self.worker_id} (pid {process.pid}) {how} before the pipeline finished, "
                     "so the run failed; rerun it. A signal 9 is often the kernel's out-of-memory killer: "
                     "then run with fewer workers (direct_num_workers) or with runner_configs/direct.yaml")
            with _DEATHS_LOCK:
                _DEATHS.append(error)
            self._fail(error)

    def _fail(self, error: str) -> None:
        """Answer every instruction the runner sent this worker, and every one it sends from now on,
        with ``error``: the runner then raises it (Beam's own ``abort`` of a ControlConnection wakes
        no one waiting for a bundle's output)."""
        conn = self.control_conn

        def answer(future):
            future.set(beam_fn_api_pb2.InstructionResponse(instruction_id=future.instruction_id, error=error))

        def push(request, _push=conn.push):
            future = _push(request)
            if future is not None:
                answer(future)
            return future

        conn.push = push
        for future in list(conn._futures_by_id.values()):
            answer(future)

    def close(self) -> None:
        self._stopping.set()  # before the control stream closes: the worker then leaves on its own
        super().close()

    def stop_worker(self) -> None:
        self._stopping.set()
        process, self._process = self._process, None
        if process is None:
            return
        process.join(STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()


_DEATHS: list = []
"""Why workers of the pipeline running now died (a process runs its pipelines one at a time)."""
_DEATHS_LOCK = threading.Lock()


def _option_value(value):
    """An option's value as a worker's ``PipelineOptions.from_dictionary`` parses it back: numbers as
    text (a protobuf Struct would turn 2 into 2.0, which an int option refuses), lists item by item."""
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [_option_value(item) for item in value]
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


class ForkedDirectRunner(fn_runner.FnApiRunner):
    """FnApiRunner (the DirectRunner's batch engine) with ``direct_num_workers`` workers forked warm
    (``ForkedWorkerHandler``); ``direct_num_workers: 0`` is one per core. Whatever
    ``direct_running_mode`` says, the workers are these."""

    def __init__(self):
        super().__init__(default_environment=ForkedWorkersEnvironment.default())

    @property
    def _default_environment(self):
        return ForkedWorkersEnvironment.default()

    @_default_environment.setter
    def _default_environment(self, _value):
        """FnApiRunner sets its environment from ``direct_running_mode``; these workers stay."""

    def run_pipeline(self, pipeline, options):
        warm_up()
        # The FnApiRunner hands its workers no options; these do get the run's (pickle_library,
        # experiments...), as sdk_worker_main reads them on Beam's own workers.
        given = {key: _option_value(value) for key, value in options.get_all_options(drop_default=True).items()
                 if value is not None}
        self._provision_info.provision_info.pipeline_options.CopyFrom(job_utils.dict_to_struct(given))
        with _DEATHS_LOCK:
            del _DEATHS[:]
        try:
            return super().run_pipeline(pipeline, options)
        except Exception as exc:
            # A dead worker's data stream can end before its control answers: the runner then
            # raises "Channel closed prematurely", which names nothing. Say which worker died, and how.
            with _DEATHS_LOCK:
                death = _DEATHS[0] if _DEATHS else None
            if death is None or death in str(exc):
                raise
            raise RuntimeError(death) from exc

