"""The study's `report.md`: its findings checked one by one, its figures beside the paper's, every plot.

Numbers are labelled by how they were obtained: *measured* (a trained run on the fixed validation split) or *fit*
(a scaling-law asymptote, with its bootstrap standard error). Absolute losses depend on the corpus and tokenizer, so
only the paper's qualitative findings and its ratios (data efficiency, retained share) compare directly. What is
checked and computed lives in `hf_infcompute.study.findings`; this module writes it out.
"""

from __future__ import annotations

import math
from pathlib import Path

from hf_infcompute.records import load_runs, write_text_atomic
from hf_infcompute.scaling.analysis import ScalingReport, build_report
from hf_infcompute.scaling.joint import JointFit
from hf_infcompute.scaling.power_law import PowerLawFit
from hf_infcompute.scaling.report import efficiency_text, markdown_table, write_report
from hf_infcompute.study import paper
from hf_infcompute.study.confidence import INCONCLUSIVE, NO, NOT_TESTED, YES, Interval, paired_difference
from hf_infcompute.study.curves import write_training_curves
from hf_infcompute.study.findings import (
    Evidence,
    best_sizes,
    efficiency_interval,
    ensemble_scaling,
    findings,
    regularized_fit,
    retained_share,
)
from hf_infcompute.study.seed_noise import difference_noise
from hf_infcompute.study.spec import StudySpec
from hf_infcompute.study.state import DistillationState, StudyState
from hf_infcompute.study.tracker_report import log_analysis

FIGURES_DIRNAME = "figures"
DISTILLATION_LABELS = {
    "ensemble": "ensemble, sequence-level",
    "self": "best single model (self-distillation)",
    "token": "ensemble, token-level KL",
}


VERDICT_TEXT = {YES: "yes", NO: "**no**", INCONCLUSIVE: "*inconclusive*", NOT_TESTED: "not tested"}


def _rows(evidence: Evidence) -> str:
    sequences = evidence.runs.get("val_sequence_losses") if len(evidence.runs) else None
    counts = {len(v) for v in sequences if isinstance(v, list)} if sequences is not None else set()
    return " / ".join(f"{c:,}" for c in sorted(counts)) or "(no per-row losses recorded)"


def _efficiency(value: Interval | None) -> str:
    if value is None:
        return "n/a"
    if math.isnan(value.low):
        return efficiency_text(value.estimate)
    return f"{efficiency_text(value.estimate)} [{efficiency_text(value.low)}, {efficiency_text(value.high)}]"


def _loss(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _sessions(state: StudyState) -> str:
    return f" over {state.sessions} sessions (the study was resumed)" if state.sessions > 1 else ""


def _corpus(state: StudyState) -> str:
    return f"`{state.corpus}`" + (f" (config `{state.corpus_config}`)" if state.corpus_config else "")


def _fit(value: float | None, stderr: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f} ± {stderr:.4f}" if stderr is not None and math.isfinite(stderr) else f"{value:.4f}"


def _fit_row(quantity: str, fit: PowerLawFit | JointFit | None, how: str, paper_value: str) -> list[str]:
    """A table row for a fitted asymptote; an ill-conditioned fit shows no number, only why."""
    if fit is None:
        return [quantity, "n/a", f"{how}: no fit", paper_value]
    if not fit.well_conditioned:
        return [quantity, "n/a", f"{how}, ill-conditioned: {'; '.join(fit.issues)}", paper_value]
    return [quantity, _fit(fit.E, fit.E_stderr), how, paper_value]


def _share_text(student: DistillationState, val_loss: float | None = None) -> str:
    share = retained_share(student, val_loss)
    return "n/a" if share is None else f"{share:.0%}"


def distillation_rows(distilled: dict[str, DistillationState]) -> list[list[str]]:
    """Every student the study trained: teacher and mode, weight decay, loss, the share of the gain it keeps."""
    rows = []
    for name, entry in distilled.items():
        for student in entry.students:
            chosen = " (best)" if student.run_id == entry.run_id and len(entry.students) > 1 else ""
            share = _share_text(entry, student.val_loss) if name != "self" else "n/a"
            rows.append(
                [
                    DISTILLATION_LABELS.get(name, name),
                    _loss(entry.teacher_val_loss),
                    f"{student.weight_decay:g}",
                    f"{student.val_loss:.4f}{chosen}",
                    share,
                    student.run_id,
                ]
            )
    return rows


def comparison_rows(evidence: Evidence) -> list[list[str]]:
    """This run's headline figures beside the paper's, each with how it was obtained."""
    spec, scaling, state = evidence.spec, evidence.scaling, evidence.state
    std = best_sizes(scaling, "standard", spec.token_budget)
    rows = []
    if len(std):
        top = std.loc[std["val_loss"].idxmin()]
        rows.append(
            [
                "standard recipe, best loss",
                _loss(top["val_loss"]),
                f"measured ({top['preset']})",
                f"{paper.STANDARD_BEST} (600M)",
            ]
        )
    rows.append(
        _fit_row(
            "regularized, N -> inf asymptote",
            regularized_fit(spec, scaling),
            "fit over N",
            f"{paper.REGULARIZED_ASYMPTOTE}",
        )
    )
    ensemble = ensemble_scaling(spec, scaling)
    if ensemble is not None:
        for n, fit in sorted(ensemble.k_fits.items()):
            rows.append(
                _fit_row(
                    f"ensemble of N = {n:,.0f}, K -> inf asymptote",
                    fit,
                    "fit over K",
                    f"{paper.ENSEMBLE_ASYMPTOTE} (300M)",
                )
            )
        rows.append(_fit_row("joint N, K -> inf asymptote", ensemble.joint, "two-step fit", f"{paper.JOINT_ASYMPTOTE}"))
    for label, series, reference in (
        ("regularized", "regularized (N -> inf)", paper.EFFICIENCY_REGULARIZED),
        ("joint", "regularized ensembles (N, K -> inf)", paper.EFFICIENCY_JOINT),
    ):
        value, how = efficiency_interval(evidence, series)
        rows.append([f"data efficiency, {label} over standard", _efficiency(value), how, f"{reference}x"])
    distilled = state.distillation
    students = (
        (
            "ensemble",
            "distilled student",
            "(ensemble teacher)",
            f"{paper.DISTILLED_STUDENT}",
            f"{paper.RETAINED_SHARE:.0%}",
        ),
        ("token", "token-level student", "(KL to the ensemble)", "not in the paper", "not in the paper"),
    )
    for name, label, how, paper_loss, paper_share in students:
        if name in distilled:
            student = distilled[name]
            rows.append([f"{label} {how}", _loss(student.student_val_loss), "measured", paper_loss])
            rows.append(
                [
                    f"share of the ensemble's gain the {label} keeps",
                    _share_text(student),
                    "measured: (single - student) / (single - ensemble)",
                    paper_share,
                ]
            )
    if "self" in distilled:
        student = distilled["self"]
        rows.append(
            [
                "self-distillation: teacher -> student",
                f"{student.teacher_val_loss:.4f} -> {student.student_val_loss:.4f}",
                "measured",
                f"{paper.SELF_DISTILLATION[0]} -> {paper.SELF_DISTILLATION[1]}",
            ]
        )
    for label, scores in state.benchmarks.items():
        rows.append(
            [
                f"benchmark average, {label}",
                f"{100 * scores.average:.2f}",
                "measured (lm-eval)",
                "; ".join(f"{k} {v}" for k, v in paper.BENCHMARK_AVERAGES.items()),
            ]
        )
    return rows


def search_start_rows(state: StudyState) -> list[list[str]]:
    """Each search run from more than one start: the loss each start reached, and which was reported."""
    return [
        [
            s.preset,
            f"{s.token_budget:,}",
            ", ".join(f"{label}: {_loss(loss)}" for label, loss in s.start_losses.items()),
            s.start,
        ]
        for s in state.searches.values()
        if len(s.start_losses) > 1
    ]


def ensemble_rows(evidence: Evidence) -> list[list[str]]:
    """Every ensemble, combined both ways (the study builds the logit average; both are scored on the same rows)."""
    records = evidence.runs.set_index("run_id") if len(evidence.runs) else None
    rows = []
    for preset, e in evidence.state.ensembles.items():
        losses, gap = {"logits": e.val_loss}, "n/a"
        if records is not None and e.run_id in records.index:
            record = records.loc[[e.run_id]].iloc[-1]
            losses = {mode: record.get(f"val_loss_by_combine.{mode}") for mode in ("logits", "probs")}
            logits_rows = record.get("val_sequence_losses_by_combine.logits")
            probs_rows = record.get("val_sequence_losses_by_combine.probs")
            if isinstance(logits_rows, list) and isinstance(probs_rows, list):
                gap = str(paired_difference(probs_rows, logits_rows))
        rows.append(
            [
                preset,
                f"{e.chosen} ({', '.join(f'{k}: {v:.4f}' for k, v in e.tuning.items())})",
                str(e.k),
                _loss(losses.get("logits")),
                _loss(losses.get("probs")),
                gap,
                f"{e.member_val_loss_mean:.4f}",
            ]
        )
    return rows


def seed_noise_lines(evidence: Evidence) -> list[str]:
    """The points trained at several seeds and what they say of the findings' gaps between single models."""
    optima = evidence.optimum_repeats()
    rows = [
        [
            r.preset,
            f"lr {r.learning_rate:g}, {r.num_train_epochs:g} epochs, weight decay {r.weight_decay:g}"
            + (" (regularized optimum)" if r in optima else ""),
            ", ".join(f"seed {seed}: {loss:.4f}" for seed, loss in sorted(r.losses.items())),
            f"{r.sd:.4f}",
        ]
        for r in evidence.seed_repeats
    ]
    lines = markdown_table(["preset", "point", "validation loss per seed", "sd"], rows)
    pooled = evidence.seed_sd()
    if pooled is not None:
        sd, dof, over_optima = pooled
        lines += [
            "",
            f"Pooled over {'the regularized optima' if over_optima else 'these points'}, a single model's loss "
            f"varies over seeds by sd {sd:.4f} ({dof} degrees of freedom: a coarse estimate). Two single models "
            f"trained at different seeds then differ by sd {math.sqrt(2) * sd:.4f}, so a gap between two single "
            f"models below about {difference_noise(sd):.4f} (two of those sds) may be seed noise, whatever its "
            "interval over rows: the findings say *within seed noise* there. A search's pick (seed 0) was chosen on "
            "the rows it is scored on, which favours it over its other seeds.",
        ]
    return lines


def best_run_rows(scaling: ScalingReport) -> list[list[str]]:
    """The best run per recipe, token budget and size, as the scaling analysis selected them."""
    return [
        [
            size.recipe,
            str(size.token_budget),
            r.preset,
            str(int(r.n_params_total)),
            f"{r.learning_rate:g}",
            f"{r.num_train_epochs:g}",
            f"{r.weight_decay:g}",
            f"{r.val_loss:.4f}",
            r.run_id,
        ]
        for size in scaling.sizes
        for r in size.table.itertuples()
    ]


def write_study_report(spec: StudySpec, output_dir: str | Path, state: StudyState) -> Path:
    """Write `output_dir/report.md` (and the scaling figures and fits under `figures/`); return its path."""
    output_dir = Path(output_dir)
    runs = load_runs(output_dir)
    scaling = build_report(runs, source=str(output_dir))
    write_report(scaling, output_dir / FIGURES_DIRNAME)
    write_training_curves(state, output_dir, output_dir / FIGURES_DIRNAME)  # listed with the figures below
    evidence = Evidence.of(spec, runs, scaling, state)
    finished = runs[runs["status"] == "finished"] if len(runs) else runs
    failed = runs[runs["status"] != "finished"] if len(runs) else runs
    lines = [f"# Study: {spec.name}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [
        f"Corpus {_corpus(state)}, main token budget D = {spec.token_budget:,}, "
        f"presets {', '.join(spec.presets)}; {len(finished)} finished records, {len(failed)} failed; "
        f"wall time {state.wall_time_s / 60:.1f} min{_sessions(state)}.",
        "",
        "Numbers are *measured* (a trained run, scored on the validation split) or *fit* (a scaling-law "
        "asymptote ± its bootstrap standard error). Absolute losses depend on corpus and tokenizer; compare the "
        "findings and the ratios with the paper, not the raw losses.",
        "",
        "## Findings",
        "",
        f"Each gap is the mean over the {_rows(evidence)} validation rows of the worse model's loss minus the better "
        "one's (positive: the paper's direction) with its paired bootstrap 95% interval; asymptote gaps and "
        "data-efficiency multipliers carry the interval of the whole analysis redone on resampled rows. A finding "
        "is *yes* when its interval lies above zero at every part, **no** when one part lies below, else "
        "*inconclusive*. The intervals cover the choice of validation rows only: not seed-to-seed training noise "
        "(measured below, under Seed-to-seed noise), nor the optimism of picking each optimum on the rows it is "
        "scored on.",
        "",
    ]
    found = findings(evidence)
    rows = [[f.claim, VERDICT_TEXT[f.verdict], f.evidence] for f in found]
    lines += markdown_table(["paper's finding", "reproduced here", "evidence (validation loss, gap [95%])"], rows)
    if any(f[1] != VERDICT_TEXT[YES] for f in rows):
        lines += [
            "",
            "A finding marked **no** or *inconclusive* did not reproduce at this scale (or not beyond the validation "
            "set's resolution); it is reported as measured.",
        ]
    if evidence.seed_repeats:
        lines += ["", "## Seed-to-seed noise (measured)", "", *seed_noise_lines(evidence)]
    lines += ["", f"## This run beside the paper ({paper.PAPER_BUDGET})", ""]
    lines += markdown_table(["quantity", "this run", "how obtained", "paper"], comparison_rows(evidence))
    lines += ["", "## Best runs per recipe, budget and size (measured)", ""]
    lines += markdown_table(
        ["recipe", "D", "preset", "parameters", "learning rate", "epochs", "weight decay", "val loss", "run"],
        best_run_rows(scaling),
    )
    edges = [
        f"{s.recipe} {s.preset} at D = {s.token_budget:,}: {', '.join(s.grid_edges)}"
        for s in state.searches.values()
        if s.grid_edges
    ]
    if edges:
        lines += [
            "",
            "Optima on the edge of their search grid (a better point may lie past it; widen that axis in the recipe):",
            "",
        ] + [f"- {edge}" for edge in edges]
    starts = search_start_rows(state)
    if starts:
        lines += ["", "## Where the regularized searches started", ""]
        lines += markdown_table(["preset", "D", "loss reached from each start", "reported"], starts)
    if state.ensembles:
        lines += ["", "## Ensembles (measured)", ""]
        lines += markdown_table(
            [
                "preset",
                "member hyperparameters (tuned at small K)",
                "K",
                "mean logits (paper)",
                "mean probabilities",
                "probabilities - logits [95%]",
                "mean member loss",
            ],
            ensemble_rows(evidence),
        )
    if state.distillation:
        lines += ["", "## Distillation (measured)", ""]
        lines += markdown_table(
            [
                "teacher",
                "teacher loss",
                "student weight decay",
                "student loss",
                "share of the ensemble's gain kept",
                "run",
            ],
            distillation_rows(state.distillation),
        )
    if state.failures:
        lines += ["", "## Failures", ""] + [f"- {f.phase}: {f.error}" for f in state.failures]
    if len(failed):
        lines += ["", "Failed runs: " + ", ".join(failed["run_id"]) + " (see their records)."]
    lines += ["", "## Figures", ""]
    for figure in sorted((output_dir / FIGURES_DIRNAME).glob("*.png")):
        lines += [f"![{figure.stem}]({FIGURES_DIRNAME}/{figure.name})", ""]
    lines += [
        f"Every fit with its uncertainty: [{FIGURES_DIRNAME}/report.md]({FIGURES_DIRNAME}/report.md), "
        f"[{FIGURES_DIRNAME}/fits.json]({FIGURES_DIRNAME}/fits.json). Every run: `hf_infcompute.load_runs"
        f'("{output_dir}")`.'
    ]
    path = output_dir / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    # with `report_to`, the trackers get the findings, fits and figures too
    log_analysis(spec.run, spec.name, output_dir, found, scaling, sorted((output_dir / FIGURES_DIRNAME).glob("*.png")))
    return path
