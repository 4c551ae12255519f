"""`hf-infcompute pretrain` from a YAML recipe, alone and data-parallel over 2 CPU processes."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from hf_infcompute import load_runs
from hf_infcompute.cli.main import main


def write_recipe(path, settings: dict) -> str:
    path.write_text(yaml.safe_dump(settings))
    return str(path)


def test_cli_runs_recipe_with_overrides(tiny_run, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", {**tiny_run, "num_train_epochs": 1})
    code = main(["pretrain", recipe, "learning_rate=1e-3", "token_budget=4096", "--output", str(tmp_path / "out")])
    assert code == 0
    runs = load_runs(tmp_path / "out")
    assert runs["learning_rate"].tolist() == [1e-3] and runs["token_budget"].tolist() == [4096]
    assert "validation loss" in capsys.readouterr().out


def test_cli_rejects_unknown_key_by_name(tiny_run, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", {**tiny_run, "epochz": 3})
    assert main(["pretrain", recipe, "--output", str(tmp_path / "out")]) == 2
    assert "['epochz']" in capsys.readouterr().err


def test_two_process_data_parallel_run(tiny_run, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", {**tiny_run, "num_train_epochs": 1, "per_device_train_batch_size": 4})
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "hf_infcompute",
        "pretrain",
        recipe,
        "--output",
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = load_runs(tmp_path / "out")
    assert len(runs) == 1
    assert runs["batch_size"].item() == 8  # 2 processes x 4 sequences
    assert runs["status"].item() == "finished"
