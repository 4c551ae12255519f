"""Shared fixtures: the real corpus from ../shared/data and tiny run settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings
from transformers import LlamaConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Property-based tests draw the same cases on every run (set HYPOTHESIS_PROFILE=explore to draw new ones).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PRETRAIN_CORPUS = SHARED_DATA / "pretrain"
BENCH_DATA = SHARED_DATA / "bench"


# A run of the paper's shape whose micro-batch is fitted to the device's free memory (add a `corpus`).
AUTO_MICRO_BATCH_RUN = {
    "token_budget": 8192,
    "seq_len": 4096,
    "global_batch_size": 64,
    "per_device_train_batch_size": 64,
    "auto_micro_batch": True,
    "precision": "bf16",
}

# The `run:` section of the tests' micro studies: the smallest runs a whole study can be made of.
MICRO_STUDY_RUN = {
    "tokenizer": "bpe",
    "vocab_size": 512,
    "tokenizer_train_chars": 500_000,
    "seq_len": 32,
    "val_sequences": 16,
    "per_device_train_batch_size": 16,
    "precision": "fp32",
    "disable_tqdm": True,
    "save_strategy": "no",
}


def micro_llama_config(**overrides) -> LlamaConfig:
    """The config of the smallest Llama the tests build without data (64-token vocabulary, one layer of 16)."""
    shape = {
        "vocab_size": 64,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
    }
    return LlamaConfig(**{**shape, **overrides})


def save_base_checkpoint(folder: Path, corpus_dir: Path) -> Path:
    """A tiny random Llama with a BPE tokenizer, saved into `folder` like a hub checkpoint (for continued
    pre-training)."""
    import json

    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_infcompute.data.tokenizer import train_bpe_tokenizer

    texts = [json.loads(line)["text"] for line in (corpus_dir / "part-05.jsonl").open()][:300]
    tokenizer = train_bpe_tokenizer(texts, 512)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not PRETRAIN_CORPUS.is_dir():
        pytest.skip(f"real corpus not found at {PRETRAIN_CORPUS} (the shared data folder beside the repository)")
    return PRETRAIN_CORPUS


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tokenizer/packing cache for the whole session, so the corpus is tokenized once."""
    return tmp_path_factory.mktemp("hf_infcompute_cache")


@pytest.fixture
def tiny_run(corpus_dir: Path, cache_dir: Path) -> dict:
    """Settings of a run of a few seconds: a 0.5M-parameter model on 8K tokens, fp32 for exact comparisons."""
    return {
        "corpus": str(corpus_dir),
        "cache_dir": str(cache_dir),
        "vocab_size": 1024,
        "tokenizer_train_chars": 1_000_000,
        "seq_len": 64,
        "val_sequences": 16,
        "token_budget": 8192,
        "preset": "tiny-0.5m",
        "num_train_epochs": 2,
        "learning_rate": 3e-3,
        "weight_decay": 0.1,
        "per_device_train_batch_size": 8,
        "precision": "fp32",
        "disable_tqdm": True,
        "logging_steps": 4,
    }


@pytest.fixture
def trained_runs(monkeypatch) -> list[str]:
    """The ids of the runs trained from now on. Every kind of run trains through `Trainer.train`; patching
    `build_trainer` would not see them, since `pretrain` binds it as a default argument."""
    from transformers import Trainer

    trained = []
    original = Trainer.train

    def watch(self, *args, **kwargs):
        trained.append(Path(self.args.output_dir).name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train", watch)
    return trained


@pytest.fixture(scope="session")
def four_members(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path, cache_dir: Path) -> tuple:
    """A 4-member ensemble of tiny models trained on the real corpus near their best epochs and weight decay,
    with its soup: (settings of member 0, output folder, the records `train_ensemble` returned)."""
    from hf_infcompute.ensemble.members import train_ensemble
    from hf_infcompute.training import parse_run_config

    settings = {
        "corpus": str(corpus_dir),
        "cache_dir": str(cache_dir),
        "vocab_size": 1024,
        "tokenizer_train_chars": 1_000_000,
        "seq_len": 64,
        "val_sequences": 16,
        "token_budget": 16_384,
        "preset": "tiny-0.5m",
        "num_train_epochs": 16,
        "learning_rate": 3e-3,
        "weight_decay": 0.8,
        "per_device_train_batch_size": 8,
        "precision": "fp32",
        "disable_tqdm": True,
    }
    output = tmp_path_factory.mktemp("ensemble")
    records = train_ensemble(parse_run_config(settings), output, 4, soup=True)
    return settings, output, records
