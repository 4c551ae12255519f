"""`hf-infcompute fit` on a synthetic results store whose losses follow known laws."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from hf_infcompute.cli import fit as fit_command
from hf_infcompute.errors import InputError
from hf_infcompute.records import append_record, load_runs
from hf_infcompute.scaling.analysis import best_per_size, build_report, finished_runs
from hf_infcompute.scaling.plots import human_count
from hf_infcompute.scaling.report import write_report

PRESETS = {"p150m": 150e6, "p300m": 300e6, "p600m": 600e6}
BUDGETS = (200_000_000, 400_000_000, 800_000_000)
LEARNING_RATES = {1e-3: 0.02, 3e-3: 0.0, 1e-2: 0.05}  # the loss each LR adds to the best
ENSEMBLE_GAIN = 0.08  # E_K(N) = regularized(N) - gain; L(N, K) = E_K(N) + gain / K


def data_law(d: float) -> float:
    return 1.9 + 1.2 / (d / 1e9) ** 0.3


def best_loss(recipe: str, n: float, d: float) -> float:
    if recipe == "regularized":
        return data_law(d) + 0.05 / (n / 1e9)
    return data_law(d) + 0.25 + 0.04 / (n / 1e9) ** 0.8


def write_store(output: Path) -> None:
    for recipe in ("standard", "regularized"):
        for d in BUDGETS:
            for preset, n in PRESETS.items():
                for lr, extra in LEARNING_RATES.items():
                    append_record(
                        output,
                        {
                            "run_id": f"{recipe}-{preset}-D{d}-lr{lr:g}",
                            "kind": "pretrain",
                            "status": "finished",
                            "recipe": recipe,
                            "corpus": "synthetic",
                            "token_budget": d,
                            "seq_len": 64,
                            "preset": preset,
                            "n_params": int(0.8 * n),
                            "n_params_total": int(n),
                            "learning_rate": lr,
                            "weight_decay": 0.1 if recipe == "standard" else 0.8,
                            "num_train_epochs": 4,
                            "seed": 0,
                            "val_loss": best_loss(recipe, n, d) + extra,
                            "train_loss": 1.0,
                        },
                    )
    # Neither a failed run nor a non-finite loss may count as a best run.
    append_record(
        output,
        {
            "run_id": "failed",
            "kind": "pretrain",
            "status": "failed",
            "recipe": "regularized",
            "corpus": "synthetic",
            "token_budget": BUDGETS[0],
            "preset": "p150m",
            "n_params_total": int(PRESETS["p150m"]),
            "val_loss": 0.5,
        },
    )
    append_record(
        output,
        {
            "run_id": "diverged",
            "kind": "pretrain",
            "status": "finished",
            "recipe": "regularized",
            "corpus": "synthetic",
            "token_budget": BUDGETS[0],
            "preset": "p300m",
            "n_params_total": int(PRESETS["p300m"]),
            "val_loss": float("nan"),
        },
    )
    d = BUDGETS[0]
    for preset, n in PRESETS.items():
        for k in range(1, 5):
            loss = best_loss("regularized", n, d) - ENSEMBLE_GAIN + ENSEMBLE_GAIN / k
            append_record(
                output,
                {
                    "run_id": f"ensemble-{preset}-K{k}",
                    "kind": "ensemble",
                    "status": "finished",
                    "k": k,
                    "recipe": "regularized",
                    "corpus": "synthetic",
                    "token_budget": d,
                    "preset": preset,
                    "n_params_total": int(n),
                    "val_loss": loss,
                    "combine": "logits",
                },
            )


def run_fit(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    fit_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["fit", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the synthetic store; the command's printed summary beside it in summary.txt."""
    root = tmp_path_factory.mktemp("scaling")
    write_store(root / "store")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run_fit([str(root / "store"), "--report-dir", str(root / "report"), "--bootstrap", "40"]) == 0
    (root / "summary.txt").write_text(printed.getvalue())
    return root / "report"


def test_fit_writes_report_fits_and_figures(report_dir: Path) -> None:
    summary = (report_dir.parent / "summary.txt").read_text()
    assert f"regularized, D = 200M, N, K -> inf: {data_law(BUDGETS[0]) - ENSEMBLE_GAIN:.4f}" in summary
    assert f"regularized, D = 800M, N -> inf: {data_law(BUDGETS[2]):.4f}" in summary
    report = (report_dir / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(images) >= 5
    for name in images:
        assert (report_dir / name).read_bytes()[:4] == b"\x89PNG"
    assert {
        "params_D200000000.png",
        "members_regularized_D200000000.png",
        "joint_regularized_D200000000.png",
        "data.png",
        "efficiency.png",
    } <= set(images)
    assert "data scaling, regularized ensembles (N, K -> inf): needs >= 3 token budgets, found 1" in report


def test_fits_json_holds_the_known_laws(report_dir: Path) -> None:
    fits = json.loads((report_dir / "fits.json").read_text())
    regularized = {entry["token_budget"]: entry["fit"] for entry in fits["params"] if entry["recipe"] == "regularized"}
    for d in BUDGETS:
        assert regularized[d]["E"] == pytest.approx(data_law(d), abs=1e-5)
        assert regularized[d]["alpha"] == pytest.approx(1.0, abs=1e-3)
        assert regularized[d]["x_scale"] == 1e9 and regularized[d]["well_conditioned"]

    (joint,) = fits["joint"]
    assert joint["fit"]["E"] == pytest.approx(data_law(BUDGETS[0]) - ENSEMBLE_GAIN, abs=1e-4)
    assert len(joint["fit"]["k_fits"]) == len(PRESETS)
    assert len(fits["members"]) == len(PRESETS)

    standard = next(entry["fit"] for entry in fits["data"] if entry["series"] == "standard")
    standard_e = 1.9 + 0.25 + 0.04 / 0.6**0.8  # its best run is always the largest model
    assert standard["E"] == pytest.approx(standard_e, abs=1e-5)
    assert standard["alpha"] == pytest.approx(0.3, abs=1e-4)

    rows = [r for r in fits["data_efficiency"] if r["series"] == "regularized (best single model)"]
    assert len(rows) == len(BUDGETS)
    for row in rows:
        loss = best_loss("regularized", PRESETS["p600m"], row["token_budget"])
        # The standard's own best loss at D lies on its law here, so the authors' normalisation is D itself.
        hand = 1e9 * (1.2 / (loss - standard_e)) ** (1 / 0.3) / row["token_budget"]
        assert row["reference_loss"] == pytest.approx(standard_e + 1.2 / (row["token_budget"] / 1e9) ** 0.3)
        assert row["loss"] == pytest.approx(loss, abs=1e-12)
        assert row["efficiency"] == pytest.approx(hand, rel=1e-3)
        assert row["efficiency"] > 1


def test_markdown_tables_match_the_store(report_dir: Path) -> None:
    runs = load_runs(report_dir.parent / "store")
    runs = runs[(runs["status"] == "finished") & runs["val_loss"].notna() & (runs["kind"] == "pretrain")]
    best = runs.groupby(["recipe", "token_budget", "preset"])["val_loss"].min()
    lines = (report_dir / "report.md").read_text().splitlines()
    checked = 0
    for d in BUDGETS:
        section = lines.index(f"### D = {human_count(d)} tokens")
        for recipe in ("standard", "regularized"):
            start = lines.index(f"**{recipe}**: best run per N", section) + 4
            for line in lines[start : start + len(PRESETS)]:
                preset, _, loss, lr, *_ = (cell.strip() for cell in line.strip("|").split("|"))
                assert float(loss) == pytest.approx(best[(recipe, d, preset)], abs=5e-5)
                assert float(lr) == 3e-3
                checked += 1
    assert checked == 2 * len(BUDGETS) * len(PRESETS)


def test_best_per_size_ignores_failed_and_non_finite_runs(report_dir: Path) -> None:
    store = report_dir.parent / "store"
    report = build_report(load_runs(store), n_bootstrap=0)
    best = best_per_size(finished_runs(load_runs(store)))
    assert (best["runs"] == len(LEARNING_RATES)).all()
    small = best[(best["recipe"] == "regularized") & (best["token_budget"] == BUDGETS[0])]
    assert small["val_loss"].min() > 0.5
    assert all(math.isnan(s.fit.E_stderr) for s in report.sizes if s.fit)  # no bootstrap asked for


def test_efficiency_is_unbounded_below_the_reference_asymptote(tmp_path: Path) -> None:
    write_store(tmp_path)
    append_record(
        tmp_path,
        {
            "run_id": "great",
            "kind": "pretrain",
            "status": "finished",
            "recipe": "distilled",
            "corpus": "synthetic",
            "token_budget": BUDGETS[0],
            "preset": "p300m",
            "n_params_total": int(PRESETS["p300m"]),
            "val_loss": 2.0,
        },
    )
    report = build_report(load_runs(tmp_path), n_bootstrap=0)
    row = report.efficiency[report.efficiency["series"] == "distilled (best single model)"].iloc[0]
    assert row["efficiency"] == math.inf
    assert math.isnan(row["efficiency_interpolated"])  # below every trained standard loss: no interpolation
    text = write_report(report, tmp_path / "report").read_text()
    assert re.search(r"\| distilled \(best single model\) \| 200M \| 2\.0000 \| [0-9.]+ \| unbounded \| n/a \|", text)
    fits = json.loads((tmp_path / "report" / "fits.json").read_text())
    distilled = [r for r in fits["data_efficiency"] if r["series"] == "distilled (best single model)"]
    assert [(r["efficiency"], r["efficiency_interpolated"]) for r in distilled] == [("unbounded", None)]


def test_report_on_a_split_the_records_lack_leaves_every_run_out(tmp_path: Path) -> None:
    write_store(tmp_path / "store")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run_fit([str(tmp_path / "store"), "--report-dir", str(tmp_path / "report"), "--report-on", "test_loss"])
    assert "no finite test_loss and are left out of the fits" in printed.getvalue()
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Losses are on the test split; each best run was chosen on the validation split." in text


def test_store_without_finished_runs_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=re.escape(str(tmp_path))):
        run_fit([str(tmp_path)])
    append_record(tmp_path, {"run_id": "x", "kind": "pretrain", "status": "failed", "val_loss": 3.0})
    with pytest.raises(InputError, match="no finished runs"):
        build_report(load_runs(tmp_path))
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "missing"))):
        run_fit([str(tmp_path / "missing")])
    with pytest.raises(InputError, match="no finished runs with a finite val_loss in the store"):
        build_report(pd.DataFrame())


def test_efficiency_bars_carry_their_intervals_as_whiskers(tmp_path: Path, monkeypatch) -> None:
    """Each bar with an interval gets a whisker from its low to its high end; an end beyond the axis is cut at its
    top and marked; a bar without an interval gets none."""
    from matplotlib.axes import Axes

    from hf_infcompute.scaling.plots import plot_data_efficiency

    drawn = []
    errorbar = Axes.errorbar

    def recording(self, x, y, yerr=None, **options):
        drawn.append((float(y), float(y) - yerr[0][0], float(y) + yerr[1][0]))
        return errorbar(self, x, y, yerr=yerr, **options)

    monkeypatch.setattr(Axes, "errorbar", recording)
    bars = {"regularized": {1e8: 1.3, 2e8: 1.4}, "ensemble": {2e8: 1.8}}
    intervals = {"regularized": {2e8: (1.2, 1.5)}, "ensemble": {2e8: (1.6, math.inf)}}
    path = plot_data_efficiency(bars, tmp_path / "efficiency.png", intervals=intervals)
    assert path.stat().st_size > 0
    assert drawn[0] == pytest.approx((1.4, 1.2, 1.5))
    value, low, top = drawn[1]
    assert (value, low) == pytest.approx((1.8, 1.6)) and math.isfinite(top) and top > 1.8
    assert len(drawn) == 2
