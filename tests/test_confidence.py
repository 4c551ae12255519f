"""Document-level intervals and verdicts with seed noise, proven on simulated data with a known answer."""

import math

import numpy as np
import pytest

from hf_infcompute.study.confidence import (
    INCONCLUSIVE,
    NO,
    NOT_TESTED,
    YES,
    Documents,
    Interval,
    every_part,
    family_p_values,
    holm_rejected,
    paired_gap,
    some_part,
)


def documents_with_rows(rng: np.random.Generator, documents: int, mean_rows: int) -> np.ndarray:
    """The document of each row: `documents` documents of 1 to 2 * mean_rows - 1 rows each."""
    sizes = rng.integers(1, 2 * mean_rows, documents)
    return np.repeat(np.arange(documents), sizes)


def correlated_gaps(rng: np.random.Generator, docs: np.ndarray, gap: float, correlation: float) -> np.ndarray:
    """Per-row gaps of two models: `gap` plus a per-document effect and row noise, with intra-document correlation
    `correlation` (total variance 0.01)."""
    document_effect = rng.normal(0, math.sqrt(correlation * 0.01), docs.max() + 1)
    return gap + document_effect[docs] + rng.normal(0, math.sqrt((1 - correlation) * 0.01), docs.size)


def test_the_document_bootstrap_covers_the_true_gap_at_its_rate_and_the_row_bootstrap_does_not():
    """400+ simulated pairs at intra-document correlation 0.3 (about 5 rows a document): the document bootstrap's
    95% interval covers the true gap 93-97% of the time; the row bootstrap, which treats rows as independent,
    covers it far less often."""
    rng = np.random.default_rng(0)
    covered = {"documents": [], "rows": []}
    for trial in range(600):
        docs = documents_with_rows(rng, 80, 5)
        gaps = correlated_gaps(rng, docs, 0.02, 0.3)
        for unit, ids in (("documents", docs), ("rows", None)):
            interval = paired_gap(gaps, np.zeros_like(gaps), ids, seed=trial, resamples=400).interval
            covered[unit].append(interval.low <= 0.02 <= interval.high)
    assert 0.93 <= np.mean(covered["documents"]) <= 0.97
    assert np.mean(covered["rows"]) < 0.88


def test_without_intra_document_correlation_both_bootstraps_agree():
    rng = np.random.default_rng(1)
    docs = documents_with_rows(rng, 200, 4)
    gaps = correlated_gaps(rng, docs, 0.0, 0.0)
    by_documents = paired_gap(gaps, np.zeros_like(gaps), docs).sampling_var
    by_rows = paired_gap(gaps, np.zeros_like(gaps)).sampling_var
    assert by_documents == pytest.approx(by_rows, rel=0.25)


def test_two_single_seed_models_with_no_true_gap_are_rarely_called_different():
    """A true gap of zero between two single-seed models: each lands off its expected loss by seed noise (sd 0.02),
    the rows by document sampling; the seed sd is estimated on 6 degrees of freedom. The verdict reads *yes* or
    *no* at most 5% of the time, while ignoring the seed noise would call most such pairs different."""
    rng = np.random.default_rng(2)
    sigma, dof = 0.02, 6
    wrong, wrong_without_seeds = 0, 0
    trials = 1000
    for trial in range(trials):
        docs = documents_with_rows(rng, 100, 4)
        difficulty = rng.normal(4.0, 0.5, docs.max() + 1)[docs] + rng.normal(0, 0.2, docs.size)
        a = difficulty + rng.normal(0, sigma) + rng.normal(0, 0.05, docs.size)
        b = difficulty + rng.normal(0, sigma) + rng.normal(0, 0.05, docs.size)
        estimated_sd = sigma * math.sqrt(rng.chisquare(dof) / dof)
        gap = paired_gap(a, b, docs, seed=trial, resamples=300)
        wrong += gap.with_seed_noise(2 * estimated_sd**2, dof).verdict != INCONCLUSIVE
        wrong_without_seeds += gap.verdict != INCONCLUSIVE
    assert wrong / trials <= 0.05
    assert wrong_without_seeds / trials > 0.5


def test_a_real_gap_beyond_the_noise_is_found_and_its_sign_read():
    rng = np.random.default_rng(3)
    docs = documents_with_rows(rng, 200, 3)
    gaps = correlated_gaps(rng, docs, 0.2, 0.3)
    gap = paired_gap(gaps, np.zeros_like(gaps), docs).with_seed_noise(2 * 0.02**2, 6)
    assert gap.verdict == YES and gap.interval.p_value < 0.01
    assert paired_gap(-gaps, np.zeros_like(gaps), docs).with_seed_noise(2 * 0.02**2, 6).verdict == NO
    # the seed noise widens the interval and its quantile is t on the seed sd's degrees of freedom
    assert gap.dof == 6 and gap.sd > math.sqrt(gap.sampling_var)


def test_documents_group_rows_and_resample_whole_documents():
    groups = Documents([7, 7, 3, 9, 9, 9], 6)
    assert groups.by_document and groups.clusters == 3
    assert groups.sums(np.arange(6.0)).tolist() == [[2.0, 1.0, 12.0]]
    weights = groups.weights(50, np.random.default_rng(0))
    assert weights.shape == (50, 3) and (weights.sum(axis=1) == 3).all()
    # a resample of one document three times gives that document's mean
    assert groups.resampled_means(np.arange(6.0), np.array([[0.0, 0.0, 3.0]]))[0, 0] == pytest.approx(4.0)
    assert not Documents(None, 4).by_document and Documents(None, 4).clusters == 4
    # rows of one document: nothing to resample, no interval, no verdict
    assert paired_gap([1.0, 2.0], [0.0, 0.5], [3, 3]).verdict == INCONCLUSIVE


def interval(estimate: float, p_value: float) -> Interval:
    half = abs(estimate) * 1.5 if p_value > 0.05 else abs(estimate) * 0.5
    return Interval(estimate, estimate - half, estimate + half, p_value)


def test_holm_rejects_step_down():
    assert holm_rejected([0.01, 0.04, 0.03]) == [True, False, False]
    assert holm_rejected([0.01, 0.02, 0.03]) == [True, True, True]
    assert holm_rejected([0.2]) == [False]


def test_a_claim_at_every_n_is_no_only_at_the_family_level():
    assert every_part([interval(0.1, 0.001), interval(0.2, 0.001)]) == YES
    assert every_part([interval(0.1, 0.001), interval(0.01, 0.5)]) == INCONCLUSIVE
    # one part below zero at p = 0.04 of three parts: not rejected by Holm (needs 0.05 / 3)
    assert every_part([interval(0.1, 0.03), interval(0.1, 0.3), interval(-0.1, 0.04)]) == INCONCLUSIVE
    assert every_part([interval(0.1, 0.3), interval(0.1, 0.3), interval(-0.1, 0.001)]) == NO
    assert every_part([]) == NOT_TESTED


def test_a_claim_at_some_n_is_yes_only_at_the_family_level():
    """The parts' p-values come adjusted for the family (`family_p_values`): yes at an adjusted p <= 0.05."""
    assert some_part([interval(0.1, 0.001), interval(-0.01, 0.5)]) == YES
    assert some_part([interval(0.1, 0.06), interval(-0.01, 0.5), interval(0.02, 0.3)]) == INCONCLUSIVE
    assert some_part([interval(-0.1, 0.001), interval(-0.2, 0.001)]) == NO
    assert some_part([]) == NOT_TESTED


def simulated_parts(rng: np.random.Generator, gaps: np.ndarray, shared: float, resamples: int) -> tuple:
    """One simulated claim over parts that share noise (as each size's K -> inf limit shares the regularized N -> inf
    asymptote): the estimates (true gaps plus a shared and an own draw, total sd 1) and `resamples` replicates drawn
    around them the same way (the resampled analysis' analogue)."""
    own = math.sqrt(1 - shared**2)

    def draw(size: tuple[int, ...]) -> np.ndarray:
        return shared * rng.normal(size=(*size[:-1], 1)) + own * rng.normal(size=size)

    estimates = gaps + draw((gaps.size,))
    return estimates, estimates + draw((resamples, gaps.size))


def simulated_verdicts(rng: np.random.Generator, gaps: np.ndarray, shared: float, trials: int) -> dict[str, float]:
    """The share of `trials` claims at some N read *yes*: by the joint min-p adjustment, and by Holm on the parts'
    own p-values."""
    yes = {"min-p": 0, "holm": 0}
    for _ in range(trials):
        estimates, replicates = simulated_parts(rng, gaps, shared, 400)
        own = [min(1.0, 2 * min((r <= 0).mean(), (r >= 0).mean())) for r in replicates.T]
        adjusted = family_p_values(replicates)
        parts = [Interval(float(e), -math.inf, math.inf, float(p)) for e, p in zip(estimates, adjusted)]
        yes["min-p"] += some_part(parts) == YES
        yes["holm"] += any(hit and e > 0 for hit, e in zip(holm_rejected(own), estimates))
    return {name: count / trials for name, count in yes.items()}


@pytest.mark.parametrize("shared", [0.0, 0.6, 0.95])
def test_the_joint_adjustment_keeps_the_false_yes_rate_of_a_claim_at_some_n_at_its_level(shared):
    """Four parts with a true gap of zero each, their noise shared 0% to 90% (shared sd 0.95): the adjusted claim
    reads *yes* at most 5% of the time (two-sided p-values, *yes* in one direction: near 2.5%), however dependent
    the parts."""
    rates = simulated_verdicts(np.random.default_rng(11), np.zeros(4), shared, 800)
    assert rates["min-p"] <= 0.05


def test_the_joint_adjustment_finds_a_shared_gap_that_holm_misses():
    """Four parts that share nearly all their noise (as when the shared asymptote is the noisy side), each with a
    true gap of 2 sd: Holm, which must hold for any dependence, asks each part for p <= 0.0125 and finds the gap
    less often (about 41% of claims) than the adjustment over the joint replicates (about 57%), which sees that the
    parts move together."""
    rates = simulated_verdicts(np.random.default_rng(12), np.full(4, 2.0), 0.99, 400)
    assert rates["min-p"] >= rates["holm"] + 0.08, rates


def test_the_joint_adjustment_of_one_part_is_its_own_p_and_of_identical_parts_not_inflated():
    rng = np.random.default_rng(13)
    column = rng.normal(1.5, 1.0, size=(500, 1))
    own = 2 * min((column <= 0).mean(), (column >= 0).mean())
    assert family_p_values(column)[0] == pytest.approx(own, abs=0.01)
    twice = family_p_values(np.hstack([column, column]))
    assert twice == pytest.approx([own, own], abs=0.01)
    missing = column.copy()
    missing[:10] = np.nan  # a replicate that could not compute a part cannot be extreme at it
    assert 0 <= family_p_values(np.hstack([missing, column]))[0] <= 1


def test_the_false_no_rate_of_a_claim_at_every_n_stays_at_its_level():
    """Four parts, all with a true gap of zero: the claim reads *no* at most 5% of the time (reading *no* whenever
    any part excludes zero would do so about 10% of the time, twice the rate)."""
    rng = np.random.default_rng(4)
    family, any_part = 0, 0
    trials = 2000
    for _ in range(trials):
        z = rng.normal(size=4)
        parts = [Interval(float(v), float(v - 1.96), float(v + 1.96), float(2 * (1 - _normal_cdf(abs(v))))) for v in z]
        family += every_part(parts) == NO
        any_part += any(p.verdict == NO for p in parts)
    assert family / trials <= 0.05 * 1.1
    assert any_part / trials > 0.07


def _normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))
