"""Where tokenizers and packed corpora are cached, and how a cache entry is published atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root(cache_dir: str | None) -> Path:
    root = cache_dir or os.environ.get("HF_INFCOMPUTE_CACHE") or Path.home() / ".cache" / "hf_infcompute"
    return Path(root).expanduser()


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a cache folder at `target` unless it exists: `build(tmp)` fills a temporary folder that is then renamed.

    Several processes may race to build the same entry: each builds privately and the first rename wins, so a
    reader never sees a half-written entry.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
