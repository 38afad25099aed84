"""How sealing's per-window state crosses stage boundaries (transforms/seal.py)."""
import pyarrow as pa

from core.records import Event
from transforms.prepare import PreparedWindow
from transforms.seal import WindowState, WindowStateCoder
from transforms.versions import provenance_bytes


def _state():
    events = [Event(str(i), i, {"v": float(i)}, "f", str(i)) for i in range(50)]
    batch = pa.RecordBatch.from_arrays([pa.array([[float(i)] for i in range(50)], pa.large_list(pa.float32()))], ["v"])
    prepared = PreparedWindow(batch, [e.id for e in events], [b"x" * 10] * 50, "d", [])
    return WindowState("20261127T0000Z", prepared, None, {}, [], provenance=provenance_bytes(events),
                       transformed=(b"y" * 4,) * 50)


def test_the_coder_round_trips_a_window_state():
    coder, state = WindowStateCoder(), _state()
    back = coder.decode(coder.encode(state))
    assert back.provenance == state.provenance and back.transformed == state.transformed
    assert back.prepared.batch.equals(state.prepared.batch) and back.prepared.raw_examples == [b"x" * 10] * 50


def test_the_size_estimate_adds_up_what_the_window_knows_without_encoding_it():
    state = _state()
    assert WindowStateCoder().estimate_size(state) == state.prepared.batch.nbytes + 50 * 10 + 50 * 4
