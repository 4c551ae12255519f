"""`hf-infcompute status OUTPUT_DIR`: per search, the points finished, running (and who holds them), failed and left;
then the runs being trained now (ensemble members, students) and who trains them."""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from hf_infcompute.errors import InputError
from hf_infcompute.search.store import CLAIM_SUFFIX, MANIFEST_FILENAME, ClaimInfo, SweepStore, point_key
from hf_infcompute.training.claim import HOLDER_FILE

SWEEPS_DIRNAME = "sweeps"
RUNS_DIRNAME = "runs"


@dataclass
class SweepStatus:
    """What one sweep folder holds: finished and failed points, live claims, and the grid's size if recorded."""

    name: str
    finished: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # point key -> error
    running: dict[str, ClaimInfo] = field(default_factory=dict)  # point key -> its live claim
    abandoned: int = 0  # claims whose holder is gone: the next worker takes them over
    grid_size: int | None = None

    @property
    def left(self) -> int | None:
        """Grid points neither evaluated nor being evaluated (None without a recorded grid)."""
        if self.grid_size is None:
            return None
        return max(self.grid_size - self.finished - len(self.failed) - len(self.running), 0)


def sweep_status(directory: Path, name: str) -> SweepStatus:
    store = SweepStore(directory)
    status = SweepStatus(name)
    done = set()
    for result in store.results():
        key = point_key(result.point)
        done.add(key)
        if result.failed:
            status.failed[key] = result.error or "failed"
        else:
            status.finished += 1
    for path in sorted(store.claims_dir.glob(f"*{CLAIM_SUFFIX}")):
        try:
            point = dict(json.loads(path.read_text())["point"])
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            continue  # released, or its owner is still writing it (or died while writing it: the lease covers it)
        key = point_key(point)
        holder = store.holder(point)
        if key in done or key in status.running or holder is None:
            continue
        if store.is_stale(holder):
            status.abandoned += 1
        else:
            status.running[key] = holder
    axes = store.grid_axes()
    whole = axes and all(isinstance(values, list) for values in axes.values())
    status.grid_size = math.prod(len(values) for values in axes.values()) if whole else None
    return status


def sweep_folders(output_dir: Path) -> dict[str, Path]:
    """The sweeps under `output_dir`: a study's (`sweeps/*`), or `output_dir` itself when it is one sweep."""
    if (output_dir / MANIFEST_FILENAME).is_file():
        return {output_dir.name: output_dir}
    folder = output_dir / SWEEPS_DIRNAME
    found = sorted(p for p in folder.glob("*") if (p / MANIFEST_FILENAME).is_file()) if folder.is_dir() else []
    return {p.name: p for p in found}


def runs_in_training(output_dir: Path) -> dict[str, dict]:
    """Run id -> its holder (pid, host, claimed_at) for every run whose claim is held by a live process."""
    held = {}
    for path in sorted((output_dir / RUNS_DIRNAME).glob(f"*/{HOLDER_FILE}")):
        try:
            owner = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            continue  # released, or written by a holder that died meanwhile: the next start takes the run over
        if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int | None):
            continue
        if owner.get("host") == socket.gethostname() and not _pid_alive(owner.get("pid")):
            continue  # its holder died: the next process to start the run takes it over
        held[path.parent.name] = owner
    return held


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _since(timestamp: float | None) -> str:
    return "" if timestamp is None else f" for {(time.time() - timestamp) / 60:.1f} min"


def format_status(output_dir: Path) -> list[str]:
    sweeps = {name: sweep_status(path, name) for name, path in sweep_folders(output_dir).items()}
    held = runs_in_training(output_dir)
    if not sweeps and not held:
        raise InputError(
            f"{output_dir} holds no sweep (no {SWEEPS_DIRNAME}/*/{MANIFEST_FILENAME}) and no run in training: pass "
            "the --output folder of `hf-infcompute study` or `hf-infcompute search`"
        )
    lines = []
    for status in sweeps.values():
        left = "grid size not recorded" if status.left is None else f"{status.left} of {status.grid_size} grid points"
        lines.append(
            f"{status.name}: {status.finished} finished, {len(status.running)} running, {len(status.failed)} failed, "
            f"{left} left (the descent visits only part of its grid)"
            + (f", {status.abandoned} abandoned claims (taken over on the next start)" if status.abandoned else "")
        )
        for key, claim in status.running.items():
            lines.append(
                f"  running {key}: worker {claim.worker_id} (pid {claim.pid} on {claim.host}){_since(claim.claimed_at)}"
            )
        for key, error in status.failed.items():
            lines.append(f"  failed {key}: {error.strip().splitlines()[-1] if error.strip() else 'failed'}")
    if held:
        lines.append("runs being trained:")
        for run_id, owner in held.items():
            lines.append(f"  {run_id}: pid {owner.get('pid')} on {owner.get('host')}{_since(owner.get('claimed_at'))}")
    return lines


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show how far a study or a search is: points finished, running (and where), failed and left",
        description="Read OUTPUT_DIR (a study's or a search's folder) and print, per search, the points finished, "
        "running (with the worker, host and pid holding each), failed and left on the grid, then the runs being "
        "trained now. Reads files only; safe while workers run.",
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the --output folder of a study or a search")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output_dir = Path(args.output_dir)
    if not output_dir.is_dir():
        raise InputError(f"{output_dir} is not a folder: pass the --output folder of a study or a search")
    print("\n".join(format_status(output_dir)))
    return 0
