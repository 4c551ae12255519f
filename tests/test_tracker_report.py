"""The study's analysis in its trackers: the findings, fits and figures the report computed, read back from
tensorboard's event file; a tracker that is not installed is skipped with one warning."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from hf_infcompute.scaling.analysis import DataScaling, ScalingReport
from hf_infcompute.scaling.power_law import fit_power_law
from hf_infcompute.study.findings import Finding
from hf_infcompute.study.tracker_report import log_analysis, trackers_of

pytest.importorskip("tensorboard", reason="the `tensorboard` extra reads the event file back")

FOUND = [
    Finding("ensembles beat the best single model", "yes", "4.10 vs 4.02: gap 0.08 [0.05, 0.11]"),
    Finding("the asymptote of ensembles lies lower", "inconclusive", "gap 0.03 [-0.02, 0.09]"),
]


def scaling_report() -> ScalingReport:
    budgets, losses = [1024, 2048, 4096, 8192], [5.6, 5.1, 4.8, 4.6]
    fit = fit_power_law(budgets, losses, scale=1e9, n_bootstrap=20)
    data = DataScaling(corpus="c", series="standard", losses=dict(zip(budgets, losses)), fit=fit)
    efficiency = pd.DataFrame(
        [
            {"corpus": "c", "series": "regularized", "token_budget": 8192, "loss": 4.4, "efficiency": 2.5},
            {"corpus": "c", "series": "ensemble", "token_budget": 8192, "loss": 3.9, "efficiency": float("inf")},
        ]
    )
    return ScalingReport(
        source="store", n_runs=8, n_bootstrap=20, sizes=[], ensembles=[], data=[data], efficiency=efficiency
    )


def write_figure(path: Path) -> Path:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 1.5), dpi=40)
    axes.plot([1, 2, 3], [3, 2, 1])
    path.parent.mkdir(parents=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def test_findings_fits_and_figures_reach_tensorboard_and_a_missing_tracker_warns(tmp_path, monkeypatch, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails as when it is not installed
    figure = write_figure(tmp_path / "figures" / "data.png")
    scaling = scaling_report()
    run = {"report_to": ["tensorboard", "wandb", "codecarbon"]}
    with caplog.at_level(logging.WARNING, logger="hf_infcompute.study.tracker_report"):
        assert log_analysis(run, "micro", tmp_path, FOUND, scaling, [figure]) == ["tensorboard"]
    [warning] = [r.getMessage() for r in caplog.records]
    assert "report_to names wandb, which is not installed (pip install wandb)" in warning

    events = EventAccumulator(str(tmp_path / "tb" / "micro" / "analysis"), size_guidance={"tensors": 0, "images": 0})
    events.Reload()
    [text] = events.Tensors("findings/text_summary")
    table = text.tensor_proto.string_val[0].decode()
    assert "| ensembles beat the best single model | yes | 4.10 vs 4.02: gap 0.08 [0.05, 0.11] |" in table
    assert "inconclusive" in table
    scalars = {tag: events.Scalars(tag)[0].value for tag in events.Tags()["scalars"]}
    assert scalars["data_efficiency/regularized/D8192"] == pytest.approx(2.5)
    assert "data_efficiency/ensemble/D8192" not in scalars  # unbounded: no number to plot
    [asymptote] = scaling.key_asymptotes()
    assert scalars[f"asymptote/{asymptote.analysis}"] == pytest.approx(asymptote.E, rel=1e-5)
    assert events.Tags()["images"] == ["figures/data"]


def test_report_to_is_resolved_as_the_trainer_does():
    assert trackers_of("none") == trackers_of(None) == []
    assert trackers_of("tensorboard") == ["tensorboard"] and trackers_of(["wandb", "trackio"]) == ["wandb", "trackio"]
    assert "tensorboard" in trackers_of("all")  # installed here
