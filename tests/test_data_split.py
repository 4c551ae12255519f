"""The held-out splits: under 'random', validation and test are whole documents held out by a seeded per-document
rule, the same for every run, disjoint from each other, from training and from the tokenizer's training text, drawn
from across an ordered corpus; under 'random' and 'head', every held-out row names the document of its first token."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pytest

from hf_infcompute.data import DataArguments, packing
from hf_infcompute.data.holdout import TEST, VALIDATION, document_splits
from hf_infcompute.data.tokenizer import EOS_TOKEN, PAD_TOKEN
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


def split_documents(meta: dict, split: int) -> set[int]:
    """The documents the packed corpus's `holdout` puts in `split`."""
    return set(np.flatnonzero(document_splits(*meta["holdout"], 0, N_DOCUMENTS) == split).tolist())


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
    val_docs, test_docs = split_documents(meta, VALIDATION), split_documents(meta, TEST)
    assert meta["validation_documents"] == len(val_docs) and meta["test_documents"] == len(test_docs)
    assert 0 < len(val_docs | test_docs) < N_DOCUMENTS // 4 and not val_docs & test_docs
    assert sum(data.train["length"]) == args.token_budget
    assert (len(data.validation), len(data.test)) == (args.val_sequences, args.test_sequences)
    # No held-out document reaches training or the tokenizer; each split holds its own documents only.
    in_validation = markers(data.tokenizer, data.validation["input_ids"])
    in_test = markers(data.tokenizer, data.test["input_ids"])
    in_training = markers(data.tokenizer, data.train["input_ids"])
    assert in_validation and in_validation <= val_docs
    assert in_test and in_test <= test_docs
    assert in_training and not in_training & (val_docs | test_docs)
    assert set(data.validation_documents) <= val_docs and set(data.test_documents) <= test_docs
    seen_by_tokenizer = {int(m) for text in trained_on for m in MARKER.findall(text)}
    assert len(seen_by_tokenizer) > N_DOCUMENTS // 2 and not seen_by_tokenizer & (val_docs | test_docs)
    # An ordered corpus: validation and test documents come from its start and its end, both topics.
    for rows, found in ((data.validation, in_validation), (data.test, in_test)):
        assert min(found) < N_DOCUMENTS // 4 and max(found) > 3 * N_DOCUMENTS // 4
        text = data.tokenizer.decode(np.asarray(rows["input_ids"]).ravel().tolist())
        assert "cats" in text and "dogs" in text


def test_random_split_is_the_same_for_every_budget_and_worker_count(ordered_corpus, tmp_path):
    small = packing.prepare_data(split_args(ordered_corpus, tmp_path, token_budget=1000))
    large = packing.prepare_data(split_args(ordered_corpus, tmp_path, token_budget=6000, preprocessing_num_workers=2))
    assert small.validation["input_ids"] == large.validation["input_ids"]
    assert small.test["input_ids"] == large.test["input_ids"]
    assert small.test_fingerprint == large.test_fingerprint != small.validation_fingerprint
    assert small.validation_documents.tolist() == large.validation_documents.tolist()
    assert small.test_documents.tolist() == large.test_documents.tolist()
    assert large.train["input_ids"][: len(small.train) - 1] == small.train["input_ids"][:-1]
    other_seed = packing.prepare_data(split_args(ordered_corpus, tmp_path, validation_seed=1))
    assert other_seed.validation_fingerprint != small.validation_fingerprint
    assert other_seed.test_fingerprint != small.test_fingerprint
    assert other_seed.cache_key != small.cache_key
    head = packing.prepare_data(split_args(ordered_corpus, tmp_path, validation_split="head"))
    assert head.validation_fingerprint != small.validation_fingerprint
    # More test rows: a new cache entry, more test documents, and validation's documents as they were.
    more_test_args = split_args(ordered_corpus, tmp_path, token_budget=1000, test_sequences=12)
    more_test = packing.prepare_data(more_test_args)
    assert more_test.cache_key != small.cache_key and len(more_test.test) == 12
    meta = packing.pack_corpus(split_args(ordered_corpus, tmp_path, token_budget=1000), small.tokenizer).meta
    more_meta = packing.pack_corpus(more_test_args, more_test.tokenizer).meta
    assert split_documents(more_meta, VALIDATION) == split_documents(meta, VALIDATION)
    assert split_documents(more_meta, TEST) > split_documents(meta, TEST)


def test_a_test_split_beyond_the_holdout_limit_is_refused(ordered_corpus, tmp_path):
    with pytest.raises(InputError, match=r"random test split .* fewer than test_sequences=2000.*lower `val_sequences`"):
        packing.prepare_data(split_args(ordered_corpus, tmp_path, token_budget=1000, test_sequences=2000))


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
    assert streamed.test["input_ids"] == local.test["input_ids"]
    assert streamed.test_documents.tolist() == local.test_documents.tolist()
    assert streamed.train["input_ids"] == local.train["input_ids"]
    meta = packing.pack_corpus(streamed_args, streamed.tokenizer).meta
    held = split_documents(meta, VALIDATION) | split_documents(meta, TEST)
    assert not markers(streamed.tokenizer, streamed.train["input_ids"]) & held


def test_unknown_split_is_refused():
    with pytest.raises(InputError, match="validation_split"):
        DataArguments(corpus="x.jsonl", token_budget=10, validation_split="tail")


@pytest.fixture(scope="module")
def word_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A corpus whose document `i` repeats the word `d<i>` (5 to 40 times), and a word-level tokenizer with one token
    per word: every token names its document."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("words")
    with (folder / "corpus.jsonl").open("w") as handle:
        for i in range(N_DOCUMENTS):
            handle.write(json.dumps({"text": " ".join([f"d{i}"] * int(rng.integers(5, 41)))}) + "\n")
    vocab = {EOS_TOKEN: 0, PAD_TOKEN: 1, **{f"d{i}": i + 2 for i in range(N_DOCUMENTS)}}
    words = Tokenizer(models.WordLevel(vocab, unk_token=PAD_TOKEN))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    tokenizer.save_pretrained(folder / "tokenizer")
    return folder / "corpus.jsonl", folder / "tokenizer"


def documents_of_tokens(rows: list[list[int]]) -> list[list[int]]:
    """Per row, the document of each word token (EOS, id 0, names none: -1)."""
    return [[token - 2 if token > 1 else -1 for token in row] for row in rows]


@pytest.mark.parametrize("split", ["random", "head"])
def test_every_held_out_row_names_the_document_of_its_first_token(word_corpus, tmp_path, split):
    corpus, tokenizer = word_corpus
    args = split_args(corpus, tmp_path, tokenizer=str(tokenizer), validation_split=split, seq_len=16)
    data = packing.prepare_data(args)
    packed = packing.pack_corpus(args, data.tokenizer)
    for rows, documents in ((data.validation, data.validation_documents), (data.test, data.test_documents)):
        assert len(documents) == len(rows)
        for tokens, document in zip(documents_of_tokens(rows["input_ids"]), documents.tolist()):
            if tokens[0] >= 0:
                assert tokens[0] == document
            else:  # the row opens on the EOS that ends `document`: the next word belongs to a later document
                assert next(t for t in tokens if t >= 0) > document
    # Every row of every stream names its first token's document, and no document reaches two splits.
    streams = [packed.rows] + ([packed.validation, packed.test] if split == "random" else [])
    for stream in streams:
        for tokens, document in zip(documents_of_tokens(stream["input_ids"]), stream["document"]):
            assert tokens[0] in (document, -1)
    in_rows = [
        {t for row in documents_of_tokens(rows["input_ids"]) for t in row} - {-1}
        for rows in (data.train, data.validation, data.test)
    ]
    train, validation, test = in_rows
    assert validation and test and not train & validation and not train & test and not validation & test
    if split == "head":  # validation, then test, then training, in corpus order
        assert max(validation) < min(test) and max(test) < min(train)
