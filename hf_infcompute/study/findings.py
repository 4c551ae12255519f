"""The paper's findings checked on a study, one function each, and the numbers its report sets beside the paper's.

Every function reads the study's `Evidence` (its state, run records, scaling analysis, per-row losses and seed noise)
and writes nothing. Choices (which run is a size's best, which epochs a search ended at) are read on the validation
split; every loss and gap reported is measured on the test split (`confidence.REPORT_SPLIT`). A gap between two
trained models is judged on its document-level sampling variance plus the seed variance of each side
(`Gap.with_seed_noise`); asymptote gaps and multipliers on the whole analysis redone on document resamples and
seed-noise draws (`ResampledAnalysis`). A claim made at every N is *yes* when each part is, **no** only when a part
lies the other way at the family level (Holm), else *inconclusive* (`confidence.every_part`); a claim at some N is
*yes* when some part lies in the paper's direction at the family level, its p-values adjusted over the joint
replicates (`confidence.family_p_values`), **no** when every part lies the other way (`confidence.some_part`).
Each comparison is declared before it is computed: no minimum over noisy estimates. A finding the study has too
few runs to check is `None` (left out) or *not tested*.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from hf_infcompute.scaling.analysis import (
    EnsembleScaling,
    ScalingReport,
    best_runs,
    build_report,
    joint_bound_series,
)
from hf_infcompute.scaling.joint import JointFit
from hf_infcompute.scaling.plots import human_count
from hf_infcompute.scaling.power_law import PowerLawFit
from hf_infcompute.study.confidence import (
    INCONCLUSIVE,
    NO,
    NOT_TESTED,
    VALIDATION,
    YES,
    Documents,
    Interval,
    ResampledAnalysis,
    SequenceLosses,
    Split,
    every_part,
    family_p_values,
    report_split,
    some_part,
)
from hf_infcompute.study.seed_noise import MIN_OWN_SEEDS, PointNoise, SeedNoise, SeedRepeat
from hf_infcompute.study.spec import REPORT_RESAMPLES, StudySpec
from hf_infcompute.study.state import DistillationState, SearchState, StudyState, search_key

Part = tuple[Interval | None, str]  # a comparison's interval (None: it could not be made) and its text


@dataclass(frozen=True)
class Finding:
    claim: str
    verdict: str  # yes, no, inconclusive or not tested
    evidence: str  # the losses compared; each difference with its 95% interval
    includes: str = ""  # what the intervals include (documents, seeds, the analysis redone)
    intervals: tuple[Interval, ...] = ()  # each comparison's gap with its 95% interval (those that could be made)


@dataclass(frozen=True)
class Model:
    """One side of a comparison: its name, the runs it averages (one run, or a point's seed copies) and how many
    independent trainings its loss averages over (`copies`: seed copies, or an ensemble's members)."""

    name: str
    run_ids: tuple[str, ...]
    copies: float = 1


@dataclass(frozen=True)
class Evidence:
    """What the findings are checked on."""

    spec: StudySpec
    runs: pd.DataFrame
    scaling: ScalingReport
    state: StudyState
    split: Split
    sequences: SequenceLosses
    resampled: ResampledAnalysis
    noise: PointNoise  # each model's seed noise: its point's own, or the pooled sd of the searched points

    @classmethod
    def of(
        cls,
        spec: StudySpec,
        runs: pd.DataFrame,
        state: StudyState,
        *,
        source: str = "the store",
        resamples: int = REPORT_RESAMPLES,
    ) -> Evidence:
        """Everything the findings read, from the study's records and state: the seed noise from fresh seeds, each
        run's loss sd, the scaling analysis (chosen on validation, fitted on the report split with those sds) and
        its `resamples` replicates."""
        split = report_split(runs)
        noise = PointNoise.of(runs, state.selected_run_ids(), split.loss)
        runs = runs.assign(loss_sd=loss_sds(runs, split, noise)) if len(runs) else runs
        scaling = build_report(runs, source=source, select_on=VALIDATION.loss, report_on=split.loss)
        resampled = ResampledAnalysis(runs, seed_noise=noise, resamples=resamples)
        sequences = SequenceLosses(runs, split)
        return cls(spec, runs, scaling, state, split, sequences, resampled, noise)

    @property
    def seed_repeats(self) -> tuple[SeedRepeat, ...]:
        """The points trained at two fresh seeds or more."""
        return self.noise.repeats

    @property
    def fresh(self) -> tuple[SeedRepeat, ...]:
        """Every point's fresh-seed runs (one seed or more)."""
        return self.noise.fresh

    @property
    def seed(self) -> SeedNoise | None:
        """The pooled seed noise of a single model (the searched points'), for models without their own."""
        return self.noise.pool

    def seed_of(self, model: Model) -> SeedNoise | None:
        """The seed noise of `model`'s point: its own where trained at enough fresh seeds, else the pool."""
        records = self.runs[self.runs["run_id"].isin(model.run_ids)] if len(self.runs) else self.runs
        return self.noise.at(records.iloc[0].to_dict()) if len(records) else self.seed

    def loss(self, model: Model) -> float:
        """The mean loss of `model`'s runs on the report split (NaN when a run lacks it)."""
        records = self.runs.set_index("run_id")
        values = [records.at[r, self.split.loss] if r in records.index else math.nan for r in model.run_ids]
        values = [float(v.iloc[-1] if isinstance(v, pd.Series) else v) for v in values]
        return float(np.mean(values)) if values else math.nan

    def search(self, recipe: str, preset: str, token_budget: int | None = None) -> SearchState | None:
        """The search of `recipe` for `preset` (at the main budget by default), if it found a point."""
        budget = self.spec.token_budget if token_budget is None else token_budget
        found = self.state.searches.get(search_key(recipe, preset, budget))
        return found if found is not None and found.point is not None else None

    def single(self, search: SearchState, name: str) -> Model:
        """A search's optimum as a single model: the mean of its fresh-seed copies where the study trained some
        (the selected run itself was picked for landing low, so it is left out), else the selected run."""
        copies = next(
            (
                r.run_ids
                for r in self.fresh
                if r.token_budget == search.token_budget and r.at(search.preset, search.point, search.recipe)
            ),
            (),
        )
        if len(copies) > 1:
            return Model(f"{name} (mean of {len(copies)} fresh seeds)", tuple(copies), len(copies))
        if copies:
            return Model(f"{name} (a fresh seed)", tuple(copies))
        return Model(name, (search.run_id,) if search.run_id else ())

    def best_single(self, preset: str) -> SearchState | None:
        """The best single model of `preset` at the main budget over every recipe, chosen on validation."""
        found = [s for s in (self.search("standard", preset), self.search("regularized", preset)) if s is not None]
        return min(found, key=lambda s: s.val_loss) if found else None

    def size_order(self, presets: list[str]) -> list[str]:
        """`presets` from the smallest model to the largest (by total parameters)."""
        sizes = self.runs.groupby("preset")["n_params_total"].first() if len(self.runs) else pd.Series(dtype=float)
        return sorted(presets, key=lambda p: sizes.get(p, float("inf")))

    @property
    def includes(self) -> str:
        """What a paired gap's interval includes."""
        unit = "documents" if self.sequences.by_document else "rows (no document ids)"
        own = f"its own sd at a point with {MIN_OWN_SEEDS}+ fresh seeds, else the pooled sd {self.seed}"
        seeds = f"seed noise ({own})" if self.seed else "no seed noise (no point trained at two fresh seeds)"
        return f"{self.split.name} {unit} resampled + {seeds}"


def loss_sds(runs: pd.DataFrame, split: Split, noise: PointNoise) -> list[float]:
    """Each run's loss sd on `split`, the per-point noise of the fits: the sampling variance of its mean over
    documents (the cluster-robust variance, what a document bootstrap estimates) plus its seed variance (its point's
    `noise`; an ensemble of k: sd^2 / k); NaN where the run has no rows.

    The sampling variance is that of the run's rows less the mean rows of every run scored on the same rows: a hard
    document is hard for every model, so that shared part shifts every loss on those rows alike. Within one fit it
    moves the asymptote's level and leaves the law's shape alone, and every comparison here (a gap, a multiplier)
    cancels it; counted as each point's own noise it would drown the differences the laws are fitted to. The
    intervals of `ResampledAnalysis` resample the documents themselves, the shared part included."""
    shared = _shared_rows(runs, split)
    sds = []
    for record in runs.to_dict("records"):
        rows = record.get(split.rows)
        if not isinstance(rows, list | np.ndarray) or len(rows) < 2:
            sds.append(math.nan)
            continue
        rows = np.asarray(rows, dtype=float)
        reference = shared.get(str(record.get(split.fingerprint, "")))
        own = rows - reference if reference is not None and reference.shape == rows.shape else rows
        documents = record.get(split.documents)
        groups = Documents(documents if isinstance(documents, list | np.ndarray) else None, rows.size)
        residual = groups.sums(own - own.mean())[0]
        sampling = groups.clusters / max(groups.clusters - 1, 1) * float((residual**2).sum()) / rows.size**2
        k = record.get("k") if record.get("kind") == "ensemble" else 1
        copies = float(k) if isinstance(k, int | float) and not math.isnan(k) and k > 0 else 1.0
        seed = noise.at(record)
        sds.append(math.sqrt(sampling + (seed.variance(copies) if seed else 0.0)))
    return sds


def _shared_rows(runs: pd.DataFrame, split: Split) -> dict[str, np.ndarray]:
    """Per set of rows (by fingerprint) scored by two runs or more, the mean per-row loss over those runs."""
    if split.rows not in runs:
        return {}
    groups: dict[str, list[np.ndarray]] = {}
    fingerprints = runs[split.fingerprint] if split.fingerprint in runs else pd.Series("", index=runs.index)
    for rows, fingerprint in zip(runs[split.rows], fingerprints):
        if isinstance(rows, list | np.ndarray) and len(rows) > 1:
            groups.setdefault(str(fingerprint) if isinstance(fingerprint, str) else "", []).append(
                np.asarray(rows, dtype=float)
            )
    return {
        fingerprint: np.mean(found, axis=0)
        for fingerprint, found in groups.items()
        if len(found) > 1 and len({r.shape for r in found}) == 1
    }


def compared(evidence: Evidence, label: str, worse: Model, better: Model) -> Part:
    """One paired comparison of two trained models, the claim expecting `better` lower: the gap on the report
    split's rows with its interval over document resamples and the seed noise of both sides."""
    losses = f"{label}{worse.name} {evidence.loss(worse):.4f} vs {better.name} {evidence.loss(better):.4f}"
    gap = evidence.sequences.gap(worse.run_ids, better.run_ids)
    if gap is None:
        return None, f"{losses} (no per-row losses on shared rows: no interval)"
    noise = evidence.seed_of(worse), evidence.seed_of(better)
    if noise[0] is None or noise[1] is None:
        return None, f"{losses}, gap {gap} over documents only: not judged without a measured seed noise"
    variances = noise[0].variance(worse.copies), noise[1].variance(better.copies)
    judged = gap.with_seed_noise(sum(variances), combined_dof(noise, variances)).interval
    own = [f"{m.name}: its own seed sd {n.sd:.4f}" for m, n in zip((worse, better), noise) if n is not evidence.seed]
    return judged, f"{losses}, gap {judged} ({judged.verdict}){' (' + '; '.join(own) + ')' if own else ''}"


def combined_dof(noise: tuple[SeedNoise, SeedNoise], variances: tuple[float, float]) -> int:
    """The degrees of freedom of the seed variance of a gap: one estimate's own where both sides take the same
    estimate (scaled by their copies), else the Welch-Satterthwaite value of the sum of two independent ones."""
    if noise[0] is noise[1]:
        return noise[0].dof
    spread = sum(v**2 / n.dof for v, n in zip(variances, noise))
    return max(1, int(sum(variances) ** 2 / spread)) if spread else min(n.dof for n in noise)


def finding_of(
    claim: str, parts: list[Part], includes: str, rule: Callable[[Sequence[Interval]], str] = every_part
) -> Finding:
    """A claim made of comparisons, its verdict by `rule` over the parts. A part that could not be compared keeps a
    claim at every part from *yes*, and a claim at some part from **no**."""
    if not parts:
        return Finding(claim, NOT_TESTED, "no runs to compare", includes)
    valid = [interval for interval, _ in parts if interval is not None]
    verdict = rule(valid) if valid else INCONCLUSIVE
    if len(valid) < len(parts) and verdict == (YES if rule is every_part else NO):
        verdict = INCONCLUSIVE
    return Finding(claim, verdict, "; ".join(text for _, text in parts), includes, tuple(valid))


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


def unidentified_asymptote(scaling: ScalingReport, series: str, token_budget: int) -> str | None:
    """Why the asymptote `series` ('<recipe> (N -> inf)' or '<recipe> ensembles (N, K -> inf)') has no multiplier at
    `token_budget` when its fit was made but is ill-conditioned (the data law then has no target to invert); None
    for any other series, or a fit that is not the cause."""
    fits: list[PowerLawFit | JointFit] = []
    if series.endswith(" ensembles (N, K -> inf)"):
        recipe = series.removesuffix(" ensembles (N, K -> inf)")
        fits = [e.joint for e in scaling.ensembles if e.recipe == recipe and e.token_budget == token_budget and e.joint]
    elif series.endswith(" (N -> inf)"):
        recipe = series.removesuffix(" (N -> inf)")
        fits = [s.fit for s in scaling.sizes if s.recipe == recipe and s.token_budget == token_budget and s.fit]
    issues = [issue for fit in fits if not fit.well_conditioned for issue in fit.issues]
    if not issues:
        return None
    return f"the asymptote itself is not identified ({'; '.join(issues)}), so no loss to read the data law at"


def efficiency(scaling: ScalingReport, series: str, token_budget: int) -> tuple[float | None, str]:
    """The data-efficiency multiplier of `series` at `token_budget` and how it was obtained (by the inverted
    standard data law, else by interpolating the standard recipe's trained budgets), or None and why there is none."""
    rows = scaling.efficiency
    reasons = [reason for analysis, reason in scaling.skipped if analysis.startswith("data efficiency")]
    match = rows[(rows["series"] == series) & (rows["token_budget"] == token_budget)] if len(rows) else rows
    if match.empty:
        unfitted = unidentified_asymptote(scaling, series, token_budget)
        return None, unfitted or (reasons[0] if reasons else f"no {series} at this budget")
    row = match.iloc[0]
    if math.isfinite(float(row.get("efficiency", math.nan))):
        return float(row["efficiency"]), "the standard data law inverted, over its value at the standard's best loss"
    interpolated = float(row.get("efficiency_interpolated", math.nan))
    if math.isfinite(interpolated):
        return interpolated, "interpolated between the standard recipe's trained budgets"
    return None, reasons[0] if reasons else "the target lies outside the standard recipe's reach"


def efficiency_series(scaling: ScalingReport, token_budget: int) -> list[str]:
    """Every series the analysis has a multiplier row for at `token_budget`, in its order."""
    rows = scaling.efficiency
    if rows.empty:
        return []
    return list(dict.fromkeys(rows.loc[rows["token_budget"] == token_budget, "series"]))


def ill_conditioned(fits: dict[str, PowerLawFit | JointFit | None]) -> str:
    """Why the named fits cannot be compared (empty when every one is well conditioned)."""
    return "; ".join(
        f"{name} fit ill-conditioned ({', '.join(fit.issues)})"
        for name, fit in fits.items()
        if fit is not None and not fit.well_conditioned
    )


def retained_share(evidence: Evidence, student: Model, teacher: Model, single: Model) -> float | None:
    """The share of the teacher's gain over the best single model that `student` keeps, on the report split; None
    when the teacher brings no gain."""
    single_loss, teacher_loss = evidence.loss(single), evidence.loss(teacher)
    if not single_loss > teacher_loss:
        return None
    return (single_loss - evidence.loss(student)) / (single_loss - teacher_loss)


def standard_overfits_in_epochs(evidence: Evidence) -> Finding:
    runs, spec = evidence.runs, evidence.spec
    claim = "standard recipe overfits in epochs (more passes raise the loss), at every N"
    if runs.empty:
        return Finding(claim, NOT_TESTED, "no runs", evidence.includes)
    done = runs[
        (runs["kind"] == "pretrain") & (runs["status"] == "finished") & (runs["token_budget"] == spec.token_budget)
    ]
    parts: list[Part] = []
    for preset, group in best_runs(done[done["recipe"] == "standard"], ["preset", "num_train_epochs"]).groupby(
        "preset"
    ):
        group = group.set_index("num_train_epochs")
        best = group["val_loss"].idxmin()  # chosen on validation

        def at(epochs: float, group: pd.DataFrame = group) -> Model:
            return Model(f"{epochs:g} epochs", (group.at[epochs, "run_id"],))

        longer, fewer = group.index[group.index > best], group.index[group.index < best]
        if len(longer):
            parts.append(compared(evidence, f"{preset}: ", at(longer[0]), at(best)))
        elif len(fewer):  # no rise in the grid: is the last step (fewer epochs to the most) a fall?
            parts.append(compared(evidence, f"{preset} (best at the most epochs run): ", at(best), at(fewer[-1])))
        else:
            parts.append((None, f"{preset}: only {best:g} epochs run"))
    return finding_of(claim, parts, evidence.includes)


def standard_overfits_in_size(evidence: Evidence) -> Finding | None:
    presets = evidence.size_order([p for p in evidence.spec.presets if evidence.search("standard", p)])
    if len(presets) < 2:
        return None
    searches = {p: evidence.search("standard", p) for p in presets}
    largest = presets[-1]
    best_other = min(presets[:-1], key=lambda p: searches[p].val_loss)  # chosen on validation
    part = compared(
        evidence,
        "",
        evidence.single(searches[largest], f"largest {largest}"),
        evidence.single(searches[best_other], f"best smaller {best_other}"),
    )
    return finding_of("standard recipe overfits in N (the largest model is not the best)", [part], evidence.includes)


def budget_label(evidence: Evidence, token_budget: int) -> str:
    """'' at the study's only budget, else 'D = 200M, ' (each part of a claim made at every budget says which)."""
    return f"D = {human_count(token_budget)}, " if len(evidence.spec.budgets) > 1 else ""


def regularized_beats_standard(evidence: Evidence) -> Finding | None:
    parts: list[Part] = []
    for budget in evidence.spec.budgets:
        for preset in evidence.size_order(list(evidence.spec.presets)):
            standard = evidence.search("standard", preset, budget)
            regularized = evidence.search("regularized", preset, budget)
            if standard is None or regularized is None:
                continue
            interval, text = compared(
                evidence,
                f"{budget_label(evidence, budget)}{preset}: ",
                evidence.single(standard, "standard"),
                evidence.single(regularized, "regularized"),
            )
            parts.append((interval, f"{text}, reached from the {regularized.start}"))
    if not parts:
        return None
    return finding_of("regularized recipe below the standard one at every N and D", parts, evidence.includes)


def regularized_falls_in_size(evidence: Evidence) -> Finding | None:
    parts: list[Part] = []
    for budget in evidence.spec.budgets:
        searches = {p: evidence.search("regularized", p, budget) for p in evidence.spec.presets}
        presets = evidence.size_order([p for p, found in searches.items() if found is not None])
        parts += [
            compared(
                evidence,
                budget_label(evidence, budget),
                evidence.single(searches[smaller], smaller),
                evidence.single(searches[larger], larger),
            )
            for smaller, larger in zip(presets, presets[1:])
        ]
    if not parts:
        return None
    return finding_of("regularized loss falls monotonically in N, at every D", parts, evidence.includes)


def ensemble_model(evidence: Evidence, preset: str) -> Model | None:
    ensemble = evidence.state.ensembles.get(preset)
    return Model(f"K={ensemble.k} ensemble", (ensemble.run_id,), ensemble.k) if ensemble else None


def ensemble_beats_single_model(evidence: Evidence) -> Finding | None:
    if not evidence.state.ensembles:
        return None
    parts: list[Part] = []
    for preset in evidence.size_order(list(evidence.state.ensembles)):
        single = evidence.best_single(preset)
        if single is None:
            continue
        parts.append(
            compared(
                evidence,
                f"{preset}: ",
                evidence.single(single, f"best single ({single.recipe})"),
                ensemble_model(evidence, preset),
            )
        )
    return finding_of(
        "a K-member ensemble beats the best single model of its size (any recipe) at every N",
        parts,
        evidence.includes + " (the two sides' seed variances add: conservative where they share members)",
    )


@dataclass(frozen=True)
class Limits:
    """The asymptotes one analysis gives at the main budget (None where unfitted): the regularized N -> inf, each
    size's K -> inf (by N), the joint N, K -> inf."""

    regularized: float | None
    k: dict[float, float]
    joint: float | None


def limits(spec: StudySpec, report: ScalingReport) -> Limits:
    regularized = regularized_fit(spec, report)
    ensemble = ensemble_scaling(spec, report)
    k_limits = {n: fit.E for n, fit in ensemble.k_fits.items()} if ensemble is not None else {}
    joint = ensemble.joint.E if ensemble is not None and ensemble.joint is not None else None
    return Limits(regularized.E if regularized else None, k_limits, joint)


def limit_part(
    evidence: Evidence, name: str, gap: Callable[[Limits], float | None], unusable: str, *, lower_bound: bool = False
) -> Part:
    """One declared comparison of asymptotes: its gap on the data, its interval over the resampled analyses
    (`lower_bound`: the gap computed bounds the claimed one from below, `Interval.as_lower_bound`)."""
    estimate = gap(limits(evidence.spec, evidence.scaling))
    if estimate is None:
        return None, f"{name}: no fit"

    def resampled_gap(report: ScalingReport) -> float | None:
        return gap(limits(evidence.spec, report))

    interval = evidence.resampled.interval(resampled_gap, estimate)
    if interval is None:
        return None, f"{name}: gap {estimate:+.4f}, {evidence.resampled.missing(resampled_gap)}"
    if lower_bound:
        interval = interval.as_lower_bound()
    if unusable:
        return None, f"{name}: gap {interval}; {unusable}"
    return interval, f"{name}: gap {interval} ({interval.verdict})"


def resampled_includes(evidence: Evidence) -> str:
    own = f"each point's own sd with {MIN_OWN_SEEDS}+ fresh seeds, else sd {evidence.seed}"
    seeds = f"seed-noise draws ({own})" if evidence.seed else "no seed noise (none measured)"
    return f"the whole analysis redone on {evidence.split.name} document resamples + {seeds}"


def ensemble_limit_below_regularized(evidence: Evidence) -> Finding:
    spec, scaling = evidence.spec, evidence.scaling
    claim = "ensemble (K -> inf) asymptote below the regularized N -> inf asymptote, at some N (jointly over the sizes)"
    ensemble, regularized = ensemble_scaling(spec, scaling), regularized_fit(spec, scaling)
    k_fits = ensemble.k_fits if ensemble is not None else {}
    if regularized is None or not k_fits:
        why = "no regularized law in N" if regularized is None else "no law in K"
        return Finding(claim, NOT_TESTED, f"{why} at the main budget", resampled_includes(evidence))

    def gap_at(n: float) -> Callable[[Limits], float | None]:
        return lambda found: None if found.regularized is None or n not in found.k else found.regularized - found.k[n]

    sizes = sorted(k_fits)
    parts = [
        limit_part(
            evidence,
            f"N = {n:,.0f}: K -> inf {k_fits[n].E:.4f} vs regularized N -> inf {regularized.E:.4f}",
            gap_at(n),
            ill_conditioned({"regularized N -> inf": regularized, f"K -> inf at N = {n:,.0f}": k_fits[n]}),
        )
        for n in sizes
    ]
    return finding_of(
        claim,
        adjusted_jointly(evidence, parts, [gap_at(n) for n in sizes]),
        resampled_includes(evidence),
        some_part,
    )


def adjusted_jointly(evidence: Evidence, parts: list[Part], gaps: list[Callable[[Limits], float | None]]) -> list[Part]:
    """The parts of a claim at some N with their p-values adjusted for the family over the joint replicates of the
    resampled analysis (`confidence.family_p_values`: the parts share the regularized asymptote, so they move
    together and Holm's any-dependence bound would be needlessly strict); parts without an interval stay as they
    are."""
    usable = [i for i, (interval, _) in enumerate(parts) if interval is not None]
    if not usable:
        return parts
    spec = evidence.spec
    replicates = evidence.resampled.replicates([lambda report, gap=gaps[i]: gap(limits(spec, report)) for i in usable])
    adjusted = dict(zip(usable, family_p_values(replicates)))
    out = list(parts)
    for i, p_value in adjusted.items():
        interval, text = parts[i]
        out[i] = (replace(interval, p_value=float(p_value)), f"{text}, p = {p_value:.3f} adjusted over the sizes")
    return out


def joint_limit_lowest(evidence: Evidence) -> Finding:
    """The joint N, K -> inf limit against the regularized N -> inf asymptote, as the paper compares them (3.17 vs
    3.43). Not against each size's K -> inf limit: the joint limit is those limits' own N -> inf, below each of them
    wherever their law in N falls, so that comparison would test the law's fit, not the recipe."""
    spec, scaling = evidence.spec, evidence.scaling
    claim = "joint (N, K -> inf) asymptote lowest: below the regularized N -> inf asymptote"
    ensemble, regularized = ensemble_scaling(spec, scaling), regularized_fit(spec, scaling)
    if ensemble is None or ensemble.joint is None or regularized is None:
        why = "no regularized law in N" if regularized is None else "no joint law over N and K"
        return Finding(claim, NOT_TESTED, f"{why} at the main budget", resampled_includes(evidence))
    joint = ensemble.joint
    bound = joint.bound
    if bound is None:
        part = limit_part(
            evidence,
            f"joint {joint.E:.4f} vs regularized N -> inf {regularized.E:.4f}",
            lambda found: None if found.joint is None or found.regularized is None else found.regularized - found.joint,
            ill_conditioned({"joint": joint, "regularized N -> inf": regularized}),
        )
        return finding_of(claim, [part], resampled_includes(evidence))
    largest, at_largest = bound
    part = limit_part(
        evidence,
        f"joint <= K -> inf at the largest N = {largest:,.0f} {at_largest.E:.4f} (the law in N does not locate the "
        f"joint limit: {'; '.join(joint.n_fit.issues)}; it lies below every size's K -> inf limit wherever that limit "
        f"falls in N, as the paper's law does) vs regularized N -> inf {regularized.E:.4f}",
        lambda found: (
            None if found.regularized is None or largest not in found.k else found.regularized - found.k[largest]
        ),
        ill_conditioned({"regularized N -> inf": regularized, f"K -> inf at N = {largest:,.0f}": at_largest}),
        lower_bound=True,
    )
    return finding_of(claim, [part], resampled_includes(evidence))


def student_model(evidence: Evidence, name: str) -> tuple[Model, DistillationState] | None:
    student = evidence.state.distillation.get(name)
    if student is None:
        return None
    return Model(f"student (weight decay {student.weight_decay:g})", (student.run_id,)), student


def student_beats_baseline(evidence: Evidence, name: str, claim: str) -> Finding | None:
    found = student_model(evidence, name)
    single = evidence.best_single(found[1].preset) if found is not None else None
    if found is None or single is None:
        return None
    (student, state), baseline = found, evidence.single(single, f"best single {found[1].preset} ({single.recipe})")
    interval, text = compared(evidence, "", baseline, student)
    teacher = ensemble_model(evidence, state.preset)
    if teacher is not None:
        text += f"; teacher {evidence.loss(teacher):.4f}"
    return finding_of(claim, [(interval, text)], evidence.includes)


def self_distillation_beats_teacher(evidence: Evidence) -> Finding | None:
    found = student_model(evidence, "self")
    teacher = evidence.search("regularized", found[1].preset) if found is not None else None
    if found is None or teacher is None:
        return None
    # The teacher is the selected run itself (its samples taught the student), not a seed mean.
    part = compared(evidence, "", Model("teacher", (teacher.run_id,)), found[0])
    return finding_of("self-distillation (real data kept in the mix) beats its teacher", [part], evidence.includes)


def efficiency_interval(evidence: Evidence, series: str) -> tuple[Interval | None, str]:
    """The data-efficiency multiplier of `series` at the main budget with its interval over the resampled analyses
    (documents and seeds), or None and why there is none."""
    budget = evidence.spec.token_budget
    value, how = efficiency(evidence.scaling, series, budget)
    if value is None:
        return joint_efficiency_bound(evidence, series) or (None, how)

    def multiplier(report: ScalingReport) -> float | None:
        return efficiency(report, series, budget)[0]

    interval = evidence.resampled.interval(multiplier, value)
    if interval is None:
        return Interval(value, math.nan, math.nan), f"{how}; {evidence.resampled.missing(multiplier)}"
    return interval, f"{how}; 95% interval: {resampled_includes(evidence)}"


def joint_efficiency_bound(evidence: Evidence, series: str) -> tuple[Interval, str] | None:
    """For a joint (N, K -> inf) series whose asymptote the law in N does not locate: the multiplier of the K -> inf
    limit at the largest size as a lower bound on the joint one (`JointFit.bound`), with its interval over the
    resampled analyses; None for any other series, where no bound holds or where the bound has no interval."""
    suffix = " ensembles (N, K -> inf)"
    if not series.endswith(suffix):
        return None
    recipe = series.removesuffix(suffix)
    ensemble = next(
        (e for e in evidence.scaling.ensembles if e.recipe == recipe and e.token_budget == evidence.spec.token_budget),
        None,
    )
    bound = ensemble.joint.bound if ensemble is not None and ensemble.joint is not None else None
    if bound is None:
        return None
    interval, how = efficiency_interval(evidence, joint_bound_series(recipe))
    if interval is None or math.isnan(interval.low):
        return None
    largest, at_largest = bound
    why = (
        f"at least the multiplier of the K -> inf limit at the largest size N = {largest:,.0f} ({at_largest.E:.4f}), "
        "which the joint limit lies below wherever the K -> inf limit falls in N (the paper's law in N does); the "
        f"law in N does not locate the joint limit itself ({'; '.join(ensemble.joint.n_fit.issues)})"
    )
    return interval.as_lower_bound(), f"{why}; {how}"


@dataclass(frozen=True)
class DataLaw:
    """One series' law in D, `L(D) = A / D^alpha + E` (D in billions): its fit and the 95% intervals of its exponent
    and asymptote over the resampled analyses (None where the refits fail on too many resamples)."""

    series: str
    fit: PowerLawFit
    alpha: Interval | None
    E: Interval | None


def data_laws(evidence: Evidence) -> list[DataLaw]:
    """Every series with a law in D (each recipe's best runs, its N -> inf asymptotes, ...), with intervals."""

    def parameter(series: str, name: str) -> Callable[[ScalingReport], float | None]:
        def value(report: ScalingReport) -> float | None:
            found = next((d.fit for d in report.data if d.series == series and d.fit is not None), None)
            return None if found is None else float(getattr(found, name))

        return value

    return [
        DataLaw(
            d.series,
            d.fit,
            evidence.resampled.interval(parameter(d.series, "alpha"), d.fit.alpha),
            evidence.resampled.interval(parameter(d.series, "E"), d.fit.E),
        )
        for d in evidence.scaling.data
        if d.fit is not None
    ]


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
