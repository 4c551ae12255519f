"""Train K ensemble members (independent runs with distinct seeds), then record the ensemble of every prefix k <= K.

Members are ordinary `pretrain` runs, so a finished member is never retrained and an interrupted one resumes. Under
`accelerate launch`/`torchrun`, each process trains the members `i` with `i % world_size == rank` on its own device
(never in one data-parallel group), and rank 0 builds the K-curve once every member is recorded.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from hf_infcompute.data import PretrainingData, prepare_data
from hf_infcompute.ensemble.build import build_ensemble
from hf_infcompute.ensemble.configuration_logit_ensemble import EnsembleMemberError
from hf_infcompute.ensemble.curve import COMBINE_MODES, ensemble_curve
from hf_infcompute.ensemble.modeling_logit_ensemble import check_member_folder
from hf_infcompute.ensemble.soup import average_weights
from hf_infcompute.errors import InputError
from hf_infcompute.method import member_hyperparameters
from hf_infcompute.readers import check_model_folder
from hf_infcompute.records import RUN_RECORD_FILE, append_record, read_record, write_json_atomic
from hf_infcompute.run_ids import ensemble_run_id, soup_run_id
from hf_infcompute.training import RunConfig, pretrain
from hf_infcompute.training.validation import held_out_fields, held_out_losses, mean
from hf_infcompute.workers import WorkerSlot, is_lead

logger = logging.getLogger(__name__)

VARY_MODES = ("both", "init", "data")


def member_config(run: RunConfig, index: int, *, vary: str = "both", member_rule: str = "none") -> RunConfig:
    """The run of member `index`: seeds offset by `index` (initialisation, data order or both), and the epochs and
    weight decay of `member_rule` (`hf_infcompute.method.member_hyperparameters`; "paper" doubles the epochs and
    halves the weight decay, same LR)."""
    if vary not in VARY_MODES:
        raise InputError(f"vary must be one of {', '.join(VARY_MODES)}, got {vary!r}")
    t = run.training
    epochs, weight_decay = member_hyperparameters(t.recipe, t.num_train_epochs, t.weight_decay, member_rule)
    return run.replace(
        seed=t.seed + index if vary in ("both", "init") else t.seed,
        data_seed=t.data_seed + index if vary in ("both", "data") else t.data_seed,
        num_train_epochs=epochs,
        weight_decay=weight_decay,
    )


def train_members(
    run: RunConfig,
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
    return [train_member(run, output_dir, index, vary=vary, member_rule=member_rule) for index in range(rank, k, world)]


def train_member(
    run: RunConfig, output_dir: str | Path, index: int, *, vary: str = "both", member_rule: str = "none"
) -> dict[str, Any]:
    """Train (or find finished) member `index` of `run` (`member_config`), recorded as that member: whoever trains
    it first (an ensemble, or a search's tie-break at a fresh seed), it is trained once."""
    member = member_config(run, index, vary=vary, member_rule=member_rule)
    extra = {"member_index": index, "member_rule": member_rule, "vary": vary}
    return pretrain(member, output_dir, kind="ensemble_member", record_extra=extra)


def wait_for_members(output_dir: str | Path, run_ids: list[str], poll_s: float = 2.0) -> list[dict[str, Any]]:
    """Block until every member run is recorded (trained by other workers), then return the records; says what it
    waits for whenever that changes."""
    waiting_on: list[str] = []
    while True:
        records = [read_record(output_dir, run_id) for run_id in run_ids]
        missing = [run_id for run_id, record in zip(run_ids, records) if record is None]
        if not missing:
            return records
        if missing != waiting_on:
            logger.info("waiting for %d member(s) trained by other workers: %s", len(missing), ", ".join(missing))
            waiting_on = missing
        time.sleep(poll_s)


def planned_ensemble_id(
    run: RunConfig, k: int, *, vary: str = "both", member_rule: str = "none", combine: str = "logits"
) -> str:
    """The record id that `train_ensemble(run, ..., k, ...)` gives its k-member ensemble."""
    members = [member_config(run, i, vary=vary, member_rule=member_rule) for i in range(k)]
    return ensemble_run_id(run.model.name, run.data.token_budget, [member.run_id() for member in members], combine)


def train_ensemble(
    run: RunConfig,
    output_dir: str | Path,
    k: int,
    *,
    vary: str = "both",
    member_rule: str = "none",
    combine: str = "logits",
    soup: bool = False,
    slot: WorkerSlot | None = None,
) -> list[dict[str, Any]]:
    """Train K members of `run` and record the ensemble of the first k members for each k (kind "ensemble").

    The full ensemble is saved to `output_dir/ensembles/<id>/` (a `from_pretrained` folder); with `soup`, the
    weight-averaged model of the K members too (`output_dir/soups/<id>/`, kind "soup"). Returns the new ensemble
    records (empty on processes other than the lead, `is_lead`).
    """
    if combine not in COMBINE_MODES:
        raise InputError(f"combine must be one of {', '.join(COMBINE_MODES)}, got {combine!r}")
    members = [member_config(run, i, vary=vary, member_rule=member_rule) for i in range(k)]
    train_members(run, output_dir, k, vary=vary, member_rule=member_rule, slot=slot)
    if not is_lead(slot):
        return []  # other workers, or other ranks of data-parallel member training: the lead records the curve
    records = wait_for_members(output_dir, [member.run_id() for member in members])
    failed = [m["run_id"] for m in records if m["status"] != "finished"]
    if failed:
        raise InputError(
            f"ensemble members failed to train ({', '.join(failed)}); see their records and "
            "lower the learning rate, then delete those records to retrain"
        )
    return record_curve(
        members[0], records, output_dir, combine=combine, soup=soup, rule={"member_rule": member_rule, "vary": vary}
    )


def record_curve(
    run: RunConfig, members: list[dict[str, Any]], output_dir: str | Path, *, combine: str, soup: bool, rule: dict
) -> list[dict[str, Any]]:
    """Evaluate and record the K-curve of finished `members` (in order) on `run`'s validation and test splits."""
    from transformers import AutoModelForCausalLM

    for member in members:  # the ensemble's own check, before any member is loaded
        try:
            check_member_folder(member["model_dir"], member["run_id"])
        except EnsembleMemberError as error:
            raise InputError(
                f"ensemble {error}. Run the same command again: a member whose model folder is gone is trained again"
            ) from None
    data = prepare_data(run.data)
    device = scoring_device()
    for member in members:  # a damaged member is named, with the fix, before any is loaded
        check_model_folder(
            member["model_dir"], fix="delete that folder and run the same command again, which retrains it"
        )
    # Loaded once, in the members' saved dtype, on the host: the scorer moves them onto the device (streamed if they
    # do not fit), in the members' training precision; the ensemble and the soup are built from the same models.
    models = [AutoModelForCausalLM.from_pretrained(m["model_dir"], dtype="auto").eval() for m in members]
    curve, test_curve = (
        ensemble_curve(
            models,
            rows,
            data.tokenizer.pad_token_id,
            batch_size=run.training.per_device_eval_batch_size,
            device=device,
            bf16=run.training.bf16,
        )
        for rows in (data.validation, data.test)
    )
    first = members[0]
    shared = {
        key: first[key]
        for key in (
            "recipe",
            "corpus",
            "token_budget",
            "seq_len",
            "preset",
            "n_params",
            "n_params_total",
            "learning_rate",
            "weight_decay",
            "num_train_epochs",
            "validation_fingerprint",
            "version",
        )
    }
    shared.update(
        val_sequences=run.data.val_sequences,
        test_sequences=run.data.test_sequences,
        test_fingerprint=data.test_fingerprint,
    )
    ids = [m["run_id"] for m in members]
    records = []
    for k in range(1, len(members) + 1):
        ensemble_id = ensemble_run_id(first["preset"], first["token_budget"], ids[:k], combine)
        record = {
            **shared,
            **rule,
            "run_id": ensemble_id,
            "kind": "ensemble",
            "status": "finished",
            "k": k,
            "combine": combine,
            "members": ids[:k],
            **held_out_fields(data, curve.sequences[combine][k - 1], test_curve.sequences[combine][k - 1]),
            "val_loss": curve.ensemble[combine][k - 1],
            "test_loss": test_curve.ensemble[combine][k - 1],
            # Both combinations, whichever the ensemble uses: the paper averages logits, others found probabilities
            # better at many members.
            "val_loss_by_combine": {mode: losses[k - 1] for mode, losses in curve.ensemble.items()},
            "val_sequence_losses_by_combine": {mode: rows[k - 1] for mode, rows in curve.sequences.items()},
            "test_loss_by_combine": {mode: losses[k - 1] for mode, losses in test_curve.ensemble.items()},
            "test_sequence_losses_by_combine": {mode: rows[k - 1] for mode, rows in test_curve.sequences.items()},
            "member_val_loss_mean": sum(curve.members[:k]) / k,
            "member_val_loss_best": min(curve.members[:k]),
            "member_test_loss_mean": sum(test_curve.members[:k]) / k,
            "tokens_seen": sum(m["tokens_seen"] for m in members[:k]),
        }
        if k == len(members):
            record["model_dir"] = str(Path(output_dir) / "ensembles" / ensemble_id)
            build_ensemble(models, record["model_dir"], combine=combine, tokenizer=data.tokenizer)
            write_json_atomic(Path(record["model_dir"]) / RUN_RECORD_FILE, record)
        append_record(output_dir, record)
        records.append(record)
    if soup:
        records.append(record_soup(run, members, models, output_dir, data, shared))
    return records


def scoring_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def record_soup(
    run: RunConfig,
    members: list[dict[str, Any]],
    models: list[PreTrainedModel],
    output_dir: str | Path,
    data: PretrainingData,
    shared: dict,
) -> dict[str, Any]:
    """Average the weights of the members (their records, and their `models` loaded), evaluate the soup on the
    scoring device in the members' training precision, and record it (kind "soup")."""
    ids = [m["run_id"] for m in members]
    soup_id = soup_run_id(shared["preset"], shared["token_budget"], ids)
    soup_dir = Path(output_dir) / "soups" / soup_id
    model = average_weights(models, soup_dir).eval()
    data.tokenizer.save_pretrained(soup_dir)
    validation, test = held_out_losses(
        model,
        data,
        batch_size=run.training.per_device_eval_batch_size,
        device=scoring_device(),
        bf16=run.training.bf16,
    )
    record = {
        **shared,
        "run_id": soup_id,
        "kind": "soup",
        "status": "finished",
        "k": len(ids),
        "members": ids,
        **held_out_fields(data, validation, test),
        "val_loss": mean(validation),
        "model_dir": str(soup_dir),
    }
    write_json_atomic(soup_dir / RUN_RECORD_FILE, record)
    append_record(output_dir, record)
    return record
