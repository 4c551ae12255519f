"""Training K members and the K-curve: seeds, the member rule, resume, and the ensemble beating its members."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

import hf_infcompute.ensemble  # noqa: F401  (registers the ensemble with the Auto classes)
from hf_infcompute import load_runs
from hf_infcompute.data import PackedCollator, prepare_data
from hf_infcompute.ensemble.members import member_config, train_ensemble
from hf_infcompute.errors import InputError
from hf_infcompute.training import parse_run_config


def test_member_seeds_and_the_paper_rule():
    settings = {"corpus": "c", "token_budget": 1000, "seed": 10, "num_train_epochs": 8, "weight_decay": 1.6}
    base = parse_run_config(settings)
    both = [member_config(base, i).training for i in range(3)]
    assert [(m.seed, m.data_seed) for m in both] == [(10, 10), (11, 11), (12, 12)]
    init_only = [member_config(base, i, vary="init").training for i in range(3)]
    assert {m.data_seed for m in init_only} == {10} and len({m.seed for m in init_only}) == 3
    data_only = [member_config(base, i, vary="data").training for i in range(3)]
    assert {m.seed for m in data_only} == {10} and len({m.data_seed for m in data_only}) == 3
    paper = member_config(base, 0, member_rule="paper")
    assert (paper.training.num_train_epochs, paper.training.weight_decay) == (16, 0.8)
    assert paper.training.learning_rate == 3e-3
    # A member is the run its settings parse to: the same id as the recipe written out by hand.
    by_hand = parse_run_config({**settings, "seed": 11, "data_seed": 11, "num_train_epochs": 16, "weight_decay": 0.8})
    assert member_config(base, 1, member_rule="paper").run_id() == by_hand.run_id()
    with pytest.raises(InputError, match="standard recipe"):
        member_config(parse_run_config({**settings, "recipe": "standard", "weight_decay": 0.1}), 0, member_rule="paper")


def test_k_below_one_is_refused(tiny_run, tmp_path):
    with pytest.raises(InputError, match="K >= 1"):
        train_ensemble(parse_run_config(tiny_run), tmp_path, 0)


def test_ensemble_beats_its_average_member_and_curve_is_recorded(four_members):
    _, output, records = four_members
    curve = [r for r in records if r["kind"] == "ensemble"]
    assert [r["k"] for r in curve] == [1, 2, 3, 4]
    assert curve[0]["val_loss"] == pytest.approx(curve[0]["member_val_loss_mean"])
    assert curve[-1]["val_loss"] < curve[-1]["member_val_loss_mean"]
    runs = load_runs(output)
    members = runs[runs.kind == "ensemble_member"].sort_values("member_index")
    assert members["seed"].tolist() == [0, 1, 2, 3] and members["data_seed"].tolist() == [0, 1, 2, 3]
    # The k=1 point is member 0 scored on the same validation and test splits as its own record.
    assert curve[0]["val_loss"] == pytest.approx(members["val_loss"].iloc[0], abs=1e-4)
    assert curve[0]["test_loss"] == pytest.approx(members["test_loss"].iloc[0], abs=1e-4)
    assert curve[0]["test_sequence_losses"] == pytest.approx(members["test_sequence_losses"].iloc[0], abs=1e-5)


def test_ensemble_and_soup_records_score_both_splits(four_members):
    settings, _, records = four_members
    rows = settings["val_sequences"]  # test_sequences defaults to it
    for record in records:
        assert (record["val_sequences"], record["test_sequences"]) == (rows, rows)
        assert len(record["val_sequence_losses"]) == len(record["val_sequence_documents"]) == rows
        assert len(record["test_sequence_losses"]) == len(record["test_sequence_documents"]) == rows
        assert record["test_loss"] == pytest.approx(sum(record["test_sequence_losses"]) / rows, abs=1e-5)
        assert record["test_fingerprint"] != record["validation_fingerprint"]
    curve = [r for r in records if r["kind"] == "ensemble"]
    for record in curve:
        assert (
            set(record["test_loss_by_combine"])
            == set(record["test_sequence_losses_by_combine"])
            == {
                "logits",
                "probs",
            }
        )
        assert record["test_loss_by_combine"][record["combine"]] == record["test_loss"]
        assert all(len(losses) == rows for losses in record["test_sequence_losses_by_combine"].values())
    assert curve[0]["test_loss"] == pytest.approx(curve[0]["member_test_loss_mean"])
    assert curve[-1]["test_loss"] < curve[-1]["member_test_loss_mean"]


def test_full_curve_point_equals_the_saved_logit_ensemble(four_members):
    settings, _, records = four_members
    full = [r for r in records if r["kind"] == "ensemble"][-1]
    model = AutoModelForCausalLM.from_pretrained(full["model_dir"]).eval()
    data = prepare_data(parse_run_config(settings).data)
    batch = PackedCollator(data.tokenizer.pad_token_id)([data.validation[i] for i in range(len(data.validation))])
    with torch.no_grad():
        loss = model(**batch).loss.item()
    assert loss == pytest.approx(full["val_loss"], abs=1e-4)


def test_soup_is_recorded_and_loads(four_members):
    _, output, records = four_members
    soup = [r for r in records if r["kind"] == "soup"]
    assert len(soup) == 1 and soup[0]["k"] == 4
    model = AutoModelForCausalLM.from_pretrained(soup[0]["model_dir"])
    assert model.config.model_type == "llama"


def test_rerun_trains_no_member_again(four_members, trained_runs):
    settings, output, records = four_members
    again = train_ensemble(parse_run_config(settings), output, 4)
    assert not trained_runs
    assert [r["val_loss"] for r in again] == pytest.approx([r["val_loss"] for r in records if r["kind"] == "ensemble"])


def test_members_spread_over_two_worker_processes(tiny_run, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**tiny_run, "num_train_epochs": 1}))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "hf_infcompute",
        "ensemble",
        str(recipe),
        "--k",
        "2",
        "--output",
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = load_runs(tmp_path / "out")
    members = runs[runs.kind == "ensemble_member"]
    assert sorted(members["member_index"]) == [0, 1]
    assert set(members["batch_size"]) == {tiny_run["per_device_train_batch_size"]}  # each trained alone
    assert sorted(runs[runs.kind == "ensemble"]["k"]) == [1, 2]
