"""One study per output folder: the first start records the study's recipe in `study.recipe.json`; a later start
with the same recipe resumes, one with another name or other settings is refused before anything runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hf_infcompute.errors import InputError
from hf_infcompute.readers import read_rebuildable_json
from hf_infcompute.records import write_json_atomic
from hf_infcompute.study.spec import StudySpec
from hf_infcompute.study.state import STATE_FILE

RECIPE_FILE = "study.recipe.json"
# Fields that describe a study without changing what it trains or finds.
DESCRIPTIVE = ("description", "expected_minutes", "report_resamples")  # none changes what is trained


def recipe_settings(spec: StudySpec) -> dict[str, Any]:
    """The settings of `spec` that decide what the study trains, as JSON values."""
    values = {key: value for key, value in dataclasses.asdict(spec).items() if key not in DESCRIPTIVE}
    return json.loads(json.dumps(values, sort_keys=True, default=str))


def _differing(recorded: dict[str, Any], wanted: dict[str, Any], where: str = "") -> list[str]:
    keys = sorted(set(recorded) | set(wanted))
    found = []
    for key in keys:
        old, new = recorded.get(key), wanted.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += _differing(old, new, f"{where}{key}.")
        elif old != new:
            found.append(f"{where}{key} ({old!r} there, {new!r} here)")
    return found


def claim_study_folder(spec: StudySpec, output_dir: str | Path, *, record: bool = True) -> None:
    """Record `spec` as the study of `output_dir` (with `record`), or refuse it when the folder holds another study
    (another name or other settings), naming both and the fix. A damaged record is rewritten from this recipe, with a
    warning."""
    folder = Path(output_dir)
    wanted = {"name": spec.name, "settings": recipe_settings(spec)}
    recorded = read_rebuildable_json(folder / RECIPE_FILE, f"it is written again from the recipe of study {spec.name}")
    if recorded is None:
        state = read_rebuildable_json(folder / STATE_FILE, "it is rebuilt from the records as the study resumes")
        name = state.get("name") if state is not None else None
        if name is not None and name != spec.name:
            raise _another_study(folder, str(name), spec.name, [f"name ({name!r} there, {spec.name!r} here)"])
        if record:
            write_json_atomic(folder / RECIPE_FILE, wanted)
        return
    differing = _differing(recorded, wanted)
    if differing:
        raise _another_study(folder, str(recorded.get("name")), spec.name, differing)


def _another_study(folder: Path, there: str, here: str, differing: list[str]) -> InputError:
    shown = "; ".join(differing[:6]) + ("; ..." if len(differing) > 6 else "")
    return InputError(
        f"{folder} holds study {there!r} ({RECIPE_FILE}), and this recipe is study {here!r}, which differs in: "
        f"{shown}. One folder holds one study: give this study another --output, or run the recipe of {there!r} "
        "unchanged to resume it"
    )
