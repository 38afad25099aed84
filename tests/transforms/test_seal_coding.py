"""How sealing's per-window state crosses stage boundaries (transforms/seal.py)."""
import pickle

import pyarrow as pa

from core.records import Event
from transforms.prepare import prepare_window
from transforms.seal import SealSpec, WindowState, WindowStateCoder
from transforms.versions import provenance_bytes
from transforms.window_parts import BATCH, PROVENANCE, RAW, WindowParts
from transforms.write_window import tfrecord_gz_bytes

WID = "20261127T0000Z"


def _state(parts: WindowParts):
    events = [Event(str(i).zfill(3), i, {"v": [float(i)]}, "f", str(i)) for i in range(50)]
    pending = prepare_window(events, {"v": "FLOAT"}, {}, parts)
    return WindowState(WID, pending.finish(), None, {}, []), pending.batch, events


def test_the_coder_round_trips_a_window_state_that_holds_its_parts():
    coder = WindowStateCoder()
    state, batch, events = _state(WindowParts())
    back = coder.decode(coder.encode(state))
    assert back.prepared.batch().equals(batch) and back.prepared.records == 50
    assert back.prepared.parts.get(PROVENANCE) == provenance_bytes(events)
    assert back.prepared.parts.get(RAW) == state.prepared.parts.get(RAW)


def test_a_staged_state_is_small_and_reads_its_parts_from_files(tmp_path):
    spec = SealSpec(root=str(tmp_path), window_size_s=3600, schema_text="", schema_version=1, validation=None,
                    transform=None, code_version="t", staging=str(tmp_path / "staged"))
    state, batch, events = _state(spec.parts_for(WID))
    encoded = WindowStateCoder().encode(state)
    assert len(encoded) < 2000 and WindowStateCoder().estimate_size(state) == 0
    assert (tmp_path / "staged" / WID / BATCH).is_file()
    back = pickle.loads(encoded)
    assert back.prepared.batch().equals(batch)
    assert back.prepared.parts.get(PROVENANCE) == provenance_bytes(events)


def test_the_raw_part_is_the_tfrecord_file_of_the_canonical_examples():
    from tfx_bsl.coders import example_coder

    from transforms.arrow import canonical_examples

    state, batch, _ = _state(WindowParts())
    examples = canonical_examples(example_coder.RecordBatchToExamples(batch))
    assert state.prepared.parts.get(RAW) == tfrecord_gz_bytes(examples)


def test_the_size_estimate_adds_up_the_parts_the_state_holds_without_encoding_it():
    state, _, _ = _state(WindowParts())
    parts = state.prepared.parts
    assert WindowStateCoder().estimate_size(state) == sum(
        len(parts.get(n)) for n in (RAW, BATCH, PROVENANCE, "example-hashes.bin"))


def test_parts_are_never_changed_under_another_holder():
    first = WindowParts().with_part("a", b"1")
    second = first.with_part("b", b"2")
    assert first.held_bytes == 1 and second.get("a") == b"1" and second.get("b") == b"2"
    try:
        first.get("b")
    except KeyError as exc:
        assert "'b' was never put" in str(exc)
    else:
        raise AssertionError("a part put into a later copy is visible in the earlier one")
    assert pa.py_buffer(second.get("b")).size == 1
