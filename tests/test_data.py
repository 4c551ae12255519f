"""Corpus loading, tokenizer, packing: exact D, a fixed validation split, the cache, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hf_infcompute.data import DataArguments, PackedCollator, packing, prepare_data
from hf_infcompute.errors import InputError


def data_args(run: dict, **changes) -> DataArguments:
    keys = {"corpus", "cache_dir", "vocab_size", "tokenizer_train_chars", "seq_len", "val_sequences", "token_budget"}
    return DataArguments(**{**{k: v for k, v in run.items() if k in keys}, **changes})


@pytest.mark.parametrize("budget", [8192, 10_001])
def test_training_split_holds_exactly_d_tokens(tiny_run, budget):
    data = prepare_data(data_args(tiny_run, token_budget=budget))
    assert sum(data.train["length"]) == budget
    batch = PackedCollator(data.tokenizer.pad_token_id)([data.train[i] for i in range(len(data.train))])
    counted = int((batch["labels"] != -100).sum())
    assert counted == budget


def test_validation_is_fixed_across_budgets_and_disjoint_from_training(tiny_run):
    small = prepare_data(data_args(tiny_run, token_budget=4096))
    large = prepare_data(data_args(tiny_run, token_budget=40_000))
    assert small.validation["input_ids"] == large.validation["input_ids"]
    assert small.validation_fingerprint == large.validation_fingerprint
    assert small.test_fingerprint == large.test_fingerprint
    assert small.test_documents.tolist() == large.test_documents.tolist()
    assert len(large.validation) == len(large.test) == tiny_run["val_sequences"]  # test_sequences: val_sequences
    # Training rows are the packed rows after the held-out rows: a longer budget extends the same prefix.
    assert large.train["input_ids"][: len(small.train) - 1] == small.train["input_ids"][:-1]
    val_rows = {tuple(r) for r in large.validation["input_ids"]}
    test_rows = {tuple(r) for r in large.test["input_ids"]}
    train_rows = {tuple(r) for r in large.train["input_ids"]}
    assert not val_rows & train_rows and not test_rows & train_rows and not val_rows & test_rows


def test_tokenizer_never_saw_validation_or_test_text(tiny_run):
    args = data_args(tiny_run, validation_split="head")  # the random split: tests/test_data_split.py
    data = prepare_data(args)
    tokenizer, trained_from = packing.prepare_tokenizer(args)
    # Validation's documents, then test's, then (past the last document a test row may reach) the tokenizer's text.
    last_held_out = packing._head_rows(packing.pack_corpus(args, tokenizer), args)[2]
    assert max(data.validation_documents) < min(data.test_documents) <= max(data.test_documents) <= last_held_out
    assert last_held_out < trained_from["first_document"]


def test_packed_corpus_is_cached(tiny_run, monkeypatch):
    prepare_data(data_args(tiny_run))

    def refuse(*args, **kwargs):
        raise AssertionError("the corpus was tokenized again")

    monkeypatch.setattr(packing, "_write_rows", refuse)
    again = prepare_data(data_args(tiny_run, token_budget=5000))
    assert sum(again.train["length"]) == 5000


def test_documents_are_separated_by_eos(tiny_run):
    data = prepare_data(data_args(tiny_run, validation_split="head"))  # validation starts at the first document
    tokens = np.asarray(data.validation["input_ids"]).ravel()
    eos = data.tokenizer.eos_token_id
    assert (tokens == eos).sum() >= 1
    first_doc = data.tokenizer.decode(tokens[: int(np.argmax(tokens == eos))])
    first_line = json.loads((Path(tiny_run["corpus"]) / "part-00.jsonl").open().readline())["text"]
    assert first_doc == first_line


@pytest.mark.parametrize("suffix", [".txt", ".parquet"])
def test_text_and_parquet_corpora(tmp_path, suffix):
    docs = [f"Document number {i} talks about {'cats' if i % 2 else 'dogs'} and their habits." for i in range(400)]
    path = tmp_path / f"corpus{suffix}"
    if suffix == ".txt":
        path.write_text("\n".join(docs))
    else:
        import pandas as pd

        pd.DataFrame({"text": docs}).to_parquet(path)
    args = DataArguments(
        corpus=str(path),
        cache_dir=str(tmp_path / "cache"),
        vocab_size=300,
        seq_len=32,
        val_sequences=4,
        token_budget=1000,
    )
    data = prepare_data(args)
    assert sum(data.train["length"]) == 1000


def test_budget_larger_than_corpus_names_the_token_count(tiny_run):
    with pytest.raises(InputError, match=r"packs to [\d,]+ tokens.*lower `token_budget` to at most"):
        prepare_data(data_args(tiny_run, token_budget=10**9))


def test_missing_and_empty_corpus(tmp_path):
    with pytest.raises(InputError, match="not found"):
        prepare_data(DataArguments(corpus=str(tmp_path / "nothing.jsonl"), token_budget=10))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        prepare_data(DataArguments(corpus=str(empty), token_budget=10))
    with pytest.raises(InputError, match="no corpus"):
        DataArguments(token_budget=10)


def test_wrong_text_column(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"body": "hello"}) + "\n")
    with pytest.raises(InputError, match="no column 'text'"):
        prepare_data(DataArguments(corpus=str(path), token_budget=10, cache_dir=str(tmp_path)))


@pytest.mark.parametrize(
    "field,value", [("token_budget", 0), ("seq_len", -1), ("val_sequences", 0), ("test_sequences", 0)]
)
def test_non_positive_sizes(field, value):
    settings = {"corpus": "x.jsonl", "token_budget": 10, field: value}
    with pytest.raises(InputError, match=field):
        DataArguments(**settings)
