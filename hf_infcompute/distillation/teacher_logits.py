"""A teacher's logits chunk by chunk: its last hidden states once per batch, its head on the positions asked for."""

from __future__ import annotations

import torch
from torch import nn

from hf_infcompute.ensemble.modeling_logit_ensemble import LogitCombiner
from hf_infcompute.generation.teacher import ensemble_size
from hf_infcompute.training.loss_forward import decoder_and_head


class TeacherChunkLogits:
    """`teacher_logits(start, end)`: the teacher's logits at flat positions start:end of a [batch, seq] batch.

    The decoders run once (no gradient) and keep only their last hidden states ([batch x seq, hidden] per member);
    each call applies the head(s) to the rows asked for. A logit ensemble combines its members' chunk logits as its
    own forward does (`config.combine`: the mean of the logits, or of the probabilities).
    """

    def __init__(self, teacher: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        members = list(teacher.members) if ensemble_size(teacher) else [teacher]
        self.combine = teacher.config.combine if ensemble_size(teacher) else "logits"
        self.parts: list[tuple[torch.Tensor, nn.Linear]] = []
        with torch.no_grad():
            for member in members:
                decoder, head = decoder_and_head(member)
                hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
                self.parts.append((hidden.reshape(-1, hidden.shape[-1]), head))

    def __call__(self, start: int, end: int) -> torch.Tensor:
        combiner = LogitCombiner(self.combine)
        with torch.no_grad():
            for hidden, head in self.parts:
                combiner.add(head(hidden[start:end]))
        return combiner.result()
