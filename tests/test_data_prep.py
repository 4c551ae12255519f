"""Preparing a corpus at any size: the packed rows are the EOS-joined document stream whatever the number of
worker processes, the tokenizing windows or streaming, and concurrent processes build a cache entry once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest

from hf_infcompute.data import DataArguments, packing
from hf_infcompute.data import tokenizer as tokenizer_module
from hf_infcompute.data.corpus import load_corpus
from hf_infcompute.data.tokenizer import TOKENIZE_BATCH_BYTES, TOKENIZE_BATCH_DOCS, map_batch_docs, train_bpe_tokenizer

REPO = Path(__file__).resolve().parents[1]
SEQ_LEN, VAL_SEQUENCES, LIMIT = 64, 8, 150_000


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Path:
    """A small BPE trained on the corpus, used as a pretrained tokenizer so that every preparation shares it."""
    texts = [json.loads(line)["text"] for line in (corpus_dir / "part-05.jsonl").open().readlines()[:200]]
    folder = tmp_path_factory.mktemp("tokenizer")
    train_bpe_tokenizer(texts, 512).save_pretrained(folder)
    return folder


def prep_args(corpus_dir: Path, tokenizer_dir: Path, cache_dir: Path, **changes) -> DataArguments:
    settings = {
        "corpus": str(corpus_dir),
        "tokenizer": str(tokenizer_dir),
        "cache_dir": str(cache_dir),
        "seq_len": SEQ_LEN,
        "val_sequences": VAL_SEQUENCES,
        "token_budget": 10_000,
        "max_corpus_tokens": LIMIT,
        "preprocessing_num_workers": 1,
        "validation_split": "head",  # rows in stream order; the random split: tests/test_data_split.py
    }
    return DataArguments(**{**settings, **changes})


def reference_stream(args: DataArguments) -> tuple[np.ndarray, np.ndarray, dict]:
    """The former packing, written plainly: documents in order, each followed by EOS, cut into rows."""
    tokenizer = packing.prepare_tokenizer(args)[0]
    stream, ends = [], []
    for path in sorted(Path(args.corpus).glob("*.jsonl")):
        for line in path.open():
            stream += tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"]
            stream.append(tokenizer.eos_token_id)
            ends.append(len(stream))
            if len(stream) >= LIMIT:
                n_rows = LIMIT // SEQ_LEN
                rows = np.asarray(stream[: n_rows * SEQ_LEN], dtype=np.int32).reshape(n_rows, SEQ_LEN)
                # The document holding each row's first token.
                documents = np.searchsorted(ends, np.arange(n_rows) * SEQ_LEN, side="right")
                return rows, documents, {"documents": len(ends), "rows": n_rows}
    raise AssertionError("the corpus holds fewer tokens than LIMIT")


@pytest.mark.parametrize("mode", ["1 worker", "2 workers", "streamed", "small map batches"])
def test_packed_rows_are_the_document_stream(mode, corpus_dir, tokenizer_dir, tmp_path, monkeypatch):
    """Rows do not depend on the worker count, the tokenizing windows (here of 50 documents), the tokenizing map's
    batches (here of a few documents) or streaming."""
    # A fresh `datasets` cache, so that the corpus files are converted to Arrow by as many processes as asked.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    monkeypatch.setattr(packing, "FIRST_WINDOW_DOCS", 50)
    workers = 2 if mode == "2 workers" else 1
    args = prep_args(corpus_dir, tokenizer_dir, tmp_path / "cache", preprocessing_num_workers=workers)
    if mode == "streamed":
        monkeypatch.setattr(packing, "load_corpus", lambda a: load_corpus(a).to_iterable_dataset())
    if mode == "small map batches":
        monkeypatch.setattr(tokenizer_module, "TOKENIZE_BATCH_BYTES", 10_000)
    packed = packing.pack_corpus(args, packing.prepare_tokenizer(args)[0])
    expected_rows, expected_documents, expected_meta = reference_stream(args)
    np.testing.assert_array_equal(np.asarray(packed.rows["input_ids"], dtype=np.int32), expected_rows)
    np.testing.assert_array_equal(np.asarray(packed.rows["document"]), expected_documents)
    assert {key: packed.meta[key] for key in expected_meta} == expected_meta
    assert not list((tmp_path / "cache" / "packed").glob("*/tokenized")), "the tokenized documents were kept"


def test_map_batches_hold_about_a_fixed_number_of_bytes():
    """The tokenizing map's batch holds about TOKENIZE_BATCH_BYTES of text, at most TOKENIZE_BATCH_DOCS documents and
    at least one, so that a worker's memory does not grow with the documents' length."""

    def batch_docs(texts: list[str]) -> int:
        return map_batch_docs(datasets.Dataset.from_dict({"body": texts}), "body")

    assert batch_docs(["x" * 1024] * 10 + ["y" * 3072] * 10) == TOKENIZE_BATCH_BYTES // 2048
    assert batch_docs(["é" * 512] * 10) == TOKENIZE_BATCH_BYTES // 1024  # bytes, not characters
    assert batch_docs(["ab"] * 10) == TOKENIZE_BATCH_DOCS
    assert batch_docs(["x" * (2 * TOKENIZE_BATCH_BYTES)] * 3) == 1
    # rows picked by an indices mapping: the mean size of the table under them, not its bytes over the rows picked
    picked = datasets.Dataset.from_dict({"body": ["x" * 1024] * 10 + ["y" * 3072] * 10}).select([0, 15, 3])
    assert map_batch_docs(picked, "body") == TOKENIZE_BATCH_BYTES // 2048


CHILD = """
import hashlib, json, logging, os, sys, time
from pathlib import Path
import numpy as np
logging.basicConfig(level=logging.INFO)
from hf_infcompute.data import DataArguments, packing
settings, marker, go = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
tokenize = packing.tokenize_documents
def tokenize_once_allowed(*args, **kwargs):
    with marker.open("a") as f:
        f.write(f"{os.getpid()}\\n")
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return tokenize(*args, **kwargs)
packing.tokenize_documents = tokenize_once_allowed
data = packing.prepare_data(DataArguments(**settings))
train = np.asarray(data.train["input_ids"], dtype=np.int32).tobytes()
print(json.dumps({"validation": data.validation_fingerprint, "train": hashlib.sha256(train).hexdigest()}))
"""


def _wait_for(condition, what: str, processes: list[subprocess.Popen], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if any(p.poll() not in (None, 0) for p in processes) or time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def test_concurrent_preparations_tokenize_once(corpus_dir, tokenizer_dir, tmp_path):
    """Two processes prepare one cold cache entry: one tokenizes while the other waits on the lock, then reads."""
    args = prep_args(corpus_dir, tokenizer_dir, tmp_path / "cache")
    keys = (
        "corpus",
        "tokenizer",
        "cache_dir",
        "seq_len",
        "val_sequences",
        "token_budget",
        "max_corpus_tokens",
        "validation_split",
    )
    settings = {key: getattr(args, key) for key in keys}
    marker, go = tmp_path / "tokenized-by", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", CHILD, json.dumps(settings), str(marker), str(go)]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    processes: list[subprocess.Popen] = []

    def start(log: Path) -> None:
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True))

    try:
        start(logs[0])
        _wait_for(marker.exists, "the first process to start tokenizing", processes)
        start(logs[1])
        waiting = "waiting for another process to build"
        _wait_for(lambda: waiting in logs[1].read_text(), "the second process to wait on the lock", processes)
        go.touch()
        outputs = [p.communicate(timeout=300)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert [p.returncode for p in processes] == [0, 0], [log.read_text()[-2000:] for log in logs]
    assert len(marker.read_text().split()) == 1, "the corpus was tokenized more than once"
    first, second = (json.loads(out.strip().splitlines()[-1]) for out in outputs)
    assert first == second
