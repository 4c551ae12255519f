"""Paired bootstrap intervals: they cover a known gap at their stated rate, and verdicts follow the interval."""

import numpy as np
import pandas as pd
import pytest

from hf_infcompute.study.confidence import (
    INCONCLUSIVE,
    NO,
    NOT_TESTED,
    YES,
    ResampledAnalysis,
    SequenceLosses,
    combined_verdict,
    paired_difference,
)


def pair(gap: float, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two models on the same rows: row difficulty shared (large), their per-row difference `gap` + noise (small)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(5.0, 0.5, rows)
    better = difficulty + rng.normal(0, 0.05, rows)
    return better + gap + rng.normal(0, 0.05, rows), better


def test_a_clear_gap_is_yes_its_reverse_no_and_a_gap_within_noise_inconclusive():
    worse, better = pair(0.02, 1000, seed=0)
    interval = paired_difference(worse, better)
    assert interval.low < 0.02 < interval.high and interval.low > 0
    assert interval.verdict == YES
    assert paired_difference(better, worse).verdict == NO
    assert paired_difference(*pair(0.0005, 200, seed=1)).verdict == INCONCLUSIVE
    # The pairing is what resolves the gap: row difficulty (spread 0.5) cancels in the difference.
    assert interval.high - interval.low < 0.02


def test_the_interval_covers_the_true_gap_about_95_percent_of_the_time():
    covered = [
        (lambda i: i.low <= 0.01 <= i.high)(paired_difference(*pair(0.01, 300, seed), seed=seed, resamples=1000))
        for seed in range(120)
    ]
    assert 0.88 <= np.mean(covered) <= 0.99


def test_a_claim_at_every_n_needs_every_part():
    assert combined_verdict([YES, YES]) == YES
    assert combined_verdict([YES, INCONCLUSIVE]) == INCONCLUSIVE
    assert combined_verdict([YES, INCONCLUSIVE, NO]) == NO
    assert combined_verdict([]) == NOT_TESTED


def runs_table(rows: dict[str, np.ndarray], fingerprints: dict[str, str] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run_id": run_id,
                "kind": "pretrain",
                "status": "finished",
                "recipe": "standard",
                "corpus": "c",
                "token_budget": 1000,
                "preset": run_id,
                "n_params_total": 1000 * (i + 1),
                "learning_rate": 1e-3,
                "weight_decay": 0.1,
                "num_train_epochs": 1,
                "val_loss": float(losses.mean()),
                "val_sequence_losses": losses.tolist(),
                "validation_fingerprint": (fingerprints or {}).get(run_id, "v"),
            }
            for i, (run_id, losses) in enumerate(rows.items())
        ]
    )


def test_runs_compare_only_on_the_same_rows():
    worse, better = pair(0.02, 100, seed=2)
    sequences = SequenceLosses(runs_table({"a": worse, "b": better}, {"b": "other split"}))
    assert sequences.compare("a", "b") is None
    assert SequenceLosses(runs_table({"a": worse, "b": better})).compare("a", "b").verdict == YES
    assert sequences.compare("a", None) is None


def test_the_resampled_analysis_gives_a_run_loss_the_interval_of_its_mean():
    rng = np.random.default_rng(3)
    losses = rng.normal(4.0, 0.4, 400)
    runs = runs_table({"small": losses, "large": losses - 0.1})
    analysis = ResampledAnalysis(runs, resamples=150)

    def small_loss(report) -> float:
        table = next(s.table for s in report.sizes)
        return float(table.loc[table["preset"] == "small", "val_loss"].iloc[0])

    interval = analysis.interval(small_loss, float(losses.mean()))
    half_width = 1.96 * losses.std() / np.sqrt(losses.size)
    assert interval.low == pytest.approx(losses.mean() - half_width, abs=0.3 * half_width)
    assert interval.high == pytest.approx(losses.mean() + half_width, abs=0.3 * half_width)
    # A quantity most resamples cannot give has no interval.
    assert analysis.interval(lambda report: None, 0.0) is None


def test_standard_overfitting_at_the_grid_edge_compares_the_last_two_epoch_counts():
    """Where the standard recipe's best run has the most epochs, the finding compares it with the best at fewer:
    *no* when the longer training is clearly lower, *inconclusive* when the rows cannot tell them apart."""
    from types import SimpleNamespace

    from hf_infcompute.study.findings import Evidence, standard_overfits_in_epochs

    def verdict(gap_of_more_epochs: float) -> tuple[str, str]:
        worse, better = pair(abs(gap_of_more_epochs), 512, seed=1)
        fewer, more = (better, worse) if gap_of_more_epochs > 0 else (worse, better)
        rows = [(8, fewer + 0.3), (16, fewer), (32, more)]  # 8 epochs: far worse, not the comparison
        runs = pd.DataFrame(
            [
                {
                    "run_id": f"standard-ep{epochs}",
                    "kind": "pretrain",
                    "status": "finished",
                    "recipe": "standard",
                    "token_budget": 1024,
                    "preset": "tiny",
                    "num_train_epochs": epochs,
                    "val_loss": float(losses.mean()),
                    "val_sequence_losses": list(losses),
                    "validation_fingerprint": "rows",
                }
                for epochs, losses in rows
            ]
        )
        spec = SimpleNamespace(token_budget=1024, presets=[])
        evidence = Evidence(spec, runs, None, None, SequenceLosses(runs), None, [])
        finding = standard_overfits_in_epochs(evidence)
        return finding.verdict, finding.evidence

    verdict_, text = verdict(-0.05)  # 32 epochs clearly below 16: longer training did not overfit
    assert verdict_ == NO and text.startswith("tiny (best at the most epochs run): 32 epochs") and "16 epochs" in text
    assert verdict(-0.0005)[0] == INCONCLUSIVE
    assert verdict(0.05)[0] == YES  # the best at 16 epochs, 32 above it: the usual comparison
