"""Share on the Hugging Face Hub: a trained model, ensemble or soup with its model card, or a whole study's results.

Cards are built with `huggingface_hub.ModelCard` / `DatasetCard` from their card data, so the Hub indexes the
metadata: `base_model` (continued pre-training, students of a hub teacher), `datasets` (a hub corpus), the license,
the pipeline tag and the validation loss and benchmark scores as model-index results (`EvalResult`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import LocalTokenNotFoundError, OfflineModeIsEnabled

from hf_infcompute.errors import InputError
from hf_infcompute.readers import read_json_object
from hf_infcompute.records import RUN_RECORD_FILE, load_runs
from hf_infcompute.run_ids import SYNTHETIC_MANIFEST_FILE
from hf_infcompute.study.state import STATE_FILE, StudyState

LICENSE = "apache-2.0"
KIND_DESCRIPTIONS = {
    "pretrain": "a language model pre-trained from scratch on a fixed token budget",
    "ensemble_member": "one member of a logit ensemble, pre-trained on a fixed token budget",
    "ensemble": "a logit ensemble: the mean of its members' pre-softmax logits (`LogitEnsembleForCausalLM`)",
    "soup": "a weight-averaged model ('soup') of independently trained members",
    "student": "a student distilled from a teacher on real plus synthetic data",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
STUDY_FILES = ["report.md", STATE_FILE, "figures/*", "results.csv"]
# A synthetic corpus: its shards, its card, and the teacher's tokenizer the card points at (not the manifest).
SYNTHETIC_FILES = ["data/*.parquet", "README.md", "tokenizer/*"]

MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

This is {{ description }}, trained with hf-infcompute, the Hugging Face implementation of
[Pre-training under infinite compute](https://arxiv.org/abs/2509.14786).
{{ loading }}
| setting | value |
|---|---|
{{ facts }}
{{ scores }}"""


def is_hub_id(name: Any) -> bool:
    """True for an `owner/name` repository id that is not a local path."""
    return isinstance(name, str) and bool(_HUB_ID.match(name)) and not os.path.exists(name)


def read_run_record(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / RUN_RECORD_FILE
    if not path.is_file():
        raise InputError(f"{model_dir} has no {RUN_RECORD_FILE}: push folders written by hf-infcompute runs")
    fix = "copy that run's record from its study's results/ folder over it, or train the run again"
    return read_json_object(path, fix=fix, keys=("run_id",))


def _base_model(record: dict[str, Any]) -> str | None:
    """The hub model this one derives from: the checkpoint of continued pre-training, or a student's hub teacher."""
    base = (record.get("config") or {}).get("base_model")
    if record.get("kind") == "student":
        base = record.get("teacher")
    return base if is_hub_id(base) else None


def _eval_results(record: dict[str, Any], scores: list[dict[str, Any]] | None) -> list[EvalResult]:
    corpus = str(record.get("corpus") or "local corpus")
    results = []
    if record.get("val_loss") is not None:
        results.append(
            EvalResult(
                task_type="text-generation",
                dataset_type=corpus if is_hub_id(corpus) else "local",
                dataset_name=f"{Path(corpus).name} (held-out validation split)",
                dataset_split="validation",
                metric_type="loss",
                metric_name="validation loss (nats/token)",
                metric_value=round(record["val_loss"], 4),
            )
        )
    for score in scores or []:
        if score.get("headline", True):
            results.append(
                EvalResult(
                    task_type="multiple-choice",
                    dataset_type=score["task"],
                    dataset_name=score["task"],
                    metric_type=score["metric"],
                    metric_value=round(100 * score["value"], 2),
                    source_name="lm-evaluation-harness",
                    source_url="https://github.com/EleutherAI/lm-evaluation-harness",
                )
            )
    return results


def model_card(record: dict[str, Any], scores: list[dict[str, Any]] | None = None) -> ModelCard:
    """A model card from a run record: what the model is, its recipe, token budget D, K and its results."""
    kind = record.get("kind", "pretrain")
    corpus = record.get("corpus")
    data = ModelCardData(
        model_name=record["run_id"],
        library_name="transformers",
        pipeline_tag="text-generation",
        license=LICENSE,
        tags=["hf-infcompute", "data-efficient-pretraining"] + (["logit-ensemble"] if kind == "ensemble" else []),
        base_model=_base_model(record),
        datasets=[corpus] if is_hub_id(corpus) else None,
        eval_results=_eval_results(record, scores) or None,
    )
    facts = [
        ("recipe", record.get("recipe")),
        ("corpus", corpus),
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
    score_lines = ""
    if scores:
        rows = [f"| {s['task']} | {s['metric']} | {100 * s['value']:.2f} |" for s in scores if s.get("headline", True)]
        score_lines = "\n## Downstream scores\n\n| task | metric | value |\n|---|---|---:|\n" + "\n".join(rows) + "\n"
    loading = (
        "\nLoad it with `AutoModelForCausalLM.from_pretrained(repo, trust_remote_code=True)`.\n"
        if kind == "ensemble"
        else ""
    )
    return ModelCard.from_template(
        data,
        template_str=MODEL_CARD_TEMPLATE,
        model_name=record["run_id"],
        description=KIND_DESCRIPTIONS.get(kind, kind),
        loading=loading,
        facts="\n".join(f"| {name} | {value} |" for name, value in facts if value is not None),
        scores=score_lines,
    )


def study_card(study_dir: Path, runs_count: int) -> DatasetCard:
    """The dataset card of a pushed study: its report is the card's body."""
    state = StudyState.load(study_dir / STATE_FILE)
    corpus = state.corpus
    data = DatasetCardData(
        license=LICENSE,
        pretty_name=f"hf-infcompute study: {state.name}",
        tags=["hf-infcompute", "scaling-laws", "data-efficient-pretraining"],
        source_datasets=[corpus] if is_hub_id(corpus) else None,
        configs=[{"config_name": "runs", "data_files": "results.csv"}],
    )
    header = (
        f"The results of an hf-infcompute study ({runs_count} recorded runs): `results.csv` holds one row per "
        "run, `study.json` what each phase found, `figures/` every plot. The report follows.\n\n"
    )
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{header}{(study_dir / 'report.md').read_text()}")


def _is_transport_error(error: Exception) -> bool:
    """No network, DNS or proxy failure in huggingface_hub's HTTP client (httpx in 1.x, httpx2 in 2.x: matched by
    class name, so that neither becomes a dependency of this package)."""
    return any(cls.__name__ == "TransportError" for cls in type(error).__mro__)


def _upload(folder: Path, repo_id: str, *, repo_type: str, private: bool, allow_patterns: list[str] | None) -> str:
    """Create `repo_id` and upload `folder` to it; offline, logged out or unreachable, one `InputError` saying so."""
    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type=repo_type,
            allow_patterns=allow_patterns,
            commit_message="Upload from hf-infcompute",
        )
    except OfflineModeIsEnabled:
        reason, fix = "the Hub is offline (HF_HUB_OFFLINE is set)", "Unset HF_HUB_OFFLINE"
    except LocalTokenNotFoundError:
        reason, fix = "no Hub token is set", "Log in with `hf auth login` (or set HF_TOKEN)"
    except Exception as error:
        if not _is_transport_error(error):
            raise
        reason, fix = f"the Hub cannot be reached ({type(error).__name__})", "Check the network"
    else:
        return str(url)
    raise InputError(
        f"{reason}: the card is written to {folder / 'README.md'}, nothing was uploaded. {fix} and run "
        "`hf-infcompute push` again to upload"
    )


def push_model(
    model_dir: str | Path, repo_id: str, *, private: bool = False, scores: list[dict[str, Any]] | None = None
) -> str:
    """Write the model card into `model_dir` and upload the folder to `repo_id`; returns the repository URL."""
    card = model_card(read_run_record(model_dir), scores)
    card.save(Path(model_dir) / "README.md")
    return _upload(Path(model_dir), repo_id, repo_type="model", private=private, allow_patterns=None)


def is_study_dir(folder: str | Path) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


def push_study(study_dir: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Upload a study's report, figures, state and a table of every run as a dataset repository (no weights)."""
    study_dir = Path(study_dir)
    if not (study_dir / "report.md").is_file():
        raise InputError(f"{study_dir} has no report.md: finish the study (or run `study --report-only`) first")
    runs = load_runs(study_dir)
    runs.drop(columns=[c for c in ("config",) if c in runs.columns]).to_csv(study_dir / "results.csv", index=False)
    study_card(study_dir, len(runs)).save(study_dir / "README.md")
    return _upload(study_dir, repo_id, repo_type="dataset", private=private, allow_patterns=STUDY_FILES + ["README.md"])


def is_synthetic_dir(folder: str | Path) -> bool:
    """True for a folder written by `hf-infcompute generate` (it holds the generation manifest)."""
    return (Path(folder) / SYNTHETIC_MANIFEST_FILE).is_file()


def push_synthetic(corpus_dir: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Upload a finished synthetic corpus (parquet shards, dataset card, tokenizer) as a dataset repository."""
    from hf_infcompute.generation.synthetic import write_dataset_card  # the generation stack loads only here

    corpus_dir = Path(corpus_dir)
    manifest = json.loads((corpus_dir / SYNTHETIC_MANIFEST_FILE).read_text())
    if manifest.get("status") != "finished" or not any(corpus_dir.glob(SYNTHETIC_FILES[0])):
        raise InputError(
            f"the synthetic corpus in {corpus_dir} is unfinished or in the old layout (no parquet shards): rerun "
            "`hf-infcompute generate` with the same settings into a new folder, then push that"
        )
    write_dataset_card(corpus_dir, manifest)
    return _upload(corpus_dir, repo_id, repo_type="dataset", private=private, allow_patterns=SYNTHETIC_FILES)
