"""The joint (N, K -> inf) limit where its law in N cannot locate it: the report compares it, and reads its
multiplier, through its bound, the largest size's K -> inf limit, on a study simulated from a known joint law whose
K -> inf limits barely bend in N (`simulated_study` with a shallow law in N)."""

from __future__ import annotations

import math
import warnings

import pytest
import simulated_study as simulated_module
from simulated_study import SIZES, D, ensemble_limit, simulated_study, true_multiplier

from hf_infcompute.records import load_runs
from hf_infcompute.scaling.power_law import ScalingFitWarning
from hf_infcompute.study.confidence import INCONCLUSIVE, NO, YES, Interval
from hf_infcompute.study.findings import Evidence, efficiency_interval, ensemble_scaling, findings

RESAMPLES = 40
# K -> inf limits a_j / N^alpha_j + J with a shallow exponent: over 150M-1.4B they fall by 0.012, nearly straight in
# log N, so the law in N cannot tell where they level off.
SHALLOW_JOINT_LAW = (0.05, 0.1)
JOINT_SERIES = "regularized ensembles (N, K -> inf)"


@pytest.fixture(scope="module")
def shallow(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shallow-joint")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(simulated_module, "JOINT_N_LAW", SHALLOW_JOINT_LAW)
        simulated = simulated_study(folder, 2)
        largest = max(SIZES, key=SIZES.get)
        bound_loss = ensemble_limit(largest, "paper")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScalingFitWarning)
        evidence = Evidence.of(simulated.spec, load_runs(folder), simulated.state, resamples=RESAMPLES)
    return simulated, evidence, true_multiplier(bound_loss, D)


def test_the_law_in_n_does_not_locate_the_joint_limit_and_the_largest_size_bounds_it(shallow):
    _, evidence, _ = shallow
    ensemble = ensemble_scaling(evidence.spec, evidence.scaling)
    joint = ensemble.joint
    assert not joint.n_fit.well_conditioned, joint.n_fit.issues
    largest, fit = joint.bound
    assert largest == max(SIZES.values()) and fit is ensemble.k_fits[largest]


def test_the_joint_finding_reads_yes_through_its_bound(shallow):
    """The true joint limit (3.17) lies far below the regularized N -> inf asymptote (3.43), and so does its bound
    (3.17 + 0.048 at 1.4B): the claim reads *yes*, its gap a lower bound."""
    _, evidence, _ = shallow
    [joint] = [f for f in findings(evidence) if f.claim.startswith("joint (N, K -> inf)")]
    assert joint.verdict == YES, joint.evidence
    [gap] = joint.intervals
    assert gap.lower_bound and gap.low > 0 and math.isinf(gap.high)
    assert "joint <= K -> inf at the largest N" in joint.evidence


def test_the_joint_multiplier_is_a_lower_bound_below_the_true_one(shallow):
    """The multiplier read at the bound is at most the true joint multiplier (5.17x), and its interval holds the
    true multiplier of the bound itself (the largest size's true K -> inf limit)."""
    simulated, evidence, bound_truth = shallow
    interval, how = efficiency_interval(evidence, JOINT_SERIES)
    assert interval is not None and interval.lower_bound, how
    truth = simulated.true_multipliers[JOINT_SERIES]
    assert interval.low <= interval.estimate <= truth, (interval, truth)
    assert bound_truth < truth
    measured, _ = efficiency_interval(evidence, "regularized ensembles (K -> inf, largest N)")
    assert measured.low <= bound_truth <= measured.high, (measured, bound_truth)
    assert "at least the multiplier of the K -> inf limit at the largest size" in how


def test_a_bound_reads_yes_or_inconclusive_never_no():
    below = Interval(-0.05, -0.09, -0.01, 0.001).as_lower_bound()
    assert below.verdict == INCONCLUSIVE and below.verdict != NO
    above = Interval(0.05, 0.01, 0.09, 0.001).as_lower_bound()
    assert above.verdict == YES and str(above) == ">= +0.0500 [95%: >= +0.0100]"
