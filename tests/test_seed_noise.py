"""Seed-to-seed noise from fresh seeds only: what counts, how it pools, and that its interval is honest."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hf_infcompute.study.confidence import Gap, SeedDraws
from hf_infcompute.study.findings import combined_dof
from hf_infcompute.study.seed_noise import PointNoise, SeedNoise, pooled_noise, seed_repeats


def run(preset: str, seed: int, loss: float, *, kind: str = "ensemble_member", epochs: float = 16, **extra) -> dict:
    return {
        "run_id": extra.pop("run_id", f"{preset}-{kind}-e{epochs}-s{seed}-{extra.get('recipe', 'r')}"),
        "kind": kind,
        "status": "finished",
        "recipe": "regularized",
        "token_budget": 1024,
        "preset": preset,
        "learning_rate": 0.01,
        "num_train_epochs": epochs,
        "weight_decay": 0.8,
        "seed": seed,
        "test_loss": loss,
        **extra,
    }


def test_repeats_group_fresh_seeds_of_one_point_and_leave_the_selected_run_out() -> None:
    runs = pd.DataFrame(
        [
            run("a", 0, 3.0, kind="pretrain", run_id="a-optimum"),  # selected by the search: left out
            run("a", 1, 4.2),
            run("a", 2, 4.1),
            run("a", 3, 4.0),
            run("b", 0, 3.0, kind="pretrain", run_id="b-optimum"),
            run("b", 1, 3.1),
            run("b", 2, 3.0),
            run("b", 0, 9.0, epochs=32),  # one seed only at this point: no repeat
            run("b", 1, 5.0, recipe="standard"),  # another recipe: its own point
            run("b", 2, 5.0, token_budget=2048),  # another budget: its own point
            run("b", 3, 5.0, status="failed"),
            # a record of the same training as the selected run (a twin) is left out with it
            run("c", 0, 2.0, kind="pretrain", run_id="c-twin", same_training_as="b-optimum"),
            run("c", 1, 2.5),
        ]
    )
    repeats = {r.preset: r for r in seed_repeats(runs, {"a-optimum", "b-optimum"}, "test_loss")}
    assert set(repeats) == {"a", "b"}
    assert repeats["a"].losses == {1: 4.2, 2: 4.1, 3: 4.0}
    assert repeats["a"].sd == pytest.approx(0.1)
    assert repeats["b"].sd == pytest.approx(0.1 / math.sqrt(2))
    noise = pooled_noise(list(repeats.values()))
    assert noise.dof == 3
    assert noise.sd == pytest.approx(math.sqrt((2 * 0.01 + 1 * 0.005) / 3))
    assert noise.low < noise.sd < noise.high
    assert noise.variance(4) == pytest.approx(noise.sd**2 / 4)
    point = {"learning_rate": 0.01, "num_train_epochs": 16, "weight_decay": 0.8}
    assert repeats["a"].at("a", point, "regularized") and not repeats["a"].at("b", point)
    assert not repeats["a"].at("a", point, "standard")
    # with the selected runs counted, "a" would pool the low pick with its fresh seeds
    biased = {r.preset: r for r in seed_repeats(runs, set(), "test_loss")}
    assert biased["a"].sd > 0.5


def test_the_pooled_sd_and_its_interval_recover_a_known_seed_noise() -> None:
    """Three points at three fresh seeds each (6 degrees of freedom), true sd 0.02: the pooled sd is unbiased in
    variance and its 95% interval covers the true sd 92-98% of 400 simulated studies."""
    rng = np.random.default_rng(0)
    covered, variances = [], []
    for _ in range(400):
        records = [
            run(preset, seed, level + rng.normal(0, 0.02))
            for preset, level in (("a", 4.0), ("b", 3.8), ("c", 3.7))
            for seed in (1, 2, 3)
        ]
        noise = pooled_noise(seed_repeats(pd.DataFrame(records), set(), "test_loss"))
        assert noise.dof == 6
        covered.append(noise.low <= 0.02 <= noise.high)
        variances.append(noise.sd**2)
    assert 0.92 <= np.mean(covered) <= 0.98
    assert np.mean(variances) == pytest.approx(0.02**2, rel=0.1)


def test_no_repeats_without_a_second_fresh_seed() -> None:
    assert seed_repeats(pd.DataFrame([run("a", 0, 4.0)]), set(), "test_loss") == []
    assert seed_repeats(pd.DataFrame([run("a", 0, 4.0, run_id="x"), run("a", 1, 4.1)]), {"x"}, "test_loss") == []
    assert pooled_noise([]) is None


def test_a_member_rule_unstable_across_seeds_keeps_its_own_sd_and_stays_out_of_the_pool() -> None:
    """Seed noise differs between points: an unstable member rule (sd 0.2) is judged with its own sd, the optimum
    (sd 0.01) with its own, and the pool that judges every other model is measured on the searched points only."""
    rng = np.random.default_rng(0)
    optimum = [run("p", s, 4.0 + rng.normal(0, 0.01), run_id=f"opt-s{s}") for s in range(8)]
    unstable = [run("p", s, 5.0 + rng.normal(0, 0.2), epochs=32, run_id=f"paper-s{s}") for s in range(8)]
    tie = [run("p", s, 4.1 + rng.normal(0, 0.01), epochs=8, run_id=f"tie-s{s}") for s in range(3)]
    student = run("p", 0, 4.0, kind="distill", run_id="student")
    noise = PointNoise.of(pd.DataFrame(optimum + unstable + tie + [student]), {"opt-s0", "tie-s0"}, "test_loss")
    assert noise.at(optimum[3]) is not noise.pool and noise.at(optimum[3]).dof == 6  # seed 0 was the search's pick
    assert noise.at(unstable[0]).sd > 0.1 and noise.at(unstable[0]).dof == 7
    assert noise.pool.dof == 6 + 1 and noise.pool.sd < 0.03  # the optimum's 7 fresh seeds and the tie-break's 2
    assert noise.at(tie[1]) is noise.pool  # 2 fresh seeds: too few for its own sd
    assert noise.at(student) is noise.pool  # a student is another training, though it shares the point's settings
    assert noise.at({**unstable[0], "kind": "ensemble"}) is noise.at(unstable[0])  # an ensemble of its members


def test_a_gap_judged_on_two_different_seed_sds_covers_at_95_percent() -> None:
    """A single model judged with the pooled sd (30 degrees of freedom) against a mean of 7 seeds judged with its
    point's own, larger sd (6 degrees of freedom): with the Welch-Satterthwaite degrees of freedom the 95% interval
    of a true gap of zero covers it 93-97% of the time, and a verdict other than inconclusive is rare."""
    rng = np.random.default_rng(1)
    pooled_sd, own_sd, copies, trials = 0.02, 0.06, 7, 4000
    covered = 0
    for _ in range(trials):
        pool = SeedNoise(pooled_sd * math.sqrt(rng.chisquare(30) / 30), 30, 0, 0)
        own = SeedNoise(own_sd * math.sqrt(rng.chisquare(6) / 6), 6, 0, 0)
        truth = math.sqrt(pooled_sd**2 + own_sd**2 / copies)
        gap = Gap(rng.normal(0, truth), sampling_var=0.0, clusters=100, unit="documents")
        variances = pool.variance(1), own.variance(copies)
        interval = gap.with_seed_noise(sum(variances), combined_dof((pool, own), variances)).interval
        covered += interval.low <= 0 <= interval.high
    assert 0.93 <= covered / trials <= 0.97


def test_seed_draws_are_one_per_training_and_an_ensemble_averages_its_members() -> None:
    """Each training gets its own seed-noise draw (in a frame, a record without a twin holds NaN there, which must
    not make every such record one training); a twin shares its training's draw; an ensemble takes its members'
    mean."""
    rng = np.random.default_rng(1)
    members = [run("p", s, 4.0 + rng.normal(0, 0.01), run_id=f"opt-s{s}") for s in range(6)]
    searched = [run("p", s, 4.2, epochs=8, kind="pretrain", run_id=f"other-s{s}") for s in range(3)]
    twin = run("p", 0, 4.2, epochs=8, kind="student", run_id="twin", same_training_as="other-s1")
    ensemble = run("p", 0, 3.9, kind="ensemble", run_id="ensemble", members=["opt-s1", "opt-s2"])
    runs = pd.DataFrame(members + searched + [twin, ensemble])
    noise = PointNoise.of(runs, {"opt-s0"}, "test_loss")
    shifts = SeedDraws(runs, noise, 2000, 0).shifts
    line = {run_id: i for i, run_id in enumerate(runs["run_id"])}
    assert abs(np.corrcoef(shifts[line["other-s0"]], shifts[line["other-s2"]])[0, 1]) < 0.1
    assert np.array_equal(shifts[line["twin"]], shifts[line["other-s1"]])
    assert np.allclose(shifts[line["ensemble"]], (shifts[line["opt-s1"]] + shifts[line["opt-s2"]]) / 2)
