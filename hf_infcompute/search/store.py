"""`SweepStore`: the state of one hyperparameter sweep, kept in a directory that every worker shares.

Layout of a sweep directory:

    sweep.json                 the settings every result depends on (`bind`), so a sweep is never mixed with another
    grid.json                  the grid searched (`record_grid`), for `hf-infcompute status`
    points/<key>.json          one result per evaluated point, written atomically: finished (with its loss) or failed
    claims/<key>@<gen>.claim   who is evaluating a point right now (worker id, pid, host, time)

Workers (processes, GPUs or machines on a shared filesystem) claim a point before evaluating it. A claim is a file
created with `O_CREAT | O_EXCL`, which exactly one worker can do, so no point is evaluated twice. The owner touches
its claim every `heartbeat_s` seconds while it works. A claim is *stale* when its owner is gone: same host and a pid
that no longer runs, or no heartbeat for `lease_s` seconds (a dead machine). A stale claim of generation `g` is taken
over by creating generation `g + 1`, again with `O_EXCL`, so exactly one worker wins a takeover too; a killed sweep
therefore resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_infcompute.errors import InputError
from hf_infcompute.readers import RERUN, read_json_object, read_rebuildable_json
from hf_infcompute.records import write_json_atomic
from hf_infcompute.search.grid import Point, format_value

logger = logging.getLogger(__name__)

MANIFEST_FILENAME = "sweep.json"
GRID_FILENAME = "grid.json"
POINTS_DIRNAME = "points"
CLAIMS_DIRNAME = "claims"
CLAIM_SUFFIX = ".claim"

FINISHED = "finished"
FAILED = "failed"


def point_key(point: Mapping[str, Any]) -> str:
    """The file-name key of a point: `learning_rate=0.003,num_train_epochs=8,weight_decay=0.8` (coordinates sorted)."""
    return ",".join(f"{name}={format_value(point[name])}" for name in sorted(point))


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class PointResult:
    """The outcome of evaluating one point. A failed point has `loss == inf`, so it never wins a comparison."""

    point: Point
    status: str
    loss: float
    error: str | None = None
    worker_id: str | None = None
    wall_time_s: float | None = None
    finished_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status != FINISHED

    def to_dict(self) -> dict[str, Any]:
        # JSON has no infinity: a failed point's loss is written as null.
        return {
            "point": dict(self.point),
            "status": self.status,
            "loss": self.loss if math.isfinite(self.loss) else None,
            "error": self.error,
            "worker_id": self.worker_id,
            "wall_time_s": self.wall_time_s,
            "finished_at": self.finished_at,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> PointResult:
        status = payload["status"]
        loss = payload.get("loss")
        return cls(
            point=dict(payload["point"]),
            status=status,
            loss=float(loss) if status == FINISHED and loss is not None else math.inf,
            error=payload.get("error"),
            worker_id=payload.get("worker_id"),
            wall_time_s=payload.get("wall_time_s"),
            finished_at=payload.get("finished_at"),
            extra=dict(payload.get("extra") or {}),
        )


@dataclass(frozen=True)
class ClaimInfo:
    """What a claim file says about its owner. Owner fields are None while the owner is still writing them."""

    path: Path
    generation: int
    heartbeat_at: float
    worker_id: str | None = None
    pid: int | None = None
    host: str | None = None
    claimed_at: float | None = None


class Claim:
    """A point this worker holds. Use as a context manager: it heartbeats while held and is released on exit."""

    def __init__(self, path: Path, point: Point, worker_id: str, heartbeat_s: float) -> None:
        self.path = path
        self.point = point
        self.worker_id = worker_id
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True)
        self._heartbeat.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                logger.warning("%s: claim %s was taken over by another worker", self.worker_id, self.path.name)
                return

    def release(self) -> None:
        self._stop.set()
        self._heartbeat.join()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class SweepStore:
    """Results and claims of one sweep in `directory`.

    `lease_s`: a claim with no heartbeat for this long is stale (keep it well above clock skew between machines).
    `heartbeat_s`: how often a held claim is touched (default: a quarter of the lease).
    """

    def __init__(self, directory: str | os.PathLike, *, lease_s: float = 600.0, heartbeat_s: float | None = None):
        if lease_s <= 0:
            raise InputError(f"the claim lease must be a positive number of seconds, got {lease_s!r}")
        self.directory = Path(directory)
        self.lease_s = float(lease_s)
        self.heartbeat_s = float(heartbeat_s) if heartbeat_s is not None else self.lease_s / 4
        if not 0 < self.heartbeat_s < self.lease_s:
            raise InputError(f"the heartbeat ({self.heartbeat_s} s) must be positive and shorter than the lease")
        self.points_dir = self.directory / POINTS_DIRNAME
        self.claims_dir = self.directory / CLAIMS_DIRNAME
        self.points_dir.mkdir(parents=True, exist_ok=True)
        self.claims_dir.mkdir(parents=True, exist_ok=True)

    def bind(self, settings: Mapping[str, Any]) -> None:
        """Tie the sweep to the settings its results depend on (corpus, budget, model...).

        The first worker records them; any later worker with different settings gets an InputError, so results of
        different experiments never mix in one directory.
        """
        wanted = json.loads(json.dumps(dict(settings), sort_keys=True, default=str))
        path = self.directory / MANIFEST_FILENAME
        if not path.exists():
            write_json_atomic(path, {"settings": wanted})
        recorded = read_json_object(path, fix=RERUN, keys=("settings",))["settings"]
        if recorded != wanted:
            differing = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))
            raise InputError(
                f"{self.directory} holds a sweep with other settings (differing: {differing}): "
                "choose another output directory, or repeat the settings of that sweep"
            )

    def record_grid(self, axes: Mapping[str, Any]) -> None:
        """Keep the axes of the grid searched (`SearchGrid.to_dict()`), so a status can count the points left."""
        write_json_atomic(self.directory / GRID_FILENAME, dict(axes))

    def grid_axes(self) -> dict[str, list[Any]] | None:
        """The axes `record_grid` kept, or None for a sweep that recorded none."""
        return read_rebuildable_json(self.directory / GRID_FILENAME, "the search writes it again when it next starts")

    # Results.

    def result_path(self, point: Mapping[str, Any]) -> Path:
        return self.points_dir / f"{point_key(point)}.json"

    def result(self, point: Mapping[str, Any]) -> PointResult | None:
        """The stored result of `point`, or None if no worker has finished it."""
        return _read_result(self.result_path(point))

    def results(self) -> list[PointResult]:
        """Every stored result, in key order (damaged ones are named in a warning and left out)."""
        results = (
            _read_result(path) for path in sorted(self.points_dir.glob("*.json")) if not path.name.startswith(".")
        )
        return [result for result in results if result is not None]

    def record(self, result: PointResult) -> Path:
        path = self.result_path(result.point)
        write_json_atomic(path, result.to_dict())
        return path

    # Claims.

    def holder(self, point: Mapping[str, Any]) -> ClaimInfo | None:
        """The current (highest-generation) claim on `point`, or None if nobody claims it."""
        claims = self._claims(point_key(point))
        return claims[-1] if claims else None

    def is_stale(self, claim: ClaimInfo) -> bool:
        """True when the claim's owner is gone: a dead pid on this host, or no heartbeat within the lease."""
        if claim.host == socket.gethostname() and claim.pid is not None and not _pid_alive(claim.pid):
            return True
        return time.time() - claim.heartbeat_at > self.lease_s

    def try_claim(self, point: Mapping[str, Any], worker_id: str) -> Claim | None:
        """Claim `point` for `worker_id`, taking over a stale claim; None when another live worker holds it.

        A claim says nothing about results: check `result(point)` again after claiming, since another worker may
        have finished the point and released it just before.
        """
        key = point_key(point)
        current = self.holder(point)
        if current is not None and not self.is_stale(current):
            return None
        generation = 0 if current is None else current.generation + 1
        path = self.claims_dir / f"{key}@{generation}{CLAIM_SUFFIX}"
        owner = {
            "worker_id": worker_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "claimed_at": time.time(),
            "point": dict(point),
        }
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "w") as handle:
            json.dump(owner, handle)
        claims = self._claims(key)
        if not claims or claims[-1].generation != generation:
            # A takeover at a higher generation happened while we were creating ours: it wins.
            path.unlink(missing_ok=True)
            return None
        if current is not None:
            logger.info(
                "%s: took over the stale claim of worker %s (pid %s on %s) on %s",
                worker_id,
                current.worker_id,
                current.pid,
                current.host,
                key,
            )
            current.path.unlink(missing_ok=True)
        return Claim(path, dict(point), worker_id, self.heartbeat_s)

    def _claims(self, key: str) -> list[ClaimInfo]:
        """Claims on `key`, lowest generation first."""
        prefix = f"{key}@"
        claims = []
        for entry in os.scandir(self.claims_dir):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(CLAIM_SUFFIX)):
                continue
            generation = name[len(prefix) : -len(CLAIM_SUFFIX)]
            try:
                mtime = entry.stat().st_mtime
                owner = json.loads(Path(entry.path).read_text() or "{}")
            except FileNotFoundError:
                continue  # released while we looked
            except (json.JSONDecodeError, UnicodeDecodeError):
                owner = {}  # its owner is still writing it; the lease covers an owner that died meanwhile
            if not isinstance(owner, dict):
                owner = {}
            claims.append(
                ClaimInfo(
                    path=Path(entry.path),
                    generation=int(generation),
                    heartbeat_at=mtime,
                    worker_id=owner.get("worker_id"),
                    pid=owner.get("pid"),
                    host=owner.get("host"),
                    claimed_at=owner.get("claimed_at"),
                )
            )
        return sorted(claims, key=lambda claim: claim.generation)


def _read_result(path: Path) -> PointResult | None:
    """The result in `path`; None when there is none, or when it is damaged: the point is then evaluated again, which
    reads its run's record back instead of training it again."""
    payload = read_rebuildable_json(path, "the point is evaluated again (a finished run is read back from its record)")
    if payload is None:
        return None
    try:
        return PointResult.from_dict(payload)
    except (KeyError, TypeError, ValueError):
        logger.warning("%s is damaged (not a point result); the point is evaluated again", path)
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True
