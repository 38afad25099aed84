"""``ctpipe train``'s text summary names what the gate's screening did. Cost: < 1 s."""
from __future__ import annotations

from pipeline.cli.train import screening_lines


def test_quarantines_and_concept_changes_are_printed_ok_windows_are_not():
    screening = {"windows": [
        {"window": "a v1", "decision": "ok", "reasons": []},
        {"window": "b v1", "decision": "concept_change", "reasons": ["concept change: production's AUC drops"]},
        {"window": "c v1", "decision": "collapse", "reasons": ["the production model collapses on window c v1"]},
    ]}
    assert screening_lines(screening) == [
        "screening: concept_change: concept change: production's AUC drops",
        "screening: collapse: the production model collapses on window c v1"]
    assert screening_lines(None) == [] and screening_lines({"windows": []}) == []
