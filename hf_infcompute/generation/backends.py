"""Sampling backends: batched `transformers.generate` (any causal LM, CPU or GPU) and vLLM (GPU).

A logit ensemble teacher is sampled in one of two modes (`ENSEMBLE_MODES`), side by side:
- `logit_average`: every token from the ensemble's own distribution, the softmax of the members' mean logits (the
  paper's teacher). The transformers backend always samples this way (`LogitEnsembleForCausalLM.generate`); vLLM does
  through the out-of-tree model in `vllm_ensemble.py`, one engine holding all K members.
- `pooled` (vLLM only): each member sampled alone for its share of the rows (row i from member i mod K), so the
  corpus is a mixture of the members' distributions, not the ensemble's. The authors' released synthetic sets appear
  to have been made this way. K engines, one per member.

Both backends draw plain ancestral samples: every row starts with the start token and continues for `seq_len - 1`
sampled tokens, through EOS (an EOS starts the next document, as in packed training data), with no warper other than the
requested temperature / top-p / top-k. Rows come back as int32 arrays of shape (rows, seq_len).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from transformers import GenerationConfig, PreTrainedModel

from hf_infcompute.errors import InputError

BACKENDS = ("transformers", "vllm")
ENSEMBLE_MODES = ("logit_average", "pooled")
# Share of the GPU's memory vLLM may take (weights and KV cache), split evenly among pooled members' engines.
VLLM_MEMORY_UTILIZATION = 0.9
VLLM_FIX = (
    "install it on a machine with a CUDA GPU (`pip install hf-infcompute[vllm]`), or use `--backend transformers`"
)


@dataclass(frozen=True)
class SamplingSettings:
    seq_len: int
    start_token_id: int
    temperature: float
    top_p: float
    top_k: int
    batch_size: int | None  # None: sized to the device's KV-cache budget once the teacher is loaded (transformers)


class Sampler(Protocol):
    def batches(self, num_rows: int, seed: int) -> Iterator[np.ndarray]:
        """Yield `num_rows` sampled rows in batches; the same `seed` gives the same rows."""
        ...


def row_seeds(seed: int, num_rows: int) -> list[int]:
    """Independent per-row seeds derived from one seed."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(num_rows)]


class TransformersSampler:
    """Ancestral sampling with `model.generate`, `batch_size` rows at a time, KV cache on the model's device."""

    def __init__(self, model: PreTrainedModel, settings: SamplingSettings) -> None:
        if not model.can_generate():
            raise InputError(f"teacher {type(model).__name__} cannot generate text: give a causal language model")
        self.model = model
        self.settings = settings
        # Every field that could add a logits processor is set explicitly: generate() fills unset ones from the
        # teacher's generation_config.json and then from library defaults (top_k=50).
        self.generation_config = GenerationConfig(
            do_sample=True,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k,
            max_new_tokens=settings.seq_len - 1,
            eos_token_id=None,  # never stop at EOS: rows run through document boundaries to full length
            use_cache=True,
        )

    @contextlib.contextmanager
    def _own_generation_config(self) -> Iterator[None]:
        """Swap in our config as the model's default, so nothing of the teacher's (penalties, min_p...) leaks in."""
        saved = self.model.generation_config
        self.model.generation_config = self.generation_config
        try:
            yield
        finally:
            self.model.generation_config = saved

    @torch.inference_mode()
    def batches(self, num_rows: int, seed: int) -> Iterator[np.ndarray]:
        device = self.model.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), self._own_generation_config():
            torch.manual_seed(seed)
            for start in range(0, num_rows, self.settings.batch_size):
                size = min(self.settings.batch_size, num_rows - start)
                prompt = torch.full((size, 1), self.settings.start_token_id, dtype=torch.long, device=device)
                rows = self.model.generate(
                    input_ids=prompt,
                    attention_mask=torch.ones_like(prompt),
                    generation_config=self.generation_config,
                )
                if rows.shape != (size, self.settings.seq_len):
                    expected = (size, self.settings.seq_len)
                    raise RuntimeError(f"generate returned rows of shape {tuple(rows.shape)}, expected {expected}")
                yield rows.cpu().numpy().astype(np.int32)


def require_vllm() -> None:
    """Raise `InputError` naming the fix unless vLLM is importable and a CUDA device is present."""
    try:
        import vllm  # noqa: F401
    except ImportError as error:
        raise InputError(f"the vllm backend needs vLLM, which is not installed ({error}): {VLLM_FIX}") from error
    if not torch.cuda.is_available():
        raise InputError(f"the vllm backend needs a CUDA GPU and none is visible: {VLLM_FIX}")


def pooled_assignment(num_rows: int, num_members: int) -> list[int]:
    """The member that samples each row in `pooled` mode: row i from member i mod K (shares differ by at most one)."""
    return [row % num_members for row in range(num_rows)]


class VLLMSampler:
    """Ancestral sampling with vLLM's offline engine; each row has its own seed, so rows do not depend on batching.

    `engine_kwargs` go to `vllm.LLM` (the ensemble's `hf_overrides`, a memory share for pooled members).
    """

    def __init__(
        self,
        model_name: str,
        settings: SamplingSettings,
        *,
        seed: int,
        dtype: str = "auto",
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        require_vllm()
        from vllm import LLM

        self.settings = settings
        # generation_config="vllm": ignore the teacher's generation_config.json sampling defaults.
        self.llm = LLM(
            model=model_name,
            seed=seed,
            dtype=dtype,
            max_model_len=settings.seq_len,
            generation_config="vllm",
            **(engine_kwargs or {}),
        )

    def sample(self, seeds: list[int]) -> np.ndarray:
        """One row per seed, in order."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        s = self.settings
        prompt = TokensPrompt(prompt_token_ids=[s.start_token_id])
        params = [
            SamplingParams(
                n=1,
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=s.top_k if s.top_k > 0 else -1,  # -1 disables top-k in every vLLM release
                max_tokens=s.seq_len - 1,
                ignore_eos=True,  # continue past EOS into the next document; EOS logits are not altered
                seed=row_seed,
                detokenize=False,
            )
            for row_seed in seeds
        ]
        outputs = self.llm.generate([prompt] * len(params), params, use_tqdm=False)
        rows = [[s.start_token_id, *output.outputs[0].token_ids] for output in outputs]
        if any(len(row) != s.seq_len for row in rows):
            raise RuntimeError(f"vLLM returned rows shorter than seq_len={s.seq_len}")
        return np.asarray(rows, dtype=np.int32)

    def batches(self, num_rows: int, seed: int) -> Iterator[np.ndarray]:
        seeds = row_seeds(seed, num_rows)
        for start in range(0, num_rows, self.settings.batch_size):
            yield self.sample(seeds[start : start + self.settings.batch_size])


class PooledVLLMSampler:
    """`pooled` mode: member i mod K samples row i (its own engine, its own per-row seed); rows keep their order."""

    def __init__(self, member_dirs: list[str], settings: SamplingSettings, *, seed: int, dtype: str = "auto") -> None:
        share = {"gpu_memory_utilization": VLLM_MEMORY_UTILIZATION / len(member_dirs)}
        self.settings = settings
        self.members = [
            VLLMSampler(member, settings, seed=seed + index, dtype=dtype, engine_kwargs=share)
            for index, member in enumerate(member_dirs)
        ]

    def batches(self, num_rows: int, seed: int) -> Iterator[np.ndarray]:
        seeds = row_seeds(seed, num_rows)
        owners_of_rows = np.asarray(pooled_assignment(num_rows, len(self.members)))
        for start in range(0, num_rows, self.settings.batch_size):
            batch_seeds = seeds[start : start + self.settings.batch_size]
            owners = owners_of_rows[start : start + len(batch_seeds)]
            rows = np.empty((len(batch_seeds), self.settings.seq_len), dtype=np.int32)
            for index, member in enumerate(self.members):
                mine = np.flatnonzero(owners == index)
                if len(mine):
                    rows[mine] = member.sample([batch_seeds[i] for i in mine])
            yield rows
