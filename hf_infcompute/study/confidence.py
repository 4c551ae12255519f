"""How sure a finding is: document-level bootstrap intervals with seed-to-seed noise inside every verdict.

Every run, ensemble and student records the loss of each row of two held-out splits (`val_sequence_losses`,
`test_sequence_losses`) and the document each row comes from (`*_sequence_documents`). Rows of one document are not
independent (a hard document is hard for all its rows), so every bootstrap here resamples documents with all their
rows (a cluster bootstrap), never rows: resampling rows would narrow every interval by the intra-document correlation.
Records without document ids (written before they were kept) are resampled by rows, and their intervals say so.

Searches and every other choice read the validation split; every reported loss, gap, fit and multiplier is measured
on the test split (`REPORT_SPLIT`), so that choosing an optimum does not flatter the loss it is reported with.

A gap between two trained models has two sources of noise: which documents were held out (`Gap.sampling_var`, from
the cluster bootstrap) and how the trainings landed (another seed would land elsewhere: `Gap.seed_var`, from the
seed sd that `hf_infcompute.study.seed_noise` measures on fresh seeds). A verdict is read from the interval of their
sum, with a t quantile on the seed sd's degrees of freedom (`Gap.interval`). Quantities that come out of fits
(asymptotes, data-efficiency multipliers) get theirs from the whole scaling analysis redone on document resamples and
seed-noise draws (`ResampledAnalysis`), selection of the best runs on validation included.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from hf_infcompute.scaling.analysis import NOISE_COLUMN, REQUIRED_COLUMNS, SIZE_COLUMNS, ScalingReport, build_report
from hf_infcompute.scaling.power_law import ScalingFitWarning, noise_scale_draw
from hf_infcompute.study.seed_noise import PointNoise
from hf_infcompute.study.spec import REPORT_RESAMPLES

CONFIDENCE = 0.95
FAMILY_ALPHA = 1 - CONFIDENCE
# Resamples of the paired bootstrap (cheap: one matrix product); the whole scaling analysis' (a few fits each) are
# the study recipe's `report_resamples` (default `REPORT_RESAMPLES`).
PAIRED_RESAMPLES = 4000

YES, NO, INCONCLUSIVE, NOT_TESTED = "yes", "no", "inconclusive", "not tested"


@dataclass(frozen=True)
class Split:
    """The record fields of one held-out split."""

    name: str
    loss: str
    rows: str
    documents: str
    fingerprint: str


VALIDATION = Split("validation", "val_loss", "val_sequence_losses", "val_sequence_documents", "validation_fingerprint")
TEST = Split("test", "test_loss", "test_sequence_losses", "test_sequence_documents", "test_fingerprint")
# The split every reported number is measured on; selection reads VALIDATION.
REPORT_SPLIT = TEST
# The record fields the scaling analysis reads (`hf_infcompute.scaling.analysis`).
ANALYSIS_COLUMNS = tuple(
    dict.fromkeys(
        (
            *REQUIRED_COLUMNS,
            *(column for column in SIZE_COLUMNS if column not in ("runs", "loss")),  # "loss": the analysis sets it
            "corpus",
            "k",
            "member_rule",  # which rule's ensembles the analysis keeps (`chosen_member_rules`)
            "members",  # whose losses give that choice its noise
            TEST.loss,
            NOISE_COLUMN,
        )
    )
)


def report_split(runs: pd.DataFrame) -> Split:
    """TEST when the records carry test rows, else VALIDATION (records written before the test split existed: then
    choices and reports share one split, and the report says so)."""
    if len(runs) and TEST.rows in runs and runs[TEST.rows].map(_is_rows).any():
        return TEST
    return VALIDATION


@dataclass(frozen=True)
class Interval:
    """An estimate with its central `CONFIDENCE` interval; positive means the paper's direction. `p_value`: the
    two-sided p-value of zero (NaN where not computed), for family-wise claims. `lower_bound`: the estimate is a
    lower bound on the quantity, not the quantity (it is at least this much: `low` is the bound's lower end, and
    nothing bounds the quantity from above, so its verdict is never **no**)."""

    estimate: float
    low: float
    high: float
    p_value: float = math.nan
    lower_bound: bool = False

    @property
    def verdict(self) -> str:
        """*yes* when the interval excludes zero in the paper's direction, *no* the other way, else *inconclusive*."""
        if self.low > 0:
            return YES
        if self.high < 0 and not self.lower_bound:
            return NO
        return INCONCLUSIVE

    def as_lower_bound(self) -> Interval:
        """This interval read as a lower bound on a quantity beyond it."""
        return replace(self, high=math.inf, lower_bound=True)

    def __str__(self) -> str:
        if self.lower_bound:
            return f">= {self.estimate:+.4f} [95%: >= {self.low:+.4f}]"
        return f"{self.estimate:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


class Documents:
    """The rows of one split grouped by document: `codes[row]` is the row's cluster, 0..`clusters`-1. Without
    document ids every row is its own cluster (`by_document` False)."""

    def __init__(self, documents: Sequence[int] | None, rows: int) -> None:
        if documents is not None and len(documents) == rows:
            _, self.codes = np.unique(np.asarray(documents), return_inverse=True)
            self.by_document = True
        else:
            self.codes = np.arange(rows)
            self.by_document = False
        self.clusters = int(self.codes.max()) + 1 if rows else 0
        self.sizes = np.bincount(self.codes, minlength=self.clusters).astype(float)

    def sums(self, rows: np.ndarray) -> np.ndarray:
        """Per-cluster sums of per-row `rows` ([..., rows] -> [..., clusters])."""
        rows = np.atleast_2d(rows)
        out = np.zeros((rows.shape[0], self.clusters))
        for line, values in enumerate(rows):
            out[line] = np.bincount(self.codes, weights=values, minlength=self.clusters)
        return out

    def weights(self, resamples: int, rng: np.random.Generator) -> np.ndarray:
        """[resamples, clusters] multiplicities of a document bootstrap: `clusters` documents drawn with
        replacement, each bringing all its rows."""
        return rng.multinomial(self.clusters, np.full(self.clusters, 1 / self.clusters), size=resamples).astype(float)

    def resampled_means(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The mean over rows of each resample ([..., rows] with [resamples, clusters] -> [..., resamples])."""
        return (self.sums(rows) @ weights.T) / (self.sizes @ weights.T)

    @property
    def unit(self) -> str:
        return "documents" if self.by_document else "rows (no document ids recorded)"


@dataclass(frozen=True)
class Gap:
    """A paired gap (worse minus better, positive in the paper's direction) and its noise: `sampling_var` over
    document resamples (`clusters` of them; `unit` documents or rows), `seed_var` of the two trainings (0 until
    `with_seed_noise`), `seed_dof` the degrees of freedom of the seed sd it came from."""

    estimate: float
    sampling_var: float
    clusters: int
    unit: str
    seed_var: float = 0.0
    seed_dof: int | None = None

    def with_seed_noise(self, seed_var: float, dof: int) -> Gap:
        return replace(self, seed_var=seed_var, seed_dof=dof)

    @property
    def sd(self) -> float:
        return math.sqrt(self.sampling_var + self.seed_var)

    @property
    def dof(self) -> int:
        """The t quantile's degrees of freedom: the seed sd's when seed noise is included (its estimate from few
        seeds is the rough part), else the clusters' less one."""
        return self.seed_dof if self.seed_dof else max(self.clusters - 1, 1)

    @property
    def interval(self) -> Interval:
        if math.isinf(self.sd):
            return Interval(self.estimate, -math.inf, math.inf, 1.0)
        if self.sd == 0:
            return Interval(self.estimate, self.estimate, self.estimate, 0.0 if self.estimate else 1.0)
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, self.dof) * self.sd
        p_value = float(2 * stats.t.sf(abs(self.estimate) / self.sd, self.dof))
        return Interval(self.estimate, self.estimate - half, self.estimate + half, p_value)

    @property
    def verdict(self) -> str:
        return self.interval.verdict

    def __str__(self) -> str:
        return str(self.interval)


def paired_gap(
    worse: Sequence[float],
    better: Sequence[float],
    documents: Sequence[int] | None = None,
    *,
    seed: int = 0,
    resamples: int = PAIRED_RESAMPLES,
) -> Gap:
    """The mean over rows of `worse - better` (per-row losses of two models on the same rows) and its variance over
    document resamples (`documents[row]`: the row's document; None resamples rows)."""
    worse_rows, better_rows = np.asarray(worse, dtype=float), np.asarray(better, dtype=float)
    if worse_rows.shape != better_rows.shape or worse_rows.size < 2:
        raise ValueError(f"paired rows must match and number at least 2, got {worse_rows.shape}, {better_rows.shape}")
    gaps = worse_rows - better_rows
    groups = Documents(documents, gaps.size)
    if groups.clusters < 2:  # one document: nothing to resample, so no interval (the gap is not judged)
        return Gap(float(gaps.mean()), math.inf, groups.clusters, groups.unit)
    means = groups.resampled_means(gaps, groups.weights(resamples, np.random.default_rng(seed)))[0]
    return Gap(float(gaps.mean()), float(means.var(ddof=1)), groups.clusters, groups.unit)


def paired_difference(
    worse: Sequence[float],
    better: Sequence[float],
    documents: Sequence[int] | None = None,
    *,
    seed: int = 0,
    resamples: int = PAIRED_RESAMPLES,
) -> Interval:
    """`paired_gap`'s interval from document sampling alone (for two views of the same models, where no training
    noise enters: e.g. one ensemble combined two ways)."""
    return paired_gap(worse, better, documents, seed=seed, resamples=resamples).interval


def holm_rejected(p_values: Sequence[float], alpha: float = FAMILY_ALPHA) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise error `alpha`."""
    order = np.argsort(p_values)
    rejected = [False] * len(p_values)
    for step, index in enumerate(order):
        if not p_values[index] <= alpha / (len(p_values) - step):
            break
        rejected[index] = True
    return rejected


def share_p_value(replicates: np.ndarray) -> float:
    """The two-sided p-value of zero read off a quantity's replicates: twice the share on the smaller side of zero."""
    return float(min(1.0, 2 * min((replicates <= 0).mean(), (replicates >= 0).mean())))


def family_p_values(replicates: np.ndarray) -> np.ndarray:
    """Single-step min-p adjusted p-values (Westfall and Young's resampling method) of the parts whose joint
    replicates are the columns of `replicates` [resamples, parts] (NaN: a replicate that could not compute that
    part). Each part's own p is `ResampledAnalysis.interval`'s (`share_p_value`). Each replicate's own p at a part
    is where it falls in that part's replicates (twice its smaller tail share), and a part's adjusted p is the share
    of replicates whose smallest own p over the parts is at most the part's p. Parts that share their noise (one
    asymptote against several) are adjusted far less than Holm's bound, which holds for any dependence; independent
    parts about as much. scipy has no resampling min-p (its `false_discovery_control` adjusts p-values alone,
    without their joint distribution), hence written here."""
    values = np.asarray(replicates, dtype=float)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(f"replicates must be [resamples, parts], got shape {values.shape}")
    resamples, parts = values.shape
    observed = np.ones(parts)
    own = np.ones((resamples, parts))
    for part in range(parts):
        column = values[:, part]
        present = ~np.isnan(column)
        found = np.sort(column[present])
        if found.size == 0:
            continue
        observed[part] = share_p_value(found)
        at_most = np.searchsorted(found, column[present], side="right") / found.size
        at_least = 1 - np.searchsorted(found, column[present], side="left") / found.size
        own[present, part] = np.minimum(1.0, 2 * np.minimum(at_most, at_least))
    smallest = own.min(axis=1)
    return np.array([(smallest <= p).mean() for p in observed])


def every_part(parts: Sequence[Interval]) -> str:
    """A claim made at every part (every N, every preset): *yes* when each part's interval lies in the paper's
    direction (an intersection needs no adjustment), **no** only when some part lies the other way at the family
    level (Holm over the parts), else *inconclusive*."""
    if not parts:
        return NOT_TESTED
    if all(part.verdict == YES for part in parts):
        return YES
    rejected = holm_rejected([part.p_value for part in parts])
    if any(hit and part.estimate < 0 and not part.lower_bound for hit, part in zip(rejected, parts)):
        return NO
    return INCONCLUSIVE


def some_part(parts: Sequence[Interval]) -> str:
    """A claim made of at least one part (some N), its parts' p-values adjusted for the family beforehand
    (`family_p_values`): *yes* when some part's adjusted p is at most the family's alpha in the paper's direction,
    **no** when every part's interval lies the other way, else *inconclusive*."""
    if not parts:
        return NOT_TESTED
    if any(part.p_value <= FAMILY_ALPHA and part.estimate > 0 for part in parts):
        return YES
    if all(part.verdict == NO for part in parts):
        return NO
    return INCONCLUSIVE


def _is_rows(value: object) -> bool:
    return isinstance(value, list | np.ndarray) and len(value) > 1


class SequenceLosses:
    """The per-row losses of the study's runs on one split, by run id, with the rows' documents."""

    def __init__(self, runs: pd.DataFrame, split: Split = REPORT_SPLIT) -> None:
        self.split = split
        self._rows: dict[str, np.ndarray] = {}
        self._fingerprints: dict[str, str] = {}
        self._documents: dict[str, list[int] | None] = {}
        if runs.empty or split.rows not in runs:
            return
        for record in runs.to_dict("records"):
            losses = record.get(split.rows)
            if _is_rows(losses):
                self._rows[record["run_id"]] = np.asarray(losses, dtype=float)
                self._fingerprints[record["run_id"]] = str(record.get(split.fingerprint, ""))
                documents = record.get(split.documents)
                self._documents[record["run_id"]] = list(documents) if _is_rows(documents) else None

    @property
    def by_document(self) -> bool:
        """Whether the runs' rows carry their documents (records written before they were kept do not)."""
        return any(documents for documents in self._documents.values())

    def get(self, run_ids: Sequence[str]) -> tuple[np.ndarray, str, list[int] | None] | None:
        """The mean per-row losses of `run_ids` (one run, or the seed copies of one point), their fingerprint and
        documents; None when any lacks rows or they were scored on different rows."""
        if not run_ids or any(run_id not in self._rows for run_id in run_ids):
            return None
        fingerprints = {self._fingerprints[run_id] for run_id in run_ids}
        shapes = {self._rows[run_id].shape for run_id in run_ids}
        if len(fingerprints) > 1 or len(shapes) > 1:
            return None
        rows = np.mean([self._rows[run_id] for run_id in run_ids], axis=0)
        documents = next((self._documents[r] for r in run_ids if self._documents[r] is not None), None)
        return rows, fingerprints.pop(), documents

    def gap(self, worse: Sequence[str], better: Sequence[str], *, seed: int = 0) -> Gap | None:
        """`paired_gap` of two models (each a run or the mean of seed copies); None when they lack rows or were
        scored on different rows."""
        worse_rows, better_rows = self.get(worse), self.get(better)
        if worse_rows is None or better_rows is None or worse_rows[1] != better_rows[1]:
            return None
        if worse_rows[0].shape != better_rows[0].shape:
            return None
        return paired_gap(worse_rows[0], better_rows[0], worse_rows[2] or better_rows[2], seed=seed)


class SeedDraws:
    """Seed-noise draws for the resampled analysis: per replicate and seed noise in use (each point's own, or the
    pool: `PointNoise`), one sd (drawn around the measured sd with its degrees of freedom, as its estimate is
    uncertain), and one N(0, sd^2) shift per training at its point's sd. A twin record shares its twin's draw; an
    ensemble takes the mean of its members' draws, so nested ensembles of the same members share their noise as they
    do in fact (and an ensemble of k varies as sd^2 / k)."""

    def __init__(self, runs: pd.DataFrame, noise: PointNoise | None, resamples: int, seed: int) -> None:
        self.shifts = np.zeros((len(runs), resamples))
        if noise is None or noise.pool is None or runs.empty:
            return
        rng = np.random.default_rng(seed + 1)
        scales: dict[int, np.ndarray] = {}

        def draw(record: dict) -> np.ndarray:
            measured = noise.at(record)
            if id(measured) not in scales:
                scales[id(measured)] = np.array(
                    [noise_scale_draw(rng, measured.sd, measured.dof) for _ in range(resamples)]
                )
            return rng.normal(0.0, 1.0, resamples) * scales[id(measured)]

        records = runs.to_dict("records")
        trainings = [_training(record) for record in records]
        own: dict[str, np.ndarray] = {}
        for training, record in zip(trainings, records):
            if training not in own:
                own[training] = draw(record)
        for line, (training, record) in enumerate(zip(trainings, records)):
            members = record.get("members")
            if record.get("kind") in ("ensemble", "soup") and isinstance(members, list | np.ndarray) and len(members):
                self.shifts[line] = np.mean([own[m] if m in own else draw(record) for m in members], axis=0)
            else:
                self.shifts[line] = own[training]


def _training(record: dict) -> str:
    """The training a record reports: its twin's where it names one (a frame's missing twin is NaN, not None)."""
    twin = record.get("same_training_as")
    return twin if isinstance(twin, str) and twin else str(record["run_id"])


class ResampledAnalysis:
    """The scaling analysis redone on `resamples` replicates, each with a document bootstrap of both splits (one
    draw of documents per split, shared by every run scored on it) and a seed-noise draw per training
    (`SeedDraws`): the best runs are chosen on the resampled validation losses and the laws fitted to the resampled
    test losses, as the study does. Its refits start from the best point of an exponent grid only and draw no
    bootstrap of their own, and keep every asymptote they fit, identified or not (`build_report`'s
    `every_asymptote`)."""

    def __init__(
        self,
        runs: pd.DataFrame,
        *,
        seed_noise: PointNoise | None = None,
        resamples: int = REPORT_RESAMPLES,
        seed: int = 0,
    ) -> None:
        self.reports: list[ScalingReport] = []
        if runs.empty or VALIDATION.rows not in runs:
            return
        runs = runs.reset_index(drop=True)
        split = report_split(runs)
        rng = np.random.default_rng(seed)
        resampled = {VALIDATION.loss: self._means(runs, VALIDATION, resamples, rng)}
        if split is TEST:
            resampled[TEST.loss] = self._means(runs, TEST, resamples, rng)
        if all(np.isnan(means).all() for means in resampled.values()):
            return
        shifts = SeedDraws(runs, seed_noise, resamples, seed).shifts
        narrow = runs[[column for column in ANALYSIS_COLUMNS if column in runs]]  # the analysis reads no more
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ScalingFitWarning)  # the main analysis already warned of its fits
            for draw in range(resamples):
                columns = {
                    column: pd.Series(np.where(np.isnan(means[:, draw]), runs[column], means[:, draw]))
                    + shifts[:, draw]
                    for column, means in resampled.items()
                }
                self.reports.append(
                    build_report(
                        narrow.assign(**columns),
                        n_bootstrap=0,
                        seed=seed + draw,
                        multistart=False,
                        select_on=VALIDATION.loss,
                        report_on=split.loss,
                        every_asymptote=True,
                    )
                )

    @staticmethod
    def _means(runs: pd.DataFrame, split: Split, resamples: int, rng: np.random.Generator) -> np.ndarray:
        """[runs, resamples] resampled mean losses on `split` (NaN for runs without rows on it)."""
        means = np.full((len(runs), resamples), np.nan)
        if split.rows not in runs:
            return means
        scored = runs[split.rows].map(_is_rows)
        fingerprints = runs[split.fingerprint] if split.fingerprint in runs else pd.Series("", index=runs.index)
        for _, group in runs[scored].groupby(fingerprints[scored].astype(str), sort=True):
            first = group.iloc[0]
            documents = first.get(split.documents)
            clusters = Documents(documents if _is_rows(documents) else None, len(first[split.rows]))
            weights = clusters.weights(resamples, rng)
            rows = np.array([np.asarray(r, dtype=float) for r in group[split.rows]])
            means[group.index] = clusters.resampled_means(rows, weights)
        return means

    def interval(self, quantity: Callable[[ScalingReport], float | None], estimate: float) -> Interval | None:
        """The percentile interval of `quantity` over the replicates around `estimate` (its value on the data), with
        the share of replicates on the other side of zero as its p-value; None when fewer than 90% of the
        replicates yield a value (a fit they could not make). Infinite values (a loss out of a law's reach) are kept:
        the interval is then unbounded on that side."""
        found = self._values(quantity)
        if not self.reports or found.size < 0.9 * len(self.reports):
            return None
        tail = (1 - CONFIDENCE) / 2
        low, high = np.quantile(found, [tail, 1 - tail], method="inverted_cdf")  # order statistics: inf stays inf
        return Interval(estimate, float(low), float(high), share_p_value(found))

    def replicates(self, quantities: Sequence[Callable[[ScalingReport], float | None]]) -> np.ndarray:
        """[resamples, quantities]: each quantity on each replicate (NaN where it could not be computed), rows
        aligned, for claims over several quantities at once (`family_p_values`)."""
        table = [
            [math.nan if (value := quantity(report)) is None else float(value) for quantity in quantities]
            for report in self.reports
        ]
        return np.array(table, dtype=float).reshape(len(self.reports), len(quantities))

    def missing(self, quantity: Callable[[ScalingReport], float | None]) -> str:
        """Why `interval` gave none: on how many replicates `quantity` could not be computed."""
        return (
            f"no interval: on {len(self.reports) - self._values(quantity).size} of {len(self.reports)} resamples the "
            "fits it needs fail (the laws are not identified by these points)"
        )

    def _values(self, quantity: Callable[[ScalingReport], float | None]) -> np.ndarray:
        values = [quantity(report) for report in self.reports]
        return np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
