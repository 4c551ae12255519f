"""What breaks on a first GPU run, checked on the CPU: device memory between in-process runs, vLLM's naming rules
for the ensemble, the streamed scorer's memory, ranks that must not hang, and scoring precision."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_infcompute.training.config import parse_run_config

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3


class FakeCudaMemory:
    """PyTorch's CUDA memory API over a simulated 80 GiB device: `allocated` bytes live in tensors, `reserved` bytes
    are held by the caching allocator (allocated plus cached blocks); the driver counts all reserved bytes as used."""

    def __init__(self, total: int = 80 * GIB):
        self.total, self.allocated, self.reserved = total, 0, 0
        self.cache_releasable = True

    def mem_get_info(self, device=None) -> tuple[int, int]:
        return self.total - self.reserved, self.total

    def memory_reserved(self, device=None) -> int:
        return self.reserved

    def memory_allocated(self, device=None) -> int:
        return self.allocated

    def empty_cache(self) -> None:
        if self.cache_releasable:
            self.reserved = self.allocated

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("mem_get_info", "memory_reserved", "memory_allocated", "empty_cache"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))


@pytest.mark.parametrize("cache_releasable", [True, False])
def test_a_second_run_in_the_process_sizes_its_micro_batch_like_the_first(corpus_dir, monkeypatch, cache_releasable):
    """D1: the previous run's cached blocks (14 GiB, no longer allocated) do not count as used, whether
    `empty_cache` returns them to the driver or (fragmented) it cannot."""
    from hf_infcompute.models.presets import get_preset
    from hf_infcompute.planning.device import fit_micro_batch
    from hf_infcompute.training.arguments import RegularizedTrainingArguments

    settings = {
        "corpus": str(corpus_dir),
        "token_budget": 8192,
        "seq_len": 4096,
        "global_batch_size": 64,
        "per_device_train_batch_size": 64,
        "auto_micro_batch": True,
        "precision": "bf16",
    }
    config = get_preset("llama-1.4b").build_config(vocab_size=128_256)
    runs = [parse_run_config(settings, "/tmp/unused").training for _ in range(3)]
    for args in runs:
        assert args.device.type == "cpu"  # sets up the (single-process) distributed state before faking a GPU
    memory = FakeCudaMemory()
    memory.cache_releasable = cache_releasable
    memory.install(monkeypatch)
    monkeypatch.setattr(RegularizedTrainingArguments, "device", property(lambda self: torch.device("cuda", 0)))
    first = fit_micro_batch(runs[0], config, 4096)
    assert first >= 1
    memory.reserved = 14 * GIB  # the first run's tensors are gone; the allocator keeps their blocks cached
    assert memory.mem_get_info()[0] == 66 * GIB  # what the driver alone reports
    second = fit_micro_batch(runs[1], config, 4096)
    assert second == first
    memory.allocated = memory.reserved = 70 * GIB  # memory really in use still counts
    with pytest.raises(Exception, match="not one sequence"):
        fit_micro_batch(runs[2], config, 4096)


def test_the_device_planner_imports_first_in_a_fresh_interpreter():
    """D1: `hf_infcompute.planning.device` imported before anything else (no cycle through `training`)."""
    for module in ("hf_infcompute.planning.device", "hf_infcompute.training.pretraining"):
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
