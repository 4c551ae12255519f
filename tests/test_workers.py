"""Processes of a multi-process launch become independent workers, each on its own device."""

from __future__ import annotations

import os

from hf_infcompute.workers import WorkerSlot, detach_from_launcher, is_lead


def test_launcher_processes_become_independent_workers(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert detach_from_launcher() is None
    for name, value in {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "localhost"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert detach_from_launcher() == WorkerSlot(rank=3, world_size=4)
    assert "WORLD_SIZE" not in os.environ and "LOCAL_RANK" not in os.environ and "MASTER_ADDR" not in os.environ
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"  # its own device


def test_the_lead_is_worker_zero_or_rank_zero_or_the_only_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert is_lead()  # a lone process
    monkeypatch.setenv("RANK", "1")
    assert not is_lead()  # rank 1 of a data-parallel launch
    monkeypatch.setenv("RANK", "0")
    assert is_lead()
    # Detached workers: the launch variables are gone, the slot says who leads.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    slot = detach_from_launcher()
    assert slot == WorkerSlot(rank=1, world_size=2) and not is_lead(slot) and is_lead()
    assert is_lead(WorkerSlot(rank=0, world_size=2))
