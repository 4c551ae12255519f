"""The paper's findings checked on a study, one function each, and the numbers its report sets beside the paper's.

Every function reads the study's `Evidence` (its state, run records, scaling analysis and per-row validation losses)
and writes nothing. A finding reads *yes* only when the 95% interval of its difference excludes zero in the paper's
direction, *no* when it excludes zero the other way, else *inconclusive* (`hf_infcompute.study.confidence`); a
claim made at every N holds when each of its parts does. A finding the study has too few runs to check is `None`
(left out) or *not tested*.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from hf_infcompute.scaling.analysis import EnsembleScaling, ScalingReport, best_runs
from hf_infcompute.scaling.joint import JointFit
from hf_infcompute.scaling.power_law import PowerLawFit
from hf_infcompute.study.confidence import (
    INCONCLUSIVE,
    NOT_TESTED,
    Interval,
    ResampledAnalysis,
    SequenceLosses,
    combined_verdict,
)
from hf_infcompute.study.seed_noise import SeedRepeat, difference_noise, pooled_sd, seed_repeats
from hf_infcompute.study.spec import StudySpec
from hf_infcompute.study.state import DistillationState, SearchState, StudyState, search_key


@dataclass(frozen=True)
class Finding:
    claim: str
    verdict: str  # yes, no, inconclusive or not tested
    evidence: str  # the losses compared; each difference with its 95% interval


@dataclass(frozen=True)
class Evidence:
    """What the findings are checked on."""

    spec: StudySpec
    runs: pd.DataFrame
    scaling: ScalingReport
    state: StudyState
    sequences: SequenceLosses
    resampled: ResampledAnalysis
    seed_repeats: list[SeedRepeat]

    @classmethod
    def of(cls, spec: StudySpec, runs: pd.DataFrame, scaling: ScalingReport, state: StudyState) -> Evidence:
        repeats = seed_repeats(runs, spec.token_budget)
        return cls(spec, runs, scaling, state, SequenceLosses(runs), ResampledAnalysis(runs), repeats)

    def optimum_repeats(self) -> list[SeedRepeat]:
        """The seed repeats at the regularized searches' optima (the points the findings compare)."""
        optima = [self.search("regularized", preset) for preset in self.spec.presets]
        return [r for r in self.seed_repeats if any(o is not None and r.at(o.preset, o.point) for o in optima)]

    def seed_sd(self) -> tuple[float, int, bool] | None:
        """The seed sd pooled over the optima's seed repeats (over every repeat where the optima have none), its
        degrees of freedom, and whether it is the optima's; None without repeats."""
        optima = self.optimum_repeats()
        pooled = pooled_sd(optima or self.seed_repeats)
        return (*pooled, bool(optima)) if pooled else None

    @property
    def seed_noise(self) -> float | None:
        """Two sds of a difference between single models from seed noise alone (`seed_sd`); None without repeats."""
        pooled = self.seed_sd()
        return difference_noise(pooled[0]) if pooled else None

    def search(self, recipe: str, preset: str) -> SearchState | None:
        """The search of `recipe` for `preset` at the main budget, if it found a point."""
        found = self.state.searches.get(search_key(recipe, preset, self.spec.token_budget))
        return found if found is not None and found.point is not None else None

    def best_single(self, preset: str) -> SearchState | None:
        """The best single model of `preset` at the main budget, over every recipe."""
        found = [s for s in (self.search("standard", preset), self.search("regularized", preset)) if s is not None]
        return min(found, key=lambda s: s.val_loss) if found else None

    def size_order(self, presets: list[str]) -> list[str]:
        """`presets` from the smallest model to the largest (by total parameters)."""
        sizes = self.runs.groupby("preset")["n_params_total"].first() if len(self.runs) else pd.Series(dtype=float)
        return sorted(presets, key=lambda p: sizes.get(p, float("inf")))


def compared(
    evidence: Evidence,
    label: str,
    worse: tuple[str, float, str | None],
    better: tuple[str, float, str | None],
    *,
    single_models: bool = True,
) -> tuple[str, str]:
    """(verdict, text) of one paired comparison: `worse` and `better` are (name, loss, run id), the claim expecting
    `better` lower. Between `single_models`, a gap smaller than the measured seed noise is said to be."""
    (worse_name, worse_loss, worse_id), (better_name, better_loss, better_id) = worse, better
    interval = evidence.sequences.compare(worse_id, better_id)
    losses = f"{label}{worse_name} {worse_loss:.4f} vs {better_name} {better_loss:.4f}"
    if interval is None:
        return INCONCLUSIVE, f"{losses} (no per-row losses on shared rows: no interval)"
    noise = evidence.seed_noise if single_models else None
    within = f", within seed noise ({noise:.4f})" if noise is not None and abs(interval.estimate) < noise else ""
    return interval.verdict, f"{losses}, gap {interval} ({interval.verdict}{within})"


def finding_of(claim: str, parts: list[tuple[str, str]]) -> Finding:
    """A claim made of paired comparisons, each (verdict, text)."""
    if not parts:
        return Finding(claim, NOT_TESTED, "no runs to compare")
    return Finding(claim, combined_verdict([v for v, _ in parts]), "; ".join(text for _, text in parts))


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


def standard_overfits_in_epochs(evidence: Evidence) -> Finding:
    runs, spec = evidence.runs, evidence.spec
    claim = "standard recipe overfits in epochs (more passes raise validation loss)"
    if runs.empty:
        return Finding(claim, NOT_TESTED, "no runs")
    done = runs[
        (runs["kind"] == "pretrain") & (runs["status"] == "finished") & (runs["token_budget"] == spec.token_budget)
    ]
    parts = []
    for preset, group in best_runs(done[done["recipe"] == "standard"], ["preset", "num_train_epochs"]).groupby(
        "preset"
    ):
        group = group.set_index("num_train_epochs")
        best = group["val_loss"].idxmin()
        longer = group[group.index > best]
        if longer.empty:  # no rise in the grid: is the last step (fewer epochs to the most) a fall beyond the rows'?
            fewer = group[group.index < best]
            if fewer.empty:
                parts.append((INCONCLUSIVE, f"{preset}: only {best:g} epochs run"))
                continue
            before = fewer.iloc[-1]
            parts.append(
                compared(
                    evidence,
                    f"{preset} (best at the most epochs run): ",
                    (f"{best:g} epochs", group.at[best, "val_loss"], group.at[best, "run_id"]),
                    (f"{fewer.index[-1]:g} epochs", before["val_loss"], before["run_id"]),
                )
            )
            continue
        after = longer.iloc[0]
        parts.append(
            compared(
                evidence,
                f"{preset}: ",
                (f"{longer.index[0]:g} epochs", after["val_loss"], after["run_id"]),
                (f"{best:g} epochs", group.at[best, "val_loss"], group.at[best, "run_id"]),
            )
        )
    return finding_of(claim, parts)


def standard_overfits_in_size(evidence: Evidence) -> Finding | None:
    presets = evidence.size_order([p for p in evidence.spec.presets if evidence.search("standard", p)])
    if len(presets) < 2:
        return None
    searches = {p: evidence.search("standard", p) for p in presets}
    largest = presets[-1]
    best_other = min(presets[:-1], key=lambda p: searches[p].val_loss)
    part = compared(
        evidence,
        "",
        (f"largest {largest}", searches[largest].val_loss, searches[largest].run_id),
        (f"best smaller {best_other}", searches[best_other].val_loss, searches[best_other].run_id),
    )
    return finding_of("standard recipe overfits in N (the largest model is not the best)", [part])


def regularized_beats_standard(evidence: Evidence) -> Finding | None:
    parts = []
    for preset in evidence.size_order(list(evidence.spec.presets)):
        standard, regularized = evidence.search("standard", preset), evidence.search("regularized", preset)
        if standard is None or regularized is None:
            continue
        verdict, text = compared(
            evidence,
            f"{preset}: ",
            ("standard", standard.val_loss, standard.run_id),
            ("regularized", regularized.val_loss, regularized.run_id),
        )
        parts.append((verdict, f"{text}, reached from the {regularized.start}"))
    if not parts:
        return None
    return finding_of(
        "regularized recipe below the standard one at every N (its search also starts from the standard optimum, so "
        "it is never worse on the validation rows)",
        parts,
    )


def regularized_falls_in_size(evidence: Evidence) -> Finding | None:
    presets = evidence.size_order([p for p in evidence.spec.presets if evidence.search("regularized", p)])
    if len(presets) < 2:
        return None
    searches = {p: evidence.search("regularized", p) for p in presets}
    parts = [
        compared(
            evidence,
            "",
            (smaller, searches[smaller].val_loss, searches[smaller].run_id),
            (larger, searches[larger].val_loss, searches[larger].run_id),
        )
        for smaller, larger in zip(presets, presets[1:])
    ]
    return finding_of("regularized loss falls monotonically in N", parts)


def ensemble_beats_single_model(evidence: Evidence) -> Finding | None:
    if not evidence.state.ensembles:
        return None
    parts = []
    for preset in evidence.size_order(list(evidence.state.ensembles)):
        ensemble, single = evidence.state.ensembles[preset], evidence.best_single(preset)
        if single is None:
            continue
        parts.append(
            compared(
                evidence,
                f"{preset}: ",
                (f"best single ({single.recipe})", single.val_loss, single.run_id),
                (f"K={ensemble.k} ensemble", ensemble.val_loss, ensemble.run_id),
                single_models=False,
            )
        )
    return finding_of("a K-member ensemble beats the best single model of its size (any recipe) at every N", parts)


def _limits(spec: StudySpec, report: ScalingReport) -> tuple[float | None, float | None, float | None]:
    """(regularized N -> inf, lowest K -> inf, joint N, K -> inf) asymptotes of one analysis, None where unfitted."""
    regularized = regularized_fit(spec, report)
    ensemble = ensemble_scaling(spec, report)
    k_limits = [fit.E for fit in ensemble.k_fits.values()] if ensemble is not None else []
    joint = ensemble.joint.E if ensemble is not None and ensemble.joint is not None else None
    return (regularized.E if regularized else None), (min(k_limits) if k_limits else None), joint


def _limit_gap(
    evidence: Evidence, claim: str, gap: Callable[[tuple], float | None], fits: dict, described: str
) -> Finding:
    """A comparison of asymptotes: the gap on all rows, its interval over the resampled analyses."""
    estimate = gap(_limits(evidence.spec, evidence.scaling))
    if estimate is None:
        return Finding(claim, NOT_TESTED, "no fit over N or over K at the main budget")
    interval = evidence.resampled.interval(lambda report: gap(_limits(evidence.spec, report)), estimate)
    unusable = ill_conditioned(fits)
    if interval is None:
        return Finding(claim, INCONCLUSIVE, f"{described}; gap {estimate:+.4f}, no interval (fits fail on resamples)")
    text = f"{described}; gap {interval} over resampled validation rows"
    if unusable:
        return Finding(claim, INCONCLUSIVE, f"{text}; {unusable}")
    return Finding(claim, interval.verdict, text)


def ensemble_limit_below_regularized(evidence: Evidence) -> Finding:
    spec, scaling = evidence.spec, evidence.scaling
    ensemble = ensemble_scaling(spec, scaling)
    k_fits = ensemble.k_fits if ensemble is not None else {}
    regularized = regularized_fit(spec, scaling)
    fits = {"regularized N -> inf": regularized, **{f"K -> inf at N = {n:,.0f}": fit for n, fit in k_fits.items()}}
    described = f"K -> inf: {', '.join(f'{fit.E:.4f}' for fit in k_fits.values())}; regularized N -> inf " + (
        f"{regularized.E:.4f}" if regularized else "n/a"
    )
    return _limit_gap(
        evidence,
        "ensemble (K -> inf) asymptote below the regularized N -> inf asymptote",
        lambda limits: None if limits[0] is None or limits[1] is None else limits[0] - limits[1],
        fits,
        described,
    )


def joint_limit_lowest(evidence: Evidence) -> Finding | None:
    spec, scaling = evidence.spec, evidence.scaling
    ensemble, regularized = ensemble_scaling(spec, scaling), regularized_fit(spec, scaling)
    if ensemble is None or ensemble.joint is None or regularized is None:
        return None

    def gap(limits: tuple) -> float | None:
        others = [v for v in limits[:2] if v is not None]
        return None if limits[2] is None or not others else min(others) - limits[2]

    return _limit_gap(
        evidence,
        "joint (N, K -> inf) asymptote lowest of all",
        gap,
        {"joint": ensemble.joint, "regularized N -> inf": regularized},
        f"joint {ensemble.joint.E:.4f}, regularized {regularized.E:.4f}",
    )


def student_beats_baseline(evidence: Evidence, name: str, claim: str) -> Finding | None:
    student = evidence.state.distillation.get(name)
    single = evidence.best_single(student.preset) if student is not None else None
    if student is None or single is None:
        return None
    verdict, text = compared(
        evidence,
        "",
        (f"best single {student.preset} ({single.recipe})", single.val_loss, single.run_id),
        (f"student (weight decay {student.weight_decay:g})", student.student_val_loss, student.run_id),
    )
    return Finding(claim, verdict, f"{text}; teacher {student.teacher_val_loss:.4f}")


def self_distillation_beats_teacher(evidence: Evidence) -> Finding | None:
    student = evidence.state.distillation.get("self")
    teacher = evidence.search("regularized", student.preset) if student is not None else None
    if student is None or teacher is None:
        return None
    part = compared(
        evidence,
        "",
        ("teacher", teacher.val_loss, teacher.run_id),
        (f"student (weight decay {student.weight_decay:g})", student.student_val_loss, student.run_id),
    )
    return finding_of("self-distillation (real data kept in the mix) beats its teacher", [part])


def efficiency_interval(evidence: Evidence, series: str) -> tuple[Interval | None, str]:
    """The data efficiency of `series` at the main budget with its interval over resampled validation rows, or None
    and why there is none."""
    budget = evidence.spec.token_budget
    value, how = efficiency(evidence.scaling, series, budget)
    if value is None:
        return None, how
    interval = evidence.resampled.interval(lambda report: efficiency(report, series, budget)[0], value)
    if interval is None:
        return Interval(value, math.nan, math.nan), f"{how}; no interval (the fits fail on resampled rows)"
    return interval, f"{how}; 95% interval over resampled validation rows"


def findings(evidence: Evidence) -> list[Finding]:
    """The paper's qualitative findings that this study's runs can check, in the report's order."""
    checked: list[Finding | None] = [
        standard_overfits_in_epochs(evidence),
        standard_overfits_in_size(evidence),
        regularized_beats_standard(evidence),
        regularized_falls_in_size(evidence),
        ensemble_beats_single_model(evidence),
        ensemble_limit_below_regularized(evidence),
        joint_limit_lowest(evidence),
        student_beats_baseline(
            evidence, "ensemble", "distilled student (ensemble teacher) below its same-size baseline"
        ),
        student_beats_baseline(evidence, "token", "token-level student of the ensemble below its same-size baseline"),
        self_distillation_beats_teacher(evidence),
    ]
    return [finding for finding in checked if finding is not None]
