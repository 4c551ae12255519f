"""`pretrain` end to end on the real corpus: loss falls, resume equals uninterrupted, NaN guard, bad input."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import micro_llama_config
from transformers import AutoModelForCausalLM, TrainerCallback

from hf_infcompute import load_runs
from hf_infcompute.data import prepare_data
from hf_infcompute.errors import InputError
from hf_infcompute.training import RegularizedTrainingArguments, decay_parameter_names, parse_run_config, pretrain
from hf_infcompute.training.pretraining import build_trainer
from hf_infcompute.training.sampler import EpochShuffleSampler


def test_loss_falls_and_run_is_recorded(tiny_run, tmp_path):
    record = pretrain(tiny_run, tmp_path)
    assert record["status"] == "finished"
    run = parse_run_config(tiny_run)
    run.training.output_dir = str(tmp_path / "untrained")
    untrained_loss = build_trainer(run, prepare_data(run.data)).evaluate()["eval_loss"]
    assert untrained_loss == pytest.approx(math.log(tiny_run["vocab_size"]), abs=0.1)
    assert record["val_loss"] < untrained_loss - 0.5
    assert record["tokens_seen"] == tiny_run["token_budget"] * tiny_run["num_train_epochs"]
    runs = load_runs(tmp_path)
    assert list(runs["run_id"]) == [record["run_id"]]
    for column in (
        "recipe",
        "corpus",
        "token_budget",
        "preset",
        "n_params",
        "n_params_total",
        "learning_rate",
        "weight_decay",
        "num_train_epochs",
        "seed",
        "data_seed",
        "val_loss",
        "train_loss",
        "tokens_seen",
        "wall_time_s",
        "version",
    ):
        assert column in runs.columns
    model = AutoModelForCausalLM.from_pretrained(record["model_dir"])
    assert sum(p.numel() for p in model.parameters()) == record["n_params_total"]
    assert not (Path(record["model_dir"]) / "training_incomplete").exists()
    assert_held_out_fields(record, tiny_run["val_sequences"], tiny_run["val_sequences"])
    assert record["test_loss"] < untrained_loss - 0.5


def assert_held_out_fields(record: dict, val_sequences: int, test_sequences: int) -> None:
    """The record scores every validation and test row, names each row's document, and means them as its losses."""
    assert (record["val_sequences"], record["test_sequences"]) == (val_sequences, test_sequences)
    assert len(record["val_sequence_losses"]) == len(record["val_sequence_documents"]) == val_sequences
    assert len(record["test_sequence_losses"]) == len(record["test_sequence_documents"]) == test_sequences
    assert record["val_loss"] == pytest.approx(sum(record["val_sequence_losses"]) / val_sequences, abs=1e-5)
    assert record["test_loss"] == pytest.approx(sum(record["test_sequence_losses"]) / test_sequences, abs=1e-5)
    assert record["test_fingerprint"] != record["validation_fingerprint"]
    assert not set(record["val_sequence_documents"]) & set(record["test_sequence_documents"])


def test_finished_run_is_not_trained_again(tiny_run, tmp_path, monkeypatch):
    first = pretrain(tiny_run, tmp_path)
    monkeypatch.setattr("hf_infcompute.training.pretraining.prepare_data", lambda *a: pytest.fail("trained again"))
    assert pretrain(tiny_run, tmp_path) == first


def test_a_regularized_run_at_the_standard_weight_decay_is_the_standard_run(tiny_run, tmp_path, monkeypatch):
    """The recipe names a run and changes nothing in its training: the regularized search's points at weight decay
    0.1 take the standard run's training instead of repeating it, under their own id, for as long as its model lasts."""
    standard = pretrain({**tiny_run, "recipe": "standard"}, tmp_path)
    alone = pretrain({**tiny_run, "recipe": "regularized"}, tmp_path / "alone")  # trained: no twin there
    assert alone["val_sequence_losses"] == standard["val_sequence_losses"] and "same_training_as" not in alone
    monkeypatch.setattr("hf_infcompute.training.pretraining.prepare_data", lambda *a: pytest.fail("trained again"))
    twin = pretrain({**tiny_run, "recipe": "regularized"}, tmp_path)
    assert twin["run_id"] == alone["run_id"] != standard["run_id"] and twin["recipe"] == "regularized"
    assert twin["same_training_as"] == standard["run_id"] and twin["model_dir"] == standard["model_dir"]
    assert twin["val_loss"] == standard["val_loss"] and twin["wall_time_s"] == 0.0
    assert set(load_runs(tmp_path).run_id) == {standard["run_id"], twin["run_id"]}
    assert pretrain({**tiny_run, "recipe": "regularized"}, tmp_path) == twin  # read back, not copied again
    monkeypatch.undo()
    shutil.rmtree(standard["model_dir"])
    retrained = pretrain({**tiny_run, "recipe": "regularized"}, tmp_path)  # the shared model is gone
    assert "same_training_as" not in retrained and retrained["model_dir"] != standard["model_dir"]
    assert retrained["val_loss"] == standard["val_loss"]


class StopAtStep(TrainerCallback):
    """Simulates a killed run: raises once `step` optimizer steps are done."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_resumed_run_equals_uninterrupted(tiny_run, tmp_path):
    settings = {**tiny_run, "save_steps": 5, "save_total_limit": 2}
    uninterrupted = pretrain(settings, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        pretrain(settings, tmp_path / "b", callbacks=[StopAtStep(13)])  # mid-epoch 2, after checkpoint-10
    resumed = pretrain(settings, tmp_path / "b")
    assert resumed["resumed_from"] == "checkpoint-10"
    assert resumed["val_loss"] == pytest.approx(uninterrupted["val_loss"], abs=1e-6)
    assert resumed["train_loss"] == pytest.approx(uninterrupted["train_loss"], abs=1e-6)
    # the training curve covers the whole run: the checkpoint's log, then the resumed steps'
    logs = resumed["train_log"], uninterrupted["train_log"]
    assert [e["step"] for e in logs[0]] == [e["step"] for e in logs[1]] == list(range(4, 33, 4))
    assert [e["learning_rate"] for e in logs[0]] == pytest.approx([e["learning_rate"] for e in logs[1]])
    # the first log after resuming averages only the steps since the checkpoint (11, 12); the others are equal
    same = [(a["loss"], b["loss"]) for a, b in zip(*logs) if a["step"] != 12]
    assert [a for a, _ in same] == pytest.approx([b for _, b in same], abs=1e-5)
    assert all(math.isfinite(e["grad_norm"]) for e in logs[0])


class PoisonWeights(TrainerCallback):
    """Turns a weight into NaN after `step` steps, so the next loss is not finite."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                model.get_input_embeddings().weight.fill_(float("nan"))


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tiny_run, tmp_path):
    settings = {**tiny_run, "save_steps": 4}
    record = pretrain(settings, tmp_path, callbacks=[PoisonWeights(6)])
    assert record["status"] == "failed"
    assert record["failed_step"] == 7
    assert "step 7" in record["error"] and "checkpoint-4" in record["error"]
    assert (tmp_path / "runs" / record["run_id"] / "checkpoint-4").is_dir()
    assert load_runs(tmp_path)["status"].tolist() == ["failed"]


def test_validation_split_shared_across_presets_and_seeds(tiny_run, tmp_path):
    a = pretrain({**tiny_run, "num_train_epochs": 1}, tmp_path)
    b = pretrain({**tiny_run, "num_train_epochs": 1, "preset": "tiny-1m", "seed": 3, "token_budget": 4096}, tmp_path)
    assert a["validation_fingerprint"] == b["validation_fingerprint"]
    assert a["test_fingerprint"] == b["test_fingerprint"]
    assert a["val_sequence_documents"] == b["val_sequence_documents"]
    assert a["test_sequence_documents"] == b["test_sequence_documents"]
    assert a["test_sequence_losses"] != b["test_sequence_losses"]  # two models scored on the same rows
    assert (a["seed"], a["data_seed"]) == (0, 0) and (b["seed"], b["data_seed"]) == (3, 3)


def test_weight_decay_follows_levanters_default_mask_or_every_matrix():
    """The paper's runs (Levanter's default mask): no decay on the input embedding, norms or biases; the untied
    output head is decayed. "matrices" decays every matrix, the input embedding included."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(micro_llama_config(tie_word_embeddings=False))
    decayed = set(decay_parameter_names(model))
    assert "model.embed_tokens.weight" not in decayed and "lm_head.weight" in decayed
    assert "model.layers.0.self_attn.q_proj.weight" in decayed and "model.layers.0.mlp.down_proj.weight" in decayed
    assert not any("norm" in name for name in decayed)
    every_matrix = set(decay_parameter_names(model, "matrices"))
    assert every_matrix == decayed | {"model.embed_tokens.weight"}
    # a tied embedding is the output head too, and is decayed
    tied = LlamaForCausalLM(micro_llama_config(tie_word_embeddings=True))
    assert "model.embed_tokens.weight" in decay_parameter_names(tied)
    with pytest.raises(InputError, match="weight_decay_mask"):
        decay_parameter_names(model, "all")


def test_the_trainer_groups_the_optimizer_by_the_runs_mask(tmp_path):
    from transformers import LlamaForCausalLM

    from hf_infcompute.training import RegularizedTrainer

    for mask, embedding_decay in (("levanter", 0.0), ("matrices", 0.8)):
        model = LlamaForCausalLM(micro_llama_config(tie_word_embeddings=False))
        args = RegularizedTrainingArguments(
            output_dir=str(tmp_path / mask), report_to="none", weight_decay=0.8, weight_decay_mask=mask
        )
        optimizer = RegularizedTrainer(model=model, args=args).create_optimizer()
        decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
        assert decay_of[id(model.model.embed_tokens.weight)] == embedding_decay
        assert decay_of[id(model.lm_head.weight)] == 0.8


def test_one_data_order_for_every_epoch_when_asked():
    sampler = EpochShuffleSampler(50, seed=7, reshuffle=False)
    orders = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert orders[0] == orders[1] == list(EpochShuffleSampler(50, seed=7))
    with pytest.raises(InputError, match="data_order"):
        RegularizedTrainingArguments(output_dir="x", data_order="sorted")


def test_each_epoch_gets_its_own_reproducible_shuffle():
    sampler = EpochShuffleSampler(50, seed=7)
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert orders[0] == orders[2] != orders[1]
    assert sorted(orders[1]) == list(range(50))
    assert list(EpochShuffleSampler(50, seed=8)) != orders[0]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"preset": "giant"}, "unknown preset"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"weight_decay": float("nan")}, "weight_decay"),
        ({"num_train_epochs": 0}, "num_train_epochs"),
        ({"recipe": "standard", "weight_decay": 0.8}, "standard recipe fixes weight_decay"),
        ({"recipe": "fancy"}, "unknown recipe"),
        ({"seq_len": 2048}, "exceeds the context"),
        ({"learning_rte": 1e-3}, r"unknown recipe key\(s\) \['learning_rte'\]"),
        ({"learning_rate": "fast"}, "expects a number"),
    ],
)
def test_bad_settings_raise_clear_errors(tiny_run, tmp_path, change, message):
    with pytest.raises(InputError, match=message):
        pretrain({**tiny_run, **change}, tmp_path)


def test_training_arguments_carry_paper_defaults():
    args = RegularizedTrainingArguments(output_dir="x", precision="fp32")
    assert (args.lr_scheduler_type, args.warmup_steps, args.max_grad_norm) == ("cosine", 0.01, 1.0)
    assert (args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay) == (0.9, 0.95, 1e-8, 0.1)
    assert args.data_seed == args.seed
