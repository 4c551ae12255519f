"""A saved LogitEnsemble scores through lm-evaluation-harness's own HF path: its log-likelihoods on a multiple-choice
task are those of the mean logits, and a generation task decodes like the ensemble's own `generate`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import lm_eval
import pytest
import torch
from lm_eval.tasks import TaskManager
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from hf_infcompute.data.tokenizer import train_bpe_tokenizer
from hf_infcompute.ensemble import LogitEnsembleForCausalLM, build_ensemble

BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "bench"
PIQA_ROWS, GSM_ROWS = 6, 2
MAX_GEN_TOKS = 6

MULTIPLE_CHOICE_TASK = """
task: tiny_piqa
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
output_type: multiple_choice
validation_split: validation
doc_to_text: "Question: {{{{goal}}}}\\nAnswer:"
doc_to_target: label
doc_to_choice: "{{{{[sol1, sol2]}}}}"
metric_list:
  - metric: acc
"""

GENERATION_TASK = """
task: tiny_gsm
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: generate_until
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer.split('####')[-1].strip()}}}}"
generation_kwargs:
  until: ["Question:"]
  do_sample: false
  max_gen_toks: {max_gen_toks}
metric_list:
  - metric: exact_match
"""


def copy_rows(source: Path, target: Path, rows: int) -> list[dict]:
    with open(source) as handle:
        lines = list(itertools.islice(handle, rows))
    target.write_text("".join(lines))
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict:
    if not BENCH.is_dir():
        pytest.skip(f"benchmark data not found at {BENCH} (the shared data folder beside the repository)")
    root = tmp_path_factory.mktemp("bench")
    piqa = copy_rows(BENCH / "piqa" / "validation.jsonl", root / "piqa.jsonl", PIQA_ROWS)
    gsm = copy_rows(BENCH / "gsm8k" / "test.jsonl", root / "gsm.jsonl", GSM_ROWS)
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "tiny_piqa.yaml").write_text(MULTIPLE_CHOICE_TASK.format(data=root / "piqa.jsonl"))
    (tasks / "tiny_gsm.yaml").write_text(GENERATION_TASK.format(data=root / "gsm.jsonl", max_gen_toks=MAX_GEN_TOKS))
    return {"root": root, "tasks": tasks, "piqa": piqa, "gsm": gsm}


@pytest.fixture(scope="module")
def ensemble_dir(bench, tmp_path_factory) -> Path:
    """Two tiny Llama members (one with tied embeddings) sharing a BPE trained on the benchmark rows."""
    text = [json.dumps(row) for row in bench["piqa"] + bench["gsm"]]
    tokenizer = train_bpe_tokenizer(text, vocab_size=384)
    root = tmp_path_factory.mktemp("lm-eval-ensemble")
    members = []
    for seed in (0, 1):
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            tie_word_embeddings=seed == 0,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(root / f"member-{seed}")
        tokenizer.save_pretrained(root / f"member-{seed}")
        members.append(root / f"member-{seed}")
    build_ensemble(members, root / "ensemble")
    return root / "ensemble"


@torch.no_grad()
def continuation_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log P(continuation | context) under the model, split into tokens as the harness splits them."""
    whole = tokenizer(context + continuation, add_special_tokens=False).input_ids
    context_length = len(tokenizer(context, add_special_tokens=False).input_ids)
    log_probs = torch.log_softmax(model(torch.tensor([whole[:-1]])).logits[0], dim=-1)
    positions = range(context_length - 1, len(whole) - 1)
    return float(sum(log_probs[i, whole[i + 1]] for i in positions))


def test_harness_scores_the_ensemble_with_its_mean_logits(bench, ensemble_dir):
    output = lm_eval.simple_evaluate(
        model="hf",
        model_args={
            "pretrained": str(ensemble_dir),
            "tokenizer": str(ensemble_dir),
            "device": "cpu",
            "dtype": "float32",
        },
        tasks=["tiny_piqa", "tiny_gsm"],
        task_manager=TaskManager(include_path=str(bench["tasks"]), include_defaults=False),
        limit=PIQA_ROWS,
        batch_size=1,
        log_samples=True,
    )
    piqa, gsm = output["results"]["tiny_piqa"], output["results"]["tiny_gsm"]
    assert 0.0 <= piqa["acc,none"] <= 1.0 and 0.0 <= gsm["exact_match,none"] <= 1.0
    assert len(output["samples"]["tiny_piqa"]) == PIQA_ROWS and len(output["samples"]["tiny_gsm"]) == GSM_ROWS

    model = LogitEnsembleForCausalLM.from_pretrained(ensemble_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(ensemble_dir)
    for sample in output["samples"]["tiny_piqa"]:
        for (context, continuation), response in zip(sample["arguments"], sample["resps"]):
            expected = continuation_loglikelihood(model, tokenizer, context, continuation)
            assert response[0][0] == pytest.approx(expected, abs=1e-3)

    sample = output["samples"]["tiny_gsm"][0]
    prompt = tokenizer(sample["arguments"][0][0], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=MAX_GEN_TOKS, do_sample=False)
    expected_text = tokenizer.decode(generated[0, prompt.input_ids.shape[1] :]).split("Question:")[0]
    assert sample["resps"][0][0] == expected_text
