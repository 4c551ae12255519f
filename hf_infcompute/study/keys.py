"""Every key of a study YAML with its help, for `hf-infcompute study --help-keys` (the run keys under `run:` have
theirs in the training arguments' dataclasses: `hf-infcompute pretrain --help-keys`)."""

from __future__ import annotations

import dataclasses

from hf_infcompute.study.spec import NESTED, StudySpec

STUDY_KEY_HELP = {
    "name": "The study's name (its default output folder is outputs/<name>).",
    "run": "Settings shared by every run: the flat pre-training keys (`hf-infcompute pretrain --help-keys`), "
    "except those the study sets itself (token_budget, preset, learning_rate, num_train_epochs, weight_decay, recipe).",
    "token_budget": "The main token budget D: the regularized recipe, the ensembles and distillation train on it.",
    "presets": "The ladder of model-size presets searched (the scaling laws fit over them).",
    "standard": "The standard recipe's search (weight decay fixed at 0.1), at every budget.",
    "standard.learning_rate": "Learning rates of the standard recipe's grid.",
    "standard.num_train_epochs": "Epoch counts of the standard recipe's grid.",
    "standard.weight_decay": "Fixed at 0.1 for the standard recipe.",
    "standard.start": "Starting point [learning_rate, num_train_epochs] (default: the grid's middle).",
    "regularized": "The regularized recipe's search (weight decay tuned too), at every budget.",
    "regularized.learning_rate": "Learning rates of the regularized recipe's grid.",
    "regularized.num_train_epochs": "Epoch counts of the regularized recipe's grid.",
    "regularized.weight_decay": "Weight decays of the regularized recipe's grid.",
    "regularized.start": "Starting point [learning_rate, num_train_epochs, weight_decay] (default: the grid's middle).",
    "standard.extend_edges": "Extend an axis past the grid's edge where the optimum sits on it (default true): "
    "learning rate x3 or /3, epochs x2 or /2, until the optimum is interior or at a hard bound.",
    "regularized.extend_edges": "As standard.extend_edges; weight decay x2, or /2 and then 0.",
    "standard.tie_break_seeds": "Fresh seeds at which the optimum and each neighbour within the seed noise are "
    "re-trained, the choice made on their seed means (default 2; 0: no tie-breaks).",
    "regularized.tie_break_seeds": "As standard.tie_break_seeds.",
    "data_scaling_budgets": "Further token budgets at which both recipes are searched (data scaling; default: the "
    "paper's 2D, 4D and 8D).",
    "ensemble": "Ensembles of K members per preset.",
    "ensemble.k": "Members of the full ensemble (the K-curve runs from 1 to k).",
    "ensemble.member_candidates": "'optimum' (the single model's optimum) and/or 'paper' (double the epochs, halve "
    "the weight decay); each trains k members and the lower K -> inf asymptote (on validation) is chosen.",
    "ensemble.presets": "Presets that get an ensemble (default: every preset).",
    "distillation": "Students distilled from the ensemble and from the best single model.",
    "distillation.preset": "The teachers' and students' preset (default: the middle preset).",
    "distillation.synthetic_tokens": "Tokens sampled from each teacher (default: twice the token budget).",
    "distillation.synthetic_fraction": "Share of synthetic sequences in each student's training mix.",
    "distillation.weight_decay": "Student weight decays tried ('optimum' and/or numbers); the best is reported.",
    "distillation.self_distillation": "Also distil the best single model into a student of its size.",
    "distillation.token_level": "Also train a student against the ensemble's next-token distributions (KL).",
    "benchmarks": "Downstream evaluation of the study's best models (lm-eval).",
    "benchmarks.enabled": "Run the benchmarks (off by default).",
    "benchmarks.tasks": "Task set: 'paper' or comma-separated lm-eval task names.",
    "benchmarks.data_dir": "Local folder of the tasks' data, for offline evaluation.",
    "benchmarks.limit": "Examples per task (default: all).",
    "description": "Free text, printed at the top of the report.",
    "expected_minutes": "Roughly how long the study takes, in minutes (documentation only: nothing reads it).",
    "report_resamples": (
        "Replicates of the report's resampled analysis behind every asymptote and multiplier interval and every "
        "p-value over sizes (default 1000, at least 40; changing it does not retrain anything)."
    ),
}


def study_keys() -> list[str]:
    """Every key of a study YAML, nested ones dotted (`ensemble.k`), in the order of the spec's dataclasses."""
    keys = []
    for top in dataclasses.fields(StudySpec):
        keys.append(top.name)
        if top.name in NESTED:
            keys += [f"{top.name}.{f.name}" for f in dataclasses.fields(NESTED[top.name])]
    return keys


def print_study_keys() -> None:
    for key in study_keys():
        print(f"  {key}: {STUDY_KEY_HELP.get(key, '')}")
