"""`hf-infcompute`: a thin command line over the Python API.

Each subcommand lives in its own module of this package and exposes `add_parser(subparsers)`, which
registers its arguments and sets `func` to the function that runs it.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from hf_infcompute import interrupts
from hf_infcompute.cli.conventions import normalize_argv
from hf_infcompute.errors import InputError
from hf_infcompute.readers import check_output_folder, write_failure

# Exit codes of a process stopped by a signal, as shells report them (128 + the signal's number).
EXIT_CODES = {"Ctrl-C": 130, "SIGTERM": 143}

# Subcommand modules, in the order of the pipeline they drive.
COMMANDS = ("plan", "study", "pretrain", "search", "ensemble", "generate", "distill", "eval", "fit", "cpt", "push")
COMMANDS += ("status",)  # reads how far a study or a search is


class IntermixedParser(argparse.ArgumentParser):
    """Takes options and positionals in any order, so `key=value` overrides may also follow the options.

    (Plain argparse reads a command's positionals in one block only.)
    """

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-infcompute",
        description="Pre-training under infinite compute: get the most out of a fixed corpus.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=IntermixedParser)
    for name in COMMANDS:
        importlib.import_module(f"hf_infcompute.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(normalize_argv(parser, argv))
    try:
        if getattr(args, "output", None) is not None:
            check_output_folder(args.output)
        with interrupts.handling_sigterm():
            return int(args.func(args) or 0)
    except InputError as error:
        # Bad input: our errors already name the fix, so print them without a traceback.
        print(f"hf-infcompute {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        failure = write_failure(error)  # a full disk, a read-only or forbidden folder
        if failure is None:
            raise
        print(f"hf-infcompute {args.command}: error: {failure}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"hf-infcompute {args.command}: {interrupted_line(stop, argv)}", file=sys.stderr)
        return EXIT_CODES[getattr(stop, "signal_name", "Ctrl-C")]


def interrupted_line(stop: KeyboardInterrupt, argv: list[str]) -> str:
    """One line for a command stopped by Ctrl-C or SIGTERM: what was saved, and the command that resumes."""
    by = getattr(stop, "signal_name", "Ctrl-C")
    checkpoint = interrupts.last_saved()
    saved = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint of the run in progress"
    return (
        f"stopped by {by}; saved: {saved}, and the record of every run finished before. "
        f"Resume with: hf-infcompute {shlex.join(argv)}"
    )


if __name__ == "__main__":
    sys.exit(main())
