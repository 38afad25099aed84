"""How sealing's per-window state crosses stage boundaries (transforms/seal.py)."""
import pickle

import pyarrow as pa

from core.records import Event
from transforms.prepare import PreparedWindow
from transforms.seal import WindowState, WindowStateCoder


def _state():
    events = tuple(Event(str(i), i, {"v": float(i)}, "f", str(i)) for i in range(50))
    batch = pa.RecordBatch.from_arrays([pa.array([[float(i)] for i in range(50)], pa.large_list(pa.float32()))], ["v"])
    prepared = PreparedWindow(batch, [e.id for e in events], [b"x" * 10] * 50, "d", [])
    return WindowState("20261127T0000Z", prepared, None, {}, [], events=events, transformed=(b"y" * 4,) * 50)


def test_a_window_state_pickles_back_with_its_events_as_events():
    back = pickle.loads(pickle.dumps(_state()))
    assert back.events == _state().events and all(type(e) is Event for e in back.events)
    assert back.prepared.batch.equals(_state().prepared.batch) and back.transformed == _state().transformed


def test_the_coder_round_trips_and_estimates_from_known_sizes():
    coder, state = WindowStateCoder(), _state()
    assert coder.decode(coder.encode(state)).events == state.events
    assert coder.estimate_size(state) == state.prepared.batch.nbytes + 50 * 10 + 50 * 4
