"""Saturating power laws `L(x) = A / x^alpha + E`: a robust fit with bootstrap uncertainty, and data efficiency.

The fit works in units of `x / scale` (the paper: N and D in billions) and, inside, relative to the geometric
mean of those values, so that A stays of the order of the losses whatever the units. The parameters are fitted in
log space (log A, log alpha, log E), which keeps all three positive; A and E are floored at a billionth of the mean
loss (a fit that ends there has met the bound 0, and says so). `scipy.optimize.least_squares` (optionally with its
Huber loss) runs from several starts: the best points of a grid over alpha, where the law is linear in (A, E) and
solved exactly, and the paper's `p0 = [1, 0.5, 2]`; the lowest cost wins.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares
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


class ScalingFitWarning(UserWarning):
    """A scaling-law fit whose parameters the points do not pin down; the fit is flagged `well_conditioned=False`."""


@dataclass(frozen=True)
class PowerLawFit:
    """`L(x) = A / (x / x_scale)^alpha + E` fitted to points (x, loss), held sorted by x, with `residuals` the
    losses minus the fitted law; `issues` says why a fit is not `well_conditioned` (empty when it is).

    Uncertainty comes from a parametric bootstrap: new losses are drawn as the fitted curve plus Gaussian noise
    and refitted, `n_bootstrap` times. With 3-5 points, resampling the points themselves would leave many
    resamples with fewer than 3 distinct x, and resampling residuals draws from one or two effective values, so a
    noise model is the sensible choice. The noise scale is the `noise` given to the fit, or else estimated from
    the residuals; an estimate from n - 3 degrees of freedom is itself uncertain, so each replicate draws its scale
    from the estimate's scaled inverse chi-square distribution, which keeps the intervals honest with 4-5 points.
    `E_interval` is the central `confidence` percentile interval of the bootstrap asymptotes; the `*_stderr` are
    half the width of the central 68% interval (the standard deviation for Gaussian draws, but robust to the
    heavy tails of few-point fits). Where the noise is unknown (3 points and no `noise`) or `n_bootstrap` is 0,
    the standard errors are NaN and the interval None. `noise` is the noise scale used.
    """

    A: float
    alpha: float
    E: float
    x_scale: float
    x: tuple[float, ...]
    loss: tuple[float, ...]
    residuals: tuple[float, ...]
    noise: float
    A_stderr: float
    alpha_stderr: float
    E_stderr: float
    E_interval: tuple[float, float] | None
    n_bootstrap: int
    huber: float | None = None
    issues: tuple[str, ...] = field(default=())
    confidence: float = CONFIDENCE

    @property
    def n_points(self) -> int:
        return len(self.x)

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
        """The law as text, e.g. `0.05 / (N/1e9)^1.02 + 3.4300`."""
        scale = f"{self.x_scale:g}".replace("e+0", "e").replace("e+", "e")
        unit = variable if self.x_scale == 1 else f"({variable}/{scale})"
        return f"{self.A:.4g} / {unit}^{self.alpha:.4g} + {self.E:.4f}"

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
            "noise": _finite_or_none(self.noise),
            "huber": self.huber,
            "x_scale": self.x_scale,
            "n_points": self.n_points,
            "x": list(self.x),
            "loss": list(self.loss),
            "residuals": list(self.residuals),
            "well_conditioned": self.well_conditioned,
            "issues": list(self.issues),
            "formula": self.formula(),
        }


def fit_power_law(
    x: Sequence[float] | np.ndarray,
    loss: Sequence[float] | np.ndarray,
    *,
    scale: float = 1.0,
    huber: float | None = None,
    noise: float | None = None,
    n_bootstrap: int = 500,
    seed: int = 0,
    multistart: bool = True,
) -> PowerLawFit:
    """Fit `loss = A / (x / scale)^alpha + E` with alpha > 0 and A, E >= 0.

    `scale`: the unit of x in the law (1e9 for N or D in billions, as in the paper; 1 for ensemble size K).
    `huber`: a residual size (in loss units) beyond which residuals count linearly, not squared, so one outlier
    cannot drag the fit; None for least squares. `noise`: the standard deviation of one loss measurement, for the
    bootstrap; default: estimated from the residuals (needs at least 4 points). `multistart`: also start from the
    other local minima of an exponent grid and the paper's p0 (False: the grid's best start only, as the bootstrap's
    refits do; for refits of slightly changed losses).
    Warns `ScalingFitWarning` and sets `well_conditioned=False` when the loss does not fall with x, or when the
    asymptote or exponent runs into a bound or is no better determined than the spread of the losses.
    """
    x_arr, y_arr = _validated(x, loss, scale)
    if huber is not None and not (math.isfinite(huber) and huber > 0):
        raise InputError(f"huber must be a positive residual size in loss units (or None), got {huber}")
    if noise is not None and not (math.isfinite(noise) and noise >= 0):
        raise InputError(f"noise must be a standard deviation >= 0 (or None), got {noise}")
    if n_bootstrap < 0:
        raise InputError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    u, geo = _normalized(x_arr / scale)
    params = _fit(u, y_arr, huber, geo, multistart=multistart)
    fitted = _model(params, u)
    residuals = y_arr - fitted
    sigma = noise if noise is not None else _residual_scale(residuals, huber)
    dof = None if noise is not None else residuals.size - _N_PARAMS
    samples = _bootstrap(u, geo, fitted, sigma, dof, huber, n_bootstrap, seed)
    A, alpha, E = _unnormalized(params, geo)
    if samples:
        draws = np.array([_unnormalized(p, geo) for p in samples])
        A_se, alpha_se, E_se = robust_stderr(draws)
        E_interval: tuple[float, float] | None = percentile_interval(draws[:, 2])
    else:
        A_se = alpha_se = E_se = math.nan
        E_interval = None
    issues = _issues(u, y_arr, params, float(E_se))
    if issues:
        warnings.warn(
            f"power-law fit to {len(y_arr)} points is ill-conditioned: {'; '.join(issues)}",
            ScalingFitWarning,
            stacklevel=2,
        )
    return PowerLawFit(
        A=A,
        alpha=alpha,
        E=E,
        x_scale=float(scale),
        x=tuple(float(v) for v in x_arr),
        loss=tuple(float(v) for v in y_arr),
        residuals=tuple(float(v) for v in residuals),
        noise=float(sigma),
        A_stderr=float(A_se),
        alpha_stderr=float(alpha_se),
        E_stderr=float(E_se),
        E_interval=E_interval,
        n_bootstrap=len(samples),
        huber=huber,
        issues=issues,
    )


def data_efficiency(loss: float, D: float, reference_fit: PowerLawFit) -> float:
    """D_eff / D, where D_eff is the data the reference recipe's data law `reference_fit` needs to reach `loss`.

    Inverts `L(D) = A / (D / x_scale)^alpha + E`: `D_eff = x_scale * (A / (L - E))^(1/alpha)`. A loss at or below
    the reference's asymptote E is out of its reach with any data: `math.inf` (unbounded).
    """
    if not (math.isfinite(loss) and loss > 0):
        raise InputError(f"loss must be a finite positive number, got {loss}")
    if not (math.isfinite(D) and D > 0):
        raise InputError(f"D must be a positive token count, got {D}")
    if not reference_fit.well_conditioned:
        warnings.warn(
            f"data efficiency over an ill-conditioned reference law: {'; '.join(reference_fit.issues)}",
            ScalingFitWarning,
            stacklevel=2,
        )
    gap = loss - reference_fit.E
    if gap <= 0:
        return math.inf
    d_eff = reference_fit.x_scale * (reference_fit.A / gap) ** (1 / reference_fit.alpha)
    return d_eff / D


def fit_parameters(
    x: np.ndarray, loss: np.ndarray, *, scale: float = 1.0, huber: float | None = None, multistart: bool = True
) -> tuple[float, float, float]:
    """The bare point estimate (A, alpha, E) of `fit_power_law`, for resampling loops: no input checks, no
    uncertainty, no warnings; with `multistart=False`, one start (the best alpha of the grid)."""
    u, geo = _normalized(np.asarray(x, dtype=float) / scale)
    return _unnormalized(_fit(u, np.asarray(loss, dtype=float), huber, geo, multistart=multistart), geo)


def _validated(x: Any, loss: Any, scale: float) -> tuple[np.ndarray, np.ndarray]:
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
    if distinct < _N_PARAMS:
        raise InputError(
            f"a power law A / x^alpha + E has {_N_PARAMS} parameters and needs points at >= {_N_PARAMS} distinct x; "
            f"got {distinct}"
        )
    order = np.argsort(x_arr, kind="stable")
    return x_arr[order], y_arr[order]


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
    z = u[None, :] ** -_ALPHA_GRID[:, None]
    z_mean, y_mean = z.mean(axis=1), y.mean()
    z_var = ((z - z_mean[:, None]) ** 2).mean(axis=1)
    a = ((z - z_mean[:, None]) * (y - y_mean)).mean(axis=1) / np.maximum(z_var, 1e-300)
    e = y_mean - a * z_mean
    # Project onto the constraints: A < 0 -> a flat line at the mean; E < 0 -> a pure power law through 0.
    flat = a < 0
    a, e = np.where(flat, 0.0, a), np.where(flat, y_mean, e)
    pure = e < 0
    a = np.where(pure, (z * y).sum(axis=1) / (z * z).sum(axis=1), a)
    e = np.where(pure, 0.0, e)
    cost = ((a[:, None] * z + e[:, None] - y) ** 2).sum(axis=1)
    return a, e, cost


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


def _fit(u: np.ndarray, y: np.ndarray, huber: float | None, geo: float, *, multistart: bool = True) -> np.ndarray:
    """Best log-parameters over the starts (lowest least-squares or Huber cost)."""
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


def _residual_scale(residuals: np.ndarray, huber: float | None) -> float:
    """Standard deviation of one loss from the residuals (NaN with no degrees of freedom left); robust with Huber."""
    dof = residuals.size - _N_PARAMS
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
    sigma: float,
    dof: int | None,
    huber: float | None,
    n_bootstrap: int,
    seed: int,
) -> list[np.ndarray]:
    """Log-parameters refitted to `fitted` + Gaussian noise, `n_bootstrap` times (none when sigma is unknown)."""
    if not math.isfinite(sigma) or n_bootstrap == 0:
        return []
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_bootstrap):
        y = fitted + rng.normal(0.0, noise_scale_draw(rng, sigma, dof), size=fitted.size)
        if np.all(y > 0):
            samples.append(_fit(u, y, huber, geo, multistart=False))
    return samples


def _issues(u: np.ndarray, y: np.ndarray, params: np.ndarray, e_stderr: float) -> tuple[str, ...]:
    """Why the points do not pin the law down (empty when they do)."""
    lower, upper = _bounds(y)
    issues = []
    fitted = _model(params, u)
    drop = fitted[0] - fitted[-1]
    if _rank_correlation(u, y) >= 0 or drop <= 1e-6 * float(y.mean()):
        # The other checks describe a law that has nothing to describe here.
        return ("loss does not fall with x, so no decreasing power law fits",)
    if math.exp(params[2]) < _NEGLIGIBLE_E * float(y.min()):
        issues.append("the asymptote E ran into its bound 0: the points show too little curvature to locate it")
    if params[1] <= lower[1] + 1e-6 or params[1] >= upper[1] - 1e-6:
        issues.append(f"the exponent alpha ran into its bound {ALPHA_BOUNDS}")
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
