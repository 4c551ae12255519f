"""`hf-infcompute cpt --base CKPT --data CORPUS`: continued pre-training with K members, ensemble, soup and scores."""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_infcompute.cli.pretrain import add_recipe_arguments, print_keys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cpt",
        help="continue pre-training an existing causal LM on a domain corpus (members, ensemble, soup, scores)",
        description="Continue pre-training BASE on a fixed domain budget with K members that differ in data order, "
        "then score the base, the members, their logit ensemble and their weight-averaged soup on downstream tasks "
        "(math by default). The optional recipe gives any run setting (token_budget, num_train_epochs, "
        "learning_rate, per_device_train_batch_size, gradient_checkpointing, ...). Large models: launch with an "
        "FSDP or DeepSpeed config from recipes/accelerate/ (`accelerate launch --config_file ... -m hf_infcompute "
        "cpt ... --parallel data`).",
    )
    add_recipe_arguments(parser)
    parser.add_argument("--base", help="base causal LM: a folder or hub id (sets base_model)")
    parser.add_argument("--data", help="domain corpus: files or a hub dataset id (sets corpus)")
    parser.add_argument("--k", type=int, default=4, help="number of members (default 4)")
    parser.add_argument("--lora-r", type=int, default=None, help="train LoRA adapters of this rank (merged on save)")
    parser.add_argument("--tasks", default="math", help="tasks to score (default: math = gsm8k,hendrycks_math,mathqa)")
    parser.add_argument("--eval-data-dir", help="local benchmark files (layout of eval/README.md) instead of the Hub")
    parser.add_argument("--eval-limit", type=float, help="score only this many items per task (quick checks)")
    parser.add_argument("--max-gen-toks", type=int, help="cap on generated tokens in generation tasks (default 256)")
    parser.add_argument("--no-eval", action="store_true", help="train and build the ensemble and soup only")
    parser.add_argument(
        "--parallel",
        choices=["members", "data"],
        default="data",
        help="under a multi-process launch: 'data' trains each member on all processes (FSDP, "
        "DeepSpeed, DDP), then ends the launch and scores on rank 0 alone; 'members' gives each "
        "process its own members",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_infcompute.errors import InputError
    from hf_infcompute.workers import detach_from_launcher

    if args.help_keys:
        print_keys()
        return 0
    slot = detach_from_launcher() if args.parallel == "members" else None
    from hf_infcompute.continued_pretraining import continued_pretraining
    from hf_infcompute.training.config import load_recipe, parse_overrides, parse_run_config

    recipe, overrides = args.recipe, args.overrides
    if recipe and "=" in recipe and not Path(recipe).exists():  # no recipe file: only key=value settings
        recipe, overrides = None, [recipe, *overrides]
    config = load_recipe(recipe, overrides) if recipe else parse_overrides(overrides)
    if args.base:
        config["base_model"] = args.base
    if args.data:
        config["corpus"] = args.data
    if args.lora_r is not None:
        config["lora_r"] = args.lora_r
    if not config.get("base_model") or not config.get("corpus"):
        raise InputError("give the base model and the domain corpus: `hf-infcompute cpt --base CKPT --data CORPUS`")
    limit = int(args.eval_limit) if args.eval_limit and args.eval_limit >= 1 else args.eval_limit
    result = continued_pretraining(
        parse_run_config(config),
        args.output,
        k=args.k,
        tasks=args.tasks,
        eval_data_dir=args.eval_data_dir,
        eval_limit=limit,
        max_gen_toks=args.max_gen_toks,
        evaluate=not args.no_eval,
        slot=slot,
    )
    if result.report is not None:
        print(result.report.read_text())
        print(f"scores written to {result.report}")
    return 0
