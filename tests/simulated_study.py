"""A study simulated from known laws, written as the pipeline writes it (run records and a `StudyState`), for the
report's tests: no training.

The design is the study's: four sizes, both recipes searched at four token budgets (D/2, D, 2D, 4D), each search's
optimum with its one-step neighbours and fresh-seed copies, K members for each of two member rules at the main budget,
and ensemble- and self-distilled students. Every model's true loss follows a known law:

- standard: its best loss at D is the data law `S(D) = A / D^beta + E` (D in billions), reached at a size that grows
  with D; the other sizes overfit, by `OVERFIT * log2(N / N*)^2`;
- regularized: `a / N^alpha + R(D)` with `R(D) = S(REGULARIZED_MULTIPLIER * D)`, so the N -> inf asymptote needs
  exactly that many times the standard recipe's data;
- ensembles (main budget): `L_inf(N) + B(N) / K`, `L_inf(N) = a_j / N^alpha_j + J` with `J = S(JOINT_MULTIPLIER * D)`
  for the paper's member rule (double the epochs, halve the weight decay); the single model's rule reaches a higher
  limit; each rule's one-member loss is its member's;
- students: between the ensemble and the best single model; self-distillation below its teacher.

A training lands off its true loss by a seed effect (sd `SEED_SD`, the same on both splits); each held-out row adds a
document effect shared by every model (a hard document is hard for all), a model-by-document effect and row noise.
An ensemble's effects are the mean of its members', so nested ensembles share their noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hf_infcompute.records import append_record
from hf_infcompute.study.spec import DistillationSpec, EnsembleSpec, SearchSpec, StudySpec
from hf_infcompute.study.state import (
    DistillationState,
    EnsembleState,
    SearchState,
    StudentState,
    StudyState,
    search_key,
)

D = 200_000_000
BUDGETS = (D // 2, D, 2 * D, 4 * D)
SIZES = {"150m": 150e6, "300m": 300e6, "600m": 600e6, "1.4b": 1.4e9}
K = 8
STANDARD_LAW = (1.21, 0.24, 1.97)  # A, beta, E of S(D)
REGULARIZED_MULTIPLIER = 2.29
JOINT_MULTIPLIER = 5.17
REGULARIZED_N_LAW = (0.05, 1.02)  # a, alpha over the N -> inf asymptote R(D)
JOINT_N_LAW = (0.03, 1.0)  # a_j, alpha_j over J
OPTIMUM_RULE_LIMIT_GAP = 0.06  # the single model's member rule: K -> inf this much above the paper rule's
PAPER_MEMBER_PENALTY = 0.03  # a paper-rule member alone: this much above the single model
OVERFIT = 0.04
BEST_STANDARD_SIZE = {D // 2: "300m", D: "600m", 2 * D: "1.4b", 4 * D: "1.4b"}
SEED_SD = 0.008
DOCUMENTS, DOCUMENT_SD, INTERACTION_SD, ROW_SD = 40, 0.4, 0.03, 0.06
NEIGHBOUR_STEP = 0.05  # how far above its optimum a one-step neighbour lands
TIE_BREAK_SEEDS = 2
TIED_PRESET = "300m"  # its searches end with a neighbour as low as the optimum, settled on fresh seeds
LEARNING_RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
EPOCHS = [1, 2, 4, 8, 16, 32, 64]
WEIGHT_DECAYS = [0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4]
EDGE_SEARCH = ("regularized", "150m", 4 * D)  # left on its grid's edge (largest epochs)


def standard_data_law(tokens: float) -> float:
    a, beta, e = STANDARD_LAW
    return a / (tokens / 1e9) ** beta + e


def true_multiplier(loss: float, tokens: float) -> float:
    """Data efficiency of `loss` at `tokens` over the standard recipe, by its true law (as the authors compute it)."""
    a, beta, e = STANDARD_LAW
    return ((a / (loss - e)) ** (1 / beta) * 1e9) / tokens


def regularized_limit(tokens: float) -> float:
    return standard_data_law(REGULARIZED_MULTIPLIER * tokens)


def regularized_loss(preset: str, tokens: float) -> float:
    a, alpha = REGULARIZED_N_LAW
    return a / (SIZES[preset] / 1e9) ** alpha + regularized_limit(tokens)


def standard_loss(preset: str, tokens: int) -> float:
    best = SIZES[BEST_STANDARD_SIZE[tokens]]
    return standard_data_law(tokens) + OVERFIT * math.log2(SIZES[preset] / best) ** 2


def ensemble_limit(preset: str, rule: str) -> float:
    a, alpha = JOINT_N_LAW
    limit = a / (SIZES[preset] / 1e9) ** alpha + standard_data_law(JOINT_MULTIPLIER * D)
    return limit + (OPTIMUM_RULE_LIMIT_GAP if rule == "optimum" else 0.0)


def ensemble_loss(preset: str, rule: str, k: int) -> float:
    single = regularized_loss(preset, D) + (PAPER_MEMBER_PENALTY if rule == "paper" else 0.0)
    limit = ensemble_limit(preset, rule)
    return limit + (single - limit) / k


def point_text(point: dict[str, float]) -> str:
    """As the study labels a point: `learning_rate=0.003 num_train_epochs=8 weight_decay=0.8`."""
    return " ".join(f"{axis}={value:g}" for axis, value in point.items())


class Simulator:
    """Draws every training's noise and writes its record."""

    def __init__(self, folder: Path, seed: int = 0) -> None:
        self.folder = folder
        self.rng = np.random.default_rng(seed)
        self.documents = {}
        self.document_effects = {}
        for split in ("val", "test"):
            rows = self.rng.integers(2, 7, size=DOCUMENTS)
            self.documents[split] = np.repeat(np.arange(DOCUMENTS), rows)
            self.document_effects[split] = self.rng.normal(0.0, DOCUMENT_SD, DOCUMENTS)[self.documents[split]]
        self.noise: dict[str, dict[str, np.ndarray | float]] = {}
        self.count = 0

    def training_noise(self) -> dict[str, np.ndarray | float]:
        """One training's seed effect and, per split, its model-by-document and row noise."""
        noise: dict[str, np.ndarray | float] = {"seed": float(self.rng.normal(0.0, SEED_SD))}
        for split, documents in self.documents.items():
            interaction = self.rng.normal(0.0, INTERACTION_SD, DOCUMENTS)[documents]
            noise[split] = interaction + self.rng.normal(0.0, ROW_SD, documents.size)
        return noise

    def rows(self, true_loss: float, noise: dict[str, np.ndarray | float]) -> dict[str, object]:
        fields: dict[str, object] = {}
        for split in ("val", "test"):
            rows = true_loss + noise["seed"] + self.document_effects[split] + noise[split]
            fields[f"{split}_sequence_losses"] = rows.tolist()
            fields[f"{split}_sequence_documents"] = self.documents[split].tolist()
            fields[f"{split}_loss"] = float(rows.mean())
        fields.update(validation_fingerprint="val-rows", test_fingerprint="test-rows")
        return fields

    def record(self, **fields: object) -> dict[str, object]:
        record = {"status": "finished", "corpus": "simulated", "version": "sim", **fields}
        append_record(self.folder, record)
        return record

    def single(
        self,
        kind: str,
        recipe: str,
        preset: str,
        tokens: int,
        point: dict[str, float],
        seed: int,
        loss: float,
        *,
        same_training_as: str | None = None,
        **extra: object,
    ) -> dict[str, object]:
        """A single model's record; `same_training_as`: the run whose training (and so noise) it shares."""
        self.count += 1
        run_id = f"{kind}-{recipe}-{preset}-D{tokens}-{self.count}"
        noise = self.noise[same_training_as] if same_training_as else self.training_noise()
        if same_training_as:
            extra["same_training_as"] = same_training_as
        self.noise[run_id] = noise
        return self.record(
            run_id=run_id,
            kind=kind,
            recipe=recipe,
            preset=preset,
            token_budget=tokens,
            n_params_total=int(SIZES[preset]),
            n_params=int(SIZES[preset]),
            seed=seed,
            **point,
            **self.rows(loss, noise),
            **extra,
        )

    def ensemble(self, preset: str, rule: str, members: list[dict[str, object]], k: int) -> dict[str, object]:
        noises = [self.noise[str(m["run_id"])] for m in members[:k]]
        mean = {key: np.mean([n[key] for n in noises], axis=0) for key in noises[0]}
        mean["seed"] = float(mean["seed"])
        fields = self.rows(ensemble_loss(preset, rule, k), mean)
        first = members[0]
        return self.record(
            run_id=f"ensemble-{preset}-{rule}-k{k}",
            kind="ensemble",
            k=k,
            members=[m["run_id"] for m in members[:k]],
            member_rule="paper" if rule == "paper" else "none",
            combine="logits",
            **{key: first[key] for key in ("recipe", "preset", "token_budget", "n_params_total", "n_params")},
            **{key: first[key] for key in ("learning_rate", "num_train_epochs", "weight_decay")},
            **fields,
            val_loss_by_combine={"logits": fields["val_loss"], "probs": fields["val_loss"] + 0.01},
            test_loss_by_combine={"logits": fields["test_loss"], "probs": fields["test_loss"] + 0.01},
            test_sequence_losses_by_combine={
                "logits": fields["test_sequence_losses"],
                "probs": [v + 0.01 for v in fields["test_sequence_losses"]],
            },
            member_val_loss_mean=float(np.mean([m["val_loss"] for m in members[:k]])),
            member_test_loss_mean=float(np.mean([m["test_loss"] for m in members[:k]])),
        )


def optimum_point(recipe: str, preset: str, tokens: int) -> dict[str, float]:
    """Where each search ends: the paper's optima at D, more epochs at larger budgets."""
    order = list(SIZES).index(preset)
    shift = BUDGETS.index(tokens) - 1  # -1 at D/2 ... 2 at 4D
    if recipe == "standard":
        epochs = [8, 8, 4, 4][order]
        point = {"learning_rate": [3e-3, 1e-3, 1e-3, 3e-4][order], "weight_decay": 0.1}
    else:
        epochs = [16, 16, 8, 8][order]
        point = {"learning_rate": [3e-3, 3e-3, 1e-3, 1e-3][order], "weight_decay": [0.8, 1.6, 3.2, 3.2][order]}
    epochs = EPOCHS[min(EPOCHS.index(epochs) + max(shift, 0), len(EPOCHS) - 1)]
    if (recipe, preset, tokens) == EDGE_SEARCH:
        epochs = EPOCHS[-1]
    return {"num_train_epochs": float(epochs), **point}


def neighbours(recipe: str, point: dict[str, float]) -> list[dict[str, float]]:
    axes = {"learning_rate": LEARNING_RATES, "num_train_epochs": EPOCHS}
    if recipe == "regularized":
        axes["weight_decay"] = WEIGHT_DECAYS
    found = []
    for axis, values in axes.items():
        i = [float(v) for v in values].index(point[axis])
        for j in (i - 1, i + 1):
            if 0 <= j < len(values):
                found.append({**point, axis: float(values[j])})
    return found


@dataclass
class SimulatedStudy:
    folder: Path
    spec: StudySpec
    state: StudyState
    true_multipliers: dict[str, float]


def simulated_study(folder: Path, seed: int = 0) -> SimulatedStudy:
    """Write the records of a simulated study into `folder` and return its spec, state and true multipliers."""
    sim = Simulator(folder, seed)
    searches: dict[str, SearchState] = {}
    optima: dict[tuple[str, str, int], dict[str, object]] = {}
    for recipe in ("standard", "regularized"):
        for tokens in BUDGETS:
            for preset in SIZES:
                point = optimum_point(recipe, preset, tokens)
                true = standard_loss(preset, tokens) if recipe == "standard" else regularized_loss(preset, tokens)
                best = sim.single("pretrain", recipe, preset, tokens, point, 0, true)
                tied = preset == TIED_PRESET and (recipe, tokens) != ("regularized", D)
                near = []
                for i, other in enumerate(neighbours(recipe, point)):
                    # more epochs overfit the standard recipe most; other steps cost a fixed amount, but for the
                    # first neighbour of a tied search, which lands as low as the optimum
                    step = NEIGHBOUR_STEP * (1.5 if other["num_train_epochs"] > point["num_train_epochs"] else 1.0)
                    near.append(
                        sim.single("pretrain", recipe, preset, tokens, other, 0, true + (0 if tied and not i else step))
                    )
                chosen, tie_break, compared = best, {}, []
                if tied:  # the optimum and its tied neighbour re-trained at fresh seeds, chosen on their means
                    candidates = [best, near[0]]
                    means = {}
                    for candidate in candidates:
                        at = {axis: float(candidate[axis]) for axis in point}
                        copies = [
                            sim.single(
                                "ensemble_member",
                                recipe,
                                preset,
                                tokens,
                                at,
                                i,
                                true,
                                member_index=i,
                                member_rule="none",
                            )
                            for i in range(1, TIE_BREAK_SEEDS + 1)
                        ]
                        tie_break[point_text(at)] = [float(c["val_loss"]) for c in copies]
                        means[str(candidate["run_id"])] = float(np.mean(tie_break[point_text(at)]))
                    chosen = min(candidates, key=lambda c: means[str(c["run_id"])])
                    compared = [str(c["run_id"]) for c in candidates]
                optima[(recipe, preset, tokens)] = chosen
                edge = (recipe, preset, tokens) == EDGE_SEARCH
                searches[search_key(recipe, preset, tokens)] = SearchState(
                    recipe=recipe,
                    preset=preset,
                    token_budget=tokens,
                    point={axis: float(chosen[axis]) for axis in point},
                    val_loss=float(chosen["val_loss"]),
                    locally_optimal=True,
                    run_id=str(chosen["run_id"]),
                    model_dir=None,
                    evaluations=1 + len(near),
                    reused=0,
                    grid_edges=["num_train_epochs 64 (largest on the grid)"] if edge else [],
                    start="study's start",
                    start_losses={"study's start": float(best["val_loss"])},
                    chosen_by="search" if chosen is best else "seed means",
                    tie_break=tie_break,
                    compared_run_ids=compared,
                )
    ensembles = {}
    for preset in SIZES:
        point = optimum_point("regularized", preset, D)
        selected = optima[("regularized", preset, D)]
        curves = {}
        for rule in ("optimum", "paper"):
            member_point = (
                point
                if rule == "optimum"
                else {
                    **point,
                    "num_train_epochs": 2 * point["num_train_epochs"],
                    "weight_decay": point["weight_decay"] / 2,
                }
            )
            single = regularized_loss(preset, D) + (PAPER_MEMBER_PENALTY if rule == "paper" else 0.0)
            members = []
            for index in range(K):
                # member 0 of the single model's rule is the search's selected training, recorded again
                twin = str(selected["run_id"]) if rule == "optimum" and index == 0 else None
                members.append(
                    sim.single(
                        "ensemble_member",
                        "regularized",
                        preset,
                        D,
                        member_point,
                        index,
                        single,
                        same_training_as=twin,
                        member_index=index,
                        member_rule="paper" if rule == "paper" else "none",
                    )
                )
            curves[rule] = [sim.ensemble(preset, rule, members, k) for k in range(1, K + 1)]
        chosen = "paper"
        full = curves[chosen][-1]
        ensembles[preset] = EnsembleState(
            tuning={rule: ensemble_limit(preset, rule) for rule in curves},
            tuning_intervals={rule: None for rule in curves},
            chosen=chosen,
            k=K,
            val_loss=float(full["val_loss"]),
            member_val_loss_mean=float(full["member_val_loss_mean"]),
            model_dir=f"ensembles/{full['run_id']}",
            run_id=str(full["run_id"]),
        )
    preset = "300m"
    teacher_loss, single_loss = ensemble_loss(preset, "paper", K), regularized_loss(preset, D)
    point = optimum_point("regularized", preset, D)
    distillation = {}
    for name, loss in (("ensemble", single_loss - 0.8 * (single_loss - teacher_loss)), ("self", single_loss - 0.1)):
        student = sim.single("student", "regularized", preset, D, {**point, "weight_decay": 0.1}, 0, loss)
        state = StudentState(0.1, float(student["val_loss"]), str(student["run_id"]), None)
        distillation[name] = DistillationState(
            preset=preset,
            teacher="ensembles/teacher" if name == "ensemble" else "regularized optimum",
            kd_mode="sequence",
            student_val_loss=state.val_loss,
            weight_decay=0.1,
            run_id=state.run_id,
            model_dir=None,
            status="finished",
            teacher_val_loss=teacher_loss,
            single_val_loss=single_loss,
            students=[state],
        )
    spec = StudySpec(
        name="simulated",
        run={"corpus": "simulated"},
        token_budget=D,
        presets=list(SIZES),
        standard=SearchSpec(LEARNING_RATES, EPOCHS, [0.1]),
        regularized=SearchSpec(LEARNING_RATES, EPOCHS, WEIGHT_DECAYS),
        data_scaling_budgets=[b for b in BUDGETS if b != D],
        ensemble=EnsembleSpec(k=K),
        distillation=DistillationSpec(preset=preset),
    )
    state = StudyState(
        name="simulated",
        corpus="simulated",
        corpus_config=None,
        searches=searches,
        ensembles=ensembles,
        distillation=distillation,
        benchmarks={},
        failures=[],
        sessions=1,
        wall_time_s=60.0,
    )
    truth = {
        "regularized (N -> inf)": true_multiplier(regularized_limit(D), D),
        "regularized ensembles (N, K -> inf)": true_multiplier(standard_data_law(JOINT_MULTIPLIER * D), D),
    }
    return SimulatedStudy(folder, spec, state, truth)
