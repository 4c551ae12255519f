"""Seed-to-seed noise from fresh seeds only: what counts, how it pools, and that its interval is honest."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hf_infcompute.study.seed_noise import pooled_noise, seed_repeats


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
