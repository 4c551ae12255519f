"""Share a trained model, ensemble or soup on the Hugging Face Hub with a model card stating how it was made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard

from hf_infcompute.errors import InputError
from hf_infcompute.records import RUN_RECORD_FILE

KIND_DESCRIPTIONS = {
    "pretrain": "a language model pre-trained from scratch on a fixed token budget",
    "ensemble_member": "one member of a logit ensemble, pre-trained on a fixed token budget",
    "ensemble": "a logit ensemble: the mean of its members' pre-softmax logits (`LogitEnsembleForCausalLM`)",
    "soup": "a weight-averaged model ('soup') of independently trained members",
    "student": "a student distilled from a teacher on real plus synthetic data",
}


def read_run_record(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / RUN_RECORD_FILE
    if not path.is_file():
        raise InputError(f"{model_dir} has no {RUN_RECORD_FILE}: push folders written by hf-infcompute runs")
    return json.loads(path.read_text())


def model_card(record: dict[str, Any], scores: list[dict[str, Any]] | None = None) -> ModelCard:
    """A model card from a run record: what the model is, its recipe, token budget D, K and results."""
    kind = record.get("kind", "pretrain")
    lines = [
        "---",
        "library_name: transformers",
        "tags: [hf-infcompute, data-efficient-pretraining" + (", logit-ensemble" if kind == "ensemble" else "") + "]",
        "---",
        f"# {record['run_id']}",
        "",
        f"This is {KIND_DESCRIPTIONS.get(kind, kind)}, trained with "
        "[hf-infcompute](https://arxiv.org/abs/2509.14786) (pre-training under infinite compute).",
        "",
    ]
    if kind == "ensemble":
        lines += ["Load it with `AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True)`.", ""]
    facts = [
        ("recipe", record.get("recipe")),
        ("corpus", record.get("corpus")),
        ("token budget D", f"{record['token_budget']:,} tokens" if record.get("token_budget") else None),
        ("model", record.get("preset")),
        ("parameters", f"{record['n_params_total']:,}" if record.get("n_params_total") else None),
        ("members K", record.get("k")),
        ("epochs", record.get("num_train_epochs")),
        ("learning rate", record.get("learning_rate")),
        ("weight decay", record.get("weight_decay")),
        ("teacher", record.get("teacher")),
        ("synthetic fraction", record.get("synthetic_fraction")),
        ("tokens seen", f"{record['tokens_seen']:,}" if record.get("tokens_seen") else None),
        ("validation loss (nats/token)", f"{record['val_loss']:.4f}" if record.get("val_loss") is not None else None),
    ]
    lines += ["| setting | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in facts if value is not None]
    if scores:
        lines += ["", "## Downstream scores", "", "| task | metric | value |", "|---|---|---:|"]
        lines += [f"| {s['task']} | {s['metric']} | {100 * s['value']:.2f} |" for s in scores if s.get("headline", True)]
    return ModelCard("\n".join(lines) + "\n")


def push_model(
    model_dir: str | Path, repo_id: str, *, private: bool = False, scores: list[dict[str, Any]] | None = None
) -> str:
    """Write the model card into `model_dir` and upload the folder to `repo_id`; returns the repository URL."""
    card = model_card(read_run_record(model_dir), scores)
    card.save(Path(model_dir) / "README.md")
    api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(model_dir), repo_id=repo_id, commit_message="Upload from hf-infcompute")
    return str(url)
