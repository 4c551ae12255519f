"""`distill`: train a student on real data plus a teacher's samples (or distributions), recorded like any run."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
from transformers import TrainerCallback

from hf_infcompute.data import PackedCollator, PretrainingData
from hf_infcompute.distillation.arguments import DistillationTrainingArguments
from hf_infcompute.distillation.trainer import DistillationTrainer
from hf_infcompute.errors import InputError
from hf_infcompute.generation import check_same_tokenizer, load_synthetic
from hf_infcompute.generation.teacher import describe_teacher, load_teacher_model
from hf_infcompute.training.config import RunConfig, parse_run_config
from hf_infcompute.training.pretraining import build_model_for, pretrain


def _synthetic_rows(
    args: DistillationTrainingArguments, data: PretrainingData, seq_len: int
) -> datasets.Dataset | None:
    if args.synthetic_fraction == 0 or not args.synthetic_data:
        return None
    synthetic = load_synthetic(args.synthetic_data)
    check_same_tokenizer(args.synthetic_data, data.tokenizer)
    synthetic_len = len(synthetic[0]["input_ids"])
    if synthetic_len != seq_len:
        raise InputError(
            f"synthetic rows in {args.synthetic_data} have {synthetic_len} tokens but the student trains on "
            f"seq_len={seq_len}: set seq_len={synthetic_len} or generate with --seq-len {seq_len}"
        )
    return synthetic.cast(data.train.features)


def build_distillation_trainer(
    run: RunConfig[DistillationTrainingArguments],
    data: PretrainingData,
    callbacks: list[TrainerCallback] | None = None,
) -> DistillationTrainer:
    """A `DistillationTrainer` for the student of `run`, on its real split plus the synthetic corpus."""
    args = run.training
    synthetic = _synthetic_rows(args, data, run.data.seq_len)
    train = data.train if synthetic is None else datasets.concatenate_datasets([data.train, synthetic])
    teacher = None
    if args.kd_mode == "token":
        check_same_tokenizer(args.teacher, data.tokenizer)
        teacher = load_teacher_model(describe_teacher(args.teacher), device="cpu", dtype="float32")
    return DistillationTrainer(
        model=build_model_for(run, data),
        args=args,
        train_dataset=train,
        eval_dataset=data.validation,
        data_collator=PackedCollator(data.tokenizer.pad_token_id),
        processing_class=data.tokenizer,
        callbacks=callbacks,
        num_real=len(data.train),
        teacher=teacher,
    )


def _teacher_of(args: DistillationTrainingArguments) -> str | None:
    if args.teacher:
        return args.teacher
    manifest = Path(args.synthetic_data or "") / "generation.json"
    if manifest.is_file():
        return json.loads(manifest.read_text()).get("teacher", {}).get("name")
    return None


def distill(
    config: RunConfig[DistillationTrainingArguments] | Mapping[str, Any],
    output_dir: str | Path,
    *,
    callbacks: list[TrainerCallback] | None = None,
) -> dict[str, Any]:
    """Train a student and return its record (`kind="student"`).

    `config` is a run whose training arguments are `DistillationTrainingArguments`, or a mapping of its recipe keys
    (pre-training keys plus kd_mode, teacher, synthetic_data, ...), parsed first.
    """
    run = (
        config
        if isinstance(config, RunConfig)
        else parse_run_config(dict(config), training_class=DistillationTrainingArguments)
    )
    args = run.training
    if not isinstance(args, DistillationTrainingArguments):
        raise InputError(
            f"a student's run needs DistillationTrainingArguments, got {type(args).__name__}: derive it with "
            "run.replace(training_class=DistillationTrainingArguments, synthetic_data=...)"
        )
    if args.kd_mode == "sequence" and args.synthetic_fraction == 1:
        warnings.warn(
            "training on synthetic data alone: the paper saw such students collapse (4.07 vs 3.44 with a 1:1 mix); "
            "keep real data in the mix (synthetic_fraction < 1)",
            stacklevel=2,
        )
    extra = {
        "kd_mode": args.kd_mode,
        "teacher": _teacher_of(args),
        "synthetic_data": args.synthetic_data,
        "synthetic_fraction": args.synthetic_fraction if args.kd_mode == "sequence" else 0.0,
    }
    return pretrain(
        run,
        output_dir,
        callbacks=callbacks,
        kind="student",
        trainer_factory=build_distillation_trainer,
        record_extra=extra,
    )
