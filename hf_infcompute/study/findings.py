"""The paper's findings checked on a study, one function each, and the numbers its report sets beside the paper's.

Every function reads the study's state, its run records or its `ScalingReport`, and writes nothing; a finding that
the study has too few runs to check is `None` (left out) or `reproduced=None` (listed as not tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from hf_infcompute.scaling.analysis import EnsembleScaling, ScalingReport, best_runs
from hf_infcompute.scaling.joint import JointFit
from hf_infcompute.scaling.power_law import PowerLawFit
from hf_infcompute.study.spec import StudySpec
from hf_infcompute.study.state import DistillationState, StudyState


@dataclass(frozen=True)
class Finding:
    claim: str
    reproduced: bool | None  # None: not enough runs to tell
    evidence: str


def best_sizes(scaling: ScalingReport, recipe: str, token_budget: int) -> pd.DataFrame:
    """The best run per model size of `recipe` at `token_budget` (the scaling analysis' selection), by size."""
    tables = [s.table for s in scaling.sizes if s.recipe == recipe and s.token_budget == token_budget]
    if not tables:
        return pd.DataFrame(columns=["preset", "n_params_total", "val_loss"])
    return pd.concat(tables, ignore_index=True).sort_values("n_params_total")


def regularized_fit(spec: StudySpec, scaling: ScalingReport) -> PowerLawFit | None:
    """The regularized recipe's law in N at the main budget."""
    return next(
        (
            s.fit
            for s in scaling.sizes
            if s.recipe == "regularized" and s.token_budget == spec.token_budget and s.fit is not None
        ),
        None,
    )


def ensemble_scaling(spec: StudySpec, scaling: ScalingReport) -> EnsembleScaling | None:
    """The ensembles' laws in K (and the joint limit) at the main budget."""
    return next((e for e in scaling.ensembles if e.token_budget == spec.token_budget), None)


def efficiency(scaling: ScalingReport, series: str, token_budget: int) -> tuple[float | None, str]:
    """The data efficiency of `series` at `token_budget` and how it was obtained, or None and why there is none."""
    rows = scaling.efficiency
    if rows.empty:
        reasons = [reason for analysis, reason in scaling.skipped if analysis == "data efficiency"]
        return None, reasons[0] if reasons else "no data-scaling fit"
    match = rows[(rows["series"] == series) & (rows["token_budget"] == token_budget)]
    if match.empty:
        return None, f"no well-conditioned {series} fit at this budget"
    return float(match["efficiency"].iloc[0]), "fit (standard data law inverted)"


def retained_share(student: DistillationState, val_loss: float | None = None) -> float | None:
    """The share of the ensemble's gain over the best single model that a student (at `val_loss`, by default the
    best student's) keeps; None when the teacher brings no gain."""
    single, teacher = student.single_val_loss, student.teacher_val_loss
    loss = student.student_val_loss if val_loss is None else val_loss
    return (single - loss) / (single - teacher) if single > teacher else None


def ill_conditioned(fits: dict[str, PowerLawFit | JointFit | None]) -> str:
    """Why the named fits cannot be compared (empty when every one is well conditioned)."""
    return "; ".join(
        f"{name} fit ill-conditioned ({', '.join(fit.issues)})"
        for name, fit in fits.items()
        if fit is not None and not fit.well_conditioned
    )


def standard_overfits_in_epochs(spec: StudySpec, runs: pd.DataFrame) -> Finding:
    done = runs[
        (runs["kind"] == "pretrain") & (runs["status"] == "finished") & (runs["token_budget"] == spec.token_budget)
    ]
    standard = done[done["recipe"] == "standard"]
    over_epochs, still_falling = [], []
    for preset, group in best_runs(standard, ["preset", "num_train_epochs"]).groupby("preset"):
        by_epochs = group.set_index("num_train_epochs")["val_loss"]
        best_epochs = by_epochs.idxmin()
        longer = by_epochs[by_epochs.index > best_epochs]
        if len(longer):
            over_epochs.append(
                f"{preset}: best at {best_epochs:g} epochs ({by_epochs[best_epochs]:.4f}), "
                f"{longer.index[0]:g} epochs {longer.iloc[0]:.4f}"
            )
        else:
            still_falling.append(f"{preset}: best at the most epochs run ({best_epochs:g})")
    return Finding(
        "standard recipe overfits in epochs (more passes raise validation loss)",
        bool(over_epochs) if len(standard) else None,
        "; ".join(over_epochs + still_falling),
    )


def standard_overfits_in_size(spec: StudySpec, scaling: ScalingReport) -> Finding | None:
    best = best_sizes(scaling, "standard", spec.token_budget)
    if len(best) < 2:
        return None
    largest, lowest = best.iloc[-1], best.loc[best["val_loss"].idxmin()]
    return Finding(
        "standard recipe overfits in N (the largest model is not the best)",
        bool(largest["val_loss"] > lowest["val_loss"]),
        f"best {lowest['preset']} {lowest['val_loss']:.4f}; largest {largest['preset']} {largest['val_loss']:.4f}",
    )


def regularized_falls_in_size(spec: StudySpec, scaling: ScalingReport) -> Finding | None:
    best = best_sizes(scaling, "regularized", spec.token_budget)
    if len(best) < 2:
        return None
    losses = best["val_loss"].tolist()
    return Finding(
        "regularized loss falls monotonically in N",
        all(b < a for a, b in zip(losses, losses[1:])),
        ", ".join(f"{p} {v:.4f}" for p, v in zip(best["preset"], losses)),
    )


def ensemble_limit_below_regularized(spec: StudySpec, scaling: ScalingReport) -> Finding:
    claim = "ensemble (K -> inf) asymptote below the regularized N -> inf asymptote"
    reg_asymptote = regularized_fit(spec, scaling)
    ensemble = ensemble_scaling(spec, scaling)
    k_fits = ensemble.k_fits if ensemble is not None else {}
    unusable = ill_conditioned(
        {"regularized N -> inf": reg_asymptote, **{f"K -> inf at N = {n:,.0f}": fit for n, fit in k_fits.items()}}
    )
    if reg_asymptote is None or not k_fits:
        return Finding(claim, None, "no fit over N or over K at the main budget")
    if unusable:
        return Finding(claim, None, unusable)
    k_limits = [fit.E for fit in k_fits.values()]
    return Finding(
        claim,
        min(k_limits) < reg_asymptote.E,
        f"K -> inf: {', '.join(f'{v:.4f}' for v in k_limits)}; regularized N -> inf {reg_asymptote.E:.4f}",
    )


def joint_limit_lowest(spec: StudySpec, scaling: ScalingReport) -> Finding | None:
    reg_asymptote = regularized_fit(spec, scaling)
    ensemble = ensemble_scaling(spec, scaling)
    if ensemble is None or ensemble.joint is None or reg_asymptote is None:
        return None
    claim = "joint (N, K -> inf) asymptote lowest of all"
    unusable = ill_conditioned({"joint": ensemble.joint, "regularized N -> inf": reg_asymptote})
    if unusable:
        return Finding(claim, None, unusable)
    lowest = min([reg_asymptote.E, *[f.E for f in ensemble.k_fits.values()]]) > ensemble.joint.E
    return Finding(claim, lowest, f"joint {ensemble.joint.E:.4f}, regularized {reg_asymptote.E:.4f}")


def ensemble_beats_single_model(spec: StudySpec, state: StudyState) -> Finding | None:
    if not state.ensembles:
        return None
    single = {p: state.search("regularized", p, spec.token_budget).val_loss for p in state.ensembles}
    return Finding(
        "a K-member ensemble beats the best single model of its size (measured)",
        all(e.val_loss < single[p] for p, e in state.ensembles.items()),
        "; ".join(f"{p}: K={e.k} {e.val_loss:.4f} vs single {single[p]:.4f}" for p, e in state.ensembles.items()),
    )


def distilled_student_beats_baseline(state: StudyState) -> Finding | None:
    student = state.distillation.get("ensemble")
    if student is None:
        return None
    return Finding(
        "distilled student below its same-size baseline",
        student.student_val_loss < student.single_val_loss,
        f"student {student.student_val_loss:.4f} (weight decay {student.weight_decay:g}), best single "
        f"{student.single_val_loss:.4f}, ensemble teacher {student.teacher_val_loss:.4f}",
    )


def self_distillation_beats_teacher(state: StudyState) -> Finding | None:
    student = state.distillation.get("self")
    if student is None:
        return None
    return Finding(
        "self-distillation (real data kept in the mix) beats its teacher",
        student.student_val_loss < student.teacher_val_loss,
        f"teacher {student.teacher_val_loss:.4f}, student {student.student_val_loss:.4f} "
        f"(weight decay {student.weight_decay:g})",
    )


def findings(spec: StudySpec, runs: pd.DataFrame, scaling: ScalingReport, state: StudyState) -> list[Finding]:
    """The paper's qualitative findings that this study's runs can check, in the report's order."""
    checked: list[Finding | None] = [
        standard_overfits_in_epochs(spec, runs),
        standard_overfits_in_size(spec, scaling),
        regularized_falls_in_size(spec, scaling),
        ensemble_limit_below_regularized(spec, scaling),
        joint_limit_lowest(spec, scaling),
        ensemble_beats_single_model(spec, state),
        distilled_student_beats_baseline(state),
        self_distillation_beats_teacher(state),
    ]
    return [finding for finding in checked if finding is not None]
