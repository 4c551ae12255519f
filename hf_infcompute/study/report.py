"""The study's `report.md`: its findings checked one by one, its figures beside the paper's, every plot.

Numbers are labelled by how they were obtained: *measured* (a trained run on the fixed validation split) or *fit*
(a scaling-law asymptote, with its bootstrap standard error). Absolute losses depend on the corpus and tokenizer, so
only the paper's qualitative findings and its ratios (data efficiency, retained share) compare directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hf_infcompute.records import load_runs, write_text_atomic
from hf_infcompute.scaling.report import ScalingReport, build_report, efficiency_text, markdown_table, write_report
from hf_infcompute.study import paper
from hf_infcompute.study.pipeline import search_key
from hf_infcompute.study.spec import StudySpec

FIGURES_DIRNAME = "figures"


@dataclass(frozen=True)
class Finding:
    claim: str
    reproduced: bool | None  # None: not enough runs to tell
    evidence: str


def _loss(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _sessions(state: dict[str, Any]) -> str:
    sessions = state.get("sessions", 1)
    return f" over {sessions} sessions (the study was resumed)" if sessions > 1 else ""


def _fit(value: float | None, stderr: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f} ± {stderr:.4f}" if stderr is not None and math.isfinite(stderr) else f"{value:.4f}"


def best_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The best finished pre-training run per (recipe, token budget, preset)."""
    done = runs[(runs["kind"] == "pretrain") & (runs["status"] == "finished")]
    best = done.loc[done.groupby(["recipe", "token_budget", "preset"])["val_loss"].idxmin()]
    return best.sort_values(["recipe", "token_budget", "n_params_total"])


def findings(spec: StudySpec, runs: pd.DataFrame, scaling: ScalingReport, state: dict[str, Any]) -> list[Finding]:
    """The paper's qualitative findings, each checked on this study's runs."""
    result = []
    done = runs[(runs["kind"] == "pretrain") & (runs["status"] == "finished") & (runs["token_budget"] == spec.budget)]
    standard = done[done["recipe"] == "standard"]
    over_epochs, still_falling = [], []
    for preset, group in standard.groupby("preset"):
        by_epochs = group.groupby("epochs")["val_loss"].min()
        best_epochs = by_epochs.idxmin()
        longer = by_epochs[by_epochs.index > best_epochs]
        if len(longer):
            over_epochs.append(f"{preset}: best at {best_epochs:g} epochs ({by_epochs[best_epochs]:.4f}), "
                               f"{longer.index[0]:g} epochs {longer.iloc[0]:.4f}")
        else:
            still_falling.append(f"{preset}: best at the most epochs run ({best_epochs:g})")
    result.append(Finding("standard recipe overfits in epochs (more passes raise validation loss)",
                          bool(over_epochs) if len(standard) else None, "; ".join(over_epochs + still_falling)))
    best = best_runs(done)
    std_best = best[best["recipe"] == "standard"].sort_values("n_params_total")
    reg_best = best[best["recipe"] == "regularized"].sort_values("n_params_total")
    if len(std_best) >= 2:
        largest, lowest = std_best.iloc[-1], std_best.loc[std_best["val_loss"].idxmin()]
        overfits = largest["val_loss"] > lowest["val_loss"]
        result.append(Finding("standard recipe overfits in N (the largest model is not the best)", bool(overfits),
                              f"best {lowest['preset']} {lowest['val_loss']:.4f}; largest {largest['preset']} "
                              f"{largest['val_loss']:.4f}"))
    if len(reg_best) >= 2:
        losses = reg_best["val_loss"].tolist()
        monotone = all(b < a for a, b in zip(losses, losses[1:]))
        result.append(Finding("regularized loss falls monotonically in N", monotone,
                              ", ".join(f"{p} {v:.4f}" for p, v in zip(reg_best["preset"], losses))))
    reg_asymptote = _regularized_fit(spec, scaling)
    ensemble = _ensemble_scaling(spec, scaling)
    k_fits = ensemble.k_fits if ensemble is not None else {}
    claim = "ensemble (K -> inf) asymptote below the regularized N -> inf asymptote"
    unusable = _ill_conditioned({"regularized N -> inf": reg_asymptote,
                                 **{f"K -> inf at N = {n:,.0f}": fit for n, fit in k_fits.items()}})
    if reg_asymptote is None or not k_fits:
        result.append(Finding(claim, None, "no fit over N or over K at the main budget"))
    elif unusable:
        result.append(Finding(claim, None, unusable))
    else:
        k_limits = [fit.E for fit in k_fits.values()]
        result.append(Finding(claim, min(k_limits) < reg_asymptote.E,
                              f"K -> inf: {', '.join(f'{v:.4f}' for v in k_limits)}; "
                              f"regularized N -> inf {reg_asymptote.E:.4f}"))
    if ensemble is not None and ensemble.joint is not None and reg_asymptote is not None:
        claim = "joint (N, K -> inf) asymptote lowest of all"
        unusable = _ill_conditioned({"joint": ensemble.joint, "regularized N -> inf": reg_asymptote})
        if unusable:
            result.append(Finding(claim, None, unusable))
        else:
            lowest = ensemble.joint.E < min([reg_asymptote.E, *[f.E for f in k_fits.values()]])
            result.append(Finding(claim, lowest, f"joint {ensemble.joint.E:.4f}, regularized {reg_asymptote.E:.4f}"))
    ensembles = state.get("ensembles", {})
    if ensembles:
        single = {p: state["searches"][search_key("regularized", p, spec.budget)]["val_loss"] for p in ensembles}
        result.append(Finding(
            "a K-member ensemble beats the best single model of its size (measured)",
            all(e["val_loss"] < single[p] for p, e in ensembles.items()),
            "; ".join(f"{p}: K={e['k']} {e['val_loss']:.4f} vs single {single[p]:.4f}" for p, e in ensembles.items()),
        ))
    distilled = state.get("distillation", {})
    if "ensemble" in distilled:
        student = distilled["ensemble"]
        result.append(Finding("distilled student below its same-size baseline",
                              student["student_val_loss"] < student["single_val_loss"],
                              f"student {student['student_val_loss']:.4f} (weight decay {student['weight_decay']:g}), "
                              f"best single {student['single_val_loss']:.4f}, ensemble teacher "
                              f"{student['teacher_val_loss']:.4f}"))
    if "self" in distilled:
        student = distilled["self"]
        result.append(Finding("self-distillation (real data kept in the mix) beats its teacher",
                              student["student_val_loss"] < student["teacher_val_loss"],
                              f"teacher {student['teacher_val_loss']:.4f}, student {student['student_val_loss']:.4f} "
                              f"(weight decay {student['weight_decay']:g})"))
    return result


def _ill_conditioned(fits: dict[str, Any]) -> str:
    """Why the named fits cannot be compared (empty when every one is well conditioned)."""
    return "; ".join(f"{name} fit ill-conditioned ({', '.join(fit.issues)})"
                     for name, fit in fits.items() if fit is not None and not fit.well_conditioned)


def _fit_row(quantity: str, fit: Any, how: str, paper_value: str) -> list[str]:
    """A table row for a fitted asymptote; an ill-conditioned fit shows no number, only why."""
    if fit is None:
        return [quantity, "n/a", f"{how}: no fit", paper_value]
    if not fit.well_conditioned:
        return [quantity, "n/a", f"{how}, ill-conditioned: {'; '.join(fit.issues)}", paper_value]
    return [quantity, _fit(fit.E, fit.E_stderr), how, paper_value]


def _regularized_fit(spec: StudySpec, scaling: ScalingReport) -> Any:
    return next((s.fit for s in scaling.sizes if s.recipe == "regularized" and s.token_budget == spec.budget
                 and s.fit is not None), None)


def _ensemble_scaling(spec: StudySpec, scaling: ScalingReport) -> Any:
    return next((e for e in scaling.ensembles if e.token_budget == spec.budget), None)


def _efficiency(scaling: ScalingReport, series: str, budget: int) -> tuple[str, str]:
    rows = scaling.efficiency
    if rows.empty:
        reasons = [reason for analysis, reason in scaling.skipped if analysis == "data efficiency"]
        return "n/a", reasons[0] if reasons else "no data-scaling fit"
    match = rows[(rows["series"] == series) & (rows["token_budget"] == budget)]
    if match.empty:
        return "n/a", f"no well-conditioned {series} fit at this budget"
    value = float(match["efficiency"].iloc[0])
    return efficiency_text(value), "fit (standard data law inverted)"


def _share_text(student: dict[str, Any], val_loss: float | None = None) -> str:
    """The share of the ensemble's gain over the best single model that a student keeps (n/a without a gain)."""
    single, teacher = student["single_val_loss"], student["teacher_val_loss"]
    loss = student["student_val_loss"] if val_loss is None else val_loss
    return f"{(single - loss) / (single - teacher):.0%}" if single > teacher else "n/a"


DISTILLATION_LABELS = {"ensemble": "ensemble, sequence-level", "self": "best single model (self-distillation)",
                       "token": "ensemble, token-level KL"}


def distillation_rows(distilled: dict[str, Any]) -> list[list[str]]:
    """Every student the study trained: teacher and mode, weight decay, loss, the share of the gain it keeps."""
    rows = []
    for name, entry in distilled.items():
        for student in entry["students"]:
            chosen = " (best)" if student["run_id"] == entry["run_id"] and len(entry["students"]) > 1 else ""
            share = _share_text(entry, student["val_loss"]) if name != "self" else "n/a"
            rows.append([DISTILLATION_LABELS.get(name, name), _loss(entry["teacher_val_loss"]),
                         f"{student['weight_decay']:g}", f"{student['val_loss']:.4f}{chosen}", share,
                         student["run_id"]])
    return rows


def comparison_rows(spec: StudySpec, runs: pd.DataFrame, scaling: ScalingReport, state: dict) -> list[list[str]]:
    """This run's headline figures beside the paper's, each with how it was obtained."""
    best = best_runs(runs[runs["token_budget"] == spec.budget]) if len(runs) else runs
    std = best[best["recipe"] == "standard"]
    rows = []
    if len(std):
        top = std.loc[std["val_loss"].idxmin()]
        rows.append(["standard recipe, best loss", _loss(top["val_loss"]), f"measured ({top['preset']})",
                     f"{paper.STANDARD_BEST} (600M)"])
    rows.append(_fit_row("regularized, N -> inf asymptote", _regularized_fit(spec, scaling), "fit over N",
                         f"{paper.REGULARIZED_ASYMPTOTE}"))
    ensemble = _ensemble_scaling(spec, scaling)
    if ensemble is not None:
        for n, fit in sorted(ensemble.k_fits.items()):
            rows.append(_fit_row(f"ensemble of N = {n:,.0f}, K -> inf asymptote", fit, "fit over K",
                                 f"{paper.ENSEMBLE_ASYMPTOTE} (300M)"))
        rows.append(_fit_row("joint N, K -> inf asymptote", ensemble.joint, "two-step fit",
                             f"{paper.JOINT_ASYMPTOTE}"))
    for label, series, reference in (("regularized", "regularized (N -> inf)", paper.EFFICIENCY_REGULARIZED),
                                     ("joint", "regularized ensembles (N, K -> inf)", paper.EFFICIENCY_JOINT)):
        value, how = _efficiency(scaling, series, spec.budget)
        rows.append([f"data efficiency, {label} over standard", value, how, f"{reference}x"])
    distilled = state.get("distillation", {})
    students = (("ensemble", "distilled student", "(ensemble teacher)", f"{paper.DISTILLED_STUDENT}",
                 f"{paper.RETAINED_SHARE:.0%}"),
                ("token", "token-level student", "(KL to the ensemble)", "not in the paper", "not in the paper"))
    for name, label, how, paper_loss, paper_share in students:
        if name in distilled:
            student = distilled[name]
            rows.append([f"{label} {how}", _loss(student["student_val_loss"]), "measured", paper_loss])
            rows.append([f"share of the ensemble's gain the {label} keeps", _share_text(student),
                         "measured: (single - student) / (single - ensemble)", paper_share])
    if "self" in distilled:
        student = distilled["self"]
        rows.append(["self-distillation: teacher -> student",
                     f"{student['teacher_val_loss']:.4f} -> {student['student_val_loss']:.4f}",
                     "measured", f"{paper.SELF_DISTILLATION[0]} -> {paper.SELF_DISTILLATION[1]}"])
    for label, scores in state.get("benchmarks", {}).items():
        rows.append([f"benchmark average, {label}", f"{100 * scores['average']:.2f}", "measured (lm-eval)",
                     "; ".join(f"{k} {v}" for k, v in paper.BENCHMARK_AVERAGES.items())])
    return rows


def write_study_report(spec: StudySpec, output_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write `output_dir/report.md` (and the scaling figures and fits under `figures/`); return its path."""
    output_dir = Path(output_dir)
    runs = load_runs(output_dir)
    scaling = build_report(runs, source=str(output_dir))
    write_report(scaling, output_dir / FIGURES_DIRNAME)
    finished = runs[runs["status"] == "finished"] if len(runs) else runs
    failed = runs[runs["status"] != "finished"] if len(runs) else runs
    lines = [f"# Study: {spec.name}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [
        f"Corpus `{state.get('corpus', spec.run.get('corpus', ''))}`, main token budget D = {spec.budget:,}, "
        f"presets {', '.join(spec.presets)}; {len(finished)} finished records, {len(failed)} failed; "
        f"wall time {state.get('wall_time_s', 0) / 60:.1f} min{_sessions(state)}.",
        "",
        "Numbers are *measured* (a trained run, scored on the fixed validation split) or *fit* (a scaling-law "
        "asymptote ± its bootstrap standard error). Absolute losses depend on corpus and tokenizer; compare the "
        "findings and the ratios with the paper, not the raw losses.",
        "",
        "## Findings",
        "",
    ]
    rows = [[f.claim, {True: "yes", False: "**no**", None: "not tested"}[f.reproduced], f.evidence]
            for f in findings(spec, runs, scaling, state)]
    lines += markdown_table(["paper's finding", "reproduced here", "evidence (validation loss)"], rows)
    if any(f[1] == "**no**" for f in rows):
        lines += ["", "A finding marked **no** did not reproduce at this scale; it is reported as measured."]
    lines += ["", f"## This run beside the paper ({paper.PAPER_BUDGET})", ""]
    lines += markdown_table(["quantity", "this run", "how obtained", "paper"],
                            comparison_rows(spec, runs, scaling, state))
    lines += ["", "## Best runs per recipe, budget and size (measured)", ""]
    best = best_runs(runs) if len(runs) else runs
    lines += markdown_table(
        ["recipe", "D", "preset", "parameters", "learning rate", "epochs", "weight decay", "val loss", "run"],
        [[r.recipe, str(int(r.token_budget)), r.preset, str(int(r.n_params_total)), f"{r.learning_rate:g}",
          f"{r.epochs:g}", f"{r.weight_decay:g}", f"{r.val_loss:.4f}", r.run_id] for r in best.itertuples()],
    )
    edges = [f"{s['recipe']} {s['preset']} at D = {s['token_budget']:,}: {', '.join(s['grid_edges'])}"
             for s in state.get("searches", {}).values() if s.get("grid_edges")]
    if edges:
        lines += ["", "Optima on the edge of their search grid (a better point may lie past it; widen that axis in "
                  "the recipe):", ""] + [f"- {edge}" for edge in edges]
    if state.get("ensembles"):
        lines += ["", "## Ensembles (measured)", ""]
        lines += markdown_table(
            ["preset", "member hyperparameters (tuned at small K)", "K", "ensemble loss", "mean member loss"],
            [[preset, f"{e['chosen']} ({', '.join(f'{k}: {v:.4f}' for k, v in e['tuning'].items())})", str(e["k"]),
              f"{e['val_loss']:.4f}", f"{e['member_val_loss_mean']:.4f}"] for preset, e in state["ensembles"].items()],
        )
    if state.get("distillation"):
        lines += ["", "## Distillation (measured)", ""]
        lines += markdown_table(
            ["teacher", "teacher loss", "student weight decay", "student loss", "share of the ensemble's gain kept",
             "run"], distillation_rows(state["distillation"]))
    if state.get("failures"):
        lines += ["", "## Failures", ""] + [f"- {f['phase']}: {f['error']}" for f in state["failures"]]
    if len(failed):
        lines += ["", "Failed runs: " + ", ".join(failed["run_id"]) + " (see their records)."]
    lines += ["", "## Figures", ""]
    for figure in sorted((output_dir / FIGURES_DIRNAME).glob("*.png")):
        lines += [f"![{figure.stem}]({FIGURES_DIRNAME}/{figure.name})", ""]
    lines += [f"Every fit with its uncertainty: [{FIGURES_DIRNAME}/report.md]({FIGURES_DIRNAME}/report.md), "
              f"[{FIGURES_DIRNAME}/fits.json]({FIGURES_DIRNAME}/fits.json). Every run: `hf_infcompute.load_runs"
              f"(\"{output_dir}\")`."]
    path = output_dir / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
