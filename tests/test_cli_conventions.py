"""CLI conventions of trl beside ours: `--config FILE`, `--key value`; `study --help-keys` lists the study keys."""

from __future__ import annotations

import pytest

from hf_infcompute.cli.main import build_parser, main
from hf_infcompute.study.keys import STUDY_KEY_HELP, study_keys
from hf_infcompute.training.config import load_recipe


def _parse(argv):
    from hf_infcompute.cli.conventions import normalize_argv

    parser = build_parser()
    return parser.parse_args(normalize_argv(parser, argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["pretrain", "recipe.yaml", "learning_rate=1e-3", "seed=2", "--output", "out"],
        ["pretrain", "--config", "recipe.yaml", "--learning_rate", "1e-3", "--seed=2", "-o", "out"],
        ["pretrain", "--output", "out", "--learning-rate", "1e-3", "--config=recipe.yaml", "seed=2"],
    ],
)
def test_config_and_key_value_options_read_as_the_positional_recipe_and_overrides(argv):
    args = _parse(argv)
    assert args.recipe == "recipe.yaml" and args.output == "out"
    assert sorted(args.overrides) == ["learning_rate=1e-3", "seed=2"]


def test_flags_and_the_search_command(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("preset: tiny-1m\nlearning_rate: 0.003\n")
    args = _parse(
        ["search", "--config", str(recipe), "--grid-lr", "1e-3,3e-3", "--bf16", "--seed", "3", "--output", "x"]
    )
    assert args.recipe == str(recipe) and args.grid_lr == [1e-3, 3e-3]  # its own options stay options
    assert load_recipe(args.recipe, args.overrides) == {
        "preset": "tiny-1m",
        "learning_rate": 0.003,
        "bf16": "true",
        "seed": "3",
    }


def test_study_help_keys_lists_every_study_key_with_its_help(capsys):
    assert set(study_keys()) == set(STUDY_KEY_HELP)  # a key added to the spec needs its help here
    assert main(["study", "--help-keys"]) == 0
    out = capsys.readouterr().out
    assert "  ensemble.member_candidates: 'optimum' (the single model's optimum) and/or 'paper'" in out
    assert all(f"  {key}: " in out for key in study_keys())
    assert main(["study"]) == 2
    assert "give a study recipe" in capsys.readouterr().err


def test_push_to_hub_in_a_run_recipe_is_refused_with_the_push_command(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("corpus: data\ntoken_budget: 4096\npreset: tiny-1m\npush_to_hub: true\n")
    assert main(["pretrain", str(recipe), "--output", str(tmp_path / "out")]) == 2
    assert "upload the model you choose with `hf-infcompute push" in capsys.readouterr().err
    recipe.write_text("corpus: data\ntoken_budget: 4096\npreset: tiny-1m\n")
    assert main(["pretrain", "--config", str(recipe), "--push_to_hub", "--output", str(tmp_path / "out")]) == 2
    assert "`push_to_hub` is not a run setting here" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
