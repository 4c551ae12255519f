"""Hub artifacts: model cards with indexed metadata, and `push` offline (one line, the cards it can write)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard, HfApi, ModelCard
from huggingface_hub.errors import LocalTokenNotFoundError

from hf_infcompute.cli.main import main
from hf_infcompute.hub import model_card
from hf_infcompute.records import RUN_RECORD_FILE, append_record
from hf_infcompute.study.state import StudyState

RECORD = {
    "run_id": "regularized-tiny-1m-D8192-abc",
    "kind": "pretrain",
    "recipe": "regularized",
    "corpus": "HuggingFaceFW/fineweb-edu",
    "token_budget": 8192,
    "preset": "tiny-1m",
    "n_params_total": 1_000_000,
    "num_train_epochs": 16,
    "learning_rate": 3e-3,
    "weight_decay": 0.8,
    "tokens_seen": 131072,
    "val_loss": 5.4321,
    "status": "finished",
    "config": {"base_model": None},
}


def test_model_card_carries_metadata_the_hub_indexes():
    scores = [{"task": "piqa", "metric": "acc", "value": 0.61, "headline": True}]
    card = ModelCard(str(model_card(RECORD, scores)))
    data = card.data
    assert data.license == "apache-2.0" and data.pipeline_tag == "text-generation"
    assert data.datasets == ["HuggingFaceFW/fineweb-edu"]
    assert {(r.metric_type, r.metric_value) for r in data.eval_results} == {("loss", 5.4321), ("acc", 61.0)}
    assert "| epochs | 16 |" in card.text and "| piqa | acc | 61.00 |" in card.text
    assert data.base_model is None


def test_cpt_and_students_name_their_hub_base_model(tmp_path: Path):
    cpt = {**RECORD, "config": {"base_model": "meta-llama/Llama-3.2-3B"}, "corpus": str(tmp_path)}
    data = ModelCard(str(model_card(cpt))).data
    assert data.base_model == "meta-llama/Llama-3.2-3B" and data.datasets is None
    student = {**RECORD, "kind": "student", "teacher": "someone/ensemble-k8"}
    assert ModelCard(str(model_card(student))).data.base_model == "someone/ensemble-k8"
    local_teacher = {**RECORD, "kind": "student", "teacher": str(tmp_path)}
    assert ModelCard(str(model_card(local_teacher))).data.base_model is None


def test_push_offline_says_so_in_one_line_and_writes_the_card(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / RUN_RECORD_FILE).write_text(json.dumps(RECORD))
    assert main(["push", str(model_dir), "me/tiny"]) == 2
    error = capsys.readouterr().err
    assert "offline" in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert ModelCard.load(model_dir / "README.md").data.model_name == RECORD["run_id"]


def test_a_study_goes_up_as_a_dataset_with_its_report_and_runs_table(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    study = tmp_path / "study"
    append_record(study, RECORD)
    StudyState(
        name="micro",
        corpus="HuggingFaceFW/fineweb-edu",
        corpus_config=None,
        searches={},
        ensembles={},
        distillation={},
        benchmarks={},
        failures=[],
        sessions=1,
        wall_time_s=1.0,
    ).save(study / "study.json")
    (study / "report.md").write_text("# Study micro\n\nfindings\n")
    assert main(["push", str(study), "me/micro-study"]) == 2
    assert "offline" in capsys.readouterr().err
    card = DatasetCard.load(study / "README.md")
    assert card.data.source_datasets == ["HuggingFaceFW/fineweb-edu"] and "findings" in card.text
    assert (study / "results.csv").read_text().splitlines()[0].count("val_loss") == 1


class TransportError(Exception):
    """Named as the HTTP client's base class of network failures (httpx's, httpx2's)."""


class ConnectError(TransportError):
    pass


@pytest.mark.parametrize(
    "error, reason",
    [
        (LocalTokenNotFoundError("no token"), "no Hub token is set"),
        (ConnectError("[Errno -3] Temporary failure in name resolution"), "the Hub cannot be reached (ConnectError)"),
    ],
)
def test_push_logged_out_or_unreachable_says_so_in_one_line(tmp_path: Path, capsys, monkeypatch, error, reason):
    def create_repo(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / RUN_RECORD_FILE).write_text(json.dumps(RECORD))
    assert main(["push", str(model_dir), "me/tiny"]) == 2
    message = capsys.readouterr().err
    assert reason in message and "nothing was uploaded" in message and len(message.strip().splitlines()) == 1
    assert (model_dir / "README.md").is_file()
