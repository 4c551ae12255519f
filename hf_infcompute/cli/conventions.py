"""The argument conventions of trl's `TrlParser` beside ours: `--config FILE` for the positional recipe, and
`--key value` (or `--key=value`, `--flag`) for a `key=value` override.

argparse cannot take options it does not know, so `normalize_argv` rewrites them before parsing, using the
subcommand's own parser to tell its options from recipe keys.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps the subcommands on its `_SubParsersAction` only
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _dests(parser: argparse.ArgumentParser) -> set[str]:
    return {action.dest for action in parser._actions}


def normalize_argv(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """`argv` with `--config FILE` as the subcommand's recipe (its first positional) and, for a subcommand that takes
    `key=value` overrides, every option it does not know as one: `--learning_rate 3e-3` -> `learning_rate=3e-3`
    (dashes in the key read as underscores; an option followed by another option, or last, is a flag: `key=true`)."""
    argv = list(argv)
    command = _subcommands(parser).get(argv[0]) if argv else None
    if command is None:
        return argv
    dests = _dests(command)
    known = set(command._option_string_actions)
    config, rest, i = None, [], 1
    while i < len(argv):
        token = argv[i]
        name, has_value, value = token.partition("=")
        if token == "--":
            rest += argv[i:]
            break
        if "recipe" in dests and name == "--config":
            if has_value:
                config = value
            elif i + 1 < len(argv):
                config, i = argv[i + 1], i + 1
            else:
                rest.append(token)  # argparse names the missing value
        elif "overrides" in dests and token.startswith("--") and len(name) > 2 and name not in known:
            key = name[2:].replace("-", "_")
            if not has_value:
                following = argv[i + 1] if i + 1 < len(argv) else None
                if following is not None and not following.startswith("--"):
                    value, i = following, i + 1
                else:
                    value = "true"
            rest.append(f"{key}={value}")
        else:
            rest.append(token)
        i += 1
    return [argv[0], *([config] if config is not None else []), *rest]
