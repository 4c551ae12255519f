"""The one door for files a user gave or the tool wrote earlier, and for the folders it writes into.

Each reader turns the format library's errors (`JSONDecodeError`, `UnicodeDecodeError`, pyarrow's `ArrowInvalid`,
safetensors' `SafetensorError`, the tokenizers library's bare `Exception`) into one `InputError` paragraph naming the
file, what is wrong with it and the fix, so that a damaged file never ends a command in the library's traceback.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hf_infcompute.errors import InputError

logger = logging.getLogger(__name__)

# What to do with a damaged file, by who wrote it.
RERUN = "delete it and run the same command again, which rewrites it"
RETRAIN = "delete that model folder and train the run again (rerun the command that trained it)"
REEXPORT = "export or copy it again from its source"

# The errors a full disk or a folder one may not write raise (`OSError.errno`), each with its fix.
WRITE_ERRORS = {
    errno.ENOSPC: "the disk is full: free space (or point --output at a larger disk), then rerun the same command",
    errno.EDQUOT: "the disk quota is used up: free space, then rerun the same command",
    errno.EROFS: "the file system is read-only: give an --output on a writable disk",
    errno.EACCES: "permission denied: give an --output you may write, or change the folder's permissions",
    errno.EPERM: "operation not permitted: give an --output you may write, or change the folder's permissions",
    errno.ENOTDIR: "a path on the way is a file, not a folder: give another --output, or move that file",
    errno.EISDIR: "a folder stands where a file was to be written: move that folder, or give another --output",
}


def damaged(path: str | os.PathLike, problem: str, fix: str) -> InputError:
    """The error for a file that cannot be read: `{path} is damaged ({problem}): {fix}.`"""
    return InputError(f"{path} is damaged or not the file it should be ({problem}): {fix}.")


def read_json(path: str | os.PathLike, *, fix: str = RERUN) -> Any:
    """The JSON value in `path`; `InputError` naming the file, the position of the damage and `fix`."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise damaged(path, f"not UTF-8 text at byte {error.start}", fix) from error
    except json.JSONDecodeError as error:
        problem = "empty" if not error.doc.strip() else f"not valid JSON: {error.msg}, line {error.lineno}"
        raise damaged(path, problem, fix) from error


def read_json_object(path: str | os.PathLike, *, fix: str = RERUN, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """`read_json` for a file that must hold a JSON object with `keys`."""
    value = read_json(path, fix=fix)
    if not isinstance(value, dict):
        raise damaged(path, f"a JSON {type(value).__name__}, not an object", fix)
    missing = [key for key in keys if key not in value]
    if missing:
        raise damaged(path, f"it lacks {', '.join(map(repr, missing))}", fix)
    return value


def read_rebuildable_json(path: str | os.PathLike, rebuilt: str) -> dict[str, Any] | None:
    """A JSON object the tool wrote and can rebuild; None, with one warning saying `rebuilt` (how it is rebuilt), when
    the file is damaged. A missing file is None without a word."""
    try:
        return read_json_object(path)
    except FileNotFoundError:
        return None
    except InputError:
        logger.warning("%s is damaged (not a whole JSON object); %s", path, rebuilt)
        return None


def check_safetensors(path: str | os.PathLike, *, fix: str) -> None:
    """Open `path` as safetensors and read every tensor's header entry; `InputError` when it is cut off or not one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                weights.get_slice(name).get_shape()
    except (SafetensorError, OSError, ValueError) as error:
        raise damaged(path, f"not a whole safetensors file: {error}", fix) from error


def check_tokenizer_file(path: str | os.PathLike, *, fix: str) -> None:
    """Parse a `tokenizer.json`; the tokenizers library reports a bad one as a bare `Exception`."""
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises `Exception` itself for unreadable or invalid files
        raise damaged(path, f"not a tokenizer the tokenizers library reads: {error}", fix) from error


def check_model_folder(folder: str | os.PathLike, *, fix: str = RETRAIN) -> None:
    """Check the files of a local model folder (`config.json`, `*.safetensors`, `tokenizer.json` and the JSON beside
    them) before a library loads it, so that a damaged one is named instead of failing deep inside `from_pretrained`.
    Hub ids and missing folders are left to the loader."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        if path.name == "tokenizer.json":
            check_tokenizer_file(path, fix=fix)
        else:
            read_json(path, fix=fix)
    config = folder / "config.json"
    if config.is_file():
        read_json_object(config, fix=fix)
    for path in sorted(folder.glob("*.safetensors")):
        check_safetensors(path, fix=fix)


@contextmanager
def loading(what: str, source: str | os.PathLike, *, fix: str) -> Iterator[None]:
    """Around a library call that reads `source` (a model, tokenizer or Arrow file): its read errors become one
    `InputError` naming `what`, `source` and `fix`."""
    import pyarrow as pa
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, KeyError, SafetensorError, pa.ArrowException) as error:
        if isinstance(error, OSError) and error.errno in WRITE_ERRORS:
            raise
        raise InputError(f"cannot load {what} {source} ({type(error).__name__}: {error}): {fix}.") from error


def check_output_folder(path: str | os.PathLike, option: str = "--output") -> None:
    """Refuse, before anything runs, an `option` folder that is a file, lies under a file, or may not be written
    (it is created later, by the command, when missing)."""
    folder = Path(path)
    existing = next(parent for parent in (folder, *folder.absolute().parents) if parent.exists())
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"lies under {existing}, which is a file"
        raise InputError(
            f"{option} {folder} {where}, not a folder: give another {option} (a new or an existing folder), or move "
            "that file away"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {folder}: {existing} may not be written; {WRITE_ERRORS[errno.EACCES]}")


def write_fix(error: OSError) -> str:
    """The fix for an `OSError` raised while writing."""
    return WRITE_ERRORS.get(error.errno, "check the path and the disk, then rerun the same command")


def write_failure(error: OSError) -> InputError | None:
    """One paragraph for a write that failed for a reason of the disk or the path (full disk, read-only, permission),
    else None. Files are written atomically, so nothing half-written is left as if whole."""
    if error.errno not in WRITE_ERRORS:
        return None
    where = f" {error.filename}" if error.filename else ""
    return InputError(
        f"cannot write or read{where} ({error.strerror}): {write_fix(error)}. Every file is written whole or not at "
        "all, and interrupted runs resume from their last whole checkpoint."
    )
