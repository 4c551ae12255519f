"""How sure a finding is: paired bootstrap intervals over validation rows.

Every run, ensemble and student records the loss of each validation row (`val_sequence_losses`), and all runs on one
corpus and tokenizer share those rows. Two models are then compared on the same rows: the interval of the mean of
their per-row differences (`paired_difference`, scipy's bootstrap) says whether a gap is larger than what the choice
of validation rows alone could produce. Quantities that come out of fits (asymptotes, data-efficiency multipliers)
get theirs by resampling the rows once for all runs and redoing the whole scaling analysis on each resample
(`ResampledAnalysis`), selection of the best runs included.

What the intervals do not cover: training noise (another seed could land elsewhere) and the optimism of choosing the
best run on the same rows it is scored on. They say how well the validation set measures the models trained.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hf_infcompute.scaling.analysis import REQUIRED_COLUMNS, SIZE_COLUMNS, ScalingReport, build_report
from hf_infcompute.scaling.power_law import ScalingFitWarning

CONFIDENCE = 0.95
# Resamples of the paired bootstrap (cheap: a mean per resample) and of the whole scaling analysis (a few fits each).
PAIRED_RESAMPLES = 4000
ANALYSIS_RESAMPLES = 200
SEQUENCES = "val_sequence_losses"
# The record fields the scaling analysis reads (`hf_infcompute.scaling.analysis`).
ANALYSIS_COLUMNS = (
    *REQUIRED_COLUMNS,
    *(column for column in SIZE_COLUMNS if column not in REQUIRED_COLUMNS and column != "runs"),
    "corpus",
    "k",
)

YES, NO, INCONCLUSIVE, NOT_TESTED = "yes", "no", "inconclusive", "not tested"


@dataclass(frozen=True)
class Interval:
    """An estimate with its central `CONFIDENCE` interval; positive means the paper's direction."""

    estimate: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """*yes* when the interval excludes zero in the paper's direction, *no* the other way, else *inconclusive*."""
        if self.low > 0:
            return YES
        if self.high < 0:
            return NO
        return INCONCLUSIVE

    def __str__(self) -> str:
        return f"{self.estimate:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired_difference(
    worse: Sequence[float], better: Sequence[float], *, seed: int = 0, resamples: int = PAIRED_RESAMPLES
) -> Interval:
    """The mean over rows of `worse - better` (per-row losses of two models on the same rows) with its paired
    bootstrap interval: positive when `better` is lower, as the claim expects."""
    worse_rows, better_rows = np.asarray(worse, dtype=float), np.asarray(better, dtype=float)
    if worse_rows.shape != better_rows.shape or worse_rows.size < 2:
        raise ValueError(f"paired rows must match and number at least 2, got {worse_rows.shape}, {better_rows.shape}")
    gaps = worse_rows - better_rows
    if np.ptp(gaps) == 0:  # one value everywhere: nothing to resample (scipy would warn of a degenerate sample)
        return Interval(float(gaps[0]), float(gaps[0]), float(gaps[0]))
    result = stats.bootstrap(
        (gaps,),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=resamples,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return Interval(float(gaps.mean()), float(low), float(high))


def combined_verdict(verdicts: Sequence[str]) -> str:
    """A claim made at every N (or preset): *yes* when each part is, *no* when any part is, else *inconclusive*."""
    if not verdicts:
        return NOT_TESTED
    if all(v == YES for v in verdicts):
        return YES
    if any(v == NO for v in verdicts):
        return NO
    return INCONCLUSIVE


class SequenceLosses:
    """The per-row validation losses of the study's runs, by run id."""

    def __init__(self, runs: pd.DataFrame) -> None:
        self._rows: dict[str, np.ndarray] = {}
        self._fingerprints: dict[str, str] = {}
        if runs.empty or SEQUENCES not in runs:
            return
        for row in runs.itertuples(index=False):
            losses = getattr(row, SEQUENCES)
            if isinstance(losses, list) and losses:
                self._rows[row.run_id] = np.asarray(losses, dtype=float)
                self._fingerprints[row.run_id] = str(getattr(row, "validation_fingerprint", ""))

    def get(self, run_id: str | None) -> np.ndarray | None:
        return self._rows.get(run_id) if run_id else None

    def compare(self, worse_id: str | None, better_id: str | None, *, seed: int = 0) -> Interval | None:
        """`paired_difference` of two runs; None when either lacks rows or they were scored on different rows."""
        worse, better = self.get(worse_id), self.get(better_id)
        if worse is None or better is None or worse.shape != better.shape:
            return None
        if self._fingerprints.get(worse_id) != self._fingerprints.get(better_id):
            return None
        return paired_difference(worse, better, seed=seed)


class ResampledAnalysis:
    """The scaling analysis redone on `resamples` bootstrap resamples of the validation rows (the same row draw for
    every run scored on the same rows), for intervals of what the fits yield. Its refits start from the best point
    of an exponent grid only, as the fits' own bootstrap refits do, and draw no bootstrap of their own."""

    def __init__(self, runs: pd.DataFrame, *, resamples: int = ANALYSIS_RESAMPLES, seed: int = 0) -> None:
        self.reports: list[ScalingReport] = []
        if runs.empty or SEQUENCES not in runs:
            return
        scored = runs[SEQUENCES].map(lambda losses: isinstance(losses, list) and len(losses) > 1)
        if not scored.any():
            return
        rng = np.random.default_rng(seed)
        draws = {}  # validation fingerprint -> [resamples, rows] row indices
        for fingerprint, group in runs[scored].groupby("validation_fingerprint", sort=True):
            rows = len(group[SEQUENCES].iloc[0])
            draws[fingerprint] = rng.integers(0, rows, size=(resamples, rows))
        means = pd.DataFrame(index=runs.index, columns=range(resamples), dtype=float)
        for index in runs.index[scored]:
            losses = np.asarray(runs.at[index, SEQUENCES], dtype=float)
            means.loc[index] = losses[draws[runs.at[index, "validation_fingerprint"]]].mean(axis=1)
        narrow = runs[[column for column in ANALYSIS_COLUMNS if column in runs]]  # the analysis reads no more
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ScalingFitWarning)  # the main analysis already warned of its fits
            for draw in range(resamples):
                resampled = narrow.assign(val_loss=means[draw].where(scored, runs["val_loss"]))
                self.reports.append(build_report(resampled, n_bootstrap=0, seed=seed + draw, multistart=False))

    def interval(self, quantity: Callable[[ScalingReport], float | None], estimate: float) -> Interval | None:
        """The percentile interval of `quantity` over the resamples around `estimate` (its value on all rows); None
        when fewer than 90% of the resamples yield a value (a fit they could not make). Infinite values (a loss out
        of a law's reach) are kept: the interval is then unbounded on that side."""
        values = [quantity(report) for report in self.reports]
        found = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
        if not self.reports or found.size < 0.9 * len(self.reports):
            return None
        tail = (1 - CONFIDENCE) / 2
        low, high = np.quantile(found, [tail, 1 - tail], method="inverted_cdf")  # order statistics: inf stays inf
        return Interval(estimate, float(low), float(high))
