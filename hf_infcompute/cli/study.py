"""`hf-infcompute study RECIPE.yaml [--data PATH] [--output DIR]`: the paper's whole study on one corpus."""

from __future__ import annotations

import argparse
import logging
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study",
        help="run the paper's study on a corpus (searches, ensembles, distillation, scaling laws) and report it",
        description="Run, or resume, a study: standard and regularized recipes over a ladder of model sizes, "
        "ensembles over K, the joint asymptote, data scaling over several token budgets, and distillation; then "
        "write OUTPUT/report.md beside the paper's figures. RECIPE is a study YAML or the name of a packaged one "
        "(smoke, quickstart, paper-200M).",
    )
    parser.add_argument("recipe", nargs="?", help="study YAML (e.g. recipes/quickstart.yaml) or a packaged name")
    parser.add_argument("--data", help="local corpus files or a hub dataset id (replaces the recipe's corpus)")
    parser.add_argument("--output", "-o", default=None, help="study folder (default: outputs/<study name>)")
    parser.add_argument("--report-only", action="store_true", help="rewrite report.md from what has run so far")
    parser.add_argument("--help-keys", action="store_true", help="list every study key with its help and exit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.help_keys:
        from hf_infcompute.study.keys import print_study_keys

        print_study_keys()
        return 0
    if args.recipe is None:
        from hf_infcompute.errors import InputError

        raise InputError("give a study recipe, e.g. `hf-infcompute study recipes/smoke.yaml` (keys: --help-keys)")
    from hf_infcompute.workers import detach_from_launcher, is_lead

    slot = detach_from_launcher()  # under a launcher: one independent worker per GPU
    from hf_infcompute.study import load_study, run_study
    from hf_infcompute.study.folder import claim_study_folder
    from hf_infcompute.study.report import write_study_report
    from hf_infcompute.study.state import load_report_state

    spec = load_study(args.recipe, data=args.data)
    output = args.output or f"outputs/{spec.name}"
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if args.report_only:
        claim_study_folder(spec, output, record=False)
        path = write_study_report(spec, output, load_report_state(output))
    else:
        run_study(spec, output, slot)
        if not is_lead(slot):
            return 0
        path = f"{output}/report.md"
    print(f"\nreport: {path}")
    return 0
