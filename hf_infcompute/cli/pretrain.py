"""`hf-infcompute pretrain RECIPE.yaml [key=value ...] --output DIR`: train one model on an exact token budget."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

from hf_infcompute.data.arguments import DataArguments
from hf_infcompute.errors import InputError
from hf_infcompute.training.arguments import ModelArguments, RegularizedTrainingArguments
from hf_infcompute.training.config import load_recipe
from hf_infcompute.workers import is_lead


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="train one model on exactly D tokens for E epochs",
        description="Train one Llama-style model from a YAML recipe. Finished runs are skipped, interrupted ones "
        "resume from their last checkpoint. Run data-parallel with `accelerate launch -m hf_infcompute pretrain ...`.",
    )
    add_recipe_arguments(parser)
    parser.set_defaults(func=run)


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of every command that trains from a YAML recipe."""
    parser.add_argument("recipe", nargs="?", help="YAML recipe: a flat mapping of run settings")
    parser.add_argument("overrides", nargs="*", help="settings that replace the recipe's, as key=value")
    parser.add_argument("--output", "-o", default="outputs", help="study folder: runs/ and results/ go here")
    parser.add_argument("--help-keys", action="store_true", help="list every recipe key with its help and exit")


def print_keys(training_class: type[RegularizedTrainingArguments] = RegularizedTrainingArguments) -> None:
    for cls in (DataArguments, ModelArguments, training_class):
        print(f"# {cls.__name__}")
        for f in dataclasses.fields(cls):
            if f.init and not f.name.startswith("_"):
                print(f"  {f.name}: {f.metadata.get('help', '')}")


def run(args: argparse.Namespace) -> int:
    from hf_infcompute.training import pretrain

    return run_recipe(args, pretrain)


def run_recipe(
    args: argparse.Namespace,
    train: Callable[[dict, str], dict],
    training_class: type[RegularizedTrainingArguments] = RegularizedTrainingArguments,
) -> int:
    """Train from `args.recipe` with `train(config, output_dir)` and print the record's summary; `--help-keys` lists
    the keys of `training_class`, the method's training arguments."""
    if args.help_keys:
        print_keys(training_class)
        return 0
    if args.recipe is None:
        raise InputError(f"give a recipe file, e.g. `hf-infcompute {args.command} recipes/pretrain-tiny.yaml`")
    record = train(load_recipe(args.recipe, args.overrides), args.output)
    if is_lead():
        print_summary(record)
    return 0 if record["status"] == "finished" else 1


def print_summary(record: dict) -> None:
    print(f"\nrun {record['run_id']}: {record['status']}")
    if record["status"] != "finished":
        print(f"  {record.get('error', 'see the log above')}")
        return
    # Records written before the test split have no `test_loss`.
    test = f", test loss {record['test_loss']:.4f}" if record.get("test_loss") is not None else ""
    print(
        f"  {record['recipe']} recipe, preset {record['preset']} ({record['n_params_total']:,} parameters, "
        f"{record['n_params']:,} non-embedding)\n"
        f"  D = {record['token_budget']:,} tokens x {record['num_train_epochs']:g} epochs = "
        f"{record['tokens_seen']:,} tokens seen\n"
        f"  lr {record['learning_rate']:g}, weight decay {record['weight_decay']:g}, batch {record['batch_size']}\n"
        f"  validation loss {record['val_loss']:.4f}{test}, train loss {record['train_loss']:.4f}, "
        f"{record['wall_time_s']:.0f} s\n"
        f"  model: {record['model_dir']}"
    )
