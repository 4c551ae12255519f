"""The K-curve: the loss of the ensemble of the first k members on a split's rows (validation, and test each), for
every k <= K, in one pass.

Scoring stays on the scoring device: each member's logits for a chunk of rows are added to a float32 running sum (or
log-sum of probabilities) on that device, the log-softmax comes at the end, and only the summed NLLs leave the device.
No member builds a KV cache. Members that do not all fit in the device's free memory are streamed: moved onto it one
at a time and back, each member running over a window of chunks before the next comes in. A chunk's running sums live
until its last member has run, so a window holds as many chunks as the free memory beside one member allows
(`live_chunks`): memory is one member plus a bounded number of chunks' sums, whatever K and the batch size are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel

from hf_infcompute.data import PackedCollator
from hf_infcompute.ensemble.modeling_logit_ensemble import LogitCombiner
from hf_infcompute.planning.device import free_memory
from hf_infcompute.training.validation import CHUNK_TOKENS, rounded, row_chunks, row_nll, scoring_precision

COMBINE_MODES = ("logits", "probs")
# Share of the device's free memory kept for activations and logits when deciding whether all members fit.
MEMORY_HEADROOM = 0.3


@dataclass(frozen=True)
class EnsembleCurve:
    """Per-token NLL on one split's rows: `ensemble[combine][k-1]` of the first k members combined by mean logits
    ("logits") or mean probabilities ("probs"), `members[i]` of member i alone; `sequences` and `member_sequences`
    hold the same per row ([k-1][row] and [i][row])."""

    ensemble: dict[str, list[float]]
    members: list[float]
    sequences: dict[str, list[list[float]]]
    member_sequences: list[list[float]]


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers (tied weights counted once)."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def members_fit(member_bytes: Sequence[int], free_bytes: int, headroom: float = MEMORY_HEADROOM) -> bool:
    """Whether members of these sizes fit on a device at once, keeping `headroom` of its free memory for the rest."""
    return sum(member_bytes) <= (1 - headroom) * free_bytes


def live_chunks(free_bytes: int, member_bytes: int, chunk_bytes: int, headroom: float = MEMORY_HEADROOM) -> int:
    """How many chunks' running sums a streamed pass keeps at once: those that fit, with one member loaded, in the
    free memory less `headroom`, after the transient tensors of the chunk being scored (its logits, log-softmax and
    combined result: about as much as one chunk's sums). At least one. `chunk_bytes` is one chunk's running sums, a
    float32 [tokens x vocabulary] tensor per combination mode."""
    budget = (1 - headroom) * free_bytes - member_bytes - chunk_bytes
    return max(1, int(budget // max(1, chunk_bytes)))


def free_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (`hf_infcompute.planning.device.free_memory`, PyTorch's cache counted free);
    None elsewhere, where host memory holds everything."""
    if device.type != "cuda":
        return None
    return free_memory(device)


class MemberPlacement:
    """Members on the scoring device: all at once when they fit (resident), else one at a time (streamed)."""

    def __init__(self, members: Sequence[PreTrainedModel], device: torch.device, *, stream: bool | None = None):
        self.members = list(members)
        self.device = device
        self.homes = [member.device for member in self.members]
        self.free = free_device_memory(device)
        if stream is None:
            away = [model_bytes(m) for m in self.members if m.device != device]
            stream = self.free is not None and not members_fit(away, self.free)
        self.streamed = stream
        self._loaded: int | None = None

    def windows(self, num_chunks: int, chunk_bytes: int) -> list[range]:
        """The batch's chunks in windows whose running sums are alive together: one chunk at a time when resident;
        when streamed, as many as `live_chunks` allows beside the largest member (all of them off a GPU)."""
        if not self.streamed:
            size = 1
        elif self.free is None:
            size = num_chunks
        else:
            size = live_chunks(self.free, max(model_bytes(m) for m in self.members), chunk_bytes)
        return [range(start, min(start + size, num_chunks)) for start in range(0, num_chunks, size)]

    def order(self, window: range) -> list[tuple[int, int]]:
        """(chunk, member) pairs of a window in the order that moves members least: chunk by chunk when resident,
        member by member when streamed (each member moved once per window)."""
        if self.streamed:
            return [(chunk, index) for index in range(len(self.members)) for chunk in window]
        return [(chunk, index) for chunk in window for index in range(len(self.members))]

    def get(self, index: int) -> PreTrainedModel:
        """Member `index` on the device (the previously streamed member goes back home first)."""
        if self.streamed and self._loaded != index:
            if self._loaded is not None:
                self.members[self._loaded].to(self.homes[self._loaded])
            self.members[index].to(self.device)
            self._loaded = index
        return self.members[index]

    @contextmanager
    def placed(self) -> Iterator[MemberPlacement]:
        """Resident members moved onto the device for the duration; every member back where it was afterwards."""
        try:
            if not self.streamed:
                for member in self.members:
                    member.to(self.device)
            yield self
        finally:
            for member, home in zip(self.members, self.homes):
                member.to(home)
            self._loaded = None


@torch.no_grad()
def ensemble_curve(
    members: Sequence[PreTrainedModel],
    validation: datasets.Dataset,
    pad_token_id: int,
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    stream: bool | None = None,
    chunk_tokens: int = CHUNK_TOKENS,
    bf16: bool = False,
) -> EnsembleCurve:
    """Evaluate every prefix ensemble (k = 1..K) of `members` on `validation` (packed rows) in one pass, combining
    logits and probabilities both.

    Each member runs once per row; the prefix ensembles come from running sums of member logits and probabilities,
    so the whole curve costs K forward passes, not K(K+1)/2. Written by hand because no library evaluates nested
    ensembles; the full-K point equals `LogitEnsembleForCausalLM`'s loss. `device` defaults to member 0's;
    `stream` (default: decided from the device's free memory) moves members onto it one at a time. Members run in
    their own dtype, or with `bf16` under bfloat16 autocast; the reduction is float32. Members end where they started.
    """
    device = torch.device(device) if device is not None else members[0].device
    k_total, rows_total = len(members), len(validation)
    vocab_size = members[0].config.get_text_config(decoder=True).vocab_size
    ensemble_nll = {
        mode: torch.zeros(k_total, rows_total, dtype=torch.float64, device=device) for mode in COMBINE_MODES
    }
    member_nll = torch.zeros(k_total, rows_total, dtype=torch.float64, device=device)
    tokens = torch.zeros(rows_total, dtype=torch.long, device=device)
    loader = DataLoader(validation, batch_size=batch_size, collate_fn=PackedCollator(pad_token_id))
    first_row = 0
    with MemberPlacement(members, device, stream=stream).placed() as placement:
        for batch in loader:
            batch = {key: value.to(device) for key, value in batch.items()}
            targets = batch.pop("labels")[:, 1:]
            chunks = row_chunks(targets.shape[0], targets.shape[1], chunk_tokens)
            chunk_bytes = len(COMBINE_MODES) * (chunks[0].stop - chunks[0].start) * targets.shape[1] * vocab_size * 4
            for window in placement.windows(len(chunks), chunk_bytes):
                combiners = {chunk: {mode: LogitCombiner(mode) for mode in COMBINE_MODES} for chunk in window}
                for chunk_index, index in placement.order(window):
                    rows = chunks[chunk_index]
                    at = slice(first_row + rows.start, first_row + rows.stop)
                    inputs = {key: value[rows] for key, value in batch.items()}
                    with scoring_precision(device, bf16):
                        logits = placement.get(index)(**inputs, use_cache=False).logits[:, :-1].float()
                    chunk_targets = targets[rows]
                    member_nll[index, at], tokens[at] = row_nll(torch.log_softmax(logits, dim=-1), chunk_targets)
                    for mode, combiner in combiners[chunk_index].items():
                        combiner.add(logits)
                        ensemble_nll[mode][index, at] = row_nll(
                            torch.log_softmax(combiner.result(), dim=-1), chunk_targets
                        )[0]
                    del logits
                    if index == k_total - 1:
                        del combiners[chunk_index]  # the chunk is done: free its running sums
            first_row += targets.shape[0]
    count = tokens.clamp(min=1).double()
    return EnsembleCurve(
        ensemble={mode: (nll.sum(dim=1) / tokens.sum()).tolist() for mode, nll in ensemble_nll.items()},
        members=(member_nll.sum(dim=1) / tokens.sum()).tolist(),
        sequences={mode: [rounded(row) for row in (nll / count).tolist()] for mode, nll in ensemble_nll.items()},
        member_sequences=[rounded(row) for row in (member_nll / count).tolist()],
    )
