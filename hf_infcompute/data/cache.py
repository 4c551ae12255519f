"""Where tokenizers and packed corpora are cached, and how a cache entry is built once and published atomically."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from filelock import FileLock, Timeout

logger = logging.getLogger(__name__)

# Where build locks live, beside the entries they guard.
LOCKS_DIRNAME = ".locks"

T = TypeVar("T")


def cache_root(cache_dir: str | None) -> Path:
    root = cache_dir or os.environ.get("HF_INFCOMPUTE_CACHE") or Path.home() / ".cache" / "hf_infcompute"
    return Path(root).expanduser()


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a cache folder at `target` unless it exists: `build(tmp)` fills a temporary folder that is then renamed.

    A lock file beside the entry (`.locks/<target>.lock`, in a hidden folder so that listings of the entries see
    none) lets one process build it, among processes and machines sharing
    the filesystem; the others wait for the lock, then read what it published. The rename makes publishing atomic,
    so a reader never sees a half-written entry.
    """
    if target.is_dir():
        return target
    locks = target.parent / LOCKS_DIRNAME
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{target.name}.lock"))
    try:
        lock.acquire(blocking=False)
    except Timeout:
        logger.info("waiting for another process to build %s", target)
        lock.acquire()
    try:
        if not target.is_dir():
            _build_atomically(target, build)
    finally:
        lock.release()
    return target


def _build_atomically(target: Path, build: Callable[[Path], None]) -> None:
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # Where the filesystem ignores locks, a racing process may have published first: its entry stands.
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_built(target: Path, build: Callable[[Path], None], read: Callable[[Path], T]) -> T:
    """`read(target)` of the cache entry `build_once` makes; an entry that cannot be read (a file of it cut off or
    damaged on disk) is deleted and built again, with one warning saying so."""
    build_once(target, build)
    try:
        return read(target)
    except Exception as error:  # the readers (pyarrow, json, tokenizers) raise many types; the entry is rebuildable
        if isinstance(error, OSError) and error.errno not in (None, errno.ENOENT):
            raise  # a disk or permission problem, not a damaged entry
        logger.warning("cache entry %s is damaged (%s: %s); building it again", target, type(error).__name__, error)
    shutil.rmtree(target, ignore_errors=True)
    build_once(target, build)
    return read(target)
