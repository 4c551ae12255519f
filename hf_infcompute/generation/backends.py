"""Sampling backends: batched `transformers.generate` (any causal LM, CPU or GPU) and vLLM (GPU).

A logit ensemble teacher is sampled in one of two modes (`ENSEMBLE_MODES`), side by side:
- `logit_average`: every token from the ensemble's own distribution, the softmax of the members' mean logits (the
  paper's teacher). The transformers backend always samples this way (`LogitEnsembleForCausalLM.generate`); vLLM does
  through the out-of-tree model in `vllm_ensemble.py`, one engine holding all K members.
- `pooled` (vLLM only): each member sampled alone for its share of the rows (row i from member i mod K), so the
  corpus is a mixture of the members' distributions, not the ensemble's. The authors' released synthetic sets appear
  to have been made this way. One engine per member, one engine alive at a time at the full memory share: a vLLM
  engine reserves `gpu_memory_utilization` x the device's total memory at start and refuses to start when less is free
  (vLLM `v1/worker/gpu_worker.py`, `init_device`), so K engines alive together would get 1/K of the KV cache each
  while only one computes. Each member samples its rows of every shard the call is given, in a process of its own
  (its memory is the device's again when the process ends), and keeps them on disk until the shard is written.

Both backends draw plain ancestral samples: every row starts with the start token and continues for `seq_len - 1`
sampled tokens, through EOS (an EOS starts the next document, as in packed training data), with no warper other than the
requested temperature / top-p / top-k. Rows come back as int32 arrays of shape (rows, seq_len).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from transformers import GenerationConfig, PreTrainedModel

from hf_infcompute.errors import InputError

BACKENDS = ("transformers", "vllm")
ENSEMBLE_MODES = ("logit_average", "pooled")
# Share of the GPU's total memory one vLLM engine reserves (weights and KV cache); one engine runs at a time.
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


@dataclass(frozen=True)
class ShardJob:
    """One shard to sample: its index, its rows and the seed its rows are drawn from."""

    index: int
    num_rows: int
    seed: int


class Sampler(Protocol):
    def shards(self, jobs: Sequence[ShardJob]) -> Iterator[tuple[ShardJob, np.ndarray]]:
        """Yield each job with its rows, shape (num_rows, seq_len); the same seed gives the same rows."""
        ...


class BatchSampler:
    """A sampler that draws each shard's rows in batches, one shard after another."""

    def batches(self, num_rows: int, seed: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def shards(self, jobs: Sequence[ShardJob]) -> Iterator[tuple[ShardJob, np.ndarray]]:
        for job in jobs:
            yield job, np.concatenate(list(self.batches(job.num_rows, job.seed)))


def default_backend() -> str:
    """vLLM where it is installed and a CUDA device is visible, transformers otherwise."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "transformers"
    return "vllm" if torch.cuda.is_available() else "transformers"


def row_seeds(seed: int, num_rows: int) -> list[int]:
    """Independent per-row seeds derived from one seed."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(num_rows)]


class TransformersSampler(BatchSampler):
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


class VLLMSampler(BatchSampler):
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


MemberRun = Callable[[str, SamplingSettings, int, str, list[tuple[Path, list[int]]]], None]


def sample_member(
    member_dir: str, settings: SamplingSettings, seed: int, dtype: str, parts: list[tuple[Path, list[int]]]
) -> None:
    """One member's engine at the full memory share: for each (file, row seeds) in `parts`, its rows into the file."""
    sampler = VLLMSampler(
        member_dir,
        settings,
        seed=seed,
        dtype=dtype,
        engine_kwargs={"gpu_memory_utilization": VLLM_MEMORY_UTILIZATION},
    )
    for path, seeds in parts:
        batches = [
            sampler.sample(seeds[i : i + settings.batch_size]) for i in range(0, len(seeds), settings.batch_size)
        ]
        rows = np.concatenate(batches) if batches else np.empty((0, settings.seq_len), dtype=np.int32)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as file:
            np.save(file, rows)
        os.replace(tmp, path)


def sample_member_in_process(
    member_dir: str, settings: SamplingSettings, seed: int, dtype: str, parts: list[tuple[Path, list[int]]]
) -> None:
    """`sample_member` in a spawned process, so that its engine's memory is the device's again when it returns."""
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=sample_member, args=(member_dir, settings, seed, dtype, parts))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"sampling member {member_dir} with vLLM failed (exit code {process.exitcode})")


class PooledVLLMSampler:
    """`pooled` mode: member i mod K samples row i of each shard with its own per-row seed; rows keep their order.

    Members run one after another, each over every shard of the call (`run_member`, default: its own process), their
    rows kept in `parts_dir` until the shard is assembled, so a killed run resumes at the member it was sampling.
    """

    def __init__(
        self,
        member_dirs: list[str],
        settings: SamplingSettings,
        *,
        seed: int,
        parts_dir: Path,
        dtype: str = "auto",
        run_member: MemberRun = sample_member_in_process,
    ) -> None:
        self.member_dirs = member_dirs
        self.settings = settings
        self.seed = seed
        self.dtype = dtype
        self.parts_dir = parts_dir
        self.run_member = run_member

    def part_path(self, job: ShardJob, member: int) -> Path:
        return self.parts_dir / f"shard-{job.index:05d}-member-{member}.npy"

    def shards(self, jobs: Sequence[ShardJob]) -> Iterator[tuple[ShardJob, np.ndarray]]:
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        k = len(self.member_dirs)
        owners = {job.index: np.asarray(pooled_assignment(job.num_rows, k)) for job in jobs}
        seeds = {job.index: row_seeds(job.seed, job.num_rows) for job in jobs}
        for member, member_dir in enumerate(self.member_dirs):
            parts = [
                (
                    self.part_path(job, member),
                    [seeds[job.index][i] for i in np.flatnonzero(owners[job.index] == member)],
                )
                for job in jobs
                if not self.part_path(job, member).is_file()
            ]
            if any(part_seeds for _, part_seeds in parts):
                self.run_member(member_dir, self.settings, self.seed + member, self.dtype, parts)
        for job in jobs:
            rows = np.empty((job.num_rows, self.settings.seq_len), dtype=np.int32)
            for member in range(k):
                mine = np.flatnonzero(owners[job.index] == member)
                if len(mine):
                    rows[mine] = np.load(self.part_path(job, member))
            yield job, rows
            for member in range(k):  # the shard is written: its parts are no longer needed
                self.part_path(job, member).unlink(missing_ok=True)
