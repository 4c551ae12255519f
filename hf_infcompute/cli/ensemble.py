"""`hf-infcompute ensemble RECIPE.yaml --k K`: train K members and record the ensemble of every prefix k <= K."""

from __future__ import annotations

import argparse

from hf_infcompute.cli.pretrain import add_recipe_arguments, print_keys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ensemble",
        help="train K independently seeded members and evaluate their logit ensembles (the K-curve)",
        description="Train members 1..K from one recipe with distinct seeds, skipping finished members, then record "
        "the validation and test losses of the ensemble of the first k members for every k and save the K-member "
        "ensemble. "
        "Spread members over GPUs with `accelerate launch --num_processes N -m hf_infcompute ensemble ...`: "
        "each process trains its own members alone.",
    )
    add_recipe_arguments(parser)
    parser.add_argument("--k", type=int, required=False, default=None, help="number of members K")
    parser.add_argument(
        "--vary",
        choices=["both", "init", "data"],
        default="both",
        help="which seeds differ between members: initialisation, data order, or both (default)",
    )
    parser.add_argument(
        "--member-rule",
        choices=["none", "paper"],
        default="none",
        help="'paper': double the epochs and halve the weight decay of the recipe, same LR",
    )
    parser.add_argument(
        "--combine",
        choices=["logits", "probs"],
        default="logits",
        help="average member logits (the paper's) or probabilities",
    )
    parser.add_argument("--soup", action="store_true", help="also average the members' weights and evaluate it")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_infcompute.errors import InputError
    from hf_infcompute.workers import detach_from_launcher

    if args.help_keys:
        print_keys()
        return 0
    if args.recipe is None or args.k is None:
        raise InputError("give a recipe and the number of members, e.g. `hf-infcompute ensemble recipe.yaml --k 4`")
    slot = detach_from_launcher()  # before anything touches CUDA
    from hf_infcompute.ensemble.members import train_ensemble
    from hf_infcompute.training.config import load_recipe, parse_run_config

    records = train_ensemble(
        parse_run_config(load_recipe(args.recipe, args.overrides)),
        args.output,
        args.k,
        vary=args.vary,
        member_rule=args.member_rule,
        combine=args.combine,
        soup=args.soup,
        slot=slot,
    )
    if records:
        print(f"\n{'k':>3}  {'ensemble':>9}  {'mean member':>11}  {'best member':>11}")
        for record in records:
            if record["kind"] == "ensemble":
                print(
                    f"{record['k']:>3}  {record['val_loss']:>9.4f}  {record['member_val_loss_mean']:>11.4f}  "
                    f"{record['member_val_loss_best']:>11.4f}"
                )
            else:
                print(f"soup of {record['k']}: {record['val_loss']:.4f}")
        print(f"ensemble saved to {records[len(records) - 1 - args.soup]['model_dir']}")
    return 0
