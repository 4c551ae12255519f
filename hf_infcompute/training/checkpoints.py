"""What a run folder holds on disk: whole checkpoints, finite checkpoints and a complete final model.

transformers writes `checkpoint-N/` in place (weights, optimizer, scheduler, RNG states) and `trainer_state.json`
last, so a checkpoint is whole when that file exists and parses; a process killed mid-save leaves a folder without
it (or with a truncated one), which `get_last_checkpoint` would still pick. Rotation (`save_total_limit`) runs after
`trainer_state.json` is written, so it never deletes the last whole checkpoint before a newer one is whole.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

logger = logging.getLogger(__name__)

WEIGHTS_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
# A final model folder holds this marker while it is still being written.
INCOMPLETE_MARKER = "training_incomplete"


def checkpoints_newest_first(folder: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of a run folder, highest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [path for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if path.is_dir()]
    steps = {path: path.name.rpartition("-")[2] for path in found}
    return sorted((path for path in found if steps[path].isdigit()), key=lambda p: int(steps[p]), reverse=True)


def is_complete_checkpoint(checkpoint: str | Path) -> bool:
    """True when the checkpoint's `trainer_state.json`, written last, exists and parses."""
    try:
        json.loads((Path(checkpoint) / TRAINER_STATE_NAME).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return True


def last_complete_checkpoint(folder: str | Path, *, remove_incomplete: bool = False) -> str | None:
    """The newest whole checkpoint of a run folder (the one to resume from), or None.

    `remove_incomplete`: delete the checkpoints a kill left half-written (do it on one process only), so that
    neither a later resume nor transformers' rotation ever takes them for the newest checkpoint.
    """
    newest = None
    for checkpoint in checkpoints_newest_first(folder):
        if is_complete_checkpoint(checkpoint):
            newest = newest or str(checkpoint)
        elif remove_incomplete:
            logger.warning("removing %s: it was left half-written (no readable %s)", checkpoint, TRAINER_STATE_NAME)
            shutil.rmtree(checkpoint, ignore_errors=True)
    return newest


def weights_are_finite(checkpoint: str | Path) -> bool:
    """True when every tensor of the checkpoint's weight files is finite (no NaN or inf).

    Reads `*.safetensors` and `pytorch_model*.bin`; a checkpoint holding neither (e.g. FSDP sharded state) cannot be
    checked here and counts as finite.
    """
    folder = Path(checkpoint)
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            names = weights.keys()  # noqa: SIM118 (a safe_open handle, not a dict)
            if not all(torch.isfinite(weights.get_tensor(name)).all() for name in names):
                return False
    for path in sorted(folder.glob("pytorch_model*.bin")):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not all(torch.isfinite(tensor).all() for tensor in state.values() if torch.is_tensor(tensor)):
            return False
    return True


def last_good_checkpoint(folder: str | Path) -> str | None:
    """The newest checkpoint that is whole and whose weights are finite: the one to resume a failed run from."""
    for checkpoint in checkpoints_newest_first(folder):
        if is_complete_checkpoint(checkpoint) and weights_are_finite(checkpoint):
            return str(checkpoint)
    return None


def model_folder_problem(model_dir: str | Path) -> str | None:
    """Why a final model folder cannot be loaded (missing, half-written, no config or no weights), or None."""
    path = Path(model_dir)
    if not path.is_dir():
        return f"{path} does not exist"
    if (path / INCOMPLETE_MARKER).exists():
        return f"{path} is half-written (it holds a `{INCOMPLETE_MARKER}` marker)"
    if not (path / CONFIG_NAME).is_file():
        return f"{path} holds no {CONFIG_NAME}"
    if not any((path / name).is_file() for name in WEIGHTS_FILES):
        return f"{path} holds no weights ({', '.join(WEIGHTS_FILES)})"
    return None
