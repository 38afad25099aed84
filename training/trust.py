"""The gate's defences against poisoned data, as pure decisions (docs/GATE.md).

- ``screen_decision``: what the production model's AUC on a new window's held-out split says about
  that window: ``ok``, a ``concept_change`` (a large drop, recorded), or a ``collapse`` (far below
  chance, or a drop much larger than any recorded at a past concept change) that quarantines it.
- ``trusted_checks``: the no-regression bound of the candidate against production on trusted
  data (earlier blessed windows' held-out splits, a golden set).

Settings objects are duck-typed (pipeline/config.py's ScreeningConfig and TrustedDataConfig), as
``training.evaluate.gate`` takes threshold configs. No TensorFlow: the caller evaluates.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

OK, CONCEPT_CHANGE, COLLAPSE = "ok", "concept_change", "collapse"
EARLIER_WINDOWS, GOLDEN = "earlier_windows", "golden"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(x)


def screen_decision(window: str, production_auc: float, reference_auc: Optional[float], past_drops: Sequence[float],
                    settings) -> dict:
    """The screening verdict of one window. ``reference_auc``: production's AUC when it was
    blessed; ``past_drops``: the drops recorded at concept changes that got a model through."""
    out = {"window": window, "production_auc": production_auc, "reference_auc": reference_auc,
           "drop": None, "decision": OK, "reasons": []}
    if not _finite(production_auc):
        out["reasons"].append("production AUC could not be computed (one class only): not screened")
        return out
    drop = reference_auc - production_auc if _finite(reference_auc) else None
    out["drop"] = None if drop is None else round(drop, 6)
    if production_auc < settings.collapse_auc:
        out["decision"] = COLLAPSE
        out["reasons"].append(
            f"the production model collapses on window {window}: AUC {production_auc:.3f} on its held-out split, "
            f"far below chance (gate.screening.collapse_auc {settings.collapse_auc}); its labels are inverted "
            f"with respect to everything production learned (check the labelling, then `ctpipe windows release` "
            f"if the world really changed this way)")
    largest = max(past_drops) if past_drops else None
    if (drop is not None and largest is not None and settings.collapse_drop_factor is not None
            and drop >= settings.concept_change_drop and drop > settings.collapse_drop_factor * largest):
        out["decision"] = COLLAPSE
        out["reasons"].append(
            f"production's AUC drops by {drop:.3f} on window {window} ({reference_auc:.3f} at its blessing -> "
            f"{production_auc:.3f}), more than gate.screening.collapse_drop_factor {settings.collapse_drop_factor}"
            f" x the largest drop at a past concept change ({largest:.3f})")
    if out["decision"] == OK and drop is not None and drop >= settings.concept_change_drop:
        out["decision"] = CONCEPT_CHANGE
        out["reasons"].append(
            f"concept change: production's AUC drops by {drop:.3f} on window {window} ({reference_auc:.3f} -> "
            f"{production_auc:.3f}), above gate.screening.concept_change_drop {settings.concept_change_drop}"
            + ("" if largest is not None else "; no earlier concept change is recorded to compare with"))
    return out


def trusted_checks(sets: Sequence[dict], settings, waiver: Optional[str]) -> dict:
    """The trusted-data part of a blessing. ``sets``: [{"name", "source", "examples",
    "candidate": metrics, "production": metrics | None}]; ``waiver``: why the earlier-windows bound
    is not applied (a concept change), or None. Blessed only if every applied check passes."""
    checks = []
    for s in sets:
        cand = s["candidate"].get("auc")
        base = s["production"].get("auc") if s.get("production") else None
        check = {"set": s["name"], "source": s["source"], "examples": s["examples"], "metric": "auc",
                 "kind": "no_regression", "candidate": cand, "production": base,
                 "max_regression": settings.max_regression, "applied": True, "passed": True}
        if s["examples"] < settings.min_examples:
            check.update(applied=False, description=f"{s['name']}: {s['examples']} examples, fewer than "
                                                     f"gate.trusted.min_examples {settings.min_examples}")
        elif base is None:
            check.update(applied=False, description=f"{s['name']}: no production model to compare with")
        elif not (_finite(cand) and _finite(base)):
            check.update(passed=False, description=f"{s['name']}: AUC could not be computed on trusted data")
        else:
            change = cand - base
            check["change"] = round(change, 6)
            check["passed"] = change >= -settings.max_regression
            check["description"] = (f"{s['name']}: candidate AUC {cand:.4f} vs production {base:.4f} on "
                                    f"{s['examples']} trusted examples, change {change:+.4f} (allowed "
                                    f"-{settings.max_regression})")
            if s["name"] == EARLIER_WINDOWS and waiver:
                check.update(applied=False, waived=waiver, passed=True,
                             description=check["description"] + f"; not applied: {waiver}")
        checks.append(check)
    return {"checks": checks, "passed": all(c["passed"] for c in checks if c["applied"])}
