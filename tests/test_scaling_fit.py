"""Power-law fits recover known laws, flag the ones the points cannot support, and invert data laws exactly."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from hf_infcompute.errors import InputError
from hf_infcompute.scaling import (
    ScalingFitWarning,
    data_efficiency,
    fit_power_law,
    joint_asymptote,
    plot_joint_fit,
    plot_loss_vs_params,
)
from hf_infcompute.scaling.power_law import fit_parameters

# The paper's regularized recipe at 200M tokens: L(N) = 0.05 / N^1.02 + 3.43, N in billions.
PAPER_N = np.array([150e6, 300e6, 600e6, 1.4e9])


def paper_law(n: np.ndarray) -> np.ndarray:
    return 0.05 / (n / 1e9) ** 1.02 + 3.43


def test_recovers_paper_law_without_noise() -> None:
    fit = fit_power_law(PAPER_N, paper_law(PAPER_N), scale=1e9, n_bootstrap=100)
    assert pytest.approx(3.43, abs=1e-6) == fit.E
    assert pytest.approx(0.05, rel=1e-4) == fit.A
    assert fit.alpha == pytest.approx(1.02, rel=1e-4)
    assert fit.well_conditioned and fit.n_points == 4 and fit.x_scale == 1e9
    assert fit.E_interval[0] - 1e-6 <= 3.43 <= fit.E_interval[1] + 1e-6
    assert np.allclose(fit.residuals, 0.0, atol=1e-8)
    assert fit.predict(2e9) == pytest.approx(float(paper_law(np.array(2e9))), abs=1e-8)


def test_a_one_start_fit_reaches_the_least_squares_optimum_of_the_multistart_fit() -> None:
    """The resampled analysis refits with one start by a search of the profiled cost (`multistart=False`); on
    noisy 3- and 4-point curves it lands where the multistart least_squares fit does, exact 3-point fits included."""
    rng = np.random.default_rng(3)
    for n_points in (3, 4):
        x = PAPER_N[:n_points]
        for _ in range(20):
            loss = paper_law(x) + rng.normal(0, 0.003, n_points)
            one = fit_parameters(x, loss, scale=1e9, multistart=False)
            many = fit_parameters(x, loss, scale=1e9, multistart=True)
            cost_one, cost_many = (float(((at(p, x) - loss) ** 2).sum()) for p in (one, many))
            assert cost_one <= cost_many + 1e-12
            assert np.allclose(at(one, x), at(many, x), atol=1e-5)


def at(params: tuple[float, float, float], n: np.ndarray) -> np.ndarray:
    """The law (A, alpha, E) at sizes `n` (in billions in the law)."""
    a, alpha, e = params
    return a / (n / 1e9) ** alpha + e


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_paper_asymptote_within_its_uncertainty_under_noise(seed: int) -> None:
    rng = np.random.default_rng(seed)
    loss = paper_law(PAPER_N) + rng.normal(0.0, 0.003, size=PAPER_N.size)
    fit = fit_power_law(PAPER_N, loss, scale=1e9, n_bootstrap=300, seed=seed)
    low, high = fit.E_interval
    assert low < 3.43 < high
    assert abs(fit.E - 3.43) < 3 * fit.E_stderr
    assert 0 < fit.E_stderr < 0.1


def test_five_point_curve_recovered_and_huber_resists_an_outlier() -> None:
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    truth = dict(A=0.8, alpha=0.6, E=2.1)
    clean = truth["A"] / x ** truth["alpha"] + truth["E"]
    fit = fit_power_law(x, clean, n_bootstrap=0)
    for name, value in truth.items():
        assert getattr(fit, name) == pytest.approx(value, rel=1e-5)
    assert fit.E_interval is None and math.isnan(fit.E_stderr)

    rng = np.random.default_rng(0)
    noisy = clean + rng.normal(0.0, 0.002, size=x.size)
    noisy[2] += 0.15  # one bad run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScalingFitWarning)
        squares = fit_power_law(x, noisy, n_bootstrap=0)
        robust = fit_power_law(x, noisy, huber=0.005, n_bootstrap=0)
    assert abs(robust.E - truth["E"]) < 0.05
    assert abs(robust.E - truth["E"]) < abs(squares.E - truth["E"]) / 3


@pytest.mark.parametrize(
    ("x", "loss", "message"),
    [
        ([1.0, 2.0], [3.0, 2.5], "distinct x"),
        ([1.0, 1.0, 2.0, 2.0], [3.0, 3.1, 2.5, 2.4], "distinct x"),
        ([1.0, 2.0, 4.0], [3.0, float("nan"), 2.5], "loss must hold finite positive"),
        ([1.0, 0.0, 4.0], [3.0, 2.8, 2.5], "x must hold finite positive"),
        ([1.0, 2.0, 4.0], [3.0, 2.8], "same length"),
    ],
)
def test_bad_points_raise_input_error(x: list, loss: list, message: str) -> None:
    with pytest.raises(InputError, match=message):
        fit_power_law(x, loss)


def test_nearly_straight_points_do_not_locate_the_asymptote() -> None:
    # Three members' K-curve measured on a tiny model: it falls almost linearly, so three parameters fit it
    # exactly with E near 0 and alpha near 0; that asymptote is not an estimate.
    with pytest.warns(ScalingFitWarning, match="bound 0"):
        fit = fit_power_law([1, 2, 3], [5.9370, 5.9066, 5.8787], scale=1.0)
    assert not fit.well_conditioned and fit.E < 0.06
    curved = fit_power_law([1, 2, 3, 4], [5.90, 5.80, 5.76, 5.74], scale=1.0, n_bootstrap=0)
    assert curved.well_conditioned and 5.6 < curved.E < 5.74


def test_rising_loss_warns_and_is_flagged() -> None:
    with pytest.warns(ScalingFitWarning, match="does not fall"):
        fit = fit_power_law(PAPER_N, paper_law(PAPER_N)[::-1], scale=1e9, n_bootstrap=50)
    assert not fit.well_conditioned
    assert any("does not fall" in issue for issue in fit.issues)
    assert fit.to_dict()["well_conditioned"] is False
    with pytest.warns(ScalingFitWarning, match="cannot be inverted"):
        data_efficiency(3.5, 3.6, fit)


def test_three_points_fit_without_uncertainty_unless_noise_is_given() -> None:
    x, loss = PAPER_N[:3], paper_law(PAPER_N[:3])
    fit = fit_power_law(x, loss, scale=1e9, n_bootstrap=50)
    assert pytest.approx(3.43, abs=1e-4) == fit.E
    assert fit.E_interval is None and fit.to_dict()["E_stderr"] is None
    with_noise = fit_power_law(x, loss, scale=1e9, noise=0.002, n_bootstrap=100)
    assert with_noise.E_stderr > 0 and with_noise.E_interval[0] < 3.43 < with_noise.E_interval[1]


def test_joint_asymptote_recovers_known_double_limit(tmp_path) -> None:
    n_sizes = np.array([150e6, 300e6, 600e6, 1.4e9])
    ks = [1, 2, 3, 4, 5, 8]

    def loss(n: float, k: int) -> float:
        e_k = 0.05 / (n / 1e9) ** 1.0 + 3.17  # E_K(N) = A / N^alpha + E_inf
        return e_k + 0.18 / k**0.9  # L(N, K) = E_K(N) + B / K^beta

    rng = np.random.default_rng(0)
    rows = [(n, k, loss(n, k) + rng.normal(0.0, 0.001)) for n in n_sizes for k in ks]
    joint = joint_asymptote(rows, n_bootstrap=100)
    assert pytest.approx(3.17, abs=0.03) == joint.E
    assert joint.E_interval[0] < 3.17 < joint.E_interval[1]
    for n, fit in joint.k_fits.items():
        assert pytest.approx(0.05 / (n / 1e9) + 3.17, abs=0.02) == fit.E
    assert joint.well_conditioned and list(joint.n_fit.x) == sorted(n_sizes)

    exact = {n: {k: loss(n, k) for k in ks} for n in n_sizes}
    assert pytest.approx(3.17, abs=1e-5) == joint_asymptote(exact, n_bootstrap=0).E

    path = plot_joint_fit(joint, tmp_path / "joint.png")
    assert path.stat().st_size > 10_000


def test_joint_asymptote_needs_two_k_at_three_sizes() -> None:
    with pytest.raises(InputError, match=">= 2 ensemble sizes"):
        joint_asymptote([(1e8, 1, 3.5), (2e8, 1, 3.3), (2e8, 2, 3.2), (4e8, 1, 3.1), (4e8, 2, 3.0)])
    rows = [(n, k, 3.0 + 0.1 / k) for n in (1e8, 2e8) for k in (1, 2, 3)]
    with pytest.raises(InputError, match=">= 3 model sizes"):
        joint_asymptote(rows)
    with pytest.raises(InputError, match="every joint point carries an sd"):
        joint_asymptote([(1e8, 1, 3.5, 0.01), (1e8, 2, 3.4)])


def test_only_well_conditioned_fits_draw_an_asymptote(tmp_path, monkeypatch) -> None:
    from hf_infcompute.scaling import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure))
    good = fit_power_law(PAPER_N, paper_law(PAPER_N), scale=1e9, n_bootstrap=0)
    with pytest.warns(ScalingFitWarning):
        flat = fit_power_law([1, 2, 3], [5.9370, 5.9066, 5.8787], scale=1.0)
    plot_loss_vs_params({"good": good, "flat": flat}, tmp_path / "n.png")
    axes = figures[0].axes[0]
    labels = [text.get_text() for text in axes.texts if text.get_gid() == plots._ASYMPTOTE]
    assert labels == [f"{good.E:.3f}"]
    dashed = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_ydata()[0] for line in dashed] == [pytest.approx(good.E)]
    assert "flat (ill-conditioned fit)" in [text.get_text() for text in axes.get_legend().get_texts()]


def test_plot_writes_a_png(tmp_path) -> None:
    fit = fit_power_law(PAPER_N, paper_law(PAPER_N), scale=1e9, n_bootstrap=20)
    path = plot_loss_vs_params({"regularized": fit}, tmp_path / "params.png", title="D = 200M")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
