"""Sharded and data-parallel training that saves and decays right, and CPT under a launcher that ends without hangs.

The launcher tests run `accelerate launch` with two processes over gloo on the CPU (`--multi_gpu` without a GPU:
accelerate 1.15's `--cpu` starts a single process unless an MPI hostfile is given).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import BENCH_DATA, micro_llama_config, save_base_checkpoint
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from hf_infcompute.data import PackedCollator, prepare_data
from hf_infcompute.hub import read_run_record
from hf_infcompute.records import iter_records
from hf_infcompute.training import (
    RegularizedTrainer,
    RegularizedTrainingArguments,
    decay_parameter_names,
    parse_run_config,
)
from hf_infcompute.training.pretraining import save_final_model

REPOSITORY = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = REPOSITORY / "recipes" / "accelerate"


def tiny_llama() -> LlamaForCausalLM:
    return LlamaForCausalLM(micro_llama_config(num_hidden_layers=2))


def test_zero3_decay_grouping_reads_the_full_shape():
    """Under ZeRO-3 init each rank's tensors are empty and `ds_shape` holds the real shape: the "matrices" rule still
    decays the matrices, and the default rule (by module, not shape) decays the same parameters as unpartitioned."""
    model = tiny_llama()
    expected = {mask: decay_parameter_names(model, mask) for mask in ("levanter", "matrices")}
    assert expected["matrices"] and "model.norm.weight" not in expected["matrices"]
    for param in model.parameters():  # what deepspeed.zero.Init leaves on a rank after partitioning
        param.ds_shape = param.shape
        param.data = torch.empty(0, dtype=param.dtype)
    assert {mask: decay_parameter_names(model, mask) for mask in expected} == expected
    for param in model.parameters():
        del param.ds_shape
    assert decay_parameter_names(model, "matrices") == []  # grouping by the local tensor would decay nothing


def test_fsdp_final_save_is_a_full_checkpoint(tmp_path, monkeypatch):
    """`Trainer.save_model` writes no weights for a sharded FSDP state dict; the run's final save gathers them."""
    model = tiny_llama()
    args = RegularizedTrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", precision="fp32")
    trainer = RegularizedTrainer(model=model, args=args)
    monkeypatch.setattr(trainer, "is_fsdp_enabled", True)
    monkeypatch.setattr(
        trainer.accelerator.state,
        "fsdp_plugin",
        SimpleNamespace(state_dict_type="StateDictType.SHARDED_STATE_DICT"),
        raising=False,
    )
    trainer.save_model(str(tmp_path / "trainer_save"))
    assert not (tmp_path / "trainer_save" / "model.safetensors").exists()
    save_final_model(trainer, tmp_path / "model", {"run_id": "fsdp"})
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    for (name, saved), original in zip(loaded.state_dict().items(), model.state_dict().values()):
        assert torch.equal(saved, original), name
    assert read_run_record(tmp_path / "model") == {"run_id": "fsdp"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    arguments: list[str], *, config: Path | None = None, script: Path | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    """`accelerate launch` of `hf_infcompute` (or of `script`) with 2 processes and this checkout first on the path."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.accelerate_cli",
        "launch",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]
    command += ["--config_file", str(config)] if config else ["--multi_gpu"]
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    program = [str(script)] if script else ["-m", "hf_infcompute"]
    return subprocess.run(
        [*command, *program, *arguments], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def launch_recipe(tiny_run, tmp_path) -> Path:
    """A run recipe of a few steps (a corpus prefix, so the launched processes tokenize quickly)."""
    settings = {**tiny_run, "num_train_epochs": 1, "per_device_train_batch_size": 4, "max_corpus_tokens": 400_000}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def check_saved_run(output: Path, launched: subprocess.CompletedProcess, settings: dict) -> None:
    """The launched run's one record states the global batch, and its saved model scores the recorded loss."""
    assert launched.returncode == 0, launched.stderr[-3000:]
    [record] = iter_records(output)
    assert record["status"] == "finished" and record["batch_size"] == 2 * settings["per_device_train_batch_size"]
    assert record["steps"] == record["token_budget"] // record["seq_len"] // record["batch_size"]
    assert read_run_record(record["model_dir"]) == record
    model = AutoModelForCausalLM.from_pretrained(record["model_dir"], dtype=torch.float32)
    run = parse_run_config(settings)
    data = prepare_data(run.data)
    run.training.output_dir = str(output / "check")
    trainer = RegularizedTrainer(
        model=model,
        args=run.training,
        eval_dataset=data.validation,
        data_collator=PackedCollator(data.tokenizer.pad_token_id),
    )
    assert trainer.evaluate()["eval_loss"] == pytest.approx(record["val_loss"], rel=1e-4)


@pytest.mark.slow
def test_ddp_pretrain_under_a_launcher_saves_a_loadable_model(launch_recipe, tmp_path):
    output = tmp_path / "out"
    launched = launch(["pretrain", str(launch_recipe), "--output", str(output)])
    check_saved_run(output, launched, yaml.safe_load(launch_recipe.read_text()))


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason="FSDP2 needs 2 GPUs: accelerate 1.15 turns FSDP on only for "
    "GPU distributed types (AcceleratorState), so on the CPU a launch with fsdp2.yaml trains plain DDP",
)
def test_fsdp2_pretrain_under_a_launcher_saves_a_full_checkpoint(launch_recipe, tmp_path):
    output = tmp_path / "out"
    launched = launch(
        ["pretrain", str(launch_recipe), "precision=fp32", "--output", str(output)],
        config=ACCELERATE_CONFIGS / "fsdp2.yaml",
    )
    check_saved_run(output, launched, yaml.safe_load(launch_recipe.read_text()))


@pytest.fixture
def base_checkpoint(tmp_path, corpus_dir) -> Path:
    """A tiny random Llama with a BPE tokenizer, saved like a hub checkpoint."""
    return save_base_checkpoint(tmp_path / "base", corpus_dir)


# The `cpt` command, with each scoring noting what the scoring process sees of the launch (lm-eval's HFLM spreads its
# work over the processes of the launch it finds, and on GPUs waits on them).
SCORING_PROBE = """
import json, os, sys
import torch
from accelerate import PartialState
import hf_infcompute.continued_pretraining as cpt
from hf_infcompute.cli.main import main

score = cpt.evaluate_model

def probe(*args, **kwargs):
    seen = {"pid": os.getpid(), "variables": sorted({"WORLD_SIZE", "RANK", "LOCAL_RANK"} & set(os.environ)),
            "process_group": torch.distributed.is_initialized(), "processes": PartialState().num_processes}
    with open(os.environ["SCORING_PROBE"], "a") as file:
        file.write(json.dumps(seen) + "\\n")
    return score(*args, **kwargs)

cpt.evaluate_model = probe
sys.exit(main(["cpt", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_cpt_parallel_data_under_a_launcher_scores_once_without_hanging(
    base_checkpoint, cache_dir, tmp_path, monkeypatch
):
    """Both ranks train each member data-parallel; then the launch ends and rank 0 alone builds the ensemble and the
    soup and scores them with lm-eval in one process that sees no launch (on GPUs it would wait on the other rank)."""
    gsm8k = BENCH_DATA / "gsm8k" / "train.jsonl"
    if not gsm8k.is_file():
        pytest.skip(f"domain corpus not found at {gsm8k}")
    output = tmp_path / "cpt"
    settings = [
        "text_column=answer",
        f"cache_dir={cache_dir}",
        "seq_len=64",
        "val_sequences=16",
        "token_budget=8192",
        "num_train_epochs=1",
        "learning_rate=1e-3",
        "per_device_train_batch_size=4",
        "precision=fp32",
        "disable_tqdm=true",
    ]
    script, seen = tmp_path / "cpt_probe.py", tmp_path / "scorings.jsonl"
    script.write_text(SCORING_PROBE)
    monkeypatch.setenv("SCORING_PROBE", str(seen))
    launched = launch(
        [
            "--base",
            str(base_checkpoint),
            "--data",
            str(gsm8k),
            *settings,
            "--k",
            "2",
            "--tasks",
            "mathqa",
            "--eval-data-dir",
            str(BENCH_DATA),
            "--eval-limit",
            "3",
            "--output",
            str(output),
        ],
        script=script,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("scores written to") == 1
    scorings = [json.loads(line) for line in seen.read_text().splitlines()]
    assert len(scorings) == 5 and len({s["pid"] for s in scorings}) == 1  # five models, scored by one process
    assert all(s["variables"] == [] and not s["process_group"] and s["processes"] == 1 for s in scorings)
    members = [r for r in iter_records(output) if r["kind"] == "ensemble_member"]
    assert len(members) == 2 and all(m["batch_size"] == 8 for m in members)  # trained once, on both processes
    [ensemble] = [r for r in iter_records(output) if r["kind"] == "ensemble" and r["k"] == 2]
    assert sorted(ensemble["members"]) == sorted(m["run_id"] for m in members)
    rows = json.loads((output / "cpt_scores.json").read_text())
    assert [row["model"] for row in rows] == ["base", "member 0", "member 1", "ensemble K=2", "soup K=2"]
