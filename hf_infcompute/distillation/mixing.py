"""The order of a student's training rows: every batch mixes real and synthetic rows at a fixed ratio."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from hf_infcompute.distillation.losses import mixed_batch_counts


def _permutation(n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


class MixedEpochSampler(Sampler[int]):
    """Indices into `concatenate(real, synthetic)`, batch by batch, with `synthetic_fraction` of each batch synthetic.

    An epoch is one pass over the real rows in a fresh seeded order; the synthetic rows are a separate stream that
    continues across epochs (reshuffled after each full pass), so E epochs see the real data exactly E times and as
    much synthetic data as the ratio asks. With `synthetic_fraction == 1` an epoch is a pass over the synthetic rows.
    The order of any epoch follows from (`seed`, epoch) alone, so a resumed run sees what an uninterrupted one saw.
    Consecutive `batch_size` indices form one batch: give the DataLoader the same batch size.
    """

    def __init__(self, num_real: int, num_synthetic: int, batch_size: int, synthetic_fraction: float, seed: int):
        self.num_real, self.num_synthetic = num_real, num_synthetic
        self.batch_size, self.fraction, self.seed = batch_size, synthetic_fraction, seed
        self.epoch = 0
        self._length = len(self._epoch_batches(0))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[int]:
        return iter(self._epoch_batches(self.epoch))

    def _synthetic_stream(self, start: int, count: int) -> list[int]:
        """Synthetic rows `start .. start + count` of the endless stream of reshuffled passes."""
        rows: list[int] = []
        position = start
        while len(rows) < count:
            sweep, offset = divmod(position, self.num_synthetic)
            order = _permutation(self.num_synthetic, self.seed * 7_919 + 1_000_003 + sweep)
            take = order[offset : offset + count - len(rows)]
            rows.extend(self.num_real + i for i in take)
            position += len(take)
        return rows

    def _epoch_batches(self, epoch: int) -> list[int]:
        if self.fraction >= 1.0:
            order = self._synthetic_stream(epoch * self.num_synthetic, self.num_synthetic)
            return order
        real = _permutation(self.num_real, self.seed * 1_000_003 + epoch)
        plan: list[tuple[int, int]] = []
        used = step = 0
        while used < self.num_real:
            n_real, n_synthetic = mixed_batch_counts(self.batch_size, self.fraction, step)
            if n_real == 0:  # a fraction near 1 can leave a batch without real rows
                plan.append((0, n_synthetic))
            else:
                take = min(n_real, self.num_real - used)
                plan.append((take, round(n_synthetic * take / n_real)))
                used += take
            step += 1
        synthetic_per_epoch = sum(s for _, s in plan)
        synthetic = iter(self._synthetic_stream(epoch * synthetic_per_epoch, synthetic_per_epoch))
        real_rows = iter(real)
        indices: list[int] = []
        for n_real, n_synthetic in plan:
            batch = [next(real_rows) for _ in range(n_real)] + [next(synthetic) for _ in range(n_synthetic)]
            indices.extend(batch)
        return indices
