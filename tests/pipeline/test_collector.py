"""pipeline/collector.py: the collector is tuned for a run and put back as it was, also when the
run fails, and nested runs leave the tuning to the outermost one."""
import gc

import pytest

from pipeline import collector


def test_a_run_freezes_raises_the_threshold_and_restores_both():
    before, frozen_before = gc.get_threshold(), gc.get_freeze_count()
    with collector.tuned():
        assert gc.get_threshold() == collector.RUN_THRESHOLDS
        assert gc.get_freeze_count() > frozen_before
        with collector.tuned():  # nested: unchanged, and leaving it keeps the outer tuning
            assert gc.get_threshold() == collector.RUN_THRESHOLDS
        assert gc.get_threshold() == collector.RUN_THRESHOLDS and gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_failing_run_restores_the_collector():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError):
        with collector.tuned():
            raise RuntimeError("the pipeline failed")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_cyclic_garbage_made_during_a_run_is_still_collected():
    class Node:
        pass

    with collector.tuned():
        node = Node()
        node.self = node
        del node
        assert gc.collect() >= 1
