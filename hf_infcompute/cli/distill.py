"""`hf-infcompute distill RECIPE.yaml [key=value ...] --output DIR`: train a student from a teacher."""

from __future__ import annotations

import argparse

from hf_infcompute.cli.pretrain import add_recipe_arguments, run_recipe


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "distill",
        help="train a student on real data mixed with a teacher's samples (or its token distributions)",
        description="Train a student from a YAML recipe: the pre-training keys plus kd_mode, teacher, "
        "synthetic_data (from `hf-infcompute generate`) and synthetic_fraction (0.5 = the paper's 1:1 mix). "
        "Weight decay defaults to 0.1, distillation's own default.",
    )
    add_recipe_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_infcompute.distillation import DistillationTrainingArguments, distill

    return run_recipe(args, distill, training_class=DistillationTrainingArguments)
