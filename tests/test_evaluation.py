"""Downstream evaluation: local-data tasks score like the harness's, an answer-key model scores 100%, a contrarian
0%, tiny real models run through lm-eval's HF path, and bad input names the fix."""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager
from transformers import LlamaConfig, LlamaForCausalLM

from hf_infcompute.cli import eval as eval_cli
from hf_infcompute.data.tokenizer import train_bpe_tokenizer
from hf_infcompute.errors import InputError
from hf_infcompute.evaluation import evaluate_model, plot_loss_vs_error, render_task_dir, resolve_tasks
from hf_infcompute.evaluation.local_tasks import harness_tasks_dir

BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "bench"
ROWS = 20
MATH_ROWS_PER_SUBJECT = 3
BENCH_FILES = [
    "piqa/validation.jsonl",
    "sciq/validation.jsonl",
    "arc_easy/test.jsonl",
    "gsm8k/test.jsonl",
    "gsm8k/train.jsonl",
    "mathqa/test.jsonl",
]
MATH_SUBJECTS = {
    "hendrycks_math_algebra": "Algebra",
    "hendrycks_math_counting_and_prob": "Counting & Probability",
    "hendrycks_math_geometry": "Geometry",
    "hendrycks_math_intermediate_algebra": "Intermediate Algebra",
    "hendrycks_math_num_theory": "Number Theory",
    "hendrycks_math_prealgebra": "Prealgebra",
    "hendrycks_math_precalc": "Precalculus",
}
GSM8K_STRICT = r"#### (\-?[0-9\.\,]+)"
GSM8K_FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first rows of each benchmark file (and a few MATH problems of every subject) in the bench layout."""
    if not BENCH.is_dir():
        pytest.skip(f"benchmark data not found at {BENCH} (the shared data folder beside the repository)")
    root = tmp_path_factory.mktemp("bench")
    for relative in BENCH_FILES:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        with open(BENCH / relative) as source:
            (root / relative).write_text("".join(itertools.islice(source, ROWS)))
    per_subject: dict[str, list[str]] = {}
    with open(BENCH / "math" / "test.jsonl") as source:
        for line in source:
            rows = per_subject.setdefault(json.loads(line)["type"], [])
            if len(rows) < MATH_ROWS_PER_SUBJECT:
                rows.append(line)
    (root / "math").mkdir()
    (root / "math" / "test.jsonl").write_text("".join(itertools.chain(*per_subject.values())))
    return root


def bench_text(data_dir: Path) -> list[str]:
    return [line for relative in BENCH_FILES for line in (data_dir / relative).read_text().splitlines()]


def save_tiny_llama(folder: Path, data_dir: Path, seed: int) -> Path:
    """A 1-layer Llama and a byte-level BPE trained on the benchmark rows, saved like a trained model."""
    tokenizer = train_bpe_tokenizer(bench_text(data_dir), vocab_size=384)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), data_dir, seed=0)


# ---------------------------------------------------------------- answer-key models (no network, no weights)


def last_boxed(solution: str) -> str:
    """The content of the last \\boxed{...}, braces matched."""
    start = solution.rindex("\\boxed{") + len("\\boxed{")
    depth = 1
    for end in range(start, len(solution)):
        depth += {"{": 1, "}": -1}.get(solution[end], 0)
        if depth == 0:
            return solution[start:end]
    raise ValueError("unbalanced \\boxed{")


def mathqa_options(options: str) -> dict[str, str]:
    parts = re.split(r"(?:^|\s*,\s*)([a-e]) \) ", options)
    return {letter: text.strip(" ,") for letter, text in zip(parts[1::2], parts[2::2])}


def gold_answer(task: str, doc: dict) -> str:
    """The correct answer of a raw benchmark row, read from its fields without the harness's task code."""
    if task == "piqa":
        return [doc["sol1"], doc["sol2"]][doc["label"]]
    if task == "sciq":
        return doc["correct_answer"]
    if task == "arc_easy":
        return dict(zip(doc["choices"]["label"], doc["choices"]["text"]))[doc["answerKey"]]
    if task == "mathqa":
        return mathqa_options(doc["options"])[doc["correct"]]
    if task == "gsm8k":
        return doc["answer"].split("####")[-1].strip()
    if task.startswith("hendrycks_math"):
        return last_boxed(doc["solution"])
    raise KeyError(task)


class AnswerKeyLM(LM):
    """Knows every answer: gives the gold continuation log-likelihood 0 and the others -10 (or the reverse when
    `contrarian`), and writes worked answers in the formats the tasks extract."""

    def __init__(self, contrarian: bool = False) -> None:
        super().__init__()
        self.contrarian = contrarian
        self.contexts: dict[str, list[tuple[dict, str]]] = {}

    def loglikelihood(self, requests):
        scores = []
        for request in requests:
            context, continuation = request.arguments
            self.contexts.setdefault(request.task_name, []).append((request.doc, context))
            preferred = (continuation.strip() == gold_answer(request.task_name, request.doc).strip()) != self.contrarian
            scores.append((0.0 if preferred else -10.0, preferred))
        return scores

    def generate_until(self, requests):
        answers = []
        for request in requests:
            self.contexts.setdefault(request.task_name, []).append((request.doc, request.arguments[0]))
            gold = gold_answer(request.task_name, request.doc)
            if request.task_name == "gsm8k":
                answers.append(f"First 3 + 4 = 7 and 7 * 2 = 14.\n#### {gold}")
            else:
                answers.append(f"The answer is ${gold}$.")
        return answers

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError("no task here scores perplexity")


def test_task_names_resolve_shorthands_and_reject_unknown():
    assert resolve_tasks("paper") == ["piqa", "sciq", "arc_easy"]
    assert resolve_tasks(["math", "gsm8k", "piqa"]) == ["gsm8k", "hendrycks_math", "mathqa", "piqa"]
    assert resolve_tasks("sciq, arc_easy") == ["sciq", "arc_easy"]
    with pytest.raises(InputError, match=r"unknown task 'hellaswag'.*piqa.*paper"):
        resolve_tasks("piqa,hellaswag")


def test_local_tasks_keep_the_harness_prompts_and_metrics(data_dir, tmp_path):
    local = TaskManager(include_path=str(render_task_dir(data_dir, tmp_path)), include_defaults=False).task_index
    harness_dirs = ["piqa", "sciq", "arc", "gsm8k", "mathqa", "hendrycks_math"]
    harness = TaskManager(
        include_path=[str(harness_tasks_dir() / d) for d in harness_dirs], include_defaults=False
    ).task_index
    same_keys = ["output_type", "doc_to_text", "doc_to_target", "doc_to_choice", "metric_list", "filter_list",
                 "generation_kwargs", "process_results", "num_fewshot"]  # fmt: skip
    tasks = ["piqa", "sciq", "arc_easy", "gsm8k", "mathqa", *harness["hendrycks_math"].cfg["task"]]
    for task in tasks:
        assert local[task].cfg["doc_to_text"] and local[task].cfg["metric_list"]
        for key in same_keys:
            assert local[task].cfg.get(key) == harness[task].cfg.get(key), (task, key)
        assert local[task].cfg["dataset_path"] == "json"
        for path in local[task].cfg["dataset_kwargs"]["data_files"].values():
            assert Path(path).is_file() and Path(path).is_relative_to(data_dir.resolve())
    assert local["hendrycks_math"].cfg["task"] == harness["hendrycks_math"].cfg["task"]


def test_missing_data_file_or_folder_names_the_fix(data_dir, tiny_model, tmp_path):
    partial = tmp_path / "bench"
    shutil.copytree(data_dir, partial)
    (partial / "sciq" / "validation.jsonl").unlink()
    with pytest.raises(InputError, match=r"sciq needs sciq/validation\.jsonl"):
        evaluate_model(tiny_model, "paper", data_dir=partial, limit=2)
    with pytest.raises(InputError, match="is not a folder"):
        evaluate_model(tiny_model, "piqa", data_dir=tmp_path / "nowhere", limit=2)
    with pytest.raises(InputError, match="no model folder"):
        evaluate_model(tmp_path / "no-model", "piqa", data_dir=data_dir, limit=2)


def test_answer_key_model_scores_100_percent_on_every_task(data_dir):
    result = evaluate_model(AnswerKeyLM(), ["paper", "math"], data_dir=data_dir, limit=ROWS)
    assert result.tasks == ("piqa", "sciq", "arc_easy", "gsm8k", "hendrycks_math", "mathqa")
    for score in result.scores:
        assert score.value == 1.0, score
    for task in ["piqa", "sciq", "arc_easy", "gsm8k", "mathqa"]:
        assert result.headline(task).n == ROWS
    assert result.headline("hendrycks_math").n == 7 * MATH_ROWS_PER_SUBJECT
    for task, subject in MATH_SUBJECTS.items():
        assert [s["doc"]["type"] for s in result.samples[task]] == [subject] * MATH_ROWS_PER_SUBJECT
    assert {s.metric for s in result.scores if s.task == "piqa"} == {"acc", "acc_norm"}
    assert result.average == 1.0
    # GSM8K answers are extracted by both harness filters: "#### N", and the last number of the response.
    samples = result.samples["gsm8k"]
    assert {s["filter"] for s in samples} == {"strict-match", "flexible-extract"}
    for sample in samples:
        assert sample["filtered_resps"][0] == gold_answer("gsm8k", sample["doc"])


def test_contrarian_model_scores_0_on_two_choice_piqa(data_dir):
    result = evaluate_model(AnswerKeyLM(contrarian=True), "piqa", data_dir=data_dir, limit=ROWS)
    assert result.headline("piqa").value == 0.0
    assert result.average_error == 1.0


def test_few_shot_examples_never_include_the_scored_item(data_dir):
    model = AnswerKeyLM()
    result = evaluate_model(model, ["paper", "math"], data_dir=data_dir, limit=5, num_fewshot=2)
    question = {"piqa": "goal", "sciq": "question", "arc_easy": "question", "mathqa": "Problem", "gsm8k": "question"}
    assert {s.num_fewshot for s in result.scores} == {2}
    for task, contexts in model.contexts.items():
        for doc, context in contexts:
            if task.startswith("hendrycks_math"):
                prompt, header = f"Problem: {doc['problem']}\nAnswer:", "Problem:"
            else:
                prompt, header = f"Question: {doc[question[task]]}\nAnswer:", "Question:"
            assert context.endswith(prompt) and context.count(prompt) == 1, (task, prompt)
            assert context.count(header) == 3, (task, context)


def test_tiny_model_scores_multiple_choice_tasks(data_dir, tiny_model, tmp_path):
    tasks = ["piqa", "sciq", "arc_easy", "mathqa"]
    result = evaluate_model(tiny_model, tasks, data_dir=data_dir, limit=8, batch_size=8, output_dir=tmp_path)
    for task in tasks:
        score = result.headline(task)
        assert score.metric == "acc" and score.n == 8 and 0.0 <= score.value <= 1.0
        # The table's accuracy is the share of items whose gold choice has the highest log-likelihood.
        samples = result.samples[task]
        correct = [max(range(len(s["filtered_resps"])), key=lambda i: s["filtered_resps"][i][0]) == s["target"]
                   for s in samples]  # fmt: skip
        assert score.value == pytest.approx(sum(correct) / len(samples))
    assert result.average == pytest.approx(sum(result.headline(t).value for t in tasks) / 4)
    written = json.loads((tmp_path / f"{tiny_model.name}.json").read_text())
    assert written["average"] == pytest.approx(result.average)
    assert "| piqa | **acc** |" in (tmp_path / f"{tiny_model.name}.md").read_text()


def test_tiny_model_generates_and_extracts_gsm8k_answers(data_dir, tiny_model):
    result = evaluate_model(tiny_model, "gsm8k", data_dir=data_dir, limit=3, max_gen_toks=12)
    assert result.headline("gsm8k").n == 3 and result.headline("gsm8k").num_fewshot == 5
    samples = result.samples["gsm8k"]
    assert len(samples) == 6  # one per item and filter
    for sample in samples:
        response = sample["resps"][0][0]
        if sample["filter"] == "strict-match":
            matches = re.findall(GSM8K_STRICT, response)
            expected = matches[0] if matches else "[invalid]"
        else:
            matches = [next(group for group in match if group) for match in re.findall(GSM8K_FLEXIBLE, response)]
            expected = matches[-1] if matches else "[invalid]"
        assert sample["filtered_resps"][0] == expected.strip()


def test_ensemble_scores_through_the_same_path(data_dir, tiny_model, tmp_path):
    ensemble = pytest.importorskip("hf_infcompute.ensemble")
    other = save_tiny_llama(tmp_path / "other", data_dir, seed=1)
    pair = ensemble.build_ensemble([tiny_model, other], tmp_path / "pair")
    twins = ensemble.build_ensemble([tiny_model, tiny_model], tmp_path / "twins")
    assert json.loads((tmp_path / "pair" / "config.json").read_text())["model_type"] == "logit_ensemble"
    del pair, twins

    scores = {
        name: evaluate_model(folder, "piqa", data_dir=data_dir, limit=6, dtype="float32")
        for name, folder in [("single", tiny_model), ("twins", tmp_path / "twins"), ("pair", tmp_path / "pair")]
    }
    assert scores["pair"].headline("piqa").n == 6 and 0.0 <= scores["pair"].headline("piqa").value <= 1.0

    def loglikelihoods(result):
        return [ll for s in result.samples["piqa"] for ll, _ in s["filtered_resps"]]

    # The mean of two identical members' logits is the member's: same per-choice log-likelihoods as the member.
    assert loglikelihoods(scores["twins"]) == pytest.approx(loglikelihoods(scores["single"]), abs=1e-4)
    assert loglikelihoods(scores["pair"]) != pytest.approx(loglikelihoods(scores["single"]), abs=1e-4)


def test_plot_loss_vs_error_writes_a_png(tmp_path):
    path = plot_loss_vs_error([("a", 3.8, 0.42), ("b", 3.6, 0.39), ("c", 3.4, 0.36)], tmp_path / "fig" / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="no models"):
        plot_loss_vs_error([], tmp_path / "empty.png")
    with pytest.raises(InputError, match=r"error in \[0, 1\]"):
        plot_loss_vs_error([("a", 3.8, 42.0)], tmp_path / "percent.png")


def test_cli_writes_tables_comparison_and_plot(data_dir, tiny_model, tmp_path, capsys):
    other = save_tiny_llama(tmp_path / "other", data_dir, seed=1)
    (other / "run_record.json").write_text(json.dumps({"run_id": "other-run", "val_loss": 5.5}))
    parser = argparse.ArgumentParser()
    eval_cli.add_parser(parser.add_subparsers())
    output = tmp_path / "out"
    argv = ["eval", str(tiny_model), str(other), "--tasks", "piqa", "--data-dir", str(data_dir), "--limit", "4"]
    args = parser.parse_args([*argv, "--output", str(output), "--val-loss", "5.9", "5.5"])
    assert args.func(args) == 0
    assert (output / f"{tiny_model.name}.md").is_file() and (output / "other-run.json").is_file()
    summary = json.loads((output / "summary.json").read_text())
    assert [row["val_loss"] for row in summary] == [5.9, 5.5]
    assert (output / "loss_vs_error.png").read_bytes()[:4] == b"\x89PNG"
    assert "| other-run |" in capsys.readouterr().out
    with pytest.raises(InputError, match="one per model"):
        args = parser.parse_args([*argv, "--val-loss", "5.9"])
        args.func(args)
