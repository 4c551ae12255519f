"""The typed run: parsing a recipe mapping, deriving variants with `RunConfig.replace`, and the method's own fields."""

from __future__ import annotations

import pytest

from hf_infcompute.distillation import DistillationTrainingArguments
from hf_infcompute.errors import InputError
from hf_infcompute.training import RegularizedTrainingArguments, parse_run_config

SETTINGS = {
    "corpus": "c",
    "token_budget": 4096,
    "preset": "tiny-0.5m",
    "learning_rate": 3e-3,
    "seed": 2,
    "num_train_epochs": 4,
    "weight_decay": 0.8,
    "precision": "fp32",
}


def test_replace_is_the_run_its_settings_parse_to():
    run = parse_run_config(SETTINGS)
    changes = {"learning_rate": "1e-3", "num_train_epochs": 8, "token_budget": 8192, "preset": "tiny-1m"}
    variant = run.replace(**changes)
    by_hand = parse_run_config({**SETTINGS, **changes})
    assert variant.identity() == by_hand.identity() and variant.run_id() == by_hand.run_id()
    assert variant.training.num_train_epochs == 8.0 and isinstance(variant.training.num_train_epochs, float)
    assert run.training.learning_rate == 3e-3 and run.data.token_budget == 4096  # the original is unchanged


def test_data_seed_follows_a_new_seed_unless_set_apart():
    run = parse_run_config(SETTINGS)
    assert run.replace(seed=5).training.data_seed == 5
    apart = parse_run_config({**SETTINGS, "data_seed": 9})
    assert apart.replace(seed=5).training.data_seed == 9


def test_replace_validates_again():
    standard = parse_run_config({**SETTINGS, "recipe": "standard", "weight_decay": 0.1})
    with pytest.raises(InputError, match="standard recipe fixes weight_decay at 0.1"):
        standard.replace(weight_decay=0.2)
    with pytest.raises(InputError, match="learning_rate"):
        standard.replace(learning_rate=0)
    with pytest.raises(InputError, match=r"unknown recipe key\(s\) \['learnig_rate'\]"):
        standard.replace(learnig_rate=1e-3)
    with pytest.raises(InputError, match="token_budget"):
        standard.replace(token_budget=0)


def test_a_method_run_keeps_the_shared_settings_and_adds_its_own():
    run = parse_run_config(SETTINGS)
    student = run.replace(DistillationTrainingArguments, synthetic_data="samples", synthetic_fraction=0.75)
    assert isinstance(student.training, DistillationTrainingArguments)
    assert (student.training.learning_rate, student.training.weight_decay, student.training.seed) == (3e-3, 0.8, 2)
    identity = student.identity()
    assert identity["synthetic_fraction"] == 0.75 and identity["kd_mode"] == "sequence"
    assert {key: identity[key] for key in run.identity()} == run.identity() and student.run_id() != run.run_id()
    parsed = parse_run_config(
        {**SETTINGS, "synthetic_data": "samples", "synthetic_fraction": 0.75},
        training_class=DistillationTrainingArguments,
    )
    assert parsed.run_id() == student.run_id()
    with pytest.raises(InputError, match="needs `synthetic_data`"):
        run.replace(DistillationTrainingArguments)
    with pytest.raises(InputError, match=r"unknown recipe key\(s\) \['kd_alpha'\]"):
        parse_run_config({**SETTINGS, "kd_alpha": 0.5})


def test_students_default_to_the_papers_distillation_settings():
    args = DistillationTrainingArguments(output_dir="x", precision="fp32", synthetic_data="samples")
    assert isinstance(args, RegularizedTrainingArguments)
    assert (args.weight_decay, args.synthetic_fraction, args.kd_mode) == (0.1, 0.5, "sequence")


def test_the_validation_split_counts_in_the_identity_unless_it_is_the_head_of_the_corpus():
    head = parse_run_config({**SETTINGS, "validation_split": "head"})
    assert "validation_split" not in head.identity()  # ids of runs recorded before the setting existed still hold
    random = parse_run_config(SETTINGS)
    assert random.data.validation_split == "random"  # the default: an i.i.d. sample of the corpus's documents
    other_seed = parse_run_config({**SETTINGS, "validation_split": "random", "validation_seed": 1})
    assert len({head.run_id(), random.run_id(), other_seed.run_id()}) == 3


def test_the_test_split_counts_in_the_identity():
    """Runs with a test split train on other documents than runs recorded before it (which had none)."""
    run = parse_run_config(SETTINGS)
    assert run.data.test_sequences == run.data.val_sequences  # the default
    assert run.identity()["test_sequences"] == run.data.val_sequences
    more = parse_run_config({**SETTINGS, "test_sequences": 2 * run.data.val_sequences})
    assert more.run_id() != run.run_id()
