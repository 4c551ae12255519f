"""Student training: the real:synthetic mix of every batch, sequence- and token-level modes, bad input."""

from __future__ import annotations

from collections import Counter

import datasets
import pytest
import torch
from conftest import micro_llama_config
from transformers import LlamaForCausalLM

from hf_infcompute import load_runs
from hf_infcompute.distillation import (
    DistillationTrainer,
    DistillationTrainingArguments,
    MixedEpochSampler,
    distill,
    token_kd_loss,
)
from hf_infcompute.errors import InputError
from hf_infcompute.generation import generate_synthetic
from hf_infcompute.training import RegularizedTrainingArguments, pretrain


@pytest.mark.parametrize("fraction", [0.5, 0.75, 0.9])
def test_every_batch_has_the_asked_mix_and_each_epoch_covers_real_rows_once(fraction):
    sampler = MixedEpochSampler(num_real=96, num_synthetic=50, batch_size=16, synthetic_fraction=fraction, seed=3)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = list(sampler)
        real = [i for i in order if i < 96]
        assert sorted(real) == list(range(96))  # one pass over the real rows
        batches = [order[i : i + 16] for i in range(0, len(order), 16)]
        synthetic_share = [sum(i >= 96 for i in b) / len(b) for b in batches[:-1]]
        assert all(abs(s - fraction) <= 1 / 16 for s in synthetic_share)
        total = sum(i >= 96 for i in order) / len(order)
        assert total == pytest.approx(fraction, abs=0.02)


def test_synthetic_stream_continues_across_epochs_and_epochs_are_reproducible():
    sampler = MixedEpochSampler(num_real=40, num_synthetic=30, batch_size=8, synthetic_fraction=0.5, seed=0)
    seen = Counter()
    orders = {}
    for epoch in (0, 1, 2, 0):
        sampler.set_epoch(epoch)
        order = list(sampler)
        if epoch in orders:
            assert orders[epoch] == order
            continue
        orders[epoch] = order
        seen.update(i for i in order if i >= 40)
    # 3 epochs x 40 synthetic rows = 120 = 4 full passes over the 30 synthetic rows
    assert set(seen.values()) == {4}


def test_synthetic_only_epoch_is_a_pass_over_synthetic_rows():
    sampler = MixedEpochSampler(num_real=10, num_synthetic=24, batch_size=8, synthetic_fraction=1.0, seed=0)
    assert sorted(sampler) == list(range(10, 34))


def test_distillation_trainer_reads_its_settings_from_args(tmp_path):
    config = micro_llama_config()
    torch.manual_seed(0)
    student, teacher_model = LlamaForCausalLM(config), LlamaForCausalLM(config)
    rows = datasets.Dataset.from_dict({"input_ids": torch.randint(0, 64, (12, 8)).tolist()})
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path),
        precision="fp32",
        kd_mode="token",
        teacher="t",
        kd_alpha=0.3,
        kd_temperature=2.0,
        synthetic_fraction=0.25,
    )
    trainer = DistillationTrainer(model=student, args=args, train_dataset=rows, num_real=8, teacher=teacher_model)
    assert trainer._get_train_sampler().fraction == 0.25  # 8 real rows, 4 synthetic
    real_only = DistillationTrainer(model=student, args=args, train_dataset=rows, num_real=12)
    assert real_only._get_train_sampler().fraction == 0
    ids = torch.randint(0, 64, (2, 8))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    student.train()
    with torch.no_grad():
        outputs, teacher_logits = student(**inputs), teacher_model(input_ids=ids).logits
        kd = token_kd_loss(outputs.logits[:, :-1], teacher_logits[:, :-1], ids[:, 1:], temperature=2.0)
        assert trainer.compute_loss(student, inputs).item() == pytest.approx((0.7 * outputs.loss + 0.3 * kd).item())
        trainer.args.kd_alpha = 1.0
        assert trainer.compute_loss(student, inputs).item() == pytest.approx(kd.item())
    with pytest.raises(TypeError, match="DistillationTrainingArguments"):
        DistillationTrainer(model=student, args=RegularizedTrainingArguments(output_dir=str(tmp_path)), num_real=1)


@pytest.fixture
def teacher(tiny_run, tmp_path):
    return pretrain(tiny_run, tmp_path / "teacher")


def test_sequence_distillation_trains_on_the_mix_and_is_recorded(tiny_run, teacher, tmp_path):
    synthetic = tmp_path / "synthetic"
    generate_synthetic(teacher["model_dir"], synthetic, num_tokens=4096, seq_len=tiny_run["seq_len"], seed=0)
    student = distill({**tiny_run, "synthetic_data": str(synthetic), "synthetic_fraction": 0.5}, tmp_path / "out")
    assert student["status"] == "finished" and student["kind"] == "student"
    # 128 real rows per epoch at 4 real + 4 synthetic per batch of 8: 32 steps per epoch, real data seen twice
    assert student["steps"] == 2 * 128 // 4
    assert student["teacher"] == teacher["model_dir"]
    # Scored on the teacher's validation and test rows, each row named by its document.
    assert student["test_fingerprint"] == teacher["test_fingerprint"]
    assert student["test_sequence_documents"] == teacher["test_sequence_documents"]
    assert len(student["test_sequence_losses"]) == tiny_run["val_sequences"] and student["test_loss"] > 0
    runs = load_runs(tmp_path / "out")
    assert runs["synthetic_fraction"].tolist() == [0.5] and runs["weight_decay"].tolist() == [0.1]


def test_synthetic_only_warns(tiny_run, teacher, tmp_path):
    synthetic = tmp_path / "synthetic"
    generate_synthetic(teacher["model_dir"], synthetic, num_tokens=2048, seq_len=tiny_run["seq_len"], seed=0)
    with pytest.warns(UserWarning, match="synthetic data alone"):
        record = distill(
            {**tiny_run, "num_train_epochs": 1, "synthetic_data": str(synthetic), "synthetic_fraction": 1.0},
            tmp_path / "out",
        )
    assert record["steps"] == 2048 // tiny_run["seq_len"] // tiny_run["per_device_train_batch_size"]


def test_token_level_distillation_runs_and_learns(tiny_run, teacher, tmp_path):
    student = distill(
        {**tiny_run, "kd_mode": "token", "teacher": teacher["model_dir"], "kd_alpha": 0.5}, tmp_path / "out"
    )
    assert student["status"] == "finished" and student["kd_mode"] == "token"
    assert student["val_loss"] < 6.5  # an untrained model sits at ln(1024) = 6.93


def test_bad_distillation_input(tiny_run, teacher, tmp_path):
    with pytest.raises(InputError, match="needs `synthetic_data`"):
        distill({**tiny_run, "synthetic_fraction": 0.5}, tmp_path)
    with pytest.raises(InputError, match="holds no synthetic corpus"):
        distill({**tiny_run, "synthetic_data": str(tmp_path / "missing")}, tmp_path)
    with pytest.raises(InputError, match="needs `teacher`"):
        distill({**tiny_run, "kd_mode": "token"}, tmp_path)
    synthetic = tmp_path / "synthetic"
    generate_synthetic(teacher["model_dir"], synthetic, num_tokens=1024, seq_len=tiny_run["seq_len"], seed=0)
    with pytest.raises(InputError, match="tokenizer differs from the teacher"):
        distill({**tiny_run, "vocab_size": 900, "synthetic_data": str(synthetic)}, tmp_path)
    with pytest.raises(InputError, match="seq_len"):
        # the same validation size in tokens (32 x 32 = 16 x 64) keeps the same tokenizer
        distill({**tiny_run, "seq_len": 32, "val_sequences": 32, "synthetic_data": str(synthetic)}, tmp_path)


def test_student_of_a_four_member_ensemble_beats_the_same_student_on_real_data_alone(four_members, tmp_path):
    settings, _, records = four_members
    curve = [r for r in records if r["kind"] == "ensemble"]
    alone = curve[0]["val_loss"]  # member 0: these very settings, real data only
    synthetic = tmp_path / "synthetic"
    generate_synthetic(
        curve[-1]["model_dir"], synthetic, num_tokens=8 * settings["token_budget"], seq_len=settings["seq_len"], seed=0
    )
    student = distill({**settings, "synthetic_data": str(synthetic), "synthetic_fraction": 0.5}, tmp_path / "student")
    # A 1:1 mix takes twice the steps per epoch: real data alone for twice the epochs rules out the extra steps.
    same_steps = pretrain({**settings, "num_train_epochs": 2 * settings["num_train_epochs"]}, tmp_path / "alone")
    assert student["steps"] == same_steps["steps"]
    assert student["val_loss"] < min(alone, same_steps["val_loss"]) - 0.05
    assert student["teacher"] == curve[-1]["model_dir"]
