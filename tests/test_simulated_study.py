"""The findings and the report on a study simulated from known laws (`simulated_study`): the study's design (four
sizes, both recipes at four budgets, five members per rule, fresh-seed tie-breaks) leaves no finding untested or
without an interval, and the data-efficiency multipliers' intervals cover the true ones.

One simulated study, its analysis redone on 40 resamples (the study's default is 200) to keep this to seconds. Over
simulated studies of seeds 0-5 at this setting, 9 of 12 multiplier intervals covered the truth (the
regularized one 4 of 6, the joint one 5 of 6): the percentile intervals of a 4-point fit run somewhat narrow.
"""

from __future__ import annotations

import math
import re
import warnings

import pytest
from simulated_study import BUDGETS, EDGE_SEARCH, TIED_PRESET, simulated_study

from hf_infcompute.records import load_runs
from hf_infcompute.scaling import report as scaling_report
from hf_infcompute.scaling.plots import human_count
from hf_infcompute.scaling.power_law import ScalingFitWarning
from hf_infcompute.study.confidence import INCONCLUSIVE, NO, YES
from hf_infcompute.study.findings import Evidence, data_laws, efficiency_interval, findings
from hf_infcompute.study.report import efficiency_whiskers, multiplier_intervals, write_study_report

RESAMPLES = 40
SEED = 1
PAPER_FINDINGS = (
    "standard recipe overfits in epochs",
    "standard recipe overfits in N",
    "regularized recipe below the standard one at every N and D",
    "regularized loss falls monotonically in N, at every D",
    "a K-member ensemble beats the best single model",
    "ensemble (K -> inf) asymptote below the regularized N -> inf asymptote",
    "joint (N, K -> inf) asymptote lowest",
    "distilled student (ensemble teacher) below its same-size baseline",
    "self-distillation (real data kept in the mix) beats its teacher",
)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("simulated")
    simulated = simulated_study(folder, SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScalingFitWarning)  # the standard recipe's law in N: it overfits in N
        evidence = Evidence.of(simulated.spec, load_runs(folder), simulated.state, resamples=RESAMPLES)
    return simulated, evidence


def test_every_paper_finding_has_a_verdict_and_finite_intervals(study):
    _, evidence = study
    found = findings(evidence)
    for claim in PAPER_FINDINGS:
        [finding] = [f for f in found if f.claim.startswith(claim)]
        assert finding.verdict in (YES, NO, INCONCLUSIVE), finding
        assert finding.intervals, finding
        assert all(math.isfinite(i.low) and math.isfinite(i.high) for i in finding.intervals), finding
        assert "no fit" not in finding.evidence and "ill-conditioned" not in finding.evidence
    # The simulated laws hold every finding, by margins the design resolves.
    assert {f.verdict for f in found} == {YES}
    at_every_budget = next(f for f in found if f.claim.startswith("regularized recipe below"))
    assert len(at_every_budget.intervals) == len(BUDGETS) * 4


def test_multipliers_have_intervals_that_cover_the_true_ones(study):
    simulated, evidence = study
    for series, truth in simulated.true_multipliers.items():
        interval, how = efficiency_interval(evidence, series)
        assert interval is not None, how
        assert math.isfinite(interval.low) and math.isfinite(interval.high), how
        assert interval.low <= truth <= interval.high, (series, interval, truth)


def test_the_efficiency_figure_gets_each_multipliers_interval(study):
    simulated, evidence = study
    whiskers = efficiency_whiskers(multiplier_intervals(evidence), simulated.spec.token_budget)
    for series in simulated.true_multipliers:
        if series in whiskers:
            interval, _ = efficiency_interval(evidence, series)
            assert whiskers[series] == {float(simulated.spec.token_budget): (interval.low, interval.high)}
    assert "regularized (N -> inf)" in whiskers


def test_each_recipe_and_its_asymptotes_get_a_data_law_with_intervals(study):
    _, evidence = study
    laws = {law.series: law for law in data_laws(evidence)}
    assert {"standard", "regularized", "regularized (N -> inf)"} <= set(laws)
    for law in laws.values():
        assert law.alpha is not None and law.E is not None, law.series
        assert all(math.isfinite(v) for v in (law.alpha.low, law.alpha.high, law.E.low, law.E.high)), law.series
        assert law.fit.x == tuple(float(b) for b in BUDGETS) or law.series == "standard (N -> inf)"


def test_the_report_shows_every_finding_law_search_and_recipe(study, tmp_path, monkeypatch):
    simulated, _ = study
    drawn = {}
    plot = scaling_report.plot_data_scaling

    def recording(series, path, **options):
        drawn.update(series)
        return plot(series, path, **options)

    monkeypatch.setattr(scaling_report, "plot_data_scaling", recording)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScalingFitWarning)
        text = write_study_report(simulated.spec, simulated.folder, simulated.state, resamples=RESAMPLES).read_text()
    findings_table = text.split("## Findings")[1].split("\n## ")[0]
    rows = [line for line in findings_table.splitlines() if line.startswith("| ") and "paper's finding" not in line]
    assert len(rows) == len(PAPER_FINDINGS)
    assert all("| yes |" in row for row in rows)
    assert "not tested" not in findings_table and "n/a" not in findings_table
    beside = text.split("## This run beside the paper")[1].split("\n## ")[0]
    for series in simulated.true_multipliers:
        [row] = [line for line in beside.splitlines() if f"data efficiency over standard, {series} |" in line]
        assert re.search(r"\| \d+\.\d\dx \[\d+\.\d\dx, \d+\.\d\dx\] \|", row), row
    laws = text.split("## Data laws, per recipe (fit)")[1].split("\n## ")[0]
    for series in ("standard", "regularized", "regularized (N -> inf)"):
        assert re.search(rf"\| {re.escape(series)} \| [^|]+ \| \d\.\d+ \[\d\.\d+, \d\.\d+\] \| \d\.\d+ \[", laws)
    recipe, preset, budget = EDGE_SEARCH
    assert f"- {recipe} {preset} at D = {budget:,}: num_train_epochs 64 (largest on the grid)" in text
    searches = text.split("## Searches (validation)")[1].split("\n## ")[0]
    tied = [
        line for line in searches.splitlines() if f"| standard | {human_count(BUDGETS[1])} | {TIED_PRESET} |" in line
    ]
    assert tied and all("fresh seeds, validation:" in line for line in tied)
    assert any("| seed means" in line for line in tied) or all("| search (its own optimum)" in line for line in tied)
    assert {"standard", "regularized", "regularized (N -> inf)", "regularized ensembles (N, K -> inf)"} <= set(drawn)
