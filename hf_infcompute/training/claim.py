"""`RunClaim`: one trainer per run folder, whichever processes or machines start it.

The claim is an OS file lock (`filelock.FileLock`) on `<run folder>/claim.lock`. The OS releases it when its holder
exits or dies, so a killed holder's run is taken over by the next process waiting for it (on a shared filesystem the
file server does the same when the holder's machine stops renewing its lock lease). Beside the lock,
`claim.holder.json` names the holder (pid, host, time) for the processes waiting on it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from hf_infcompute.records import write_json_atomic

logger = logging.getLogger(__name__)

LOCK_FILE = "claim.lock"
HOLDER_FILE = "claim.holder.json"


class RunClaim:
    """The exclusive right to train the run in `folder`; `acquire` waits while another process holds it.

    `poll_s`: how often a waiting process logs who holds the run.
    """

    def __init__(self, folder: str | Path, *, poll_s: float = 30.0) -> None:
        self.folder = Path(folder)
        self.poll_s = poll_s
        self._lock = FileLock(self.folder / LOCK_FILE, thread_local=False)  # any thread of the holder may release it

    def holder(self) -> str:
        """Who holds the claim, as its holder file says ("unknown" while none is written)."""
        try:
            owner = json.loads((self.folder / HOLDER_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return "unknown"
        if not isinstance(owner, dict):
            return "unknown"
        return f"pid {owner.get('pid')} on {owner.get('host')} since {time.ctime(owner.get('claimed_at', 0))}"

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                self._lock.acquire(timeout=self.poll_s)
                break
            except Timeout:
                logger.info("run %s is being trained by %s; waiting for it", self.folder.name, self.holder())
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "claimed_at": time.time()}
        write_json_atomic(self.folder / HOLDER_FILE, owner)

    def release(self) -> None:
        if self._lock.is_locked:
            (self.folder / HOLDER_FILE).unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> RunClaim:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
