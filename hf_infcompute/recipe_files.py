"""Reading recipe files: YAML whose syntax errors name the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hf_infcompute.errors import InputError


def read_yaml(path: Path, what: str, text: str | None = None) -> Any:
    """A YAML file's contents; a syntax error is an `InputError` naming the file, the line and the fix."""
    try:
        return yaml.safe_load(path.read_text() if text is None else text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise InputError(
            f"{what} {path} is not valid YAML{where}: {problem}. Fix that line (a recipe is a mapping of `key: value` "
            "lines; quote values holding ':' or '#')"
        ) from None
