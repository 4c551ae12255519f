"""Sample a synthetic corpus from a teacher into parquet shards that train like packed real data.

Layout of `output_dir` (a Hub dataset repository as it stands: `datasets.load_dataset(output_dir)` reads it):
- `data/shard-00000.parquet`, ...: the columns of the real training split: `input_ids` (exactly `seq_len` int32
  tokens) and `length` (how many of them count; `seq_len` except in the very last row, which is cut so the corpus
  holds exactly `num_tokens` tokens; its tail is padding).
- `generation.json`: the manifest (teacher, settings, progress), rewritten atomically after every shard.
- `README.md`: the dataset card (teacher, settings, seed, token count; its `configs` point at `data/`), once finished.
- `tokenizer/`: the teacher's tokenizer, for `check_same_tokenizer`.
Folders of the earlier layout (one `save_to_disk` folder per shard, `shard-00000/`) still load; generating into one
is refused.

Each row is `[start, x_1, ..., x_{seq_len-1}]`: the start token followed by tokens sampled from the teacher.
The start token is the tokenizer's EOS: packing puts EOS after every document and never inserts a BOS, so EOS is what
a teacher trained here has seen before a document begins (the project's BPE tokenizer uses one token for both).
Sampling runs through EOS: an EOS ends a document and the teacher goes on to the next one, as documents follow each
other in packed rows; no row stops early. Tokens are counted as stored, start token included,
as packed real rows are (the start token is an input, never a target).

Shards are written to a temporary folder and renamed, and shard `i` is sampled from a seed derived from
(`seed`, `i`), so an interrupted run keeps its finished shards and a rerun with the same settings resumes into the
same corpus as an uninterrupted run.

Several workers (the processes of a study, one per GPU) sample one corpus together: worker `rank` of `world_size`
samples shards rank, rank + world_size, ... The manifest is read and written under a file lock
(`generation.json.lock`) and records which worker sampled which shard; the corpus is finished when every shard is on
disk, whoever writes the last one marks it so, and `wait_for_synthetic` blocks until then. Which worker samples a
shard does not change it, so a corpus resumed with another number of workers is the same corpus.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from filelock import FileLock
from huggingface_hub import DatasetCard, DatasetCardData
from tqdm.auto import tqdm
from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from hf_infcompute.data.cache import build_once
from hf_infcompute.data.tokenizer import tokenizer_fingerprint
from hf_infcompute.errors import InputError
from hf_infcompute.generation.backends import (
    BACKENDS,
    ENSEMBLE_MODES,
    PooledVLLMSampler,
    Sampler,
    SamplingSettings,
    ShardJob,
    TransformersSampler,
    VLLMSampler,
    require_vllm,
)
from hf_infcompute.generation.budget import device_batch_size, resolve_dtype
from hf_infcompute.generation.teacher import (
    TOKENIZER_DIRNAME,
    TeacherSpec,
    describe_teacher,
    ensemble_size,
    export_members,
    load_teacher_model,
    load_tokenizer,
    trained_seq_len,
)
from hf_infcompute.records import write_json_atomic
from hf_infcompute.run_ids import SYNTHETIC_MANIFEST_FILE, folder_identity

logger = logging.getLogger(__name__)

MANIFEST_FILE = SYNTHETIC_MANIFEST_FILE
SHARD_PREFIX = "shard-"
DATA_DIRNAME = "data"
CARD_FILE = "README.md"
# Requests handed to vLLM at once (it schedules its own KV cache); transformers sizes its batch to the KV budget.
VLLM_BATCH_SIZE = 4096
MEMBERS_DIRNAME = ".members"  # pooled mode: the ensemble's members as standalone folders
DEFAULT_SHARD_TOKENS = 10_000_000
# Shards a shared corpus is cut into at least (when its rows allow), whatever the number of workers, so that up to
# this many workers each get shards and a corpus resumed with another number of workers keeps its settings.
MIN_SHARED_SHARDS = 64
WAIT_POLL_S = 2.0


@dataclass(frozen=True)
class GenerationResult:
    """A finished synthetic corpus on disk; `load()` returns it as one dataset."""

    output_dir: Path
    tokens: int
    rows: int
    shards: int
    resumed_shards: int  # shards of this worker found finished on disk and not sampled again
    sampled_tokens: int  # tokens sampled by this call
    wall_time_s: float
    manifest: dict[str, Any]
    complete: bool = True  # every shard on disk (False while other workers still sample theirs)

    @property
    def tokens_per_second(self) -> float:
        return self.sampled_tokens / self.wall_time_s if self.wall_time_s > 0 else 0.0

    def load(self) -> datasets.Dataset:
        return load_synthetic(self.output_dir)


def shared_shard_tokens(num_tokens: int, seq_len: int) -> int:
    """Tokens per shard of a corpus that several workers sample: at most `DEFAULT_SHARD_TOKENS`, small enough for
    `MIN_SHARED_SHARDS` shards, and at least one row."""
    return max(seq_len, min(DEFAULT_SHARD_TOKENS, num_tokens // MIN_SHARED_SHARDS))


def shard_seed(seed: int, shard_index: int) -> int:
    """The sampling seed of one shard: independent of every other shard and of how the run was interrupted."""
    return int(np.random.SeedSequence([seed, shard_index]).generate_state(1)[0])


def shard_path(output_dir: Path, index: int) -> Path:
    return output_dir / DATA_DIRNAME / f"{SHARD_PREFIX}{index:05d}.parquet"


def _old_shard_dir(output_dir: Path, index: int) -> Path:
    """A shard of the earlier layout: a `save_to_disk` folder beside the manifest."""
    return output_dir / f"{SHARD_PREFIX}{index:05d}"


def _is_old_layout(output_dir: Path) -> bool:
    return _old_shard_dir(output_dir, 0).is_dir()


@dataclass(frozen=True)
class ShardPlan:
    """How `num_tokens` tokens split into rows of `seq_len` and shards of `rows_per_shard` rows."""

    num_tokens: int
    seq_len: int
    shard_tokens: int

    @property
    def rows(self) -> int:
        return math.ceil(self.num_tokens / self.seq_len)

    @property
    def rows_per_shard(self) -> int:
        return max(1, self.shard_tokens // self.seq_len)

    @property
    def num_shards(self) -> int:
        return math.ceil(self.rows / self.rows_per_shard)

    def lengths(self, shard: int) -> list[int]:
        """Tokens that count in each row of `shard`: `seq_len`, except the very last row, cut to the exact total."""
        first = shard * self.rows_per_shard
        last = min(first + self.rows_per_shard, self.rows)
        return [min(self.seq_len, self.num_tokens - row * self.seq_len) for row in range(first, last)]

    def tokens_before(self, shard: int) -> int:
        return min(self.num_tokens, shard * self.rows_per_shard * self.seq_len)


def _features(seq_len: int) -> datasets.Features:
    return datasets.Features(
        {"input_ids": datasets.Sequence(datasets.Value("int32"), length=seq_len), "length": datasets.Value("int32")}
    )


def _check_arguments(settings: dict[str, Any]) -> None:
    s = settings
    checks = [
        ("num_tokens", s["num_tokens"] > 0, "must be a positive number of tokens"),
        ("seq_len", s["seq_len"] >= 2, "must be at least 2 (the start token and one sampled token)"),
        ("temperature", s["temperature"] > 0, "must be > 0; 1.0 samples the teacher's own distribution"),
        ("top_p", 0 < s["top_p"] <= 1, "must be in (0, 1]; 1.0 disables nucleus sampling"),
        ("top_k", s["top_k"] >= 0, "must be >= 0; 0 disables top-k"),
        ("batch_size", s["batch_size"] is None or s["batch_size"] >= 1, "must be >= 1"),
        ("shard_tokens", s["shard_tokens"] >= 1, "must be >= 1"),
        ("seed", s["seed"] >= 0, "must be >= 0"),
        ("backend", s["backend"] in BACKENDS, f"must be one of: {', '.join(BACKENDS)}"),
    ]
    for name, ok, fix in checks:
        if not ok:
            raise InputError(f"{name}={s[name]!r} {fix}")


def _resolve_seq_len(seq_len: int | None, spec: TeacherSpec) -> int:
    if seq_len is not None:
        return seq_len
    trained = trained_seq_len(spec)
    if trained is None:
        raise InputError(
            f"cannot tell the sequence length teacher {spec.name} was trained on: give `seq_len` (--seq-len), "
            "the student's training sequence length"
        )
    return trained


def _resolve_start_token(
    start_token_id: int | None, tokenizer: PreTrainedTokenizerBase | None, spec: TeacherSpec
) -> int:
    """The token every row starts from: given, else the tokenizer's EOS, else the teacher config's EOS."""
    for candidate in (start_token_id, tokenizer.eos_token_id if tokenizer is not None else None, spec.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise InputError(
        "cannot tell which token starts a document: the teacher has no tokenizer or config with an EOS token; "
        "give `start_token_id` or `tokenizer`"
    )


def _required_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    tokenizer = load_tokenizer(name_or_path)
    if tokenizer is None:
        raise InputError(f"cannot load tokenizer {str(name_or_path)!r}: give a tokenizer folder or hub id")
    return tokenizer


def _check_ensemble_mode(spec: TeacherSpec, backend: str, ensemble_mode: str) -> None:
    if ensemble_mode not in ENSEMBLE_MODES:
        raise InputError(f"ensemble_mode={ensemble_mode!r} must be one of: {', '.join(ENSEMBLE_MODES)}")
    if spec.is_ensemble and ensemble_mode == "pooled" and backend != "vllm":
        raise InputError(
            "ensemble_mode=pooled (each member sampled on its own) runs on the vllm backend only; the transformers "
            "backend samples the ensemble's own distribution: use ensemble_mode=logit_average or --backend vllm"
        )


def _check_vllm_teacher(spec: TeacherSpec, in_memory: PreTrainedModel | None, ensemble_mode: str) -> None:
    if in_memory is not None:
        raise InputError(
            "the vllm backend loads its teacher from disk: save the model with `save_pretrained` and give its "
            "folder, or use `--backend transformers`"
        )
    if spec.is_ensemble and ensemble_mode == "logit_average":
        from hf_infcompute.generation.vllm_ensemble import check_members

        check_members(PreTrainedConfig.get_config_dict(spec.name)[0].get("member_configs", []), spec.name)
    require_vllm()


@contextlib.contextmanager
def _sampler(
    backend: str,
    spec: TeacherSpec,
    in_memory: PreTrainedModel | None,
    settings: SamplingSettings,
    *,
    seed: int,
    device: str,
    dtype: str,
    ensemble_mode: str,
    members_dir: Path,
) -> Iterator[tuple[Sampler, int | None, int]]:
    """The backend's sampler, the ensemble size K (None for a single model) and the batch size it samples at; a
    model in memory is put back in its training mode afterwards."""
    if backend == "vllm":
        yield _vllm_sampler(
            spec, settings, seed=seed, dtype=dtype, ensemble_mode=ensemble_mode, members_dir=members_dir
        )
        return
    model = in_memory.to(device) if in_memory is not None else load_teacher_model(spec, device=device, dtype=dtype)
    if settings.batch_size is None:
        settings = dataclasses.replace(settings, batch_size=device_batch_size(model, settings.seq_len))
    was_training = model.training
    model.eval()
    try:
        yield TransformersSampler(model, settings), ensemble_size(model), settings.batch_size
    finally:
        model.train(was_training)


def _vllm_sampler(
    spec: TeacherSpec, settings: SamplingSettings, *, seed: int, dtype: str, ensemble_mode: str, members_dir: Path
) -> tuple[Sampler, int | None, int]:
    if not spec.is_ensemble:
        return VLLMSampler(spec.name, settings, seed=seed, dtype=dtype), None, settings.batch_size
    if ensemble_mode == "pooled":
        members = export_members(spec, members_dir)
        pooled = PooledVLLMSampler(members, settings, seed=seed, parts_dir=members_dir / "parts", dtype=dtype)
        return pooled, len(members), settings.batch_size
    from hf_infcompute.generation import vllm_ensemble

    vllm_ensemble.register()  # in this process; vLLM's workers load it through the entry point
    config = PreTrainedConfig.get_config_dict(spec.name)[0]
    # Eager: several members' compiled graphs in one model are unmeasured under vLLM's torch.compile.
    engine = {"hf_overrides": vllm_ensemble.engine_overrides(config), "enforce_eager": True}
    sampler = VLLMSampler(spec.name, settings, seed=seed, dtype=dtype, engine_kwargs=engine)
    return sampler, len(config["member_configs"]), settings.batch_size


def _manifest_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Settings that differ. A teacher that is the same run (`teacher_id`) in a moved folder is the same teacher; a
    manifest written before `teacher_id` was recorded is compared by the teacher's path."""
    ignored = (
        {"teacher_id"} if "teacher_id" not in old else {"teacher"} if old["teacher_id"] == new["teacher_id"] else set()
    )
    return [
        f"{key}: {old.get(key)!r} on disk vs {new.get(key)!r} now"
        for key in sorted((old.keys() | new.keys()) - ignored)
        if old.get(key) != new.get(key)
    ]


def _read_manifest(output_dir: Path) -> dict[str, Any] | None:
    path = output_dir / MANIFEST_FILE
    if not path.is_file():
        if output_dir.is_dir() and any(output_dir.glob(f"{DATA_DIRNAME}/{SHARD_PREFIX}*")):
            raise InputError(f"{output_dir} holds shards but no {MANIFEST_FILE}: choose another output folder")
        return None
    return json.loads(path.read_text())


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_shard(output_dir: Path, index: int, rows: np.ndarray, lengths: list[int], pad_token_id: int) -> None:
    rows = rows.copy()
    for i, length in enumerate(lengths):
        rows[i, length:] = pad_token_id
    dataset = datasets.Dataset.from_dict({"input_ids": rows, "length": lengths}, features=_features(rows.shape[1]))
    path = shard_path(output_dir, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_shard_path(output_dir, index)  # renamed into place: a shard on disk is always whole
    with _quiet_datasets():
        dataset.to_parquet(str(tmp))
    os.replace(tmp, path)


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Hide `datasets`' per-save progress bar, which would interleave with the sampling bar."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def generate_synthetic(
    teacher: str | Path | PreTrainedModel,
    output_dir: str | Path,
    *,
    num_tokens: int,
    seq_len: int | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    seed: int = 0,
    backend: str = "transformers",
    device: str | None = None,
    dtype: str = "auto",
    tokenizer: PreTrainedTokenizerBase | str | Path | None = None,
    start_token_id: int | None = None,
    ensemble_mode: str = "logit_average",
    rank: int = 0,
    world_size: int = 1,
) -> GenerationResult:
    """Sample exactly `num_tokens` tokens of synthetic text from `teacher` into `output_dir` (see the module doc).

    `teacher` is a model folder (a single model or a `LogitEnsembleForCausalLM`), a hub id, or a model in memory
    (transformers backend only). `seq_len` defaults to the length the teacher was trained on (its run record).
    `batch_size` is the rows per `generate` call (transformers; default: sized to the KV-cache budget on a GPU, 64 on
    CPU) or the requests handed to vLLM at once. `dtype="auto"` samples in bfloat16 on a GPU and float32 on CPU.
    `ensemble_mode` says how an ensemble teacher is sampled (`logit_average` or `pooled`, see `backends`).
    `rank` of `world_size` workers samples its share of the shards (see the module doc); the result says whether the
    corpus is `complete`.
    A rerun into the same folder with the same settings resumes (or returns at once if finished); other settings
    raise `InputError` naming them.
    """
    output_dir = Path(output_dir)
    if _is_old_layout(output_dir):
        raise InputError(
            f"{output_dir} holds a synthetic corpus of the earlier layout (one save_to_disk folder per shard): it "
            "still loads for distillation, but cannot be resumed or extended; generate into a new folder"
        )
    in_memory = teacher if isinstance(teacher, PreTrainedModel) else None
    spec = describe_teacher(teacher)
    if device is None:
        device = str(in_memory.device) if in_memory is not None else "cuda" if torch.cuda.is_available() else "cpu"
    if backend == "vllm":
        device = "cuda"
    settings = {
        "teacher": spec.name,
        "teacher_id": folder_identity(spec.name) if spec.is_local else spec.name,
        "num_tokens": num_tokens,
        "seq_len": _resolve_seq_len(seq_len, spec),
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "seed": seed,
        "backend": backend,
        "batch_size": batch_size if batch_size is not None else VLLM_BATCH_SIZE if backend == "vllm" else None,
        "shard_tokens": shard_tokens,
        "start_token_id": None,
        "dtype": str(in_memory.dtype).removeprefix("torch.") if in_memory is not None else resolve_dtype(dtype, device),
        "ensemble_mode": ensemble_mode if spec.is_ensemble else None,
    }
    _check_arguments(settings)
    _check_ensemble_mode(spec, backend, ensemble_mode)
    if backend == "vllm":
        _check_vllm_teacher(spec, in_memory, ensemble_mode)
    if isinstance(tokenizer, (str, Path)):
        tokenizer = _required_tokenizer(tokenizer)
    elif tokenizer is None and in_memory is None:
        tokenizer = load_tokenizer(spec.name)
    settings["start_token_id"] = _resolve_start_token(start_token_id, tokenizer, spec)
    if not 0 <= rank < world_size:
        raise InputError(f"worker rank={rank} must lie in [0, world_size={world_size}): give the worker's own rank")
    plan = ShardPlan(settings["num_tokens"], settings["seq_len"], settings["shard_tokens"])
    mine = range(rank, plan.num_shards, world_size)
    with _manifest_lock(output_dir):
        existing = _read_manifest(output_dir)
        if existing is not None:
            differences = _manifest_differences(existing["settings"], settings)
            if differences:
                raise InputError(
                    f"{output_dir} holds a generation with other settings ({'; '.join(differences)}): rerun with the "
                    "settings on disk to resume it, or choose another output folder"
                )
        manifest = existing or {"settings": settings, "created_at": _now(), "status": "running"}
        if existing is None:
            write_json_atomic(output_dir / MANIFEST_FILE, manifest)
    pending = [index for index in mine if not shard_path(output_dir, index).is_file()]
    resumed = len(mine) - len(pending)
    if not pending:
        return _finished(output_dir, plan, rank, resumed, 0, 0.0)

    sampling = SamplingSettings(
        settings["seq_len"], settings["start_token_id"], temperature, top_p, top_k, settings["batch_size"]
    )
    opened = _sampler(
        backend,
        spec,
        in_memory,
        sampling,
        seed=seed,
        device=device,
        dtype=settings["dtype"],
        ensemble_mode=ensemble_mode,
        members_dir=output_dir / MEMBERS_DIRNAME,
    )
    with opened as (sampler, members, rows_per_call):
        facts = {
            "teacher": {
                "name": spec.name,
                "model_type": spec.model_type,
                "ensemble": spec.is_ensemble,
                "members": members,
            },
            "batch_size_used": rows_per_call,
            "tokens_requested": num_tokens,
            "rows": plan.rows,
            "rows_per_shard": plan.rows_per_shard,
            "shards": plan.num_shards,
            "device": device,
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer) if tokenizer is not None else None,
        }
        with _manifest_lock(output_dir):
            manifest = {**_read_manifest(output_dir), **facts}
            write_json_atomic(output_dir / MANIFEST_FILE, manifest)
        if tokenizer is not None:
            build_once(output_dir / TOKENIZER_DIRNAME, lambda tmp: tokenizer.save_pretrained(str(tmp)))
        for index in pending:  # a shard of this worker left half-written by a killed run
            _tmp_shard_path(output_dir, index).unlink(missing_ok=True)
        if resumed:
            logger.info("resuming %s: %d of this worker's %d shards already on disk", output_dir, resumed, len(mine))
        pad_token_id = tokenizer.pad_token_id if tokenizer is not None else None
        pad_token_id = settings["start_token_id"] if pad_token_id is None else pad_token_id
        started = time.perf_counter()
        sampled = _sample_shards(sampler, plan, pending, output_dir, settings, rank, pad_token_id)
        wall = time.perf_counter() - started
    return _finished(output_dir, plan, rank, resumed, sampled, wall)


def _finished(
    output_dir: Path, plan: ShardPlan, rank: int, resumed: int, sampled: int, wall: float
) -> GenerationResult:
    """This worker's result: its progress recorded in the manifest, the corpus as far as its shards are on disk."""
    manifest = _record_progress(output_dir, plan, rank, [], wall)
    done = _shards_on_disk(output_dir, plan)
    return GenerationResult(
        output_dir,
        plan.tokens_before(done),
        plan.rows,
        plan.num_shards,
        resumed,
        sampled,
        wall,
        manifest,
        done == plan.num_shards,
    )


@contextlib.contextmanager
def _manifest_lock(output_dir: Path) -> Iterator[None]:
    output_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(output_dir / f"{MANIFEST_FILE}.lock")):
        yield


def _tmp_shard_path(output_dir: Path, index: int) -> Path:
    path = shard_path(output_dir, index)
    return path.with_name(f".{path.name}.tmp")


def _shards_on_disk(output_dir: Path, plan: ShardPlan) -> int:
    return sum(shard_path(output_dir, index).is_file() for index in range(plan.num_shards))


def _record_progress(output_dir: Path, plan: ShardPlan, rank: int, shards: list[int], wall_s: float) -> dict[str, Any]:
    """Under the lock: add `shards` (just written) and `wall_s` to worker `rank`'s entry, recount the shards on disk,
    and mark the corpus finished (with its card) once all are there. The manifest as written."""
    with _manifest_lock(output_dir):
        manifest = _read_manifest(output_dir)
        workers = manifest.setdefault("workers", {})
        entry = workers.setdefault(str(rank), {"shards": [], "wall_time_s": 0.0})
        entry["shards"] = sorted(set(entry["shards"]) | set(shards))
        entry["wall_time_s"] = round(entry["wall_time_s"] + wall_s, 3)
        done = _shards_on_disk(output_dir, plan)
        manifest.update(
            shards=plan.num_shards,
            shards_done=done,
            tokens_produced=_tokens_on_disk(output_dir, plan),
            updated_at=_now(),
        )
        manifest["wall_time_s"] = round(sum(w["wall_time_s"] for w in workers.values()), 3)
        finished = done == plan.num_shards
        if finished and manifest.get("status") != "finished":
            manifest.update(status="finished", finished_at=_now())
        write_json_atomic(output_dir / MANIFEST_FILE, manifest)
        if finished and not (output_dir / CARD_FILE).is_file():
            write_dataset_card(output_dir, {"rows": plan.rows, **manifest})
    return manifest


def _tokens_on_disk(output_dir: Path, plan: ShardPlan) -> int:
    return sum(sum(plan.lengths(i)) for i in range(plan.num_shards) if shard_path(output_dir, i).is_file())


def _sample_shards(
    sampler: Sampler,
    plan: ShardPlan,
    shards: list[int],
    output_dir: Path,
    settings: dict[str, Any],
    rank: int,
    pad_token_id: int,
) -> int:
    """Sample and write `shards`, recording each in the manifest as it lands; the tokens written. The bar shows
    this worker's tokens/s."""
    jobs = [ShardJob(index, len(plan.lengths(index)), shard_seed(settings["seed"], index)) for index in shards]
    total = sum(sum(plan.lengths(index)) for index in shards)
    progress = tqdm(total=total, unit="tok", unit_scale=True, desc=f"sampling ({settings['backend']}, worker {rank})")
    with progress:
        for job, rows in sampler.shards(jobs):
            lengths = plan.lengths(job.index)
            _write_shard(output_dir, job.index, rows, lengths, pad_token_id)
            _record_progress(output_dir, plan, rank, [job.index], 0.0)
            progress.update(sum(lengths))
    return total


def wait_for_synthetic(output_dir: str | Path, poll_s: float = WAIT_POLL_S) -> dict[str, Any]:
    """Block until the corpus in `output_dir` is finished (other workers sample their shards), then return its
    manifest; says what it waits for whenever that changes."""
    output_dir = Path(output_dir)
    waiting_on = None
    while True:
        manifest = _read_manifest(output_dir) or {}
        if manifest.get("status") == "finished":
            return manifest
        missing = manifest.get("shards", 0) - manifest.get("shards_done", 0)
        if missing != waiting_on:
            logger.info("waiting for %s shard(s) of %s sampled by other workers", missing or "the first", output_dir)
            waiting_on = missing
        time.sleep(poll_s)


def load_synthetic(output_dir: str | Path) -> datasets.Dataset:
    """A finished synthetic corpus as one dataset (`input_ids`, `length`), its shards concatenated in order."""
    output_dir = Path(output_dir)
    manifest = _read_manifest(output_dir)
    if manifest is None:
        raise InputError(f"{output_dir} holds no synthetic corpus ({MANIFEST_FILE} missing): run `generate` first")
    if manifest.get("status") != "finished":
        raise InputError(
            f"the generation in {output_dir} is unfinished ({manifest.get('shards_done', 0)} of "
            f"{manifest.get('shards', '?')} shards): rerun `generate` with the same settings to finish it"
        )
    if _is_old_layout(output_dir):
        shards = [datasets.load_from_disk(str(_old_shard_dir(output_dir, i))) for i in range(manifest["shards"])]
        return datasets.concatenate_datasets(shards)
    files = [str(shard_path(output_dir, i)) for i in range(manifest["shards"])]
    with _quiet_datasets():  # converted once into the `datasets` cache, memory-mapped from there
        return datasets.load_dataset("parquet", data_files=files, split="train")


def write_dataset_card(output_dir: Path, manifest: dict[str, Any]) -> Path:
    """`README.md` of a finished corpus: a Hub dataset card saying what it is sampled from and how, whose `configs`
    make `load_dataset(output_dir)` (and the Hub's viewer) read the parquet shards."""
    settings, teacher = manifest["settings"], manifest.get("teacher") or {}
    data = DatasetCardData(
        tags=["synthetic", "hf-infcompute"],
        task_categories=["text-generation"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": f"{DATA_DIRNAME}/*.parquet"}]}],
    )
    kind = f"an ensemble of {teacher.get('members')} members" if teacher.get("ensemble") else "a single model"
    rows = "\n".join(f"| `{key}` | `{value}` |" for key, value in sorted(settings.items()))
    text = (
        f"---\n{data.to_yaml()}\n---\n\n# Synthetic corpus sampled from `{settings['teacher']}`\n\n"
        f"{manifest['tokens_produced']:,} tokens in {manifest['rows']:,} rows of {settings['seq_len']} token ids "
        f"(`input_ids`; `length` says how many count), sampled from {kind} with seed {settings['seed']} by "
        "[hf-infcompute](https://arxiv.org/abs/2509.14786) for sequence-level distillation. Each row starts with the "
        "document separator; the token ids are the teacher's tokenizer's (`tokenizer/`).\n\n"
        f"| setting | value |\n|---|---|\n{rows}\n"
    )
    path = output_dir / CARD_FILE
    DatasetCard(text).save(path)
    return path
