"""Seed-to-seed noise from the points a study trains at several seeds."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from hf_infcompute.study.confidence import YES, Interval
from hf_infcompute.study.findings import Evidence, compared
from hf_infcompute.study.report import seed_noise_lines
from hf_infcompute.study.seed_noise import difference_noise, pooled_sd, seed_repeats


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
    point = {"learning_rate": 0.01, "num_train_epochs": 16, "weight_decay": 0.8}
    assert repeats["a"].at("a", point) and not repeats["a"].at("b", point)
    assert not repeats["a"].at("a", {**point, "weight_decay": 1.6})
    evidence = SimpleNamespace(seed_repeats=list(repeats.values()), optimum_repeats=lambda: [repeats["a"]])
    evidence.seed_sd = lambda: Evidence.seed_sd(evidence)
    text = "\n".join(seed_noise_lines(evidence))
    assert "seed 0: 4.0000, seed 1: 4.2000, seed 2: 4.1000" in text
    assert "weight decay 0.8 (regularized optimum)" in text
    assert f"about {difference_noise(0.1):.4f}" in text  # pooled over the optimum "a" alone


def test_a_gap_between_single_models_below_the_seed_noise_is_said_to_be() -> None:
    evidence = SimpleNamespace(
        sequences=SimpleNamespace(compare=lambda worse, better: Interval(0.02, 0.01, 0.03)), seed_noise=0.05
    )
    worse, better = ("standard", 4.1, "s"), ("regularized", 4.08, "r")
    verdict, text = compared(evidence, "", worse, better)
    assert verdict == YES and text.endswith("(yes, within seed noise (0.0500))")
    assert compared(evidence, "", worse, better, single_models=False)[1].endswith("(yes)")
    evidence.seed_noise = 0.01
    assert compared(evidence, "", worse, better)[1].endswith("(yes)")


def test_no_repeats_without_a_second_seed() -> None:
    assert seed_repeats(pd.DataFrame([run("a", 0, 4.0)]), 1024) == []
    assert pooled_sd([]) is None
