"""The promotion gate: with `promote: auto` a new model version becomes the family's active one
only if it beats the active version on the family's primary metric, measured on the same dataset;
otherwise it stays inactive and the job says why. `always` and `never` are for operators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.families import facts
from shared.schemas import ModelVersion


@dataclass(frozen=True)
class Decision:
    mode: str  # what the registry is told: always | never | auto (auto: active only if none is)
    reason: str


def decide(summary: dict[str, Any], active: ModelVersion | None, requested: str) -> Decision:
    if requested != "auto":
        return Decision(requested, f"promote: {requested}")
    if active is None or active.ref == summary["ref"]:  # the second: a rerun of the same job
        return Decision("auto", "the first version of the family becomes active")
    if active.dataset != summary["dataset"]:
        return Decision("never", f"the active {active.ref} was trained on {active.dataset}, this version on "
                                 f"{summary['dataset']}: not comparable, so it stays; promote: always switches")
    new, old = summary["metrics"], active.metrics
    # An evaluation whose judge is blind withholds FID: say so, then compare on what is left.
    withheld = next((f"no FID verdict for {ref} ({m['fid_withheld']}); " for ref, m in
                     ((summary["ref"], new), (active.ref, old)) if m.get("fid_withheld")), "")
    for metric, lower in facts(summary["family"]).primary:
        if new.get(metric) is None or old.get(metric) is None:
            continue
        better = new[metric] < old[metric] if lower else new[metric] > old[metric]
        verdict = "better: promoted" if better else "not better: the active version stays"
        return Decision("always" if better else "never",
                        f"{withheld}{metric} {new[metric]:.4g} vs {old[metric]:.4g} for {active.ref} "
                        f"({'lower' if lower else 'higher'} is better): {verdict}")
    names = ", ".join(m for m, _ in facts(summary["family"]).primary)
    return Decision("never", f"{withheld}no {names} on both this version and {active.ref} to compare: the active "
                             "version stays (train a classifier on the dataset to evaluate image models)")
