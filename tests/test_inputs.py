"""Bad recipes, overrides and model folders: one paragraph naming the file and the fix, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from transformers import LlamaConfig

from hf_infcompute.cli.main import main
from hf_infcompute.errors import InputError
from hf_infcompute.training.config import load_recipe, parse_run_config

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_overrides_are_read_by_the_fields_type(tmp_path: Path):
    recipe = tmp_path / "run.yaml"
    recipe.write_text("corpus: c\ntoken_budget: 4096\nmax_corpus_tokens: 100000\n")
    overrides = ["save_strategy=no", "max_corpus_tokens=null", "num_train_epochs=2", "disable_tqdm=yes"]
    run = parse_run_config(load_recipe(recipe, overrides))
    assert run.training.save_strategy == "no"  # YAML would have read `no` as false
    assert run.data.max_corpus_tokens is None and run.training.num_train_epochs == 2.0 and run.training.disable_tqdm
    with pytest.raises(InputError, match="expects a number"):
        parse_run_config(load_recipe(recipe, ["learning_rate=fast"]))


@pytest.mark.parametrize("command", ["pretrain", "study"])
def test_a_yaml_syntax_error_names_the_file_and_line(command: str, tmp_path: Path, capsys):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("token_budget: 4096\nseq_len: [64\nvocab_size: 512\n")
    code, error = run_cli([command, str(recipe), "--output", str(tmp_path / "out")], capsys)
    assert code == 2 and "Traceback" not in error
    assert str(recipe) in error and "line" in error and "not valid YAML" in error


@pytest.mark.parametrize("command", ["pretrain", "study"])
def test_a_missing_recipe_file_names_the_fix(command: str, tmp_path: Path, capsys):
    missing = tmp_path / "nowhere.yaml"
    code, error = run_cli([command, str(missing), "--output", str(tmp_path / "out")], capsys)
    assert code == 2 and "Traceback" not in error
    assert str(missing) in error and "check the path" in error
    assert ("recipes/pretrain-tiny.yaml" if command == "pretrain" else "quickstart, smoke") in error


def test_a_bad_run_key_stops_the_study_before_it_trains(corpus_dir, tmp_path: Path, capsys, trained_runs):
    spec = yaml.safe_load(SMOKE.read_text())
    spec["run"]["learning_rate_warmup"] = 0.1
    recipe = tmp_path / "study.yaml"
    recipe.write_text(yaml.safe_dump(spec))
    code, error = run_cli(["study", str(recipe), "--data", str(corpus_dir), "--output", str(tmp_path / "s")], capsys)
    assert code == 2 and "Traceback" not in error
    assert "learning_rate_warmup" in error and "`run:`" in error and "hf-infcompute pretrain --help-keys" in error
    assert trained_runs == [] and not (tmp_path / "s").exists()


def test_a_member_or_teacher_folder_without_weights_is_named(tmp_path: Path):
    from hf_infcompute.ensemble.members import record_curve
    from hf_infcompute.generation.teacher import describe_teacher, load_teacher_model

    folder = tmp_path / "model"
    LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    ).save_pretrained(folder)
    with pytest.raises(InputError, match="member run-a: .* holds no weights.*Run the same command again"):
        record_curve(
            None, [{"run_id": "run-a", "model_dir": str(folder)}], tmp_path, combine="logits", soup=False, rule={}
        )
    with pytest.raises(InputError, match="teacher .* holds no weights"):
        load_teacher_model(describe_teacher(str(folder)), device="cpu")
