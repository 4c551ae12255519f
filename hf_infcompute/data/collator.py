"""Batch packed rows for causal-LM training: labels are the inputs, positions past a row's `length` are masked."""

from __future__ import annotations

from typing import Any

import torch

IGNORE_INDEX = -100


class PackedCollator:
    """Collate packed rows. Full rows need no attention mask (the fast causal path); a short row gets one."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = torch.tensor([e["input_ids"] for e in examples], dtype=torch.long)
        labels = input_ids.clone()
        batch = {"input_ids": input_ids, "labels": labels}
        lengths = [e.get("length", input_ids.shape[1]) for e in examples]
        if min(lengths) < input_ids.shape[1]:
            positions = torch.arange(input_ids.shape[1])
            padding = positions[None, :] >= torch.tensor(lengths)[:, None]
            input_ids[padding] = self.pad_token_id
            labels[padding] = IGNORE_INDEX
            batch["attention_mask"] = (~padding).long()
        return batch
