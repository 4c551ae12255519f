"""Settings are honoured or refused before anything trains, outputs that cannot be written are named, and one output
folder holds one study: each case ends in exit code 2 and one paragraph, never a traceback."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_damaged_files import TINY_RUN, Worked, run_cli, scratch, write_corpus

from hf_infcompute.errors import InputError
from hf_infcompute.records import write_json_atomic
from hf_infcompute.study import load_study
from hf_infcompute.study.folder import RECIPE_FILE, claim_study_folder

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"

# Run settings a recipe may give, and values of every JSON type and of every range.
KEYS = (
    "token_budget",
    "seq_len",
    "val_sequences",
    "vocab_size",
    "tokenizer_train_chars",
    "learning_rate",
    "weight_decay",
    "num_train_epochs",
    "per_device_train_batch_size",
    "preset",
    "precision",
    "validation_split",
    "max_corpus_tokens",
    "seed",
)
VALUES = st.one_of(
    st.integers(-(2**40), 2**40),
    st.integers(0, 5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["tiny-0.5m", "fp32", "bf16", "random", "head", "1e-3", "nan"]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(0, 9), max_size=2),
)


@pytest.fixture
def stop_before_training(monkeypatch) -> None:
    from transformers import Trainer

    def refuse(self, *args, **kwargs):
        raise Worked

    monkeypatch.setattr(Trainer, "train", refuse)


@example(drawn={"weight_decay": [1, 5]})  # found by generation: a TypeError inside the argument parser
@example(drawn={"seed": -2937})  # found by generation: numpy's ValueError at the first seeding
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=st.dictionaries(st.sampled_from(KEYS), VALUES, min_size=1, max_size=2))
def test_drawn_settings_work_or_are_refused_before_training(drawn, stop_before_training):
    with scratch() as folder:
        corpus = write_corpus(folder, ".jsonl")
        recipe = folder / "run.yaml"
        recipe.write_text(yaml.safe_dump({**TINY_RUN, "corpus": str(corpus), "cache_dir": str(folder / "c"), **drawn}))
        err = run_cli(["pretrain", str(recipe), "--output", str(folder / "out")])
        assert not err or any(key in err for key in drawn) or "corpus" in err


def test_a_vocab_size_the_tokenizer_cannot_reach_is_refused_with_the_numbers(tmp_path, stop_before_training):
    corpus = write_corpus(tmp_path, ".jsonl")
    for vocab, said in ((100, "at least 258 tokens"), (5000, "holds only")):
        recipe = tmp_path / "run.yaml"
        recipe.write_text(yaml.safe_dump({**TINY_RUN, "corpus": str(corpus), "vocab_size": vocab}))
        err = run_cli(["pretrain", str(recipe), "--output", str(tmp_path / "out")])
        assert f"vocab_size {vocab} cannot be honoured" in err and said in err and "set `vocab_size" in err.lower()


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_an_output_that_is_a_file_is_named(tmp_path, where):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    output = blocker if where == "file" else blocker / "deeper"
    recipe = tmp_path / "run.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RUN, "corpus": str(write_corpus(tmp_path, ".jsonl"))}))
    for command in (["pretrain", str(recipe)], ["study", str(SMOKE)]):
        err = run_cli([*command, "--output", str(output)])
        assert f"--output {output}" in err and "not a folder" in err and "give another --output" in err


def test_a_full_disk_during_a_save_is_one_paragraph_and_leaves_no_part_file(tmp_path, monkeypatch):
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", full)
        with pytest.raises(OSError, match="record.json"):
            write_json_atomic(tmp_path / "record.json", {"run_id": "r"})
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary part

    def save_fails(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "out" / "runs" / "checkpoint-1"))

    monkeypatch.setattr("transformers.Trainer.train", save_fails)
    recipe = tmp_path / "run.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RUN, "corpus": str(write_corpus(tmp_path, ".jsonl"))}))
    err = run_cli(["pretrain", str(recipe), "--output", str(tmp_path / "out")])
    assert "checkpoint-1" in err and "disk is full" in err and "rerun the same command" in err


def smoke_recipe(folder: Path, **changes) -> Path:
    spec = yaml.safe_load(SMOKE.read_text())
    path = folder / f"{changes.get('name', 'smoke')}.yaml"
    path.write_text(yaml.safe_dump({**spec, **changes}))
    return path


def test_another_study_in_a_study_folder_is_refused_and_the_same_one_resumes(corpus_dir, tmp_path, trained_runs):
    output = tmp_path / "study"
    smoke = load_study(str(SMOKE), data=str(corpus_dir))
    claim_study_folder(smoke, output)  # what a study's first start records
    recorded = (output / RECIPE_FILE).read_text()
    other = smoke_recipe(tmp_path, name="other", token_budget=4096)
    for extra in ([], ["--report-only"]):
        err = run_cli(["study", str(other), "--data", str(corpus_dir), "--output", str(output), *extra])
        assert "holds study 'smoke'" in err and "this recipe is study 'other'" in err
        assert "token_budget (8192 there, 4096 here)" in err and "give this study another --output" in err
    assert (output / RECIPE_FILE).read_text() == recorded and trained_runs == []
    claim_study_folder(smoke, output)  # the same recipe resumes
    renamed = load_study(str(smoke_recipe(tmp_path, name="renamed")), data=str(corpus_dir))
    with pytest.raises(InputError, match="name \\('smoke' there, 'renamed' here\\)"):
        claim_study_folder(renamed, output)


def test_a_study_folder_of_an_earlier_version_is_claimed_by_its_name(corpus_dir, tmp_path):
    output = tmp_path / "study"
    write_json_atomic(output / "study.json", {"name": "smoke", "format": 4})  # no recipe recorded beside it
    other = load_study(str(smoke_recipe(tmp_path, name="other")), data=str(corpus_dir))
    with pytest.raises(InputError, match="holds study 'smoke'"):
        claim_study_folder(other, output)
    claim_study_folder(load_study(str(SMOKE), data=str(corpus_dir)), output)
    assert json.loads((output / RECIPE_FILE).read_text())["name"] == "smoke"
