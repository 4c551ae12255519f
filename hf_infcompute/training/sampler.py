"""A seeded shuffle of the training sequences: a fresh one each epoch, or one order for every epoch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """Permutes `num_samples` indices anew each epoch, from (`seed`, epoch) alone; with `reshuffle=False`, one
    permutation (epoch 0's) for every epoch, as Levanter orders the paper's runs.

    Trainer calls `set_epoch` before every epoch (also through accelerate's shard wrappers), so the order of any
    epoch is reproducible on its own: a run resumed mid-training sees exactly the order an uninterrupted run saw.
    """

    def __init__(self, num_samples: int, seed: int, *, reshuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.reshuffle = reshuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + (self.epoch if self.reshuffle else 0))
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())
