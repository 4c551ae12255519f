"""The results store: one JSON record per finished run, under `<output_dir>/results/`.

Each record is its own file, written to a temporary name and renamed into place, so a record is either
complete or absent, and any number of processes (or machines on a shared filesystem) can write at once
without locks. `load_runs` reads them all back as a pandas DataFrame.

Folders a record names (`PATH_FIELDS`) are written relative to the output folder when they lie inside it (as
`./runs/<id>/model`) and read back resolved against the folder the record is read from, so an output folder can be
moved or copied; records written with absolute paths read as they are.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from hf_infcompute.run_ids import RUN_RECORD_FILE as RUN_RECORD_FILE  # every saved model folder carries its record

logger = logging.getLogger(__name__)

RESULTS_DIRNAME = "results"
# Record fields (at any depth of a record, a sweep result or a study.json) that may name a folder.
PATH_FIELDS = frozenset({"model_dir", "teacher", "synthetic_data"})
RELATIVE_PREFIX = "./"


def results_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / RESULTS_DIRNAME


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:
            error.filename = str(path)  # a full disk fails in write or fsync, which name no file
        raise


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write `payload` as JSON to `path` atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str))


def relative_paths(payload: Any, folder: str | os.PathLike) -> Any:
    """`payload` (JSON values) with every existing folder of a `PATH_FIELDS` key inside `folder` made relative to it."""
    root = Path(folder).resolve()

    def relative(value: Any) -> Any:
        if not isinstance(value, str) or not Path(value).exists():
            return value  # a hub id (or a folder already made relative) stays as given
        path = Path(value).resolve()
        if path.is_relative_to(root):
            return RELATIVE_PREFIX + path.relative_to(root).as_posix()
        return str(path) if value.startswith(RELATIVE_PREFIX) else value  # "./" is kept for paths inside `folder`

    return _map_paths(payload, relative)


def resolved_paths(payload: Any, folder: str | os.PathLike) -> Any:
    """`payload` with the `PATH_FIELDS` written by `relative_paths` resolved against `folder`."""

    def resolved(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(RELATIVE_PREFIX):
            return str(Path(folder) / value[len(RELATIVE_PREFIX) :])
        return value

    return _map_paths(payload, resolved)


def _map_paths(payload: Any, convert: Callable[[Any], Any]) -> Any:
    if isinstance(payload, dict):
        return {
            key: convert(value) if key in PATH_FIELDS else _map_paths(value, convert) for key, value in payload.items()
        }
    if isinstance(payload, list):
        return [_map_paths(value, convert) for value in payload]
    return payload


def append_record(output_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Add one run record to the store. `record["run_id"]` names the file; a re-run replaces its record."""
    if "run_id" not in record:
        raise KeyError("a run record needs a 'run_id'")
    path = results_dir(output_dir) / f"{record['run_id']}.json"
    write_json_atomic(path, relative_paths(record, output_dir))
    return path


def _read(path: Path, consequence: str) -> dict[str, Any] | None:
    """A record file's contents; None, with a warning naming the file, when it is not a JSON record."""
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or "run_id" not in record:
        logger.warning("run record %s is corrupt (not a complete JSON record): %s", path, consequence)
        return None
    return record


def read_record(output_dir: str | os.PathLike, run_id: str) -> dict[str, Any] | None:
    """The record of `run_id`, or None if that run has not finished (or its record is corrupt: it is retrained)."""
    path = results_dir(output_dir) / f"{run_id}.json"
    if not path.is_file():
        return None
    record = _read(path, "the run is trained again and its record rewritten")
    return None if record is None else resolved_paths(record, output_dir)


def iter_records(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every readable record of the store; corrupt ones are named in a warning and skipped."""
    folder = results_dir(output_dir)
    if not folder.is_dir():
        return []
    records = (_read(p, "skipped; rerun that run's command to rewrite it") for p in sorted(folder.glob("*.json")))
    return [resolved_paths(record, output_dir) for record in records if record is not None]


def load_runs(output_dir: str | os.PathLike) -> pd.DataFrame:
    """All finished runs under `output_dir` as a table, one row per run, nested fields flattened with dots."""
    records = iter_records(output_dir)
    if not records:
        return pd.DataFrame()
    return pd.json_normalize(records)
