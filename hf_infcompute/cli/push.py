"""`hf-infcompute push FOLDER REPO_ID`: upload a model, ensemble or soup with its model card, a study's results or a
synthetic corpus."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload a trained model, ensemble or soup (a model repo), a study's results or a synthetic corpus "
        "(dataset repos) to the Hub",
        description="Write README.md (a model card with recipe, token budget D, K and results) into FOLDER and "
        "upload the folder to REPO_ID. A study folder (it holds study.json) goes up as a dataset repository: its "
        "report, figures, study.json and a table of every run, without weights. A synthetic corpus (written by "
        "`generate`) goes up as a dataset repository: its parquet shards, dataset card and tokenizer. Offline, the "
        "cards are written and nothing is uploaded. Log in first (`hf auth login`).",
    )
    parser.add_argument(
        "model_dir",
        metavar="FOLDER",
        help="a model folder written by hf-infcompute (it holds run_record.json), a study folder or a synthetic corpus",
    )
    parser.add_argument("repo_id", help="target repository, e.g. your-name/tiny-ensemble")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--scores", help="a JSON file of scores from `hf-infcompute eval` to list in the card")
    parser.add_argument("--card-only", action="store_true", help="write the model card, upload nothing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hf_infcompute.hub import (
        is_study_dir,
        is_synthetic_dir,
        model_card,
        push_model,
        push_study,
        push_synthetic,
        read_run_record,
    )

    if is_study_dir(args.model_dir):
        print(f"pushed to {push_study(args.model_dir, args.repo_id, private=args.private)}")
        return 0
    if is_synthetic_dir(args.model_dir):
        print(f"pushed to {push_synthetic(args.model_dir, args.repo_id, private=args.private)}")
        return 0
    scores = json.loads(Path(args.scores).read_text())["scores"] if args.scores else None
    if args.card_only:
        path = Path(args.model_dir) / "README.md"
        model_card(read_run_record(args.model_dir), scores).save(path)
        print(f"model card written to {path}")
        return 0
    print(f"pushed to {push_model(args.model_dir, args.repo_id, private=args.private, scores=scores)}")
    return 0
