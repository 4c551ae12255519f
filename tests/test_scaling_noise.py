"""Fits that carry the measured noise, K-laws with a fixed exponent, and data efficiency normalised as the authors do,
each proven on simulated data with a known answer."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from hf_infcompute.errors import InputError
from hf_infcompute.scaling import (
    ScalingFitWarning,
    data_efficiency,
    effective_data,
    fit_k_law,
    fit_power_law,
    interpolated_data,
    joint_asymptote,
)
from hf_infcompute.scaling.analysis import build_report
from hf_infcompute.scaling.power_law import EXACT_FIT_NOTE
from hf_infcompute.scaling.report import write_report
from hf_infcompute.study.findings import efficiency

PAPER_N = np.array([150e6, 300e6, 600e6])
BUDGETS = np.array([200e6, 400e6, 800e6, 1.6e9])


def paper_law(n: np.ndarray) -> np.ndarray:
    return 0.05 / (n / 1e9) ** 1.02 + 3.43


def standard_data_law(d: np.ndarray | float) -> np.ndarray | float:
    return 1.2 / (np.asarray(d) / 1e9) ** 0.24 + 1.9


def test_fixed_exponent_recovers_a_one_over_k_law() -> None:
    k = np.array([1.0, 2.0, 3.0])
    exact = fit_power_law(k, 0.18 / k + 3.17, alpha=1.0, n_bootstrap=0)
    assert pytest.approx(0.18, abs=1e-12) == exact.A and pytest.approx(3.17, abs=1e-12) == exact.E
    assert exact.alpha_fixed and exact.alpha == 1.0 and exact.n_free == 2
    assert exact.formula("K").endswith("(alpha fixed at 1)")
    assert exact.to_dict()["alpha_fixed"] is True and exact.to_dict()["n_free"] == 2

    rng = np.random.default_rng(0)
    k5 = np.arange(1.0, 6.0)
    noisy = 0.18 / k5 + 3.17 + rng.normal(0.0, 0.003, size=k5.size)
    fit = fit_power_law(k5, noisy, alpha=1.0, noise=0.003, n_bootstrap=300)
    assert fit.E_interval[0] < 3.17 < fit.E_interval[1]
    assert fit.alpha_stderr == 0.0  # the exponent is not estimated
    with pytest.raises(InputError, match="alpha must be a positive exponent"):
        fit_power_law(k, 0.18 / k + 3.17, alpha=0.0)


def test_two_points_fix_the_exponent_and_fit_exactly() -> None:
    fit = fit_power_law([1, 2], [3.35, 3.26], alpha=1.0, n_bootstrap=50)
    assert pytest.approx(0.18) == fit.A and pytest.approx(3.17) == fit.E
    assert fit.E_interval is None and EXACT_FIT_NOTE in fit.notes and fit.well_conditioned
    with_noise = fit_power_law([1, 2], [3.35, 3.26], alpha=1.0, noise=0.01, n_bootstrap=200)
    assert with_noise.E_interval[0] < 3.17 < with_noise.E_interval[1] and not with_noise.notes


def test_three_points_without_noise_have_no_interval_and_say_why() -> None:
    fit = fit_power_law(PAPER_N, paper_law(PAPER_N), scale=1e9, n_bootstrap=100)
    assert pytest.approx(3.43, abs=1e-4) == fit.E
    assert fit.E_interval is None and math.isnan(fit.E_stderr)
    assert fit.notes == (EXACT_FIT_NOTE,) and fit.to_dict()["notes"] == [EXACT_FIT_NOTE]
    assert fit.well_conditioned  # an exact fit is not an ill-conditioned one
    huber = fit_power_law(PAPER_N, paper_law(PAPER_N), scale=1e9, huber=0.01, n_bootstrap=100)
    assert huber.E_interval is None and huber.notes == (EXACT_FIT_NOTE,)


def test_three_points_with_known_noise_cover_the_true_asymptote() -> None:
    # 300 simulated 3-point fits of the paper's law with known noise; few bootstrap draws (100) and one start per
    # fit keep this to seconds. Measured: 281 of 300 intervals (93.7%) cover the true E.
    rng = np.random.default_rng(0)
    sd, fits, covered = 0.003, 300, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScalingFitWarning)
        for i in range(fits):
            loss = paper_law(PAPER_N) + rng.normal(0.0, sd, size=PAPER_N.size)
            fit = fit_power_law(PAPER_N, loss, scale=1e9, noise=sd, n_bootstrap=100, seed=i, multistart=False)
            low, high = fit.E_interval
            covered += low <= 3.43 <= high
    assert 0.93 <= covered / fits <= 0.97


def test_per_point_noise_follows_its_points_and_its_degrees_of_freedom_widen_the_interval() -> None:
    n = np.array([600e6, 150e6, 1.4e9, 300e6])  # unsorted: each sd must stay with its point
    sd = np.array([0.002, 0.001, 0.004, 0.003])
    loss = paper_law(n)
    fit = fit_power_law(n, loss, scale=1e9, noise=sd, n_bootstrap=200)
    assert fit.noise == (0.001, 0.003, 0.002, 0.004)
    assert fit.to_dict()["noise"] == [0.001, 0.003, 0.002, 0.004]
    known = fit.E_interval[1] - fit.E_interval[0]
    estimated = fit_power_law(n, loss, scale=1e9, noise=sd, noise_dof=3, n_bootstrap=200)
    assert estimated.E_interval[1] - estimated.E_interval[0] > known
    tight = fit_power_law(n, loss, scale=1e9, noise=sd / 10, n_bootstrap=200)
    assert tight.E_interval[1] - tight.E_interval[0] < known / 5
    with pytest.raises(InputError, match="one per loss"):
        fit_power_law(n, loss, scale=1e9, noise=[0.01, 0.02])
    with pytest.raises(InputError, match="noise_dof"):
        fit_power_law(n, loss, scale=1e9, noise_dof=4)


def test_k_law_fixes_the_exponent_below_five_member_counts() -> None:
    three = fit_k_law([1, 2, 3], [3.35, 3.26, 3.23], n_bootstrap=0)
    assert three.alpha_fixed and three.alpha == 1.0
    assert any("alpha fixed at 1" in note and "1/K" in note for note in three.notes)
    k = np.arange(1.0, 6.0)
    five = fit_k_law(k, 0.2 / k**0.7 + 3.1, n_bootstrap=0)
    assert not five.alpha_fixed and five.alpha == pytest.approx(0.7, rel=1e-4) and not five.notes


def test_joint_limit_carries_per_point_noise_through_both_stages() -> None:
    sizes, ks = [150e6, 300e6, 600e6], [1, 2, 3]
    rows = [(n, k, 0.05 / (n / 1e9) + 3.17 + 0.1 / k, 0.002) for n in sizes for k in ks]
    joint = joint_asymptote(rows, n_bootstrap=200)
    assert pytest.approx(3.17, abs=1e-6) == joint.E
    assert all(fit.alpha_fixed for fit in joint.k_fits.values())
    assert joint.noise == (0.002,) * 9 and joint.E_interval[0] < 3.17 < joint.E_interval[1]
    wider = joint_asymptote([(n, k, loss, 0.008) for n, k, loss, _ in rows], n_bootstrap=200)
    assert wider.E_interval[1] - wider.E_interval[0] > 2 * (joint.E_interval[1] - joint.E_interval[0])
    with pytest.raises(InputError, match="carry their own sd"):
        joint_asymptote(rows, noise=0.01)


def test_multiplier_equals_the_analytic_ratio_and_a_residual_at_d_cancels() -> None:
    law = fit_power_law(BUDGETS, standard_data_law(BUDGETS), scale=1e9, n_bootstrap=0)
    d = 400e6
    on_law = float(standard_data_law(d))
    target = 3.0

    def inverse(loss: float) -> float:  # by hand: 1.2 / D^0.24 = L - 1.9
        return 1e9 * (1.2 / (loss - 1.9)) ** (1 / 0.24)

    assert effective_data(target, law) == pytest.approx(inverse(target), rel=1e-6)
    assert data_efficiency(target, on_law, law) == pytest.approx(inverse(target) / d, rel=1e-6)
    # The standard's own best loss at D lies 0.02 above its law: it is its own reference, so its multiplier is 1,
    # and a target's is the ratio of the inverted law at the two losses, not the inverted law over D.
    planted = on_law + 0.02
    assert data_efficiency(planted, planted, law) == 1.0
    analytic = inverse(target) / inverse(planted)
    assert data_efficiency(target, planted, law) == pytest.approx(analytic, rel=1e-6)
    assert abs(analytic - inverse(target) / d) > 0.03 * analytic  # dividing by D would carry the residual (5%)
    assert data_efficiency(1.9, planted, law) == math.inf
    assert math.isnan(data_efficiency(target, 1.85, law))  # the reference below the law's asymptote


def test_interpolated_data_matches_the_law_inside_the_range_and_is_none_outside() -> None:
    losses = standard_data_law(BUDGETS)
    for d in (250e6, 500e6, 1.1e9):
        loss = float(standard_data_law(d))
        assert interpolated_data(loss, BUDGETS, losses) == pytest.approx(d, rel=0.01)
    for budget, loss in zip(BUDGETS, losses):
        assert interpolated_data(float(loss), BUDGETS, losses) == pytest.approx(budget, rel=1e-12)
    assert interpolated_data(float(losses[-1]) - 0.01, BUDGETS, losses) is None
    assert interpolated_data(float(losses[0]) + 0.01, BUDGETS, losses) is None
    # A budget no better than a smaller one says nothing about the data a loss needs: it is left out.
    bumpy = losses.copy()
    bumpy[2] = bumpy[1] + 0.01
    assert interpolated_data(float(losses[1]), BUDGETS, bumpy) == pytest.approx(BUDGETS[1])
    with pytest.raises(InputError, match=">= 2 budgets"):
        interpolated_data(3.0, BUDGETS[:1], losses[:1])


def run_row(**fields) -> dict:
    return {"kind": "pretrain", "status": "finished", "corpus": "c", "seq_len": 64, **fields}


def ensemble_row(preset: str, n: float, k: int, token_budget: int, loss: float) -> dict:
    """The record of a regularized K-member ensemble of size `n`, its validation loss `loss`."""
    return run_row(
        kind="ensemble",
        run_id=f"e-{preset}-{k}",
        recipe="regularized",
        token_budget=token_budget,
        preset=preset,
        n_params_total=n,
        k=k,
        val_loss=loss,
    )


def test_best_run_chosen_on_validation_and_the_fit_uses_test() -> None:
    rows = []
    for preset, n in (("s", 150e6), ("m", 300e6), ("l", 600e6), ("xl", 1.4e9)):
        truth = float(paper_law(np.array(n)))
        # "lucky" wins on validation; "honest" is the better model on test. The law is planted in test of "lucky".
        rows.append(
            run_row(
                run_id=f"lucky-{preset}",
                recipe="regularized",
                token_budget=200_000_000,
                preset=preset,
                n_params_total=n,
                val_loss=truth - 0.05,
                test_loss=truth,
            )
        )
        rows.append(
            run_row(
                run_id=f"honest-{preset}",
                recipe="regularized",
                token_budget=200_000_000,
                preset=preset,
                n_params_total=n,
                val_loss=truth - 0.01,
                test_loss=truth - 0.2,
            )
        )
    rows.append(
        run_row(
            run_id="no-test",
            recipe="regularized",
            token_budget=400_000_000,
            preset="s",
            n_params_total=150e6,
            val_loss=3.0,
            test_loss=float("nan"),
        )
    )
    report = build_report(pd.DataFrame(rows), n_bootstrap=0, select_on="val_loss", report_on="test_loss")
    (size,) = [s for s in report.sizes if s.token_budget == 200_000_000]
    assert size.table["run_id"].str.startswith("lucky").all()
    assert size.table["loss"].tolist() == size.table["test_loss"].tolist()
    assert {"val_loss", "test_loss", "loss"} <= set(size.table)
    assert pytest.approx(3.43, abs=1e-5) == size.fit.E
    assert any("no finite test_loss" in reason and "no-test" in reason for _, reason in report.skipped)
    assert report.split == "test"


def test_loss_sd_column_is_each_fits_noise() -> None:
    n = np.array([150e6, 300e6, 600e6])
    rows = [
        run_row(
            run_id=f"r{i}",
            recipe="regularized",
            token_budget=200_000_000,
            preset=f"p{i}",
            n_params_total=v,
            val_loss=float(paper_law(np.array(v))),
            loss_sd=0.002 * (i + 1),
        )
        for i, v in enumerate(n)
    ]
    report = build_report(pd.DataFrame(rows), n_bootstrap=100)
    fit = report.sizes[0].fit
    assert fit.noise == (0.002, 0.004, 0.006) and fit.E_interval is not None and not fit.notes
    without = build_report(pd.DataFrame(rows).drop(columns="loss_sd"), n_bootstrap=100).sizes[0].fit
    assert without.E_interval is None and without.notes == (EXACT_FIT_NOTE,)


def ensemble_runs(member_counts: list[int]) -> pd.DataFrame:
    rows = []
    for preset, n in (("s", 150e6), ("m", 300e6), ("l", 600e6)):
        for k in member_counts:
            rows.append(ensemble_row(preset, n, k, 200_000_000, 0.05 / (n / 1e9) + 3.17 + 0.1 / k**0.8))
    return pd.DataFrame(rows)


def test_k_curves_with_three_member_counts_fix_the_exponent_and_say_so(tmp_path) -> None:
    report = build_report(ensemble_runs([1, 2, 3]), n_bootstrap=0)
    (ensemble,) = report.ensembles
    assert all(fit.alpha_fixed and fit.alpha == 1.0 for fit in ensemble.k_fits.values())
    assert ensemble.joint is not None and len(ensemble.notes) == 1 and "fix the exponent at 1" in ensemble.notes[0]
    text = write_report(report, tmp_path).read_text()
    assert "Note: K-laws at N = 150M, 300M, 600M fix the exponent at 1" in text

    free = build_report(ensemble_runs([1, 2, 3, 4, 5]), n_bootstrap=0).ensembles[0]
    assert not any(fit.alpha_fixed for fit in free.k_fits.values()) and not free.notes
    assert all(fit.alpha == pytest.approx(0.8, rel=1e-3) for fit in free.k_fits.values())

    two = build_report(ensemble_runs([1, 2]), n_bootstrap=0).ensembles[0]
    assert two.joint is not None and len(two.k_fits) == 3  # two member counts suffice with the exponent fixed


def data_runs(standard_budgets: list[int], regularized_budgets: list[int], gain: float) -> pd.DataFrame:
    rows = []
    for recipe, budgets, offset in (("standard", standard_budgets, 0.0), ("regularized", regularized_budgets, -gain)):
        for d in budgets:
            for preset, n in (("s", 150e6), ("m", 300e6), ("l", 600e6)):
                loss = float(standard_data_law(d)) + offset + 0.02 / (n / 1e9)
                rows.append(
                    run_row(
                        run_id=f"{recipe}-{preset}-{d}",
                        recipe=recipe,
                        token_budget=d,
                        preset=preset,
                        n_params_total=n,
                        val_loss=loss,
                    )
                )
    for preset, n in (("s", 150e6), ("m", 300e6)):
        for k in (1, 2, 3):
            loss = float(standard_data_law(regularized_budgets[0])) - gain + 0.02 / (n / 1e9) - 0.05 + 0.05 / k
            rows.append(ensemble_row(preset, n, k, regularized_budgets[0], loss))
    return pd.DataFrame(rows)


def test_efficiency_rows_for_asymptotes_and_measured_targets(tmp_path) -> None:
    budgets = [int(b) for b in BUDGETS]
    report = build_report(data_runs(budgets, budgets, gain=0.05), n_bootstrap=0)
    series = set(report.efficiency["series"])
    assert {"regularized (best single model)", "regularized (N -> inf)", "ensemble K=3 s", "ensemble K=3 m"} <= series
    assert {d.series for d in report.data if d.fit} >= {"standard", "regularized"}  # each recipe its own data law
    best = report.efficiency[report.efficiency["series"] == "regularized (best single model)"]
    for row in best.itertuples():
        standard_best = float(standard_data_law(row.token_budget)) + 0.02 / 0.6
        assert row.reference_loss == pytest.approx(standard_best)
        law = next(d.fit for d in report.data if d.series == "standard")
        assert row.efficiency == pytest.approx(
            effective_data(row.loss, law) / effective_data(standard_best, law), rel=1e-9
        )
    inside = best[best["token_budget"] < budgets[-1]]
    assert np.isfinite(inside["efficiency_interpolated"]).all()
    assert np.allclose(inside["efficiency_interpolated"], inside["efficiency"], rtol=0.05)
    text = write_report(report, tmp_path).read_text()
    assert "| regularized (best single model) | 200M |" in text and "data.png" in text


def test_unusable_standard_law_says_which_budgets_to_train(tmp_path) -> None:
    report = build_report(data_runs([200_000_000, 400_000_000], [200_000_000, 400_000_000], gain=0.3), n_bootstrap=0)
    (reason,) = [reason for analysis, reason in report.skipped if analysis == "data efficiency"]
    assert "below the standard recipe's best loss at its largest trained budget Dmax = 400M" in reason
    assert "800M, 1.6B, 3.2B (2x, 4x, 8x Dmax)" in reason and "at least 4 budgets" in reason
    assert report.efficiency["efficiency"].isna().all()
    assert re.search(r"n/a", write_report(report, tmp_path).read_text())
    assert (tmp_path / "data.png").stat().st_size > 10_000  # every recipe drawn, with or without a law


def test_replicates_keep_an_asymptote_whose_fit_is_not_identified() -> None:
    """The report takes an N -> inf asymptote only from a well-conditioned fit; a resampled replicate keeps every
    one, so an interval is the spread over all replicates, not over those that happen to look identified."""
    budgets = [int(b) for b in BUDGETS]
    runs = data_runs(budgets, budgets, gain=0.05)
    flat = (runs["recipe"] == "regularized") & (runs["token_budget"] == budgets[0]) & (runs["preset"] == "l")
    small = (runs["recipe"] == "regularized") & (runs["token_budget"] == budgets[0]) & (runs["preset"] == "s")
    runs.loc[flat, "val_loss"] = float(runs.loc[small, "val_loss"].iloc[0])  # the largest size no better: not falling

    def asymptote_budgets(report) -> set[int]:
        rows = report.efficiency
        return set(rows.loc[rows["series"] == "regularized (N -> inf)", "token_budget"])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reported = build_report(runs, n_bootstrap=0)
        replicate = build_report(runs, n_bootstrap=0, every_asymptote=True)
    assert budgets[0] not in asymptote_budgets(reported)
    assert budgets[0] in asymptote_budgets(replicate)
    # the report says the asymptote is the cause, not the data law
    value, why = efficiency(reported, "regularized (N -> inf)", budgets[0])
    assert value is None and why.startswith("the asymptote itself is not identified (loss does not fall")
