"""`hf-infcompute eval MODEL [MODEL ...] --tasks paper --output DIR`: downstream benchmark scores with lm-eval."""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_infcompute.errors import InputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score models and ensembles on PIQA, SciQ, ARC-Easy, GSM8K, MATH, MathQA",
        description="Score saved models or LogitEnsembles (or hub ids) with lm-evaluation-harness. Writes one table "
        "per model (JSON and markdown); with several models also a comparison table and, where their validation "
        "losses are known, the plot of validation loss against average benchmark error.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="model or ensemble folder, or hub id")
    parser.add_argument(
        "--tasks",
        default="paper",
        help="comma-separated: piqa, sciq, arc_easy, gsm8k, hendrycks_math, mathqa, or the shorthands "
        "paper (piqa,sciq,arc_easy) and math (gsm8k,hendrycks_math,mathqa); default: paper",
    )
    parser.add_argument("--data-dir", help="read benchmarks from this folder (layout in eval/README.md), not the Hub")
    parser.add_argument("--limit", type=_limit, help="items per task (a number below 1: that fraction); for checks")
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples for every task (default: each task's own)")
    parser.add_argument("--batch-size", type=_batch_size, default=8, help="batch size, or 'auto' (default 8)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype",
        default=None,
        help="weights dtype: auto (as saved), float32, bfloat16, ... (default: bfloat16 on a GPU, as saved elsewhere)",
    )
    parser.add_argument("--max-gen-toks", type=int, help="cap on generated tokens for GSM8K and MATH (default 256)")
    parser.add_argument(
        "--val-loss",
        type=float,
        nargs="+",
        metavar="LOSS",
        help="validation loss of each MODEL, in order (default: `val_loss` from each folder's run_record.json)",
    )
    parser.add_argument("--output", "-o", default="outputs/eval", help="folder for the tables and the plot")
    parser.set_defaults(func=run)


def _limit(text: str) -> int | float:
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


def _batch_size(text: str) -> int | str:
    return text if text.startswith("auto") else int(text)


def run(args: argparse.Namespace) -> int:
    from hf_infcompute.evaluation import evaluate_model, plot_loss_vs_error, read_val_loss, resolve_tasks
    from hf_infcompute.evaluation.harness import check_model, model_label
    from hf_infcompute.evaluation.results import comparison_markdown, comparison_rows
    from hf_infcompute.records import write_json_atomic, write_text_atomic

    tasks = resolve_tasks(args.tasks)
    for model in args.models:  # refuse a bad model before spending time on the good ones
        check_model(model)
    if args.val_loss is not None and len(args.val_loss) != len(args.models):
        raise InputError(
            f"--val-loss gave {len(args.val_loss)} losses for {len(args.models)} models; give one per model"
        )
    val_losses = args.val_loss or [read_val_loss(m) if Path(m).is_dir() else None for m in args.models]
    labels = _unique([model_label(m) for m in args.models])
    output = Path(args.output)

    results = []
    for model, label in zip(args.models, labels):
        result = evaluate_model(
            model,
            tasks,
            data_dir=args.data_dir,
            num_fewshot=args.num_fewshot,
            limit=args.limit,
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            max_gen_toks=args.max_gen_toks,
            label=label,
            output_dir=output,
        )
        print(result.to_markdown())
        results.append(result)
    if len(results) > 1:
        rows = comparison_rows(results, val_losses)
        write_json_atomic(output / "summary.json", rows)
        write_text_atomic(output / "summary.md", comparison_markdown(rows))
        print(comparison_markdown(rows))
        points = [(r["model"], r["val_loss"], r["average_error"]) for r in rows if r["val_loss"] is not None]
        if len(points) > 1:
            print(f"plot: {plot_loss_vs_error(points, output / 'loss_vs_error.png')}")
        else:
            print("no plot: fewer than two models have a validation loss (give --val-loss)")
    print(f"tables in {output}")
    return 0


def _unique(labels: list[str]) -> list[str]:
    """Labels with repeats numbered, so that no model's table overwrites another's."""
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return unique
