"""Every bad corpus ends `hf-infcompute pretrain` with exit code 2 and one paragraph naming the file and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import yaml

from hf_infcompute.cli.main import main
from hf_infcompute.data import DataArguments, packing
from hf_infcompute.errors import InputError

DOCUMENTS = [f"Document {i} is about {'cats' if i % 2 else 'dogs'} and the habits they keep." for i in range(60)]


def write_jsonl(path: Path, texts: list, tail: str = "") -> Path:
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts) + tail)
    return path


def pretrain(tmp_path: Path, corpus: Path | str, capsys, workers: int = 1) -> str:
    """Run `pretrain` on `corpus`; assert exit code 2 and no traceback; return stderr."""
    settings = {
        "corpus": str(corpus),
        "cache_dir": str(tmp_path / "cache"),
        "vocab_size": 300,
        "seq_len": 16,
        "val_sequences": 2,
        "token_budget": 64,
        "preset": "tiny-0.5m",
        "num_train_epochs": 1,
        "per_device_train_batch_size": 4,
        "precision": "fp32",
        "disable_tqdm": True,
        "preprocessing_num_workers": workers,
    }
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(settings))
    code = main(["pretrain", str(recipe), "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2, captured.err[-3000:]
    assert "Traceback" not in captured.out + captured.err
    return captured.err


@pytest.mark.parametrize("workers", [1, 2])
def test_cut_off_last_line_names_file_and_line(tmp_path, capsys, workers):
    (tmp_path / "corpus").mkdir()
    write_jsonl(tmp_path / "corpus" / "a.jsonl", DOCUMENTS)
    bad = write_jsonl(tmp_path / "corpus" / "b.jsonl", DOCUMENTS[:10], tail='{"text": "cut off in the mid')
    err = pretrain(tmp_path, tmp_path / "corpus", capsys, workers)
    assert f"corpus file {bad}: line 11 is not valid JSON" in err
    assert "fix or delete that line" in err


def test_random_bytes_named_jsonl(tmp_path, capsys):
    bad = tmp_path / "noise.jsonl"
    bad.write_bytes(bytes(range(256)) * 8)
    err = pretrain(tmp_path, bad, capsys)
    assert f"corpus file {bad}: line 1 is not" in err
    assert "remove the file from the corpus" in err


def test_null_text_names_file_line_and_document(tmp_path, capsys):
    bad = write_jsonl(tmp_path / "c.jsonl", DOCUMENTS[:7] + [None] + DOCUMENTS[8:])
    err = pretrain(tmp_path, bad, capsys)
    assert f"corpus file {bad}, line 8: document 7" in err
    assert "drop those documents or fill their `text`" in err


def test_null_text_in_a_streamed_corpus_names_the_document(tmp_path, monkeypatch):
    corpus = write_jsonl(tmp_path / "c.jsonl", DOCUMENTS[:30] + [None] + DOCUMENTS[31:])
    stream = datasets.load_dataset("json", data_files=str(corpus), split="train", streaming=True)
    monkeypatch.setattr(packing, "load_corpus", lambda args: stream)
    args = DataArguments(
        corpus=str(corpus),
        cache_dir=str(tmp_path / "cache"),
        vocab_size=300,
        seq_len=16,
        val_sequences=2,
        token_budget=64,
        tokenizer_train_chars=10_000,
    )
    with pytest.raises(InputError, match=r"document 30 \(counting from 0\).*drop that document or fill its text"):
        packing.prepare_data(args)


@pytest.mark.parametrize("case", ["no files", "zero bytes", "blank lines", "empty texts"])
def test_empty_corpus_says_what_to_do(tmp_path, capsys, case):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    if case == "zero bytes":
        (corpus / "a.jsonl").write_text("")
    elif case == "blank lines":
        (corpus / "a.jsonl").write_text("\n\n\n")
    elif case == "empty texts":
        write_jsonl(corpus / "a.jsonl", [""] * 5)
    err = pretrain(tmp_path, corpus, capsys)
    assert str(corpus) in err
    assert "one JSON object per line with a `text` field" in err


def test_missing_corpus_path(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "corpus.jsonl"
    err = pretrain(tmp_path, missing, capsys)
    assert f"corpus {str(missing)!r} not found" in err
    assert "check the path in `corpus`" in err


def test_text_column_of_numbers(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": i, "body": text}) + "\n" for i, text in enumerate(DOCUMENTS)))
    err = pretrain(tmp_path, corpus, capsys)
    assert "column 'text' holds int64 values, not text; set `text_column`" in err


def test_unreachable_hub_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = pretrain(tmp_path, "nobody-here/no-such-corpus", capsys)
    assert "'nobody-here/no-such-corpus' is neither a local path nor a hub dataset that can be reached" in err
