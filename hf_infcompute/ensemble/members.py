"""Train K ensemble members (independent runs with distinct seeds), then record the ensemble of every prefix k <= K.

Members are ordinary `pretrain` runs, so a finished member is never retrained and an interrupted one resumes. Under
`accelerate launch`/`torchrun`, each process trains the members `i` with `i % world_size == rank` on its own device
(never in one data-parallel group), and rank 0 builds the K-curve once every member is recorded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from hf_infcompute.data import PretrainingData, prepare_data
from hf_infcompute.ensemble.build import build_ensemble
from hf_infcompute.ensemble.curve import COMBINE_MODES, ensemble_curve
from hf_infcompute.ensemble.soup import average_weights
from hf_infcompute.errors import InputError
from hf_infcompute.records import RUN_RECORD_FILE, append_record, read_record, write_json_atomic
from hf_infcompute.training import RunConfig, parse_run_config, pretrain
from hf_infcompute.training.arguments import STANDARD_WEIGHT_DECAY
from hf_infcompute.workers import WorkerSlot

logger = logging.getLogger(__name__)

VARY_MODES = ("both", "init", "data")
MEMBER_RULES = ("none", "paper")


def member_config(config: dict[str, Any], index: int, *, vary: str = "both", member_rule: str = "none") -> dict:
    """Settings of member `index`: seeds offset by `index` (initialisation, data order or both), and with
    `member_rule="paper"` the paper's member hyperparameters: double the epochs, halve the weight decay, same LR."""
    if vary not in VARY_MODES:
        raise InputError(f"vary must be one of {', '.join(VARY_MODES)}, got {vary!r}")
    if member_rule not in MEMBER_RULES:
        raise InputError(f"member_rule must be one of {', '.join(MEMBER_RULES)}, got {member_rule!r}")
    seed = int(config.get("seed", 0))
    data_seed = int(config.get("data_seed", seed))
    member = dict(config)
    member["seed"] = seed + index if vary in ("both", "init") else seed
    member["data_seed"] = data_seed + index if vary in ("both", "data") else data_seed
    if member_rule == "paper":
        if config.get("recipe", "regularized") == "standard":
            raise InputError("the paper's member rule halves weight decay, which the standard recipe fixes at 0.1; "
                             "use recipe=regularized")
        member["num_train_epochs"] = 2 * float(config.get("num_train_epochs", 1))
        member["weight_decay"] = float(config.get("weight_decay", STANDARD_WEIGHT_DECAY)) / 2
    return member


def train_members(
    config: dict[str, Any],
    output_dir: str | Path,
    k: int,
    *,
    vary: str = "both",
    member_rule: str = "none",
    slot: WorkerSlot | None = None,
) -> list[dict[str, Any]]:
    """Train (or find finished) the members this process is responsible for; returns their records."""
    if k < 1:
        raise InputError(f"an ensemble needs K >= 1 members, got {k}")
    rank, world = (slot.rank, slot.world_size) if slot else (0, 1)
    records = []
    for index in range(rank, k, world):
        settings = member_config(config, index, vary=vary, member_rule=member_rule)
        extra = {"member_index": index, "member_rule": member_rule, "vary": vary}
        records.append(pretrain(settings, output_dir, kind="ensemble_member", record_extra=extra))
    return records


def wait_for_members(output_dir: str | Path, run_ids: list[str], poll_s: float = 5.0) -> list[dict[str, Any]]:
    """Block until every member run is recorded (trained by other workers), then return the records."""
    while True:
        records = [read_record(output_dir, run_id) for run_id in run_ids]
        missing = [run_id for run_id, record in zip(run_ids, records) if record is None]
        if not missing:
            return records
        logger.info("waiting for %d member(s) trained by other workers: %s", len(missing), ", ".join(missing))
        time.sleep(poll_s)


def _digest(member_ids: list[str], combine: str) -> str:
    return hashlib.sha256(("|".join(member_ids) + combine).encode()).hexdigest()[:10]


def ensemble_run_id(preset: str, token_budget: int, member_ids: list[str], combine: str = "logits") -> str:
    """The record id of the logit ensemble of `member_ids` (in order)."""
    return f"ensemble-{Path(preset).name}-D{token_budget}-K{len(member_ids)}-{_digest(member_ids, combine)}"


def planned_ensemble_id(config: dict[str, Any], k: int, *, vary: str = "both", member_rule: str = "none",
                        combine: str = "logits") -> str:
    """The record id that `train_ensemble(config, ..., k, ...)` gives its k-member ensemble."""
    runs = [parse_run_config(member_config(config, i, vary=vary, member_rule=member_rule)) for i in range(k)]
    return ensemble_run_id(runs[0].model.name, runs[0].data.token_budget, [run.run_id() for run in runs], combine)


def train_ensemble(
    config: dict[str, Any],
    output_dir: str | Path,
    k: int,
    *,
    vary: str = "both",
    member_rule: str = "none",
    combine: str = "logits",
    soup: bool = False,
    slot: WorkerSlot | None = None,
) -> list[dict[str, Any]]:
    """Train K members and record the ensemble of the first k members for each k (kind "ensemble").

    The full ensemble is saved to `output_dir/ensembles/<id>/` (a `from_pretrained` folder); with `soup`, the
    weight-averaged model of the K members too (`output_dir/soups/<id>/`, kind "soup"). Returns the new ensemble
    records (empty on workers other than rank 0).
    """
    if combine not in COMBINE_MODES:
        raise InputError(f"combine must be one of {', '.join(COMBINE_MODES)}, got {combine!r}")
    member_settings = [member_config(config, i, vary=vary, member_rule=member_rule) for i in range(k)]
    runs = [parse_run_config(settings) for settings in member_settings]
    train_members(config, output_dir, k, vary=vary, member_rule=member_rule, slot=slot)
    if (slot and slot.rank != 0) or int(os.environ.get("RANK", "0")) != 0:
        return []  # other workers, or other ranks of data-parallel member training: rank 0 records the curve
    members = wait_for_members(output_dir, [run.run_id() for run in runs])
    failed = [m["run_id"] for m in members if m["status"] != "finished"]
    if failed:
        raise InputError(f"ensemble members failed to train ({', '.join(failed)}); see their records and "
                         "lower the learning rate, then delete those records to retrain")
    return record_curve(runs[0], members, output_dir, combine=combine, soup=soup,
                        rule={"member_rule": member_rule, "vary": vary})


def record_curve(
    run: RunConfig, members: list[dict[str, Any]], output_dir: str | Path, *, combine: str, soup: bool, rule: dict
) -> list[dict[str, Any]]:
    """Evaluate and record the K-curve of finished `members` (in order) on `run`'s validation split."""
    from transformers import AutoModelForCausalLM

    data = prepare_data(run.data)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    models = [AutoModelForCausalLM.from_pretrained(m["model_dir"], dtype=torch.float32).to(device).eval()
              for m in members]
    curve = ensemble_curve(models, data.validation, data.tokenizer.pad_token_id, combine=combine,
                           batch_size=run.training.per_device_eval_batch_size)
    first = members[0]
    shared = {key: first[key] for key in ("recipe", "corpus", "token_budget", "seq_len", "preset", "n_params",
                                          "n_params_total", "learning_rate", "weight_decay", "num_train_epochs",
                                          "validation_fingerprint", "version")}
    ids = [m["run_id"] for m in members]
    records = []
    for k in range(1, len(members) + 1):
        ensemble_id = ensemble_run_id(first["preset"], first["token_budget"], ids[:k], combine)
        record = {
            **shared, **rule,
            "run_id": ensemble_id, "kind": "ensemble", "status": "finished", "k": k, "combine": combine,
            "members": ids[:k], "val_loss": curve.ensemble[k - 1],
            "member_val_loss_mean": sum(curve.members[:k]) / k, "member_val_loss_best": min(curve.members[:k]),
            "tokens_seen": sum(m["tokens_seen"] for m in members[:k]),
        }
        if k == len(members):
            record["model_dir"] = str(Path(output_dir) / "ensembles" / ensemble_id)
            build_ensemble([m["model_dir"] for m in members], record["model_dir"], combine=combine)
            write_json_atomic(Path(record["model_dir"]) / RUN_RECORD_FILE, record)
        append_record(output_dir, record)
        records.append(record)
    if soup:
        records.append(record_soup(run, members, output_dir, data, shared))
    return records


def record_soup(
    run: RunConfig, members: list[dict[str, Any]], output_dir: str | Path, data: PretrainingData, shared: dict
) -> dict[str, Any]:
    """Average the members' weights, evaluate the soup and record it (kind "soup")."""
    ids = [m["run_id"] for m in members]
    soup_id = f"soup-{Path(shared['preset']).name}-D{shared['token_budget']}-K{len(ids)}-{_digest(ids, 'soup')}"
    soup_dir = Path(output_dir) / "soups" / soup_id
    model = average_weights([m["model_dir"] for m in members], soup_dir).eval()
    loss = ensemble_curve([model], data.validation, data.tokenizer.pad_token_id,
                          batch_size=run.training.per_device_eval_batch_size).ensemble[0]
    record = {**shared, "run_id": soup_id, "kind": "soup", "status": "finished", "k": len(ids), "members": ids,
              "val_loss": loss, "model_dir": str(soup_dir)}
    write_json_atomic(soup_dir / RUN_RECORD_FILE, record)
    append_record(output_dir, record)
    return record
