"""`pretrain`: one run from configuration to record. Finished runs are skipped, interrupted ones resume."""

from __future__ import annotations

import datetime
import functools
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel, TrainerCallback

from hf_infcompute import interrupts
from hf_infcompute.data import PackedCollator, PretrainingData, prepare_data
from hf_infcompute.errors import InputError, NonFiniteLossError
from hf_infcompute.method import RECIPES, STANDARD_WEIGHT_DECAY
from hf_infcompute.models import build_model, count_parameters, get_preset
from hf_infcompute.models.checkpoint import (
    context_length,
    has_adapters,
    load_base_config,
    load_base_model,
    merged,
    merged_from_state_dict,
)
from hf_infcompute.models.flops import flops_per_token
from hf_infcompute.planning.device import fit_micro_batch
from hf_infcompute.records import RUN_RECORD_FILE, append_record, read_record, write_json_atomic
from hf_infcompute.training.checkpoints import INCOMPLETE_MARKER, last_complete_checkpoint, model_folder_problem
from hf_infcompute.training.claim import RunClaim
from hf_infcompute.training.config import RunConfig, parse_run_config
from hf_infcompute.training.distributed import zero3_set_aside
from hf_infcompute.training.loss_forward import install_loss_forward
from hf_infcompute.training.progress import announce_run, follow_run
from hf_infcompute.training.tracking import track
from hf_infcompute.training.train_log import training_log
from hf_infcompute.training.trainer import RegularizedTrainer
from hf_infcompute.training.validation import held_out_fields, held_out_losses, mean
from hf_infcompute.workers import is_lead

logger = logging.getLogger(__name__)


# Training rows scored for the record's `train_loss` (the gap to `val_loss` shows overfitting; a sample suffices).
TRAIN_LOSS_ROWS = 128
# A record's field naming the run whose training (and model folder) it shares (`record_of_twin`).
SAME_TRAINING_AS = "same_training_as"


def run_dir(output_dir: str | Path, run_id: str) -> Path:
    return Path(output_dir) / "runs" / run_id


def check_model_fits(run: RunConfig) -> None:
    """Refuse an unknown preset or base model, and sequences longer than the model's context."""
    if run.model.base_model:
        name, context = run.model.base_model, context_length(load_base_config(run.model.base_model))
    else:
        preset = get_preset(run.model.preset)
        name, context = f"preset {preset.name}", preset.max_position_embeddings
    if context is not None and run.data.seq_len > context:
        raise InputError(
            f"seq_len {run.data.seq_len} exceeds the context of {name} ({context}); lower `seq_len` or choose a "
            "model with a longer context"
        )


def check_vocabulary(run: RunConfig, data: PretrainingData) -> None:
    """Refuse a trained BPE tokenizer that holds fewer tokens than `vocab_size` asks for (its training text has too few
    distinct merges): the model would silently get another vocabulary than the recipe's."""
    if run.model.base_model or run.data.tokenizer != "bpe" or len(data.tokenizer) == run.data.vocab_size:
        return
    raise InputError(
        f"vocab_size {run.data.vocab_size} cannot be honoured: the BPE tokenizer trained on the corpus's first "
        f"{run.data.tokenizer_train_chars:,} characters holds only {len(data.tokenizer)} tokens (that text has no "
        f"more merges to learn). Set `vocab_size: {len(data.tokenizer)}` (or lower), or raise "
        "`tokenizer_train_chars` / give a larger corpus"
    )


def model_config_for(run: RunConfig, data: PretrainingData) -> PretrainedConfig:
    """The config of the run's model: the base model's, or its preset's at the tokenizer's vocabulary."""
    if run.model.base_model:
        return load_base_config(run.model.base_model)
    tokenizer = data.tokenizer
    config = get_preset(run.model.preset).build_config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config._attn_implementation = run.model.attn_implementation
    return config


def build_model_for(run: RunConfig, data: PretrainingData) -> PreTrainedModel:
    """A fresh model of `run.model.preset` initialised from `run.training.seed`, or the base model to continue, with
    the run's `loss_implementation` installed in its forward."""
    model_args = run.model
    if model_args.base_model:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(run.training.seed)  # peft draws the LoRA adapters' initial weights from this generator
            model = load_base_model(
                model_args.base_model,
                lora_r=model_args.lora_r,
                lora_alpha=model_args.lora_alpha,
                lora_dropout=model_args.lora_dropout,
                attn_implementation=model_args.attn_implementation,
            )
    else:
        model = build_model(model_config_for(run, data), seed=run.training.seed)
    args = run.training
    tokens = max(args.per_device_train_batch_size, args.per_device_eval_batch_size) * run.data.seq_len
    install_loss_forward(model, args.loss_implementation, args.loss_chunk_tokens, tokens_per_step=tokens)
    return model


def build_trainer(
    run: RunConfig, data: PretrainingData, callbacks: list[TrainerCallback] | None = None
) -> RegularizedTrainer:
    """The run's model (`build_model_for`) in a `RegularizedTrainer` on `data`."""
    check_model_fits(run)
    model = build_model_for(run, data)
    tokenizer = data.tokenizer
    return RegularizedTrainer(
        model=model,
        args=run.training,
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=PackedCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


TrainerFactory = Callable[[RunConfig, PretrainingData, "list[TrainerCallback] | None"], RegularizedTrainer]


def _base_record(run: RunConfig, data: PretrainingData, trainer: RegularizedTrainer, kind: str) -> dict[str, Any]:
    from hf_infcompute import __version__

    counts = count_parameters(trainer.model.config)
    args = run.training
    tokens_seen = int(round(args.num_train_epochs * data.token_budget))
    return {
        "run_id": run.run_id(),
        "kind": kind,
        "recipe": args.recipe,
        "corpus": run.data.corpus,
        "token_budget": run.data.token_budget,
        "seq_len": run.data.seq_len,
        "val_sequences": run.data.val_sequences,
        "test_sequences": run.data.test_sequences,
        "tokenizer": run.data.tokenizer,
        "validation_fingerprint": data.validation_fingerprint,
        "test_fingerprint": data.test_fingerprint,
        "vocab_size": trainer.model.config.vocab_size,
        "preset": run.model.name,
        "lora_r": run.model.lora_r,
        "n_params": counts.non_embedding,
        "n_params_total": counts.total,
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "num_train_epochs": args.num_train_epochs,
        "seed": args.seed,
        "data_seed": args.data_seed,
        "batch_size": run.global_batch_size,
        "micro_batch": args.per_device_train_batch_size,
        "grad_accum": args.gradient_accumulation_steps,
        "world_size": args.world_size,
        "global_batch": run.global_batch_size,
        "precision": "bf16" if args.bf16 else "fp32",
        "weight_decay_mask": args.weight_decay_mask,
        "data_order": args.data_order,
        "tokens_seen": tokens_seen,
        # Training FLOPs (forward and backward matmuls, LM head, attention) of the tokens seen; evaluation excluded.
        "train_flops": flops_per_token(trainer.model.config, run.data.seq_len).training * tokens_seen,
        "version": __version__,
        "config": run.identity(),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def finished_record(output_dir: str | Path, run_id: str) -> dict[str, Any] | None:
    """The run's record; None (the run is trained again) when it says finished but its model folder is unusable (the
    folder of the run it shares its training with, `SAME_TRAINING_AS`)."""
    record = read_record(output_dir, run_id)
    if record is not None and record.get("status") == "finished":
        problem = model_folder_problem(run_dir(output_dir, record.get(SAME_TRAINING_AS, run_id)) / "model")
        if problem is not None:
            logger.warning("run %s is recorded as finished but %s; training it again", run_id, problem)
            return None
    return record


def recipe_twin(run: RunConfig) -> RunConfig | None:
    """The same training under the other recipe's name, or None: at the standard weight decay a regularized run trains
    exactly as the standard one (the recipe names a run, it changes nothing in its training)."""
    if run.training.weight_decay != STANDARD_WEIGHT_DECAY:
        return None
    (other,) = set(RECIPES) - {run.training.recipe}
    return run.replace(recipe=other)


def record_of_twin(
    run: RunConfig, output_dir: str | Path, kind: str, record_extra: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Where the run's `recipe_twin` is recorded finished, its record under this run's id, kind and recipe (written
    to the results store, and naming the twin in `SAME_TRAINING_AS`), instead of training the same model twice; the
    regularized search's points at weight decay 0.1, which the standard search has trained. Else None."""
    twin = recipe_twin(run)
    found = finished_record(output_dir, twin.run_id()) if twin is not None else None
    if found is None or found.get("status") != "finished":
        return None
    record = {
        **found,
        **(record_extra or {}),
        "run_id": run.run_id(),
        "kind": kind,
        "recipe": run.training.recipe,
        "config": run.identity(),
        SAME_TRAINING_AS: found.get(SAME_TRAINING_AS, found["run_id"]),
        "wall_time_s": 0.0,  # trained once, under the twin's id
    }
    if is_lead():
        append_record(output_dir, record)
    logger.info("run %s is the training of run %s, recorded under both ids", record["run_id"], found["run_id"])
    return record


def one_trainer_per_run(train: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Run `train(run, output_dir, ...)` holding the run's `RunClaim`, so one process group trains a run at a time.

    A second process on the same run waits for the holder and then finds its record (or takes the run over, resuming
    its checkpoints, if the holder died). Only the main process claims; the others wait for it at a barrier (which
    times out with the process group's timeout if the holder runs longer than that).
    """

    @functools.wraps(train)
    def claimed(config: dict[str, Any] | RunConfig, output_dir: str | Path, **options: Any) -> dict[str, Any]:
        run = config if isinstance(config, RunConfig) else parse_run_config(config)
        state = PartialState()
        claim = RunClaim(run_dir(output_dir, run.run_id()))
        with state.main_process_first():
            if state.is_main_process:
                claim.acquire()
        try:
            return train(run, output_dir, **options)
        finally:
            claim.release()

    return claimed


@one_trainer_per_run
def pretrain(
    config: Mapping[str, Any] | RunConfig,
    output_dir: str | Path,
    *,
    callbacks: list[TrainerCallback] | None = None,
    keep_checkpoints: bool = False,
    kind: str = "pretrain",
    trainer_factory: TrainerFactory = build_trainer,
    record_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one model and return its run record (also stored under `output_dir/results/`).

    A run is identified by its settings (`RunConfig.run_id`): a finished run is not trained again (its record is
    returned), and an interrupted one resumes from its last checkpoint in `output_dir/runs/<run_id>/`. A non-finite
    loss stops training; the run is then recorded with `status="failed"` and the step, and returned.
    One process trains a run at a time (`one_trainer_per_run`); a finished record whose model folder lost its weights
    is trained again. Resume starts from the newest whole checkpoint (half-written ones are deleted).
    Methods built on pre-training (ensemble members, distillation, continued pre-training) pass their record `kind`,
    a `trainer_factory` and fields to add to the record (`record_extra`). A mapping of recipe keys is parsed first
    (`parse_run_config`), for scripts and the command line.
    """
    run = config if isinstance(config, RunConfig) else parse_run_config(dict(config))
    run_id = run.run_id()
    finished = finished_record(output_dir, run_id) or record_of_twin(run, output_dir, kind, record_extra)
    if finished is not None:
        logger.info("run %s already recorded (%s); not training it again", run_id, finished.get("status"))
        last_complete_checkpoint(run_dir(output_dir, run_id), remove_incomplete=is_lead())  # a kill mid-cleanup
        return finished
    check_model_fits(run)
    folder = run_dir(output_dir, run_id)
    run.training.output_dir = str(folder)
    # Every rank prepares its data: the cache lets one process build it while the others wait on its file lock
    # (`hf_infcompute.data.cache.build_once`), not at a barrier that fails after `ddp_timeout`.
    data = prepare_data(run.data)
    if run.training.auto_micro_batch:
        fit_micro_batch(run.training, model_config_for(run, data), run.data.seq_len)
    check_vocabulary(run, data)
    trainer = trainer_factory(run, data, callbacks)
    trainer.add_callback(interrupts.StopOnSignal())
    follow_run(trainer)
    record = {**_base_record(run, data, trainer, kind), **(record_extra or {})}
    track(trainer, run, kind, output_dir)  # with report_to: named by run id, grouped by study and search
    checkpoint = last_complete_checkpoint(folder, remove_incomplete=is_lead())
    started = time.perf_counter()
    try:
        with interrupts.training():
            trainer.train(resume_from_checkpoint=checkpoint)
    except NonFiniteLossError as error:
        record.update(status="failed", error=str(error), failed_step=trainer.state.global_step + 1)
        record["train_log"] = training_log(trainer.state.log_history)
        record["wall_time_s"] = time.perf_counter() - started
        if is_lead():
            append_record(output_dir, record)
        logger.error(str(error))
        return record
    # One process scores the validation and test rows once, per row, and the mean of validation's is the run's loss
    # (the rows are whole `seq_len` rows, so the mean of the rows is the mean of the tokens); a launched group
    # evaluates validation together.
    rows = held_out_fields(data, *held_out_sequence_losses(trainer, data)) if trainer.args.world_size == 1 else None
    val_loss = mean(rows["val_sequence_losses"]) if rows else trainer.evaluate()["eval_loss"]
    train_sample = data.train.select(range(min(len(data.train), TRAIN_LOSS_ROWS)))
    train_loss = trainer.evaluate(eval_dataset=train_sample, metric_key_prefix="train")["train_loss"]
    record.update(
        status="finished" if math.isfinite(val_loss) else "failed",
        val_loss=val_loss,
        train_loss=train_loss,
        steps=trainer.state.global_step,
        resumed_from=Path(checkpoint).name if checkpoint else None,
        wall_time_s=time.perf_counter() - started,
        model_dir=str(folder / "model"),
    )
    record["train_log"] = training_log(trainer.state.log_history)
    if rows is not None:
        record.update(rows)
    save_final_model(trainer, folder / "model", record)
    if is_lead():
        if rows is None:  # a launched group: its lead scores the rows now, and the model folder keeps the same record
            record.update(held_out_fields(data, *held_out_sequence_losses(trainer, data, folder / "model")))
            write_json_atomic(folder / "model" / RUN_RECORD_FILE, record)
        append_record(output_dir, record)  # before the checkpoints go: a kill in between must not lose the run
        if not keep_checkpoints:
            for stale in folder.glob("checkpoint-*"):
                shutil.rmtree(stale, ignore_errors=True)
        announce_run(record, f"{kind} {run.training.recipe} {run.model.name}")
    return record


def held_out_sequence_losses(
    trainer: RegularizedTrainer, data: PretrainingData, model_dir: Path | None = None
) -> tuple[list[float], list[float]]:
    """Each validation row's and each test row's loss under the trained model
    (`hf_infcompute.training.validation`), scored by one process: the model in memory, or the saved `model_dir` where
    training sharded it (FSDP, ZeRO-3)."""
    model = trainer.model
    if model_dir is not None and (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        with zero3_set_aside():  # one process loads: no `zero.Init`, whose collectives would wait for the others
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    args = trainer.args
    return held_out_losses(model, data, batch_size=args.per_device_eval_batch_size, device=args.device, bf16=args.bf16)


def save_final_model(trainer: RegularizedTrainer, model_dir: Path, record: dict[str, Any]) -> None:
    """Save model, tokenizer and record; a marker file flags the folder as incomplete until all are written.

    A bf16 run's weights are saved in bf16, the precision it computes in and everything after training reads them
    in (scoring, ensembles, soups, teachers, lm-eval): half the bytes of its fp32 master weights, whose lower bits
    only the optimizer needs, and it resumes from its checkpoints, which keep them.
    """
    dtype = torch.bfloat16 if trainer.args.bf16 else None
    if trainer.is_world_process_zero():
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / INCOMPLETE_MARKER).touch()
    sharded = trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled
    if has_adapters(trainer.model) and sharded:
        # LoRA on sharded weights: every rank takes part in gathering the full state dict, then the main process
        # merges the adapters into a copy built from it (merging on its shard alone would leave the others waiting).
        wrapped = trainer.model_wrapped if trainer.is_deepspeed_enabled else trainer.model
        state_dict = trainer.accelerator.get_state_dict(wrapped)
        if trainer.is_world_process_zero():
            in_dtype_model(merged_from_state_dict(trainer.model, state_dict), dtype).save_pretrained(model_dir)
            trainer.processing_class.save_pretrained(model_dir)
    elif has_adapters(trainer.model):
        # LoRA: save the adapters merged into the weights, an ordinary checkpoint.
        if trainer.is_world_process_zero():
            in_dtype_model(merged(trainer.model), dtype).save_pretrained(model_dir)
            trainer.processing_class.save_pretrained(model_dir)
    elif trainer.is_fsdp_enabled:
        # `Trainer.save_model` writes FSDP weights only under FULL_STATE_DICT: gather the full state dict on every
        # rank whatever the config's (sharded checkpoints stay cheap), so that `model/` is a `from_pretrained` folder.
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        trainer._save(str(model_dir), state_dict=in_dtype(state_dict, dtype))
        saved_in(model_dir, dtype, trainer)
    elif dtype is not None and not trainer.is_deepspeed_enabled:
        if trainer.args.should_save:
            trainer._save(str(model_dir), state_dict=in_dtype(trainer.model.state_dict(), dtype))
            saved_in(model_dir, dtype, trainer)
    else:
        trainer.save_model(str(model_dir))  # under ZeRO-3 it gathers 16-bit weights (zero3_save_16bit_model)
    if trainer.is_world_process_zero():
        write_json_atomic(model_dir / RUN_RECORD_FILE, record)
        (model_dir / INCOMPLETE_MARKER).unlink()


def in_dtype(state_dict: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The state dict's floating-point tensors in `dtype` (None: as they are)."""
    if dtype is None:
        return state_dict
    return {name: t.to(dtype) if t.is_floating_point() else t for name, t in state_dict.items()}


def in_dtype_model(model: PreTrainedModel, dtype: torch.dtype | None) -> PreTrainedModel:
    return model if dtype is None else model.to(dtype)


def saved_in(model_dir: Path, dtype: torch.dtype | None, trainer: RegularizedTrainer) -> None:
    """Name the weights' dtype in the saved config.json (`save_pretrained` writes the in-memory model's), so that
    `from_pretrained(dtype="auto")` loads them as saved."""
    if dtype is None or not trainer.is_world_process_zero():
        return
    config_file = model_dir / "config.json"
    config = json.loads(config_file.read_text())
    config["dtype"] = str(dtype).removeprefix("torch.")
    write_json_atomic(config_file, config)
