"""Continued pre-training of an existing (tiny, random) Llama checkpoint: full and LoRA, members, ensemble, soup."""

from __future__ import annotations

import pytest
from conftest import BENCH_DATA, micro_llama_config, save_base_checkpoint
from transformers import AutoModelForCausalLM, LlamaForCausalLM, ViTConfig, ViTModel

from hf_infcompute.cli.main import main
from hf_infcompute.continued_pretraining import continued_pretraining
from hf_infcompute.errors import InputError
from hf_infcompute.hub import model_card, read_run_record
from hf_infcompute.training import parse_run_config, pretrain


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory, corpus_dir):
    """A tiny random Llama with a BPE tokenizer, saved like a hub checkpoint."""
    return save_base_checkpoint(tmp_path_factory.mktemp("base"), corpus_dir)


@pytest.fixture
def domain_run(base_checkpoint, cache_dir):
    gsm8k = BENCH_DATA / "gsm8k" / "train.jsonl"
    if not gsm8k.is_file():
        pytest.skip(f"domain corpus not found at {gsm8k}")
    return {
        "base_model": str(base_checkpoint),
        "corpus": str(gsm8k),
        "text_column": "answer",
        "cache_dir": str(cache_dir),
        "seq_len": 64,
        "val_sequences": 16,
        "token_budget": 8192,
        "num_train_epochs": 2,
        "learning_rate": 1e-3,
        "per_device_train_batch_size": 8,
        "precision": "fp32",
        "disable_tqdm": True,
    }


@pytest.mark.parametrize("lora_r,learning_rate", [(0, 1e-3), (8, 1e-2)])
def test_cpt_loss_falls_with_full_and_lora_training(domain_run, tmp_path, lora_r, learning_rate):
    untouched = pretrain({**domain_run, "learning_rate": 1e-9, "num_train_epochs": 1}, tmp_path / "base")
    record = pretrain({**domain_run, "lora_r": lora_r, "learning_rate": learning_rate}, tmp_path / "cpt")
    assert record["val_loss"] < untouched["val_loss"] - 0.15
    assert record["preset"] == domain_run["base_model"] and record["lora_r"] == lora_r
    model = AutoModelForCausalLM.from_pretrained(record["model_dir"])  # LoRA is merged: a plain checkpoint
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_cpt_members_ensemble_and_soup_load_and_score(domain_run, tmp_path):
    result = continued_pretraining(
        parse_run_config(domain_run),
        tmp_path,
        k=2,
        tasks=["gsm8k", "mathqa"],
        eval_data_dir=str(BENCH_DATA),
        eval_limit=3,
        max_gen_toks=16,
    )
    assert [row["model"] for row in result.scores] == ["base", "member 0", "member 1", "ensemble K=2", "soup K=2"]
    for row in result.scores:
        assert 0.0 <= row["mathqa"] <= 1.0 and 0.0 <= row["gsm8k"] <= 1.0
    assert result.report.is_file() and "ensemble K=2" in result.report.read_text()
    ensemble = next(r for r in result.records if r["kind"] == "ensemble" and r["k"] == 2)
    assert read_run_record(ensemble["model_dir"])["val_loss"] == ensemble["val_loss"]
    card = str(model_card(ensemble))
    assert "logit ensemble" in card and "| members K | 2 |" in card and f"{ensemble['val_loss']:.4f}" in card


def test_cpt_refuses_non_causal_base_and_missing_tokenizer(domain_run, tmp_path):
    vision = tmp_path / "vision"
    ViTModel(
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(vision)
    with pytest.raises(InputError, match="tokenizer"):
        pretrain({**domain_run, "base_model": str(vision)}, tmp_path)
    (tmp_path / "no_tokenizer").mkdir()
    LlamaForCausalLM(micro_llama_config()).save_pretrained(tmp_path / "no_tokenizer")
    with pytest.raises(InputError, match="cannot load tokenizer"):
        pretrain({**domain_run, "base_model": str(tmp_path / "no_tokenizer")}, tmp_path)
    with pytest.raises(InputError, match="keeps the base model's tokenizer"):
        pretrain({**domain_run, "tokenizer": "bpe"}, tmp_path)


def test_cpt_command_needs_base_and_data(capsys):
    assert main(["cpt", "token_budget=100"]) == 2
    assert "--base CKPT --data CORPUS" in capsys.readouterr().err
