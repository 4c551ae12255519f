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
from hf_infcompute.scaling.joint import JointFit
from hf_infcompute.scaling.plots import human_count
from hf_infcompute.scaling.power_law import PowerLawFit
from hf_infcompute.scaling.report import efficiency_text, markdown_table, write_report
from hf_infcompute.study import paper
from hf_infcompute.study.confidence import (
    INCONCLUSIVE,
    NO,
    NOT_TESTED,
    TEST,
    YES,
    Interval,
    paired_difference,
)
from hf_infcompute.study.curves import write_training_curves
from hf_infcompute.study.findings import (
    Evidence,
    Model,
    best_sizes,
    data_laws,
    efficiency_interval,
    efficiency_series,
    ensemble_model,
    ensemble_scaling,
    findings,
    regularized_fit,
    resampled_includes,
    retained_share,
)
from hf_infcompute.study.seed_noise import MIN_OWN_SEEDS, SeedRepeat
from hf_infcompute.study.spec import StudySpec
from hf_infcompute.study.state import EnsembleState, SearchState, StudyState
from hf_infcompute.study.tracker_report import log_analysis

FIGURES_DIRNAME = "figures"
PAPER_MULTIPLIERS = {  # the paper's multipliers at 200M tokens, by the series that measures each here
    "regularized (N -> inf)": f"{paper.EFFICIENCY_REGULARIZED}x",
    "regularized ensembles (N, K -> inf)": f"{paper.EFFICIENCY_JOINT}x",
}
DISTILLATION_LABELS = {
    "ensemble": "ensemble, sequence-level",
    "self": "best single model (self-distillation)",
    "token": "ensemble, token-level KL",
}


VERDICT_TEXT = {YES: "yes", NO: "**no**", INCONCLUSIVE: "*inconclusive*", NOT_TESTED: "not tested"}


def _rows(evidence: Evidence) -> str:
    sequences = evidence.runs.get(evidence.split.rows) if len(evidence.runs) else None
    counts = {len(v) for v in sequences if isinstance(v, list)} if sequences is not None else set()
    return " / ".join(f"{c:,}" for c in sorted(counts)) or "(no per-row losses recorded)"


def _efficiency(value: Interval | None) -> str:
    if value is None:
        return "n/a"
    if math.isnan(value.low):
        return efficiency_text(value.estimate)
    if value.lower_bound:
        return f">= {efficiency_text(value.estimate)} [95%: >= {efficiency_text(value.low)}]"
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


def _share_text(evidence: Evidence, name: str, student_run_id: str) -> str:
    """The share of the ensemble's gain over the best single model that a student keeps, on the report split."""
    entry = evidence.state.distillation[name]
    single, teacher = evidence.best_single(entry.preset), ensemble_model(evidence, entry.preset)
    if single is None or teacher is None:
        return "n/a"
    share = retained_share(evidence, Model("student", (student_run_id,)), teacher, evidence.single(single, ""))
    return "n/a" if share is None else f"{share:.0%}"


def _run_loss(evidence: Evidence, run_id: str | None) -> float | None:
    return evidence.loss(Model("", (run_id,))) if run_id else None


def distillation_rows(evidence: Evidence) -> list[list[str]]:
    """Every student the study trained: teacher and mode, weight decay, loss (chosen on validation, reported on the
    report split), the share of the gain it keeps."""
    rows = []
    for name, entry in evidence.state.distillation.items():
        for student in entry.students:
            chosen = " (best on validation)" if student.run_id == entry.run_id and len(entry.students) > 1 else ""
            share = _share_text(evidence, name, student.run_id) if name != "self" else "n/a"
            rows.append(
                [
                    DISTILLATION_LABELS.get(name, name),
                    f"{student.weight_decay:g}",
                    f"{student.val_loss:.4f}",
                    f"{_loss(_run_loss(evidence, student.run_id))}{chosen}",
                    share,
                    student.run_id,
                ]
            )
    return rows


def multiplier_intervals(evidence: Evidence) -> dict[str, tuple[Interval | None, str]]:
    """Every data-efficiency multiplier the report shows at the main budget (the paper's two first), each with its
    interval and how it was obtained (`efficiency_interval`): computed once for the table and the figure."""
    series = [*PAPER_MULTIPLIERS, *efficiency_series(evidence.scaling, evidence.spec.token_budget)]
    return {name: efficiency_interval(evidence, name) for name in dict.fromkeys(series)}


def efficiency_whiskers(
    multipliers: dict[str, tuple[Interval | None, str]], token_budget: int
) -> dict[str, dict[float, tuple[float, float]]]:
    """The efficiency figure's whiskers at `token_budget`: each multiplier's two-sided interval (bounds and
    multipliers without an interval left out)."""
    return {
        series: {float(token_budget): (interval.low, interval.high)}
        for series, (interval, _) in multipliers.items()
        if interval is not None and not interval.lower_bound and math.isfinite(interval.low)
    }


def comparison_rows(evidence: Evidence, multipliers: dict[str, tuple[Interval | None, str]]) -> list[list[str]]:
    """This run's headline figures beside the paper's, each with how it was obtained; `multipliers` from
    `multiplier_intervals`."""
    spec, scaling, state = evidence.spec, evidence.scaling, evidence.state
    split = evidence.split.name
    std = best_sizes(scaling, "standard", spec.token_budget)
    rows = []
    if len(std):
        top = std.loc[std["val_loss"].idxmin()]
        rows.append(
            [
                "standard recipe, best loss",
                _loss(top[evidence.split.loss]),
                f"measured on {split} ({top['preset']}, chosen on validation)",
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
                    "fit over K" + (" (exponent fixed at 1)" if getattr(fit, "alpha_fixed", False) else ""),
                    f"{paper.ENSEMBLE_ASYMPTOTE} (300M)",
                )
            )
        bound = ensemble.joint.bound if ensemble.joint is not None else None
        if bound is None:
            rows.append(
                _fit_row("joint N, K -> inf asymptote", ensemble.joint, "two-step fit", f"{paper.JOINT_ASYMPTOTE}")
            )
        else:
            largest, at_largest = bound
            rows.append(
                [
                    "joint N, K -> inf asymptote",
                    f"<= {_fit(at_largest.E, at_largest.E_stderr)}",
                    f"bounded by the K -> inf limit at the largest N = {largest:,.0f} (the joint limit lies below "
                    "every size's limit wherever those fall in N); the two-step fit does not locate it: "
                    + "; ".join(ensemble.joint.issues),
                    f"{paper.JOINT_ASYMPTOTE}",
                ]
            )
    for series, (value, how) in multipliers.items():
        rows.append(
            [
                f"data efficiency over standard, {series}",
                _efficiency(value),
                how,
                PAPER_MULTIPLIERS.get(
                    series,
                    f"{paper.EFFICIENCY_MEASURED_ENSEMBLE}x (5 x 1.4B ensemble, measured)"
                    if series.startswith("ensemble")
                    else "not reported",
                ),
            ]
        )
    students = (
        ("ensemble", "distilled student", "(ensemble teacher)", f"{paper.DISTILLED_STUDENT}"),
        ("token", "token-level student", "(KL to the ensemble)", "not in the paper"),
    )
    for name, label, how, paper_loss in students:
        if name in state.distillation:
            student = state.distillation[name]
            loss = _loss(_run_loss(evidence, student.run_id))
            rows.append([f"{label} {how}", loss, f"measured on {split}", paper_loss])
            rows.append(
                [
                    f"share of the ensemble's gain the {label} keeps",
                    _share_text(evidence, name, student.run_id),
                    f"measured on {split}: (single - student) / (single - ensemble)",
                    f"{paper.RETAINED_SHARE:.0%}" if name == "ensemble" else "not in the paper",
                ]
            )
    if "self" in state.distillation:
        student = state.distillation["self"]
        teacher = evidence.search("regularized", student.preset)
        rows.append(
            [
                "self-distillation: teacher -> student",
                f"{_loss(_run_loss(evidence, teacher.run_id if teacher else None))} -> "
                f"{_loss(_run_loss(evidence, student.run_id))}",
                f"measured on {split}",
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


def _interval(value: Interval | None, digits: int = 4) -> str:
    if value is None:
        return "no interval (the refits fail on resamples)"
    return f"[{value.low:.{digits}f}, {value.high:.{digits}f}]"


def data_law_rows(evidence: Evidence) -> list[list[str]]:
    """Each series' law in D: its budgets, exponent and asymptote with their 95% intervals over the resampled
    analyses, and whether the fit pins the law down."""
    rows = []
    for law in data_laws(evidence):
        fit = law.fit
        rows.append(
            [
                law.series,
                ", ".join(human_count(x) for x in fit.x),
                f"{fit.alpha:.3f} {_interval(law.alpha, 3)}",
                f"{fit.E:.4f} {_interval(law.E)}",
                f"`{fit.formula('D')}`",
                "yes" if fit.well_conditioned else f"**no**: {'; '.join(fit.issues)}",
            ]
        )
    return rows


def _seed_means(tie_break: dict[str, list[float]]) -> str:
    return "; ".join(
        f"{label}: mean {sum(losses) / len(losses):.4f} over {len(losses)} seeds"
        for label, losses in tie_break.items()
        if losses
    )


def search_rows(state: StudyState, presets: list[str]) -> list[list[str]]:
    """Every search, by recipe, budget and size (in the order of `presets`): the point it reports, whether it is
    interior to its grid, and how it was chosen (the search's own optimum, or the lower mean over fresh seeds of the
    close points)."""

    def order(s: SearchState) -> tuple:
        return s.recipe, s.token_budget, presets.index(s.preset) if s.preset in presets else len(presets), s.preset

    rows = []
    for s in sorted(state.searches.values(), key=order):
        how = "seed means" if s.chosen_by == "seed means" else "search (its own optimum)"
        if s.tie_break:
            how += f"; fresh seeds, validation: {_seed_means(s.tie_break)}"
        rows.append(
            [
                s.recipe,
                human_count(s.token_budget),
                s.preset,
                ", ".join(f"{axis} {value:g}" for axis, value in (s.point or {}).items()) or "none found",
                _loss(s.val_loss),
                "yes" if s.locally_optimal else "**no**",
                "; ".join(s.grid_edges) if s.grid_edges else "interior",
                how,
            ]
        )
    return rows


def edge_lines(state: StudyState) -> list[str]:
    """The regularized optima still on an edge of their grid, by name (or that none is), then any other recipe's."""
    on_edge = [s for s in state.searches.values() if s.grid_edges]
    regularized = [s for s in on_edge if s.recipe == "regularized"]
    lines = [
        "Regularized optima on the edge of their search grid (the search extends an axis past its edge until the "
        "optimum is interior or at the axis's hard bound; with `extend_edges: false` widen that axis in the study's "
        "`regularized` grid):"
        if regularized
        else "Every regularized optimum is interior to its search grid."
    ]
    lines += [f"- regularized {s.preset} at D = {s.token_budget:,}: {', '.join(s.grid_edges)}" for s in regularized]
    others = [s for s in on_edge if s.recipe != "regularized"]
    if others:
        lines += ["", "Other optima on the edge of their grid:", ""]
        lines += [f"- {s.recipe} {s.preset} at D = {s.token_budget:,}: {', '.join(s.grid_edges)}" for s in others]
    return lines


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
    prefix = "test" if evidence.split is TEST else "val"
    rows = []
    for preset, e in evidence.state.ensembles.items():
        losses, gap, members = {}, "n/a", None
        if records is not None and e.run_id in records.index:
            record = records.loc[[e.run_id]].iloc[-1]
            losses = {mode: record.get(f"{prefix}_loss_by_combine.{mode}") for mode in ("logits", "probs")}
            members = record.get(f"member_{prefix}_loss_mean")
            logits_rows = record.get(f"{prefix}_sequence_losses_by_combine.logits")
            probs_rows = record.get(f"{prefix}_sequence_losses_by_combine.probs")
            documents = record.get(evidence.split.documents)
            if isinstance(logits_rows, list) and isinstance(probs_rows, list):
                documents = documents if isinstance(documents, list) else None
                gap = str(paired_difference(probs_rows, logits_rows, documents))
        rows.append(
            [
                preset,
                f"{e.chosen}{f', by {e.chosen_by}' if e.chosen_by else ''} "
                f"({'; '.join(_member_limit(e, rule) for rule in e.tuning)})",
                str(e.k),
                _loss(losses.get("logits")),
                _loss(losses.get("probs")),
                gap,
                _loss(members),
            ]
        )
    return rows


def seed_noise_lines(evidence: Evidence) -> list[str]:
    """The points trained at fresh seeds, how each enters the verdicts, and the seed sd pooled from the searched
    points."""
    noise = evidence.noise

    def use(repeat: SeedRepeat) -> str:
        own = f"its own ({noise.own[repeat.key].dof} degrees of freedom)" if repeat.key in noise.own else ""
        pooled = "the pool" if repeat.key in noise.pooled else ""
        return " and ".join(filter(None, (own, pooled))) or "neither (not a searched point)"

    rows = [
        [
            r.preset,
            f"{r.recipe}, D = {r.token_budget:,}: lr {r.learning_rate:g}, {r.num_train_epochs:g} epochs, "
            f"weight decay {r.weight_decay:g}",
            ", ".join(f"seed {seed}: {loss:.4f}" for seed, loss in sorted(r.losses.items())),
            f"{r.sd:.4f}",
            use(r),
        ]
        for r in noise.repeats
    ]
    header = ["preset", "point", f"{evidence.split.name} loss per fresh seed", "sd", "judges its models with"]
    lines = markdown_table(header, rows)
    if evidence.seed is not None:
        seed = evidence.seed
        lines += [
            "",
            f"Seed noise differs between points, so a model whose point was trained at {MIN_OWN_SEEDS} fresh seeds "
            "or more (an optimum's or a member rule's members) is judged with its point's own sd; every other model "
            f"with the sd pooled over the points the searches chose between (their optima and the neighbours a "
            f"tie-break re-trained): sd {seed} (95% interval from the chi-square distribution of a pooled variance). "
            "Only fresh seeds count: a search's selected run was picked for landing low on validation, so it is "
            "left out. Every gap between trained models above includes this noise: a single model adds sd^2, a mean "
            "of m seed copies sd^2 / m, an ensemble of k members sd^2 / k, and the verdicts use a t quantile on its "
            "degrees of freedom (Welch-Satterthwaite where the two sides' sds are different estimates).",
        ]
    return lines


def best_run_rows(evidence: Evidence) -> list[list[str]]:
    """The best run per recipe, token budget and size, as the scaling analysis selected them (on validation)."""
    return [
        [
            size.recipe,
            str(size.token_budget),
            r["preset"],
            str(int(r["n_params_total"])),
            f"{r['learning_rate']:g}",
            f"{r['num_train_epochs']:g}",
            f"{r['weight_decay']:g}",
            f"{r['val_loss']:.4f}",
            _loss(r.get(evidence.split.loss)),
            r["run_id"],
        ]
        for size in evidence.scaling.sizes
        for r in size.table.to_dict("records")
    ]


def write_study_report(
    spec: StudySpec, output_dir: str | Path, state: StudyState, *, resamples: int | None = None
) -> Path:
    """Write `output_dir/report.md` (and the scaling figures and fits under `figures/`); return its path.
    `resamples`: replicates of the whole analysis behind the intervals of fitted quantities (default: the study's
    `report_resamples`)."""
    output_dir = Path(output_dir)
    runs = load_runs(output_dir)
    resamples = spec.report_resamples if resamples is None else resamples
    evidence = Evidence.of(spec, runs, state, source=str(output_dir), resamples=resamples)
    scaling = evidence.scaling
    multipliers = multiplier_intervals(evidence)
    write_report(
        scaling, output_dir / FIGURES_DIRNAME, efficiency_intervals=efficiency_whiskers(multipliers, spec.token_budget)
    )
    write_training_curves(state, output_dir, output_dir / FIGURES_DIRNAME)  # listed with the figures below
    finished = runs[runs["status"] == "finished"] if len(runs) else runs
    failed = runs[runs["status"] != "finished"] if len(runs) else runs
    split = evidence.split.name
    lines = [f"# Study: {spec.name}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [
        f"Corpus {_corpus(state)}, main token budget D = {spec.token_budget:,}, "
        f"presets {', '.join(spec.presets)}; {len(finished)} finished records, {len(failed)} failed; "
        f"wall time {state.wall_time_s / 60:.1f} min{_sessions(state)}.",
        "",
        f"Every choice (a search's optimum, a size's best run, the member rule, a student's weight decay) is made on "
        f"the validation split; every number reported is *measured* on the {split} split (a trained run) or *fit* (a "
        "scaling-law asymptote ± its bootstrap standard error, the fits given each point's own measured noise; the "
        "part of the held-out sample every model shares moves all losses alike and is left to the resampled "
        "intervals). "
        "Absolute losses depend on corpus and tokenizer; compare the findings and the ratios with the paper, not the "
        "raw losses.",
        "",
    ]
    if evidence.split is not TEST:
        lines += [
            "These records hold no test split (written before it existed): choices and reported losses share the "
            "validation rows, which flatters every optimum. Train the study again for a separate test split.",
            "",
        ]
    lines += [
        "## Findings",
        "",
        f"Each gap is the mean over the {_rows(evidence)} {split} rows of the worse model's loss minus the better "
        "one's (positive: the paper's direction). Its 95% interval includes the sampling of held-out documents (a "
        "bootstrap over documents, each with all its rows) and the seed-to-seed noise of both models (measured "
        "below), with a t quantile on that noise's degrees of freedom; a single model with fresh-seed copies is "
        "their mean. Asymptote gaps and data-efficiency multipliers carry the interval of the whole analysis "
        "redone on document resamples and seed-noise draws, the best runs chosen again on validation each time. A "
        "claim at every N is *yes* when each part's interval lies above zero, **no** only when a part lies below "
        "zero at the family level (Holm), else *inconclusive*. A claim at some N is *yes* when some part lies above "
        "zero at the family level, its p-value adjusted over the parts' joint resamples (single-step min-p: the "
        "parts share the regularized asymptote and move together), **no** when every part lies below zero. Where "
        "the law in N does not locate the joint limit, the joint limit is compared through its bound, the largest "
        "size's K -> inf limit (it lies below that wherever the limits fall in N): a bound can give *yes*, never "
        "**no**.",
        "",
    ]
    found = findings(evidence)
    rows = [[f.claim, VERDICT_TEXT[f.verdict], f.evidence, f.includes] for f in found]
    lines += markdown_table(
        ["paper's finding", "reproduced here", f"evidence ({split} loss, gap [95%])", "the interval includes"], rows
    )
    if any(f[1] != VERDICT_TEXT[YES] for f in rows):
        lines += [
            "",
            "A finding marked **no** or *inconclusive* did not reproduce at this scale (or not beyond the noise of "
            "documents and seeds); it is reported as measured.",
        ]
    if evidence.seed_repeats:
        lines += ["", "## Seed-to-seed noise (measured)", "", *seed_noise_lines(evidence)]
    lines += ["", f"## This run beside the paper ({paper.PAPER_BUDGET})", ""]
    lines += markdown_table(["quantity", "this run", "how obtained", "paper"], comparison_rows(evidence, multipliers))
    lines += ["", "## Best runs per recipe, budget and size (measured)", ""]
    lines += markdown_table(
        [
            "recipe",
            "D",
            "preset",
            "parameters",
            "learning rate",
            "epochs",
            "weight decay",
            "val loss (chosen on)",
            f"{split} loss",
            "run",
        ],
        best_run_rows(evidence),
    )
    laws = data_law_rows(evidence)
    if laws:
        lines += [
            "",
            "## Data laws, per recipe (fit)",
            "",
            f"Each series' {split} loss per token budget D fitted by `L(D) = A / D^alpha + E` (D in billions): each "
            "recipe's best run per D, and its asymptotes in N (and N, K) per D where those have enough budgets. "
            f"Intervals: 95%, {resampled_includes(evidence)}. The paper: exponents {paper.DATA_LAW_EXPONENTS}, "
            f"asymptotes {paper.DATA_LAW_ASYMPTOTES} for every recipe (so a recipe's gain is a near-constant "
            "multiplier of the data).",
            "",
        ]
        lines += markdown_table(
            ["series", "budgets D", "exponent alpha [95%]", "asymptote E [95%]", "law", "well conditioned"], laws
        )
    if state.searches:
        lines += ["", "## Searches (validation)", ""]
        lines += markdown_table(
            ["recipe", "D", "preset", "point reported", "val loss", "locally optimal", "grid edge", "chosen by"],
            search_rows(state, list(spec.presets)),
        )
        lines += ["", *edge_lines(state)]
    starts = search_start_rows(state)
    if starts:
        lines += ["", "## Where the regularized searches started (validation loss)", ""]
        lines += markdown_table(["preset", "D", "loss reached from each start", "reported"], starts)
    if state.ensembles:
        lines += ["", "## Ensembles (measured)", ""]
        lines += markdown_table(
            [
                "preset",
                "member rule, chosen by (each rule's K -> inf asymptote on validation [95%, members' seed noise])",
                "K",
                f"mean logits (paper), {split}",
                f"mean probabilities, {split}",
                "probabilities - logits [95%, documents]",
                f"mean member loss, {split}",
            ],
            ensemble_rows(evidence),
        )
    if state.distillation:
        lines += ["", "## Distillation (measured)", ""]
        lines += markdown_table(
            [
                "teacher",
                "student weight decay",
                "validation loss",
                f"{split} loss",
                "share of the ensemble's gain kept",
                "run",
            ],
            distillation_rows(evidence),
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


def _member_limit(ensemble: EnsembleState, rule: str) -> str:
    """A member rule's K -> inf asymptote on validation, with its interval where its K-law has one."""
    interval = ensemble.tuning_intervals.get(rule)
    bounds = f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
    return f"{rule}: {ensemble.tuning[rule]:.4f}{bounds}"
