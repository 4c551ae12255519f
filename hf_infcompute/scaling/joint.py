"""The two-step limit over model size N and ensemble size K: K -> inf at each N, then N -> inf."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hf_infcompute.errors import InputError
from hf_infcompute.scaling.power_law import (
    CONFIDENCE,
    PowerLawFit,
    fit_parameters,
    fit_power_law,
    noise_scale_draw,
    percentile_interval,
    robust_stderr,
)

JointPoints = Mapping[float, Mapping[float, float]] | Iterable[tuple[float, float, float]] | pd.DataFrame


@dataclass(frozen=True)
class JointFit:
    """Both stages of the limit and its result.

    `k_fits[N]` is the law in K at model size N; `n_fit` the law in N over their asymptotes `E_K(N)`; `E` the
    final asymptote (`n_fit.E`). `E_stderr` and `E_interval` carry the noise of the raw losses through both
    stages: each bootstrap replicate redraws every loss from its K-fit plus Gaussian noise (of the given scale, or
    of the residual scale pooled over the K-fits, drawn per replicate as in `PowerLawFit`), refits every K-law,
    and refits the N-law to the new asymptotes. (`n_fit`'s own interval instead treats the asymptotes as the
    data.) Nested ensembles (k = 1..K of the same members) share noise, so these intervals are on the narrow
    side.
    """

    k_fits: dict[float, PowerLawFit]
    n_fit: PowerLawFit
    E_stderr: float
    E_interval: tuple[float, float] | None
    noise: float
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "E": self.E,
            "E_stderr": self.E_stderr if math.isfinite(self.E_stderr) else None,
            "E_interval": list(self.E_interval) if self.E_interval else None,
            "confidence": self.confidence,
            "uncertainty": "two-stage parametric bootstrap" if self.E_interval else "unavailable",
            "n_bootstrap": self.n_bootstrap,
            "noise": self.noise if math.isfinite(self.noise) else None,
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
    n_bootstrap: int = 500,
    seed: int = 0,
    multistart: bool = True,
) -> JointFit:
    """The limit N, K -> inf of loss(N, K): fit `loss = B / K^beta + E_K(N)` at each N, then
    `E_K(N) = A / N^alpha + E` over N (the paper's joint scaling recipe).

    `points`: {N: {K: loss}}, rows (N, K, loss), or a DataFrame whose three columns are N, K and loss, in that
    order. Needs >= 3 distinct K at each of >= 3 sizes N. `n_scale`, `k_scale`: units of N and K in the laws.
    `noise`: the standard deviation of one loss (default: pooled from the residuals of the K-fits). `multistart`:
    as `fit_power_law`'s, for both steps.
    """
    curves = _curves(points)
    short = {n: len(ks) for n, ks in curves.items() if len(ks) < 3}
    if short:
        sizes = ", ".join(f"N={n:.4g} ({count} K)" for n, count in short.items())
        raise InputError(f"each N needs losses at >= 3 ensemble sizes K for its K -> inf limit; too few at {sizes}")
    if len(curves) < 3:
        raise InputError(f"the N -> inf limit needs K-curves at >= 3 model sizes N, got {len(curves)}")
    sizes = sorted(curves)
    k_fits = {
        n: fit_power_law(
            list(curves[n]),
            list(curves[n].values()),
            scale=k_scale,
            huber=huber,
            noise=noise,
            n_bootstrap=n_bootstrap,
            seed=seed,
            multistart=multistart,
        )
        for n in sizes
    }
    n_fit = fit_power_law(
        sizes,
        [k_fits[n].E for n in sizes],
        scale=n_scale,
        huber=huber,
        n_bootstrap=n_bootstrap,
        seed=seed,
        multistart=multistart,
    )
    sigma, dof = (noise, None) if noise is not None else _pooled_noise(k_fits.values())
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
        noise=float(sigma),
        n_bootstrap=int(draws.size),
    )


def _curves(points: JointPoints) -> dict[float, dict[float, float]]:
    """{N: {K: loss}} from any accepted form; a repeated (N, K) keeps its lowest loss."""
    if isinstance(points, pd.DataFrame):
        if points.shape[1] != 3:
            raise InputError(f"a DataFrame of joint points needs exactly 3 columns (N, K, loss), got {list(points)}")
        points = points.itertuples(index=False, name=None)
    if isinstance(points, Mapping):
        points = [(n, k, loss) for n, by_k in points.items() for k, loss in by_k.items()]
    curves: dict[float, dict[float, float]] = defaultdict(dict)
    for row in points:
        if len(row) != 3:
            raise InputError(f"joint points are (N, K, loss) triples, got {row!r}")
        n, k, loss = (float(v) for v in row)
        if not all(math.isfinite(v) and v > 0 for v in (n, k, loss)):
            raise InputError(f"N, K and loss must be finite positive numbers, got (N={n}, K={k}, loss={loss})")
        curves[n][k] = min(loss, curves[n].get(k, math.inf))
    return {n: dict(sorted(by_k.items())) for n, by_k in curves.items()}


def _pooled_noise(fits: Iterable[PowerLawFit]) -> tuple[float, int]:
    """Residual standard deviation pooled over fits, and its degrees of freedom (NaN when there are none)."""
    squares, dof = 0.0, 0
    for fit in fits:
        if fit.n_points > 3:
            squares += float(np.sum(np.square(fit.residuals)))
            dof += fit.n_points - 3
    return (math.sqrt(squares / dof) if dof else math.nan), dof


def _propagate(
    k_fits: dict[float, PowerLawFit],
    sizes: list[float],
    sigma: float,
    dof: int | None,
    *,
    n_scale: float,
    huber: float | None,
    n_bootstrap: int,
    seed: int,
) -> np.ndarray:
    """Final asymptotes of `n_bootstrap` replicates, each redrawing all losses and refitting both stages."""
    if not math.isfinite(sigma) or n_bootstrap == 0:
        return np.array([])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_bootstrap):
        scale = noise_scale_draw(rng, sigma, dof)
        asymptotes = []
        for n in sizes:
            fit = k_fits[n]
            loss = fit.predict(fit.x) + rng.normal(0.0, scale, size=fit.n_points)
            if np.any(loss <= 0):
                break
            asymptotes.append(fit_parameters(fit.x, loss, scale=fit.x_scale, huber=huber, multistart=False)[2])
        else:
            draws.append(fit_parameters(sizes, asymptotes, scale=n_scale, huber=huber, multistart=False)[2])
    return np.array(draws)
