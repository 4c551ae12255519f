"""Saturating power laws `L(x) = A / x^alpha + E`: a robust fit with bootstrap uncertainty, and data efficiency.

The fit works in units of `x / scale` (the paper: N and D in billions) and, inside, relative to the geometric
mean of those values, so that A stays of the order of the losses whatever the units. The parameters are fitted in
log space (log A, log alpha, log E), which keeps all three positive; A and E are floored at a billionth of the mean
loss (a fit that ends there has met the bound 0, and says so). `scipy.optimize.least_squares` (optionally with its
Huber loss) runs from several starts: the best points of a grid over alpha, where the law is linear in (A, E) and
solved exactly, and the paper's `p0 = [1, 0.5, 2]`; the lowest cost wins. With a fixed exponent the law is linear in
(A, E) and is solved exactly by non-negative least squares.

Data efficiency follows the authors (marin-community/marin, experiments/data_efficiency/plotting.py,
`data_efficiency_from_loss`): the standard recipe's data law is inverted at the target loss and at the standard
recipe's own best loss at the same budget, and the two effective data amounts are divided (`data_efficiency`).
`interpolated_data` reads the same quantity off the trained budgets without a law.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.optimize import least_squares, nnls
from scipy.stats import spearmanr

from hf_infcompute.errors import InputError

ALPHA_BOUNDS = (1e-3, 10.0)
CONFIDENCE = 0.95
# Relative floor of A and E (in units of the mean loss): a fit that ends here has run into the bound 0.
_FLOOR = 1e-9
# An asymptote below this share of the smallest loss is taken as 0: a loss cannot fall that far, so such a fit has
# not located its asymptote (with 3 points a slowly curving series fits exactly with E near 0 and alpha near 0).
_NEGLIGIBLE_E = 0.01
_ALPHA_GRID = np.geomspace(*ALPHA_BOUNDS, 161)
# The paper's starting point for scipy's curve_fit: A = 1, alpha = 0.5, E = 2 (x in billions).
_PAPER_P0 = (1.0, 0.5, 2.0)
_N_PARAMS = 3
EXACT_FIT_NOTE = "as many free parameters as points: exact fit, interval needs the measured noise"
NOT_FALLING = "loss does not fall with x, so no decreasing power law fits"
ALPHA_AT_BOUND = "the exponent alpha ran into its bound"

Noise = float | Sequence[float] | np.ndarray


class ScalingFitWarning(UserWarning):
    """A scaling-law fit whose parameters the points do not pin down; the fit is flagged `well_conditioned=False`."""


@dataclass(frozen=True)
class PowerLawFit:
    """`L(x) = A / (x / x_scale)^alpha + E` fitted to points (x, loss), held sorted by x, with `residuals` the
    losses minus the fitted law; `issues` says why a fit is not `well_conditioned` (empty when it is).

    Uncertainty comes from a parametric bootstrap: new losses are drawn as the fitted curve plus Gaussian noise
    and refitted, `n_bootstrap` times. With 3-5 points, resampling the points themselves would leave many
    resamples with fewer than 3 distinct x, and resampling residuals draws from one or two effective values, so a
    noise model is the sensible choice. Each point's noise is its own standard deviation when `noise` is given
    per point, the one `noise` given for all, or else the scale estimated from the residuals. An estimate from
    n - `n_free` degrees of freedom is itself uncertain, so each replicate then draws its scale from the estimate's
    scaled inverse chi-square distribution, which keeps the intervals honest with 4-5 points; a given noise is known
    unless the fit was told its degrees of freedom (`noise_dof`), when the same draw scales it.
    `E_interval` is the central `confidence` percentile interval of the bootstrap asymptotes; the `*_stderr` are
    half the width of the central 68% interval (the standard deviation for Gaussian draws, but robust to the
    heavy tails of few-point fits). A law with as many free parameters as points fits them exactly and leaves no
    residual to estimate the noise from: without a given `noise` it has no interval (a note says so), never one from
    its zero residuals. Where the noise is unknown or `n_bootstrap` is 0, the standard errors are NaN and the
    interval None. `noise` is the noise used (one scale, or one per point in the order of `x`); `alpha_fixed`: the
    exponent was given, not fitted (its standard error is then 0). `notes` say how a fit was made where that matters
    for reading it, without making it ill-conditioned.
    """

    A: float
    alpha: float
    E: float
    x_scale: float
    x: tuple[float, ...]
    loss: tuple[float, ...]
    residuals: tuple[float, ...]
    noise: float | tuple[float, ...]
    A_stderr: float
    alpha_stderr: float
    E_stderr: float
    E_interval: tuple[float, float] | None
    n_bootstrap: int
    huber: float | None = None
    issues: tuple[str, ...] = field(default=())
    confidence: float = CONFIDENCE
    alpha_fixed: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def n_points(self) -> int:
        return len(self.x)

    @property
    def n_free(self) -> int:
        """Free parameters: 3, or 2 with the exponent fixed."""
        return _N_PARAMS - int(self.alpha_fixed)

    @property
    def well_conditioned(self) -> bool:
        """True when the points pin the law down; otherwise `issues` says why not."""
        return not self.issues

    def predict(self, x: float | Sequence[float] | np.ndarray) -> float | np.ndarray:
        """The fitted loss at `x` (same units as the points the law was fitted to)."""
        values = np.asarray(x, dtype=float)
        predicted = self.A / (values / self.x_scale) ** self.alpha + self.E
        return float(predicted) if predicted.ndim == 0 else predicted

    def formula(self, variable: str = "x") -> str:
        """The law as text, e.g. `0.05 / (N/1e9)^1.02 + 3.4300` or `0.08 / K^1 + 3.1700 (alpha fixed at 1)`."""
        scale = f"{self.x_scale:g}".replace("e+0", "e").replace("e+", "e")
        unit = variable if self.x_scale == 1 else f"({variable}/{scale})"
        fixed = f" (alpha fixed at {self.alpha:g})" if self.alpha_fixed else ""
        return f"{self.A:.4g} / {unit}^{self.alpha:.4g} + {self.E:.4f}{fixed}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None."""
        return {
            "A": self.A,
            "alpha": self.alpha,
            "E": self.E,
            "A_stderr": _finite_or_none(self.A_stderr),
            "alpha_stderr": _finite_or_none(self.alpha_stderr),
            "E_stderr": _finite_or_none(self.E_stderr),
            "E_interval": list(self.E_interval) if self.E_interval else None,
            "confidence": self.confidence,
            "uncertainty": "parametric bootstrap" if self.E_interval else "unavailable",
            "n_bootstrap": self.n_bootstrap,
            "noise": list(self.noise) if isinstance(self.noise, tuple) else _finite_or_none(self.noise),
            "huber": self.huber,
            "x_scale": self.x_scale,
            "n_points": self.n_points,
            "x": list(self.x),
            "loss": list(self.loss),
            "residuals": list(self.residuals),
            "well_conditioned": self.well_conditioned,
            "issues": list(self.issues),
            "notes": list(self.notes),
            "alpha_fixed": self.alpha_fixed,
            "n_free": self.n_free,
            "formula": self.formula(),
        }


def fit_power_law(
    x: Sequence[float] | np.ndarray,
    loss: Sequence[float] | np.ndarray,
    *,
    scale: float = 1.0,
    huber: float | None = None,
    noise: Noise | None = None,
    noise_dof: int | None = None,
    alpha: float | None = None,
    n_bootstrap: int = 500,
    seed: int = 0,
    multistart: bool = True,
) -> PowerLawFit:
    """Fit `loss = A / (x / scale)^alpha + E` with alpha > 0 and A, E >= 0.

    `scale`: the unit of x in the law (1e9 for N or D in billions, as in the paper; 1 for ensemble size K).
    `huber`: a residual size (in loss units) beyond which residuals count linearly, not squared, so one outlier
    cannot drag the fit; None for least squares. `noise`: the standard deviation of one loss measurement, one for
    all points or one per point (in the order of `loss`), for the bootstrap; default: estimated from the residuals
    (needs more points than free parameters). `noise_dof`: the degrees of freedom of a given `noise` when it is
    itself an estimate (each replicate then scales it by one inverse chi-square draw); None: known.
    `alpha`: a fixed exponent (the law is then linear in A and E and has 2 free parameters); None: fitted.
    `multistart`: also start from the other local minima of an exponent grid and the paper's p0 (False: the grid's
    best start only, as the bootstrap's refits do; for refits of slightly changed losses).
    Warns `ScalingFitWarning` and sets `well_conditioned=False` when the loss does not fall with x, or when the
    asymptote or exponent runs into a bound or is no better determined than the spread of the losses.
    """
    if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
        raise InputError(f"alpha must be a positive exponent to fix (or None to fit it), got {alpha}")
    n_free = _N_PARAMS - int(alpha is not None)
    x_arr, y_arr, order = _validated(x, loss, scale, n_free)
    if huber is not None and not (math.isfinite(huber) and huber > 0):
        raise InputError(f"huber must be a positive residual size in loss units (or None), got {huber}")
    point_noise = _point_noise(noise, y_arr.size, noise_dof)
    if n_bootstrap < 0:
        raise InputError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    u, geo = _normalized(x_arr / scale)
    params = _fit(u, y_arr, huber, geo, multistart=multistart, alpha=alpha)
    fitted = _model(params, u)
    residuals = y_arr - fitted
    notes: tuple[str, ...] = ()
    if point_noise is None:
        sigma: float | np.ndarray = _residual_scale(residuals, huber, n_free)
        dof: int | None = residuals.size - n_free
        if dof == 0:
            notes = (EXACT_FIT_NOTE,)
    else:
        sigma, dof = (float(point_noise[0]) if np.ndim(noise) == 0 else point_noise[order]), noise_dof
    samples = _bootstrap(u, geo, fitted, sigma, dof, huber, n_bootstrap, seed, alpha)
    A, alpha_fit, E = _unnormalized(params, geo)
    if samples:
        draws = np.array([_unnormalized(p, geo) for p in samples])
        A_se, alpha_se, E_se = robust_stderr(draws)
        E_interval: tuple[float, float] | None = percentile_interval(draws[:, 2])
    else:
        A_se = alpha_se = E_se = math.nan
        E_interval = None
    issues = _issues(u, y_arr, params, float(E_se), alpha_fixed=alpha is not None)
    if issues:
        warnings.warn(
            f"power-law fit to {len(y_arr)} points is ill-conditioned: {'; '.join(issues)}",
            ScalingFitWarning,
            stacklevel=2,
        )
    return PowerLawFit(
        A=A,
        alpha=alpha_fit,
        E=E,
        x_scale=float(scale),
        x=tuple(float(v) for v in x_arr),
        loss=tuple(float(v) for v in y_arr),
        residuals=tuple(float(v) for v in residuals),
        noise=tuple(float(v) for v in sigma) if isinstance(sigma, np.ndarray) else float(sigma),
        A_stderr=float(A_se),
        alpha_stderr=float(alpha_se),
        E_stderr=float(E_se),
        E_interval=E_interval,
        n_bootstrap=len(samples),
        huber=huber,
        issues=issues,
        alpha_fixed=alpha is not None,
        notes=notes,
    )


def effective_data(loss: float, law: PowerLawFit) -> float:
    """The data (in the units of the law's points, e.g. tokens) at which the data law `law` reaches `loss`: the
    inverted law `x_scale * (A / (loss - E))^(1/alpha)`; `math.inf` for a loss at or below the asymptote E, which no
    amount of data reaches."""
    if not (math.isfinite(loss) and loss > 0):
        raise InputError(f"loss must be a finite positive number, got {loss}")
    gap = loss - law.E
    if gap <= 0:
        return math.inf
    return law.x_scale * (law.A / gap) ** (1 / law.alpha)


def invertible(law: PowerLawFit) -> bool:
    """Whether a data law can be read backwards (`effective_data`): it falls with D and its exponent is inside its
    bounds. An asymptote the points do not identify still leaves the law pinned down where they lie, so losses in
    and near their range invert; how far an extrapolated multiplier can be trusted is its interval's to say."""
    return not any(issue == NOT_FALLING or issue.startswith(ALPHA_AT_BOUND) for issue in law.issues)


def data_efficiency(loss: float, reference_loss: float, law: PowerLawFit) -> float:
    """How many times more data the reference recipe needs to reach `loss` than to reach `reference_loss`:
    `effective_data(loss, law) / effective_data(reference_loss, law)`, with `law` the reference recipe's data law.

    The normalisation is the authors' (marin-community/marin, experiments/data_efficiency/plotting.py,
    `data_efficiency_from_loss` = `back_out_data(loss) / back_out_data(min(chinchilla_losses))`): `reference_loss`
    is the reference recipe's own best loss at the budget D the target was trained at, so the law's residual at D
    cancels (the reference's own loss has efficiency exactly 1). Dividing by D instead is close to this but carries
    that residual into every multiplier. `math.inf` when `loss` lies at or below the law's asymptote (no data
    reaches it); NaN when `reference_loss` does, or when the law puts it at no data at all (the law does not
    describe the reference's own point).
    """
    if not invertible(law):
        warnings.warn(
            f"data efficiency over a reference law that cannot be inverted: {'; '.join(law.issues)}",
            ScalingFitWarning,
            stacklevel=2,
        )
    target, reference = effective_data(loss, law), effective_data(reference_loss, law)
    if not 0 < reference < math.inf:
        return math.nan
    return target / reference


def interpolated_data(
    loss: float, budgets: Sequence[float] | np.ndarray, losses: Sequence[float] | np.ndarray
) -> float | None:
    """The data the reference recipe needs to reach `loss`, read off its best losses at trained `budgets` by monotone
    (PCHIP) interpolation of log D against the loss, without a law; None where `loss` lies outside the trained
    losses' range (no extrapolation).

    The least data that reaches a loss is what counts, so a budget whose best loss is no lower than a smaller
    budget's is left out: the losses used then fall strictly with D, which the interpolation needs.
    """
    d = np.asarray(budgets, dtype=float).ravel()
    y = np.asarray(losses, dtype=float).ravel()
    if d.shape != y.shape or d.size < 2:
        raise InputError(f"interpolation needs the best losses at >= 2 budgets, one per budget; got {d.size}")
    if not (np.all(np.isfinite(d) & (d > 0)) and np.all(np.isfinite(y) & (y > 0))):
        raise InputError("budgets and losses must be finite positive numbers; drop the runs without a loss first")
    if not (math.isfinite(loss) and loss > 0):
        raise InputError(f"loss must be a finite positive number, got {loss}")
    order = np.argsort(d, kind="stable")
    d, y = d[order], y[order]
    falling = y < np.minimum.accumulate(np.concatenate([[math.inf], y[:-1]]))
    d, y = d[falling], y[falling]
    if d.size < 2 or not (y[-1] <= loss <= y[0]):
        return None
    # PCHIP needs increasing abscissae: the losses, read from the largest budget to the smallest.
    return float(np.exp(PchipInterpolator(y[::-1], np.log(d[::-1]))(loss)))


def fit_parameters(
    x: np.ndarray,
    loss: np.ndarray,
    *,
    scale: float = 1.0,
    huber: float | None = None,
    multistart: bool = True,
    alpha: float | None = None,
) -> tuple[float, float, float]:
    """The bare point estimate (A, alpha, E) of `fit_power_law`, for resampling loops: no input checks, no
    uncertainty, no warnings; with `multistart=False`, one start (the best alpha of the grid)."""
    u, geo = _normalized(np.asarray(x, dtype=float) / scale)
    return _unnormalized(_fit(u, np.asarray(loss, dtype=float), huber, geo, multistart=multistart, alpha=alpha), geo)


def _validated(x: Any, loss: Any, scale: float, n_free: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x and loss sorted by x, and the sorting order."""
    x_arr = np.asarray(x, dtype=float).ravel()
    y_arr = np.asarray(loss, dtype=float).ravel()
    if x_arr.shape != y_arr.shape:
        raise InputError(f"x and loss need the same length, got {x_arr.size} and {y_arr.size}")
    if not (math.isfinite(scale) and scale > 0):
        raise InputError(f"scale must be a positive unit of x (e.g. 1e9 for billions), got {scale}")
    for name, values in (("x", x_arr), ("loss", y_arr)):
        bad = [float(v) for v in values if not (math.isfinite(v) and v > 0)]
        if bad:
            raise InputError(f"{name} must hold finite positive numbers; got {bad}: drop those points first")
    distinct = np.unique(x_arr).size
    if distinct < n_free:
        raise InputError(
            f"a power law A / x^alpha + E with {n_free} free parameters needs points at >= {n_free} distinct x; "
            f"got {distinct}"
        )
    order = np.argsort(x_arr, kind="stable")
    return x_arr[order], y_arr[order], order


def _point_noise(noise: Noise | None, n_points: int, noise_dof: int | None) -> np.ndarray | None:
    """The given noise as one standard deviation per point (None when none is given), checked."""
    if noise_dof is not None and (noise is None or noise_dof < 1):
        raise InputError(
            f"noise_dof ({noise_dof}) is the degrees of freedom of a given noise: pass noise= with it, and a "
            "positive count"
        )
    if noise is None:
        return None
    values = np.asarray(noise, dtype=float)
    if values.ndim == 0:
        values = np.full(n_points, float(values))
    if values.shape != (n_points,) or not np.all(np.isfinite(values) & (values >= 0)):
        raise InputError(
            f"noise must be one standard deviation >= 0 or one per loss ({n_points}), got {np.asarray(noise).tolist()}"
        )
    return values


def _normalized(x: np.ndarray) -> tuple[np.ndarray, float]:
    geo = float(np.exp(np.log(x).mean()))
    return x / geo, geo


def _unnormalized(params: np.ndarray, geo: float) -> tuple[float, float, float]:
    """(A, alpha, E) in the fit's units from log-parameters relative to the geometric mean of x."""
    log_a, log_alpha, log_e = params
    alpha = math.exp(log_alpha)
    return math.exp(log_a) * geo**alpha, alpha, math.exp(log_e)


def _model(params: np.ndarray, u: np.ndarray) -> np.ndarray:
    log_a, log_alpha, log_e = params
    return np.exp(log_a - np.exp(log_alpha) * np.log(u)) + np.exp(log_e)


def _jacobian(params: np.ndarray, u: np.ndarray) -> np.ndarray:
    log_a, log_alpha, log_e = params
    alpha = np.exp(log_alpha)
    term = np.exp(log_a - alpha * np.log(u))
    return np.column_stack([term, -term * alpha * np.log(u), np.full_like(u, np.exp(log_e))])


def _bounds(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    level = float(y.mean())
    floor = math.log(_FLOOR * level)
    lower = np.array([floor, math.log(ALPHA_BOUNDS[0]), floor])
    upper = np.array([math.log(1e6 * level), math.log(ALPHA_BOUNDS[1]), math.log(10 * y.max())])
    return lower, upper


def _grid_starts(u: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every alpha on a grid, the least-squares (A, E) >= 0 (the law is linear in them): A, E and the cost."""
    return _linear_solve(u, y, _ALPHA_GRID)


def _linear_solve(u: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For losses `y` (shape (..., n)) and exponents `alphas` (shape (..., m)), the least-squares (A, E) >= 0 of
    `y = A / u^alpha + E` at each exponent: A, E and the cost, each of shape (..., m)."""
    z = u ** -alphas[..., None]
    y = y[..., None, :]
    z_mean, y_mean = z.mean(axis=-1), y.mean(axis=-1)
    centred = z - z_mean[..., None]
    z_var = (centred**2).mean(axis=-1)
    a = (centred * (y - y_mean[..., None])).mean(axis=-1) / np.maximum(z_var, 1e-300)
    e = y_mean - a * z_mean
    # Project onto the constraints: A < 0 -> a flat line at the mean; E < 0 -> a pure power law through 0.
    flat = a < 0
    a, e = np.where(flat, 0.0, a), np.where(flat, y_mean, e)
    pure = e < 0
    a = np.where(pure, (z * y).sum(axis=-1) / (z * z).sum(axis=-1), a)
    e = np.where(pure, 0.0, e)
    cost = ((a[..., None] * z + e[..., None] - y) ** 2).sum(axis=-1)
    return a, e, cost


def _profile_refits(u: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Least-squares log-parameters for each row of `ys` at once: the law is linear in (A, E) at a given alpha, so
    the cost profiled over alpha is minimised by a golden-section search between the neighbours of the grid's best
    exponent (the start `_fit` polishes with `multistart=False`, to the same least-squares optimum)."""
    grid = np.log(_ALPHA_GRID)
    best = _grid_starts(u, ys)[2].argmin(axis=1)
    low, high = grid[np.maximum(best - 1, 0)], grid[np.minimum(best + 1, grid.size - 1)]

    def cost(log_alpha: np.ndarray) -> np.ndarray:
        return _linear_solve(u, ys, np.exp(log_alpha)[:, None])[2][:, 0]

    ratio = (math.sqrt(5) - 1) / 2
    left, right = high - ratio * (high - low), low + ratio * (high - low)
    cost_left, cost_right = cost(left), cost(right)
    for _ in range(40):  # the bracket shrinks to 0.618^40 (4e-9) of a grid step
        keep_left = cost_left < cost_right
        low, high = np.where(keep_left, low, left), np.where(keep_left, right, high)
        probe = np.where(keep_left, high - ratio * (high - low), low + ratio * (high - low))
        cost_probe = cost(probe)
        left, right, cost_left, cost_right = (
            np.where(keep_left, probe, right),
            np.where(keep_left, left, probe),
            np.where(keep_left, cost_probe, cost_right),
            np.where(keep_left, cost_left, cost_probe),
        )
    log_alpha = (low + high) / 2
    a, e, _ = _linear_solve(u, ys, np.exp(log_alpha)[:, None])
    floor = _FLOOR * ys.mean(axis=1)
    return np.column_stack([np.log(np.maximum(a[:, 0], floor)), log_alpha, np.log(np.maximum(e[:, 0], floor))])


def _starts(u: np.ndarray, y: np.ndarray, geo: float, *, multistart: bool) -> list[np.ndarray]:
    """Log-parameter starting points: the grid's best alpha; with `multistart`, also the grid's other local minima
    and the paper's p0 (`geo`: the geometric mean of x in the fit's units)."""
    a, e, cost = _grid_starts(u, y)
    order = [int(np.argmin(cost))]
    if multistart:
        interior = np.flatnonzero((cost[1:-1] <= cost[:-2]) & (cost[1:-1] <= cost[2:])) + 1
        order += [int(i) for i in interior[np.argsort(cost[interior])][:3] if i != order[0]]
    starts = [np.log([max(a[i], 1e-300), _ALPHA_GRID[i], max(e[i], 1e-300)]) for i in order]
    if multistart:
        a0, alpha0, e0 = _PAPER_P0  # A / x^alpha = (A / geo^alpha) / u^alpha
        starts.append(np.log([a0 / geo**alpha0, alpha0, e0]))
    lower, upper = _bounds(y)
    return [np.clip(s, lower + 1e-9, upper - 1e-9) for s in starts]


def _fit(
    u: np.ndarray,
    y: np.ndarray,
    huber: float | None,
    geo: float,
    *,
    multistart: bool = True,
    alpha: float | None = None,
) -> np.ndarray:
    """Best log-parameters over the starts (lowest least-squares or Huber cost); with a fixed `alpha`, the exact
    solution of the law linear in (A, E)."""
    if alpha is not None:
        return _fit_fixed(u, y, huber, alpha)
    if not multistart and not huber:
        # One start under least squares: the exponent search on the profiled cost reaches the optimum that
        # least_squares polishes the same start to, in a fraction of its time (least_squares stops on relative
        # tolerances, which never fire where an exact fit drives the cost to zero, so it runs to its evaluation limit).
        return _profile_refits(u, y[None, :])[0]
    lower, upper = _bounds(y)
    best = None
    for start in _starts(u, y, geo, multistart=multistart):
        result = least_squares(
            lambda p: _model(p, u) - y,
            start,
            jac=lambda p: _jacobian(p, u),
            bounds=(lower, upper),
            loss="huber" if huber else "linear",
            f_scale=huber or 1.0,
            x_scale="jac",
        )
        if best is None or result.cost < best.cost:
            best = result
    return best.x


def _fit_fixed(u: np.ndarray, y: np.ndarray, huber: float | None, alpha: float) -> np.ndarray:
    """Log-parameters of `A / u^alpha + E` with alpha fixed: non-negative least squares in (A, E), refined under
    the Huber loss when asked; A and E floored as in the free fit."""
    design = np.column_stack([u**-alpha, np.ones_like(u)])
    coef, _ = nnls(design, y)
    if huber:
        coef = least_squares(
            lambda c: design @ c - y,
            coef,
            bounds=(0.0, np.inf),
            loss="huber",
            f_scale=huber,
        ).x
    floor = _FLOOR * float(y.mean())
    return np.log([max(coef[0], floor), alpha, max(coef[1], floor)])


def _residual_scale(residuals: np.ndarray, huber: float | None, n_free: int) -> float:
    """Standard deviation of one loss from the residuals (NaN with no degrees of freedom left); robust with Huber."""
    dof = residuals.size - n_free
    if dof <= 0:
        return math.nan
    if huber:
        # Median absolute residual (1.4826 makes it a standard deviation for Gaussian noise): an outlier
        # must not widen the intervals of a fit it does not move.
        return float(1.4826 * np.median(np.abs(residuals)) * math.sqrt(residuals.size / dof))
    return float(math.sqrt((residuals**2).sum() / dof))


def noise_scale_draw(rng: np.random.Generator, sigma: float, dof: int | None) -> float:
    """A noise scale for one bootstrap replicate: `sigma` when known (`dof` None), else a draw from the scaled
    inverse chi-square distribution of a scale estimated with `dof` degrees of freedom."""
    return sigma if dof is None else sigma * math.sqrt(dof / rng.chisquare(dof))


def robust_stderr(draws: np.ndarray) -> np.ndarray:
    """Half the width of the central 68% interval of bootstrap draws, per column."""
    low, high = np.percentile(draws, [15.865, 84.135], axis=0)
    return (high - low) / 2


def percentile_interval(draws: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def _bootstrap(
    u: np.ndarray,
    geo: float,
    fitted: np.ndarray,
    sigma: float | np.ndarray,
    dof: int | None,
    huber: float | None,
    n_bootstrap: int,
    seed: int,
    alpha: float | None,
) -> list[np.ndarray]:
    """Log-parameters refitted to `fitted` + Gaussian noise of `sigma` (one or one per point), `n_bootstrap` times;
    each replicate scales all points' noise by one draw when the scale is an estimate (`dof`). None when the noise
    is unknown."""
    if not np.all(np.isfinite(sigma)) or n_bootstrap == 0:
        return []
    rng = np.random.default_rng(seed)
    redrawn = []
    for _ in range(n_bootstrap):
        scale = noise_scale_draw(rng, 1.0, dof)
        y = fitted + rng.normal(0.0, 1.0, size=fitted.size) * sigma * scale
        if np.all(y > 0):
            redrawn.append(y)
    if not redrawn:
        return []
    if huber is None and alpha is None:
        return list(_profile_refits(u, np.array(redrawn)))
    return [_fit(u, y, huber, geo, multistart=False, alpha=alpha) for y in redrawn]


def _issues(
    u: np.ndarray, y: np.ndarray, params: np.ndarray, e_stderr: float, *, alpha_fixed: bool = False
) -> tuple[str, ...]:
    """Why the points do not pin the law down (empty when they do)."""
    lower, upper = _bounds(y)
    issues = []
    fitted = _model(params, u)
    drop = fitted[0] - fitted[-1]
    if _rank_correlation(u, y) >= 0 or drop <= 1e-6 * float(y.mean()):
        # The other checks describe a law that has nothing to describe here.
        return (NOT_FALLING,)
    if math.exp(params[2]) < _NEGLIGIBLE_E * float(y.min()):
        issues.append("the asymptote E ran into its bound 0: the points show too little curvature to locate it")
    if not alpha_fixed and (params[1] <= lower[1] + 1e-6 or params[1] >= upper[1] - 1e-6):
        issues.append(f"{ALPHA_AT_BOUND} {ALPHA_BOUNDS}")
    spread = float(y.max() - y.min())
    if math.isfinite(e_stderr) and e_stderr > spread:
        issues.append(
            f"the asymptote is not identified: its bootstrap standard error {e_stderr:.3g} exceeds the spread "
            f"of the losses {spread:.3g}"
        )
    return tuple(issues)


def _rank_correlation(u: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation of x and loss; 0 for constant losses (where scipy warns and returns NaN)."""
    return 0.0 if np.ptp(y) == 0 else float(spearmanr(u, y).statistic)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
