"""The two-step limit over model size N and ensemble size K: K -> inf at each N, then N -> inf.

A law in K over fewer than `FREE_K_EXPONENT_MIN` member counts fixes its exponent at 1 (the paper: loss falls about as
1/K), since three free parameters fitted to 3-4 noisy points extrapolate wildly; from that many on, all three are
free (`fit_k_law`).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hf_infcompute.errors import InputError
from hf_infcompute.scaling.power_law import (
    CONFIDENCE,
    Noise,
    PowerLawFit,
    ScalingFitWarning,
    fit_parameters,
    fit_power_law,
    noise_scale_draw,
    percentile_interval,
    robust_stderr,
)

JointPoints = Mapping[float, Mapping[float, float]] | Iterable[tuple[float, ...]] | pd.DataFrame
# Member counts from which a K-law's exponent is fitted; below, it is fixed at `K_EXPONENT` (the loss of averaged
# logits of k exchangeable members falls as 1/k to leading order, as the paper measures). From 5 the three parameters
# are free, and the looser limit that a free exponent gives is carried into every interval.
FREE_K_EXPONENT_MIN = 5
K_EXPONENT = 1.0
# Distinct member counts a K-law needs: 2 with the exponent fixed (A and E), `FREE_K_EXPONENT_MIN` to free it.
MIN_K_POINTS = 2


def fit_k_law(
    k: Iterable[float] | np.ndarray,
    loss: Iterable[float] | np.ndarray,
    *,
    noise: Noise | None = None,
    noise_dof: int | None = None,
    k_scale: float = 1.0,
    huber: float | None = None,
    n_bootstrap: int = 500,
    seed: int = 0,
    multistart: bool = True,
) -> PowerLawFit:
    """The law `loss = B / K^beta + E_K` over ensemble sizes K (`fit_power_law`): beta fixed at `K_EXPONENT` with
    fewer than `FREE_K_EXPONENT_MIN` distinct K (a note says so), else fitted."""
    k_arr = np.asarray(list(k), dtype=float)
    counts = np.unique(k_arr).size
    fixed = counts < FREE_K_EXPONENT_MIN
    fit = fit_power_law(
        k_arr,
        np.asarray(list(loss), dtype=float),
        scale=k_scale,
        huber=huber,
        noise=noise,
        noise_dof=noise_dof,
        alpha=K_EXPONENT if fixed else None,
        n_bootstrap=n_bootstrap,
        seed=seed,
        multistart=multistart,
    )
    if not fixed:
        return fit
    note = (
        f"alpha fixed at {K_EXPONENT:g}: {counts} member counts, fewer than the {FREE_K_EXPONENT_MIN} that free it "
        "(the paper: loss falls about as 1/K)"
    )
    return replace(fit, notes=(note, *fit.notes))


@dataclass(frozen=True)
class MemberLimit:
    """A member rule's K -> inf asymptote `E` through its ensembles of the first 1..K members, its standard error
    `stderr` given the members' seed noise (NaN: unknown), that noise's degrees of freedom `dof`, and the loss of its
    largest ensemble `largest`."""

    E: float
    stderr: float
    dof: int | None
    largest: float

    @property
    def interval(self) -> tuple[float, float] | None:
        """E +- the t quantile on `dof` (normal where unknown) times `stderr`; None without a standard error."""
        if not math.isfinite(self.stderr):
            return None
        half = _quantile(self.dof) * self.stderr
        return self.E - half, self.E + half


def member_limit(
    k: Iterable[float],
    loss: Iterable[float],
    *,
    member_sd: float | None = None,
    member_dof: int | None = None,
    multistart: bool = True,
) -> MemberLimit:
    """A member rule's K -> inf asymptote (the paper picks member hyperparameters by it, where the ranking at small K
    can flip): the law in K through the rule's ensembles of the first 1..K members (`fit_k_law`), or its largest
    ensemble's loss where there are too few member counts for a law. `member_sd`: the seed-to-seed sd of one
    member's loss (on `member_dof` degrees of freedom), which gives the asymptote its standard error
    (`nested_asymptote_stderr`). Fit warnings are not raised: the report shows each fit and its issues."""
    k_arr, loss_arr = np.asarray(list(k), dtype=float), np.asarray(list(loss), dtype=float)
    largest = float(loss_arr[np.argmax(k_arr)])
    if np.unique(k_arr).size < MIN_K_POINTS + 1:
        return MemberLimit(largest, math.nan, member_dof, largest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScalingFitWarning)
        fit = fit_k_law(k_arr, loss_arr, n_bootstrap=0, multistart=multistart)
    stderr = math.nan
    if member_sd is not None and math.isfinite(member_sd) and member_sd > 0:
        stderr = nested_asymptote_stderr(fit, member_sd)
    return MemberLimit(fit.E, stderr, member_dof, largest)


def nested_asymptote_stderr(fit: PowerLawFit, member_sd: float) -> float:
    """The standard error of a K-law's asymptote fitted by least squares to the ensembles of the first 1..K of the
    same members, each member's loss off by seed noise of sd `member_sd`. The ensemble of the first k members is off
    its law by about the mean of their k deviations, so two nested ensembles j, k share noise: covariance
    sd^2 / max(j, k). The least-squares estimate's covariance is then the sandwich (J'J)^-1 J' S J (J'J)^-1, J the
    law's Jacobian at the fit (the delta method; no closed form in scipy takes a given non-diagonal noise
    covariance). Infinite where the points do not determine the parameters."""
    k = np.asarray(fit.x, dtype=float) / fit.x_scale
    decay = k ** (-fit.alpha)
    columns = [decay] + ([] if fit.alpha_fixed else [-fit.A * decay * np.log(k)]) + [np.ones_like(k)]
    jacobian = np.column_stack(columns)
    covariance = member_sd**2 / np.maximum.outer(k, k)
    try:
        bread = np.linalg.inv(jacobian.T @ jacobian)
    except np.linalg.LinAlgError:
        return math.inf
    variance = float((bread @ jacobian.T @ covariance @ jacobian @ bread)[-1, -1])
    return math.sqrt(variance) if math.isfinite(variance) and variance >= 0 else math.inf


def choose_member_rule(limits: Mapping[str, MemberLimit]) -> tuple[str, str]:
    """The member rule to ensemble, and why: the one with the lowest K -> inf asymptote where it lies below every
    other's by more than their joint noise (the t quantile on the members' degrees of freedom times the root sum of
    both standard errors); else, the asymptotes being within their noise of each other (or their noise unknown),
    the one whose largest ensemble measured lowest, the nearest measured stand-in for the limit. Extrapolating
    a K-law from unstable members can put its asymptote far below a stable rule's by chance; the measured loss
    does not reward that."""
    if not limits:
        raise InputError("choose_member_rule needs at least one member rule")
    lowest = min(limits, key=lambda rule: (math.isnan(limits[rule].E), limits[rule].E))
    best = limits[lowest]
    beyond = all(
        _quantile(_dof(best, other)) * math.hypot(best.stderr, other.stderr) < other.E - best.E
        for rule, other in limits.items()
        if rule != lowest
    )
    if beyond:
        return lowest, "its K -> inf asymptote, lower than the others' beyond their noise"
    measured = min(limits, key=lambda rule: limits[rule].largest)
    return measured, "its largest ensemble's loss (the K -> inf asymptotes lie within their noise of each other)"


def _dof(*limits: MemberLimit) -> int | None:
    dofs = [limit.dof for limit in limits if limit.dof]
    return min(dofs) if dofs else None


def _quantile(dof: int | None) -> float:
    """The two-sided `CONFIDENCE` quantile of t on `dof` degrees of freedom (the normal's where None)."""
    tail = 0.5 + CONFIDENCE / 2
    return float(stats.t.ppf(tail, dof) if dof else stats.norm.ppf(tail))


@dataclass(frozen=True)
class JointFit:
    """Both stages of the limit and its result.

    `k_fits[N]` is the law in K at model size N (`fit_k_law`: exponent fixed at 1 below `FREE_K_EXPONENT_MIN`
    member counts); `n_fit` the law in N over their asymptotes `E_K(N)`, each given its K-fit's standard error as
    its noise; `E` the final asymptote (`n_fit.E`). `E_stderr` and `E_interval`
    carry the noise of the raw losses through both stages: each bootstrap replicate redraws every loss from its
    K-fit plus Gaussian noise (each point's own standard deviation when the points carry one, else the given scale,
    else the residual scale pooled over the K-fits, drawn per replicate as in `PowerLawFit`), refits every K-law,
    and refits the N-law to the new asymptotes. (`n_fit`'s own interval instead treats the asymptotes as the
    data.) Nested ensembles (k = 1..K of the same members) share noise, so these intervals are on the narrow
    side. `noise`: the one scale used, or one per point (by N, then K).
    """

    k_fits: dict[float, PowerLawFit]
    n_fit: PowerLawFit
    E_stderr: float
    E_interval: tuple[float, float] | None
    noise: float | tuple[float, ...]
    n_bootstrap: int
    confidence: float = CONFIDENCE

    @property
    def E(self) -> float:
        return self.n_fit.E

    @property
    def issues(self) -> tuple[str, ...]:
        per_n = [f"K-fit at N={n:.4g}: {issue}" for n, fit in self.k_fits.items() for issue in fit.issues]
        return (*per_n, *(f"N-fit: {issue}" for issue in self.n_fit.issues))

    @property
    def well_conditioned(self) -> bool:
        return not self.issues

    @property
    def bound(self) -> tuple[float, PowerLawFit] | None:
        """Where the law in N does not locate `E` but every K-fit is sound: the largest size N and its K -> inf
        fit, whose limit bounds `E` from above (`E` is the N -> inf limit of the K -> inf limits, below each of them
        wherever they fall in N, as a law `A / N^alpha + E` does); None when `E` is located or no bound holds."""
        if self.n_fit.well_conditioned or not self.k_fits:
            return None
        if any(not fit.well_conditioned for fit in self.k_fits.values()):
            return None
        largest = max(self.k_fits)
        return largest, self.k_fits[largest]

    def to_dict(self) -> dict[str, Any]:
        return {
            "E": self.E,
            "E_stderr": self.E_stderr if math.isfinite(self.E_stderr) else None,
            "E_interval": list(self.E_interval) if self.E_interval else None,
            "confidence": self.confidence,
            "uncertainty": "two-stage parametric bootstrap" if self.E_interval else "unavailable",
            "n_bootstrap": self.n_bootstrap,
            "noise": list(self.noise) if isinstance(self.noise, tuple) else _finite_or_none(self.noise),
            "well_conditioned": self.well_conditioned,
            "issues": list(self.issues),
            "k_fits": [{"N": n, **fit.to_dict()} for n, fit in self.k_fits.items()],
            "n_fit": self.n_fit.to_dict(),
        }


def joint_asymptote(
    points: JointPoints,
    *,
    n_scale: float = 1e9,
    k_scale: float = 1.0,
    huber: float | None = None,
    noise: float | None = None,
    noise_dof: int | None = None,
    n_bootstrap: int = 500,
    seed: int = 0,
    multistart: bool = True,
) -> JointFit:
    """The limit N, K -> inf of loss(N, K): fit `loss = B / K^beta + E_K(N)` at each N (`fit_k_law`), then
    `E_K(N) = A / N^alpha + E` over N (the paper's joint scaling recipe).

    `points`: {N: {K: loss}}, rows (N, K, loss) or (N, K, loss, sd), or a DataFrame whose columns are N, K, loss
    and optionally sd, in that order; sd is the standard deviation of that loss (its noise). Needs >= 2 distinct K
    at each of >= 3 sizes N. `n_scale`, `k_scale`: units of N and K in the laws. `noise`: one standard deviation
    for every loss, when the points carry none (default: pooled from the residuals of the K-fits). `noise_dof`: the
    degrees of freedom of the given noise when it is itself an estimate (`fit_power_law`). `multistart`: as
    `fit_power_law`'s, for both steps.
    """
    curves, sds = _curves(points)
    if sds and noise is not None:
        raise InputError("the joint points carry their own sd: give noise= only for points without one")
    short = {n: len(ks) for n, ks in curves.items() if len(ks) < MIN_K_POINTS}
    if short:
        sizes = ", ".join(f"N={n:.4g} ({count} K)" for n, count in short.items())
        raise InputError(
            f"each N needs losses at >= {MIN_K_POINTS} ensemble sizes K for its K -> inf limit; too few at {sizes}"
        )
    if len(curves) < 3:
        raise InputError(f"the N -> inf limit needs K-curves at >= 3 model sizes N, got {len(curves)}")
    sizes = sorted(curves)
    k_fits = {
        n: fit_k_law(
            list(curves[n]),
            list(curves[n].values()),
            noise=list(sds[n].values()) if sds else noise,
            noise_dof=noise_dof,
            k_scale=k_scale,
            huber=huber,
            n_bootstrap=n_bootstrap,
            seed=seed,
            multistart=multistart,
        )
        for n in sizes
    }
    # Each K -> inf asymptote's own standard error is its noise in the law over N (where every K-fit has one):
    # the residuals of 3-4 asymptotes leave 0-1 degrees of freedom to estimate it from.
    limit_sds = [k_fits[n].E_stderr for n in sizes]
    n_fit = fit_power_law(
        sizes,
        [k_fits[n].E for n in sizes],
        scale=n_scale,
        huber=huber,
        noise=limit_sds if all(math.isfinite(sd) and sd > 0 for sd in limit_sds) else None,
        n_bootstrap=n_bootstrap,
        seed=seed,
        multistart=multistart,
    )
    if sds:
        sigma: float | tuple[float, ...] = tuple(sd for n in sizes for sd in sds[n].values())
        dof = noise_dof
    elif noise is not None:
        sigma, dof = noise, noise_dof
    else:
        sigma, dof = _pooled_noise(k_fits.values())
    draws = _propagate(k_fits, sizes, sigma, dof, n_scale=n_scale, huber=huber, n_bootstrap=n_bootstrap, seed=seed)
    if draws.size > 1:
        stderr, interval = float(robust_stderr(draws)), percentile_interval(draws)
    else:
        stderr, interval = math.nan, None
    return JointFit(
        k_fits=k_fits,
        n_fit=n_fit,
        E_stderr=stderr,
        E_interval=interval,
        noise=sigma if isinstance(sigma, tuple) else float(sigma),
        n_bootstrap=int(draws.size),
    )


def _curves(points: JointPoints) -> tuple[dict[float, dict[float, float]], dict[float, dict[float, float]]]:
    """{N: {K: loss}} from any accepted form, and {N: {K: sd}} when the points carry an sd (else {}); a repeated
    (N, K) keeps its lowest loss."""
    if isinstance(points, pd.DataFrame):
        if points.shape[1] not in (3, 4):
            raise InputError(f"a DataFrame of joint points needs 3 or 4 columns (N, K, loss[, sd]), got {list(points)}")
        points = points.itertuples(index=False, name=None)
    if isinstance(points, Mapping):
        points = [(n, k, loss) for n, by_k in points.items() for k, loss in by_k.items()]
    curves: dict[float, dict[float, float]] = defaultdict(dict)
    sds: dict[float, dict[float, float]] = defaultdict(dict)
    widths = set()
    for row in points:
        if len(row) not in (3, 4):
            raise InputError(f"joint points are (N, K, loss) or (N, K, loss, sd) rows, got {row!r}")
        widths.add(len(row))
        n, k, loss = (float(v) for v in row[:3])
        if not all(math.isfinite(v) and v > 0 for v in (n, k, loss)):
            raise InputError(f"N, K and loss must be finite positive numbers, got (N={n}, K={k}, loss={loss})")
        if len(row) == 4:
            sd = float(row[3])
            if not (math.isfinite(sd) and sd >= 0):
                raise InputError(f"the sd of a joint point must be finite and >= 0, got {sd} at (N={n}, K={k})")
            if loss < curves[n].get(k, math.inf):
                sds[n][k] = sd
        curves[n][k] = min(loss, curves[n].get(k, math.inf))
    if len(widths) > 1:
        raise InputError("either every joint point carries an sd (N, K, loss, sd) or none does")
    ordered = {n: dict(sorted(by_k.items())) for n, by_k in curves.items()}
    return ordered, {n: {k: sds[n][k] for k in ordered[n]} for n in ordered} if sds else {}


def _pooled_noise(fits: Iterable[PowerLawFit]) -> tuple[float, int]:
    """Residual standard deviation pooled over fits, and its degrees of freedom (NaN when there are none)."""
    squares, dof = 0.0, 0
    for fit in fits:
        if fit.n_points > fit.n_free:
            squares += float(np.sum(np.square(fit.residuals)))
            dof += fit.n_points - fit.n_free
    return (math.sqrt(squares / dof) if dof else math.nan), dof


def _propagate(
    k_fits: dict[float, PowerLawFit],
    sizes: list[float],
    sigma: float | tuple[float, ...],
    dof: int | None,
    *,
    n_scale: float,
    huber: float | None,
    n_bootstrap: int,
    seed: int,
) -> np.ndarray:
    """Final asymptotes of `n_bootstrap` replicates, each redrawing all losses (noise `sigma`, one or one per point
    by N then K, scaled by one draw per replicate when it is an estimate) and refitting both stages."""
    per_point = np.broadcast_to(np.asarray(sigma, dtype=float), (sum(k_fits[n].n_points for n in sizes),))
    if not np.all(np.isfinite(per_point)) or n_bootstrap == 0:
        return np.array([])
    bounds = np.cumsum([0] + [k_fits[n].n_points for n in sizes])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_bootstrap):
        scale = noise_scale_draw(rng, 1.0, dof)
        asymptotes = []
        for i, n in enumerate(sizes):
            fit = k_fits[n]
            sd = per_point[bounds[i] : bounds[i + 1]] * scale
            loss = fit.predict(fit.x) + rng.normal(0.0, 1.0, size=fit.n_points) * sd
            if np.any(loss <= 0):
                break
            fixed = fit.alpha if fit.alpha_fixed else None
            asymptotes.append(
                fit_parameters(fit.x, loss, scale=fit.x_scale, huber=huber, multistart=False, alpha=fixed)[2]
            )
        else:
            draws.append(fit_parameters(sizes, asymptotes, scale=n_scale, huber=huber, multistart=False)[2])
    return np.array(draws)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
