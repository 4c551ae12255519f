"""The 'random' validation split: whole documents held out by a seeded per-document rule, the same for every run,
disjoint from training and from the tokenizer's training text, drawn from across an ordered corpus."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pytest

from hf_infcompute.data import DataArguments, packing
from hf_infcompute.data.holdout import held_out
from hf_infcompute.errors import InputError

N_DOCUMENTS = 1200
MARKER = re.compile(r"zq(\d{4})zq")
WORDS = ["the", "a", "small", "quiet", "house", "garden", "river", "morning", "evening", "friend", "letter", "road"]


@pytest.fixture(scope="module")
def ordered_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Documents ordered by topic (cats, then dogs), each marked `zq<number>zq` at its start and end."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("ordered")
    with (folder / "corpus.jsonl").open("w") as handle:
        for i in range(N_DOCUMENTS):
            topic = "cats" if i < N_DOCUMENTS // 2 else "dogs"
            body = " ".join(rng.choice(WORDS, size=int(rng.integers(20, 80))))
            handle.write(json.dumps({"text": f"zq{i:04d}zq {topic} {body} {topic} zq{i:04d}zq"}) + "\n")
    return folder / "corpus.jsonl"


def split_args(corpus: Path, cache: Path, **changes) -> DataArguments:
    settings = {
        "corpus": str(corpus),
        "cache_dir": str(cache),
        "vocab_size": 320,
        "tokenizer_train_chars": 200_000,
        "seq_len": 32,
        "val_sequences": 8,
        "token_budget": 3000,
        "validation_split": "random",
        "preprocessing_num_workers": 1,
    }
    return DataArguments(**{**settings, **changes})


def markers(tokenizer, rows) -> set[int]:
    """The numbers of the documents whose markers appear whole in `rows`."""
    return {int(m) for m in MARKER.findall(tokenizer.decode(np.asarray(rows).ravel().tolist()))}


def held_out_documents(meta: dict) -> set[int]:
    seed, fraction = meta["holdout"]
    return set(np.flatnonzero(held_out(seed, fraction, 0, N_DOCUMENTS)).tolist())


def test_random_split_is_whole_held_out_documents_from_across_the_corpus(ordered_corpus, tmp_path, monkeypatch):
    trained_on: list[str] = []
    train_bpe = packing.train_bpe_tokenizer

    def train_and_record(texts: list[str], vocab_size: int):
        trained_on.extend(texts)
        return train_bpe(texts, vocab_size)

    monkeypatch.setattr(packing, "train_bpe_tokenizer", train_and_record)
    args = split_args(ordered_corpus, tmp_path)
    data = packing.prepare_data(args)
    meta = packing.pack_corpus(args, data.tokenizer).meta
    held = held_out_documents(meta)
    assert meta["held_out_documents"] == len(held) and 0 < len(held) < N_DOCUMENTS // 4
    assert sum(data.train["length"]) == args.token_budget and len(data.validation) == args.val_sequences
    # No held-out document reaches training or the tokenizer; validation holds held-out documents only.
    in_validation = markers(data.tokenizer, data.validation["input_ids"])
    in_training = markers(data.tokenizer, data.train["input_ids"])
    assert in_validation and in_validation <= held
    assert in_training and not in_training & held
    seen_by_tokenizer = {int(m) for text in trained_on for m in MARKER.findall(text)}
    assert len(seen_by_tokenizer) > N_DOCUMENTS // 2 and not seen_by_tokenizer & held
    # An ordered corpus: validation documents come from its start and its end, both topics.
    assert min(in_validation) < N_DOCUMENTS // 4 and max(in_validation) > 3 * N_DOCUMENTS // 4
    text = data.tokenizer.decode(np.asarray(data.validation["input_ids"]).ravel().tolist())
    assert "cats" in text and "dogs" in text


def test_random_split_is_the_same_for_every_budget_and_worker_count(ordered_corpus, tmp_path):
    small = packing.prepare_data(split_args(ordered_corpus, tmp_path, token_budget=1000))
    large = packing.prepare_data(split_args(ordered_corpus, tmp_path, token_budget=6000, preprocessing_num_workers=2))
    assert small.validation["input_ids"] == large.validation["input_ids"]
    assert large.train["input_ids"][: len(small.train) - 1] == small.train["input_ids"][:-1]
    other_seed = packing.prepare_data(split_args(ordered_corpus, tmp_path, validation_seed=1))
    assert other_seed.validation_fingerprint != small.validation_fingerprint
    assert other_seed.cache_key != small.cache_key
    head = packing.prepare_data(split_args(ordered_corpus, tmp_path, validation_split="head"))
    assert head.validation_fingerprint != small.validation_fingerprint


def test_streamed_corpus_holds_out_the_same_documents(ordered_corpus, tmp_path, monkeypatch):
    """The rule is per document in stream order: a stream read up to `max_corpus_tokens` holds out the documents a
    local corpus read up to the same limit does."""
    args = split_args(ordered_corpus, tmp_path / "local", max_corpus_tokens=30_000)
    local = packing.prepare_data(args)
    stream = datasets.load_dataset("json", data_files=str(ordered_corpus), split="train", streaming=True)
    monkeypatch.setattr(packing, "load_corpus", lambda data_args: stream)
    streamed_args = split_args(ordered_corpus, tmp_path / "streamed", max_corpus_tokens=30_000, streaming=True)
    streamed = packing.prepare_data(streamed_args)
    assert streamed.validation["input_ids"] == local.validation["input_ids"]
    assert streamed.train["input_ids"] == local.train["input_ids"]
    held = held_out_documents(packing.pack_corpus(streamed_args, streamed.tokenizer).meta)
    assert not markers(streamed.tokenizer, streamed.train["input_ids"]) & held


def test_unknown_split_is_refused():
    with pytest.raises(InputError, match="validation_split"):
        DataArguments(corpus="x.jsonl", token_budget=10, validation_split="tail")
