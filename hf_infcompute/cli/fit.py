"""`hf-infcompute fit OUTPUT_DIR [--report-dir DIR]`: scaling laws, asymptotes and data efficiency of a store."""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

from hf_infcompute.errors import InputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="fit scaling laws to finished runs and write the report (asymptotes, data efficiency, figures)",
        description="Read the finished runs under OUTPUT_DIR/results and fit L(x) = A / x^alpha + E in model size N "
        "(best run per N), ensemble size K (and the joint limit N, K -> inf) and token budget D; write fits.json, "
        "report.md and PNG figures. Analyses without enough points are skipped with the reason.",
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="results store (the --output of pretrain/search)")
    parser.add_argument("--report-dir", help="where to write the report (default: OUTPUT_DIR/report)")
    parser.add_argument(
        "--bootstrap", type=int, default=500, help="bootstrap replicates for the uncertainty (default 500; 0: none)"
    )
    parser.add_argument(
        "--huber",
        type=float,
        help="Huber loss with this residual size (nats) to resist outliers (default: least squares)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument(
        "--select-on",
        choices=("val_loss", "test_loss"),
        default="val_loss",
        help="the loss each best run (per size, per N and K, per budget) is chosen by (default val_loss)",
    )
    parser.add_argument(
        "--report-on",
        choices=("val_loss", "test_loss"),
        default="val_loss",
        help="the loss the laws are fitted to and the report shows (default val_loss; test_loss for records with a "
        "test split)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_infcompute.records import load_runs, results_dir
    from hf_infcompute.scaling import ScalingFitWarning
    from hf_infcompute.scaling.analysis import build_report
    from hf_infcompute.scaling.report import write_report

    output_dir = Path(args.output_dir)
    if not output_dir.is_dir():
        raise InputError(f"{output_dir} is not a directory; give the --output folder of your training runs")
    with warnings.catch_warnings():
        # Ill-conditioned fits are flagged in the report and in the summary below, each with its analysis.
        warnings.simplefilter("ignore", ScalingFitWarning)
        report = build_report(
            load_runs(output_dir),
            source=str(results_dir(output_dir)),
            huber=args.huber,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            select_on=args.select_on,
            report_on=args.report_on,
        )
    path = write_report(report, args.report_dir or output_dir / "report")
    print(f"{report.n_runs} finished runs; report written to {path}")
    for asymptote in report.key_asymptotes():
        uncertainty = f" ± {asymptote.stderr:.4f}" if math.isfinite(asymptote.stderr) else ""
        flag = f"  (ill-conditioned: {'; '.join(asymptote.issues)})" if asymptote.issues else ""
        print(f"  {asymptote.analysis}: {asymptote.E:.4f}{uncertainty}{flag}")
    for analysis, reason in report.skipped:
        print(f"  skipped {analysis}: {reason}")
    return 0
