"""Seed-to-seed noise from the points a study trains at several seeds."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from hf_infcompute.study.report import seed_noise_lines
from hf_infcompute.study.seed_noise import pooled_sd, seed_repeats


def run(preset: str, seed: int, loss: float, *, kind: str = "ensemble_member", epochs: float = 16, **extra) -> dict:
    return {
        "kind": kind,
        "status": "finished",
        "recipe": "regularized",
        "token_budget": 1024,
        "preset": preset,
        "learning_rate": 0.01,
        "num_train_epochs": epochs,
        "weight_decay": 0.8,
        "seed": seed,
        "val_loss": loss,
        **extra,
    }


def test_repeats_group_seeds_of_one_point_and_pool_their_variance() -> None:
    runs = pd.DataFrame(
        [
            run("a", 0, 4.0, kind="pretrain"),
            run("a", 1, 4.2),
            run("a", 2, 4.1),
            run("b", 0, 3.0, kind="pretrain"),
            run("b", 1, 3.1),
            run("b", 0, 9.0, epochs=32),  # one seed only at this point: no repeat
            run("b", 1, 5.0, recipe="standard"),  # another recipe
            run("b", 2, 5.0, token_budget=2048),  # another budget
            run("b", 3, 5.0, status="failed"),
        ]
    )
    repeats = {r.preset: r for r in seed_repeats(runs, 1024)}
    assert set(repeats) == {"a", "b"}
    assert repeats["a"].losses == {0: 4.0, 1: 4.2, 2: 4.1}
    assert repeats["a"].sd == pytest.approx(0.1)
    assert repeats["b"].sd == pytest.approx(0.1 / math.sqrt(2))
    sd, dof = pooled_sd(list(repeats.values()))
    assert dof == 3
    assert sd == pytest.approx(math.sqrt((2 * 0.01 + 1 * 0.005) / 3))
    text = "\n".join(seed_noise_lines(list(repeats.values())))
    assert "seed 0: 4.0000, seed 1: 4.2000, seed 2: 4.1000" in text
    assert f"{2 * math.sqrt(2) * sd:.4f}" in text


def test_no_repeats_without_a_second_seed() -> None:
    assert seed_repeats(pd.DataFrame([run("a", 0, 4.0)]), 1024) == []
    assert pooled_sd([]) is None
