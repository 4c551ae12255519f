"""A tiny study, step by step, through the Python API: prepare data, search, ensemble, fit, report.

`hf-infcompute study` runs all of this (and distillation) from one YAML file; this script shows the pieces, so a
notebook can run, inspect or change any step. On 2 CPU cores it takes about a minute:

    python examples/tiny_study.py --corpus ../shared/data/pretrain --output outputs/tiny-study

Every training is a recorded run: run the script again and nothing is trained twice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_infcompute import (
    PretrainObjective,
    SearchGrid,
    SweepStore,
    coordinate_descent,
    fit_power_law,
    load_runs,
    parse_run_config,
    prepare_data,
    train_ensemble,
)
from hf_infcompute.scaling import build_report, write_report


def main(corpus: str, output: Path, cache_dir: str | None = None) -> dict:
    # 1. One typed run: the corpus, its tokenizer and the exact token budget D, a model preset and the optimizer.
    run = parse_run_config(
        {
            "corpus": corpus,
            "cache_dir": cache_dir,
            "vocab_size": 1024,
            "tokenizer_train_chars": 1_000_000,
            "seq_len": 64,
            "val_sequences": 16,
            "token_budget": 4096,
            "preset": "tiny-0.5m",
            "recipe": "regularized",
            "learning_rate": 3e-3,
            "per_device_train_batch_size": 8,
            "precision": "fp32",
            "disable_tqdm": True,
            "report_to": "none",
        }
    )
    data = prepare_data(run.data)  # tokenized and packed once, then read from the cache
    held_out = f"{len(data.validation)} validation and {len(data.test)} test rows of {run.data.seq_len}"
    print(f"D = {data.token_budget:,} training tokens, {held_out}")

    # 2. The regularized recipe: coordinate descent to a locally optimal (epochs, weight decay) on a small grid.
    grid = SearchGrid({"learning_rate": [3e-3], "num_train_epochs": [1, 2, 4], "weight_decay": [0.1, 0.4, 1.6]})
    objective = PretrainObjective(run, output)
    store = SweepStore(output / "sweeps" / "regularized")
    store.bind(objective.binding(grid.names))
    search = coordinate_descent(objective, grid, grid.center(), store)
    print(f"locally optimal: {search.best_point} at validation loss {search.best_loss:.4f}")

    # 3. An ensemble of K = 3 members at that point (member 0 is the search's own run: it is not trained again).
    best = run.replace(**search.best_point)
    curve = [r for r in train_ensemble(best, output, 3) if r["kind"] == "ensemble"]
    for record in curve:
        print(f"K = {record['k']}: ensemble loss {record['val_loss']:.4f}")

    # 4. The loss against K, L(K) = A / K^alpha + E: E is the asymptote of infinitely many members.
    fit = fit_power_law([r["k"] for r in curve], [r["val_loss"] for r in curve], n_bootstrap=0)
    conditioning = "" if fit.well_conditioned else " (three points pin it down poorly)"
    print(f"K -> infinity: {fit.E:.4f}{conditioning}")

    # 5. Every recorded run, and the scaling report over them (tables, fits, figures).
    report = write_report(build_report(load_runs(output), source=str(output), n_bootstrap=0), output / "report")
    print(f"report: {report}")
    return {"search": search, "curve": curve, "fit": fit, "report": report}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="../shared/data/pretrain", help="local corpus files or a hub dataset id")
    parser.add_argument("--output", type=Path, default=Path("outputs/tiny-study"), help="where runs are recorded")
    cli = parser.parse_args()
    main(cli.corpus, cli.output)
