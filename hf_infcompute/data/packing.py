"""Tokenize a corpus once, pack it into fixed-length sequences, and cut the validation, test and training splits.

The packed stream is the corpus's documents in order, each followed by EOS, cut into rows of `seq_len` tokens. Every
row records `document`: the number (in corpus order, from 0) of the document holding its first token, so that
held-out rows can be grouped by document.
- Validation: the first `val_sequences` rows; test: the `test_sequences` rows after them. Both depend only on the
  corpus, tokenizer and `seq_len`, so they are identical for every run whatever D, the model or the seeds.
- Training: exactly D tokens, the rows after test; when D is not a multiple of `seq_len`, the last row is cut short
  (its `length` says how many tokens count).
The splits share no document: the rows of the document that a split's last row runs into are left out, and the next
split starts at the first row that opens in a later document.
A trained BPE tokenizer learns only from text after a safety margin past the validation and test documents, and
preparing the data checks that the held-out documents end before that text begins.

With `validation_split: random`, a seeded per-document rule (`holdout.py`) holds whole documents out instead: the
validation and the test documents are packed into a stream each, validation is `val_sequences` rows spread evenly
over its stream and test `test_sequences` rows spread over its own, training rows are packed from the other documents
only, and a trained BPE tokenizer learns from the other documents only.

Memory stays bounded whatever the corpus size: `datasets` tokenizes the documents into Arrow files on disk
(`preprocessing_num_workers` processes), the rows are cut from them a batch of documents at a time and appended to an
Arrow file, and training memory-maps that file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.arrow_writer import ArrowWriter
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from hf_infcompute.data.arguments import DataArguments
from hf_infcompute.data.cache import cache_root, read_built
from hf_infcompute.data.corpus import corpus_fingerprint, load_corpus
from hf_infcompute.data.holdout import (
    MAX_HOLDOUT_FRACTION,
    TEST,
    TRAIN,
    VALIDATION,
    document_splits,
    holdout_fractions,
    spread_rows,
)
from hf_infcompute.data.tokenizer import (
    TOKENIZE_BATCH_DOCS,
    check_text,
    load_pretrained_tokenizer,
    skip_chars,
    take_chars,
    tokenize_documents,
    tokenize_stream,
    tokenizer_fingerprint,
    train_bpe_tokenizer,
)
from hf_infcompute.errors import InputError

logger = logging.getLogger(__name__)

# No byte-level BPE on natural text averages more than this many characters per token; skipping this many
# characters per held-out (validation and test) token before training a tokenizer keeps it off the held-out text.
MAX_CHARS_PER_TOKEN = 8
# Under `max_corpus_tokens`, a corpus is tokenized in windows of documents: the first this long, each next one sized
# from the tokens per document so far, with this margin, to reach the limit.
FIRST_WINDOW_DOCS = TOKENIZE_BATCH_DOCS
WINDOW_MARGIN = 1.1
META_FILE = "packing.json"
ROWS_FILE = "rows.arrow"
# Under a random split, the held-out documents' rows, a file per split.
SPLIT_FILES = {VALIDATION: "validation.arrow", TEST: "test.arrow"}
TRAINED_FROM_FILE = "trained_from.json"
# The layout of a packed cache entry, part of its key (1: a `save_to_disk` folder; 2: one Arrow file of rows; 3: rows
# carry their `document`, test rows beside validation's).
PACKING_FORMAT = 3
# The column of packed rows naming the document that holds a row's first token.
DOCUMENT_COLUMN = "document"
# (validation seed, validation fraction, test fraction) of a random split (`holdout.document_splits`).
Holdout = tuple[int, float, float]


def _fingerprint(rows: datasets.Dataset) -> str:
    return hashlib.sha256(np.asarray(rows["input_ids"], dtype=np.int32).tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class PretrainingData:
    """The splits of one run: `train` holds exactly `token_budget` tokens, `validation` `val_sequences` and `test`
    `test_sequences` full rows. `validation_documents` and `test_documents` give, per held-out row, the number (in
    corpus order, from 0) of the document holding its first token: rows of one document are not independent."""

    train: datasets.Dataset
    validation: datasets.Dataset
    test: datasets.Dataset
    validation_documents: np.ndarray
    test_documents: np.ndarray
    tokenizer: PreTrainedTokenizerBase
    token_budget: int
    corpus_tokens: int
    cache_key: str

    @property
    def validation_fingerprint(self) -> str:
        """A short hash of the validation tokens: equal fingerprints mean runs were scored on the same text."""
        return _fingerprint(self.validation)

    @property
    def test_fingerprint(self) -> str:
        """A short hash of the test tokens: equal fingerprints mean runs were reported on the same text."""
        return _fingerprint(self.test)


@dataclass(frozen=True)
class PackedCorpus:
    """A packed cache entry: `rows` (the stream's rows; under a random split, of the training documents only),
    `validation` and `test` (the held-out documents' rows of each split, under a random split only), its bookkeeping
    `meta` and its `key`. Every row has a `document` column."""

    rows: datasets.Dataset
    validation: datasets.Dataset | None
    test: datasets.Dataset | None
    meta: dict
    key: str


def _texts(
    dataset: datasets.Dataset | datasets.IterableDataset, column: str, holdout: Holdout | None = None
) -> Iterator[str]:
    """The documents' texts in order; with `holdout`, the training documents' only."""
    index = 0
    for batch in dataset.iter(batch_size=TOKENIZE_BATCH_DOCS):
        texts = batch[column]
        keep = document_splits(*holdout, index, len(texts)) == TRAIN if holdout else np.ones(len(texts), dtype=bool)
        for offset, text in enumerate(texts):
            text = check_text(text, index + offset)
            if keep[offset]:
                yield text
        index += len(texts)


def _holdout(args: DataArguments, corpus: datasets.Dataset | datasets.IterableDataset) -> Holdout | None:
    """(validation seed, validation fraction, test fraction of the documents) under a random split, else None.

    The fractions are sized from a lower bound on the tokens read: `max_corpus_tokens` and, for a corpus read whole,
    its characters over `MAX_CHARS_PER_TOKEN`. They depend on the corpus and the held-out sizes only.
    """
    if args.validation_split != "random":
        return None
    tokens = args.max_corpus_tokens or math.inf
    if isinstance(corpus, datasets.Dataset):
        chars = pc.sum(pc.utf8_length(corpus.data.column(args.text_column))).as_py() or 0
        tokens = min(tokens, chars / MAX_CHARS_PER_TOKEN)
    val_tokens, test_tokens = args.val_sequences * args.seq_len, args.test_sequences * args.seq_len
    return args.validation_seed, *holdout_fractions(val_tokens, test_tokens, tokens)


def _held_out_tokens(args: DataArguments) -> int:
    """Tokens of the validation and test rows together."""
    return (args.val_sequences + args.test_sequences) * args.seq_len


def _split_key(args: DataArguments) -> str:
    """The part of a cache key that names a random split (empty for 'head': its packed rows do not depend on the
    held-out sizes, which `split_rows` cuts from them)."""
    if args.validation_split != "random":
        return ""
    return f"-random{args.validation_seed}-v{args.val_sequences * args.seq_len}-t{args.test_sequences * args.seq_len}"


def _margin_chars(args: DataArguments) -> int:
    return _held_out_tokens(args) * MAX_CHARS_PER_TOKEN


def prepare_tokenizer(args: DataArguments) -> tuple[PreTrainedTokenizerBase, dict]:
    """The run's tokenizer and what it was trained from: `first_document`, the index of the first document it was
    trained on (0 for a pretrained one), and under a random split the `holdout` (seed, validation and test fractions)
    whose held-out documents it never saw."""
    if args.tokenizer != "bpe":
        return load_pretrained_tokenizer(args.tokenizer), {"first_document": 0}
    key = f"bpe-{corpus_fingerprint(args)}-v{args.vocab_size}-c{args.tokenizer_train_chars}"
    key += _split_key(args) if args.validation_split == "random" else f"-m{_margin_chars(args)}"
    folder = cache_root(args.cache_dir) / "tokenizers" / key

    def build(tmp: Path) -> None:
        corpus = load_corpus(args)
        holdout = _holdout(args, corpus)
        if holdout:
            first_doc, rest = 0, _texts(corpus, args.text_column, holdout)
        else:
            first_doc, rest = skip_chars(_texts(corpus, args.text_column), _margin_chars(args))
        texts = list(take_chars(rest, args.tokenizer_train_chars))
        if not texts:
            raise InputError(
                f"corpus {args.corpus!r} is too small to train a tokenizer beyond its validation and test splits; "
                "add text, lower `val_sequences` or `test_sequences`, or give a pretrained `tokenizer`"
            )
        train_bpe_tokenizer(texts, args.vocab_size).save_pretrained(tmp)
        trained_from = {"first_document": first_doc, **({"holdout": list(holdout)} if holdout else {})}
        (tmp / TRAINED_FROM_FILE).write_text(json.dumps(trained_from))

    def read(folder: Path) -> tuple[PreTrainedTokenizerBase, dict]:
        return PreTrainedTokenizerFast.from_pretrained(folder), json.loads((folder / TRAINED_FROM_FILE).read_text())

    return read_built(folder, build, read)


def _document_batches(
    args: DataArguments, tokenizer: PreTrainedTokenizerBase, workdir: Path
) -> Iterator[pa.ChunkedArray]:
    """The corpus's documents as token ids ending in EOS, in corpus order, a batch of documents at a time.

    Under `max_corpus_tokens`, a local or downloaded corpus is tokenized window by window (see `FIRST_WINDOW_DOCS`),
    so that little more than the limit is tokenized; a streamed one is tokenized as it is read.
    """
    corpus = load_corpus(args)
    if isinstance(corpus, datasets.IterableDataset):
        tokenized = tokenize_stream(corpus, tokenizer, args.text_column).with_format("arrow")
        for table in tokenized.iter(batch_size=TOKENIZE_BATCH_DOCS):
            yield table["input_ids"]
        return
    limit = args.max_corpus_tokens
    start = tokens = 0
    size = FIRST_WINDOW_DOCS if limit else len(corpus)
    while start < len(corpus):
        stop = min(start + size, len(corpus))
        window = tokenize_documents(
            corpus.select(range(start, stop)),
            tokenizer,
            args.text_column,
            num_proc=args.preprocessing_num_workers,
            cache_file=workdir / f"tokens-{start}.arrow",
            first_document=start,
        )
        for table in window.with_format("arrow").iter(batch_size=TOKENIZE_BATCH_DOCS):
            tokens += int(pc.sum(pc.list_value_length(table["input_ids"])).as_py())
            yield table["input_ids"]
        start = stop
        if limit:
            size = max(FIRST_WINDOW_DOCS, math.ceil(WINDOW_MARGIN * (limit - tokens) * start / max(tokens, 1)))


class _RowWriter:
    """Cuts a stream of documents into rows of `seq_len` tokens, appended to an Arrow file (at most `max_rows`), each
    with the number of the document holding its first token (column `document`)."""

    def __init__(self, path: Path, seq_len: int, max_rows: float) -> None:
        features = datasets.Features(
            {
                "input_ids": datasets.List(datasets.Value("int32"), length=seq_len),
                DOCUMENT_COLUMN: datasets.Value("int64"),
            }
        )
        self.writer = ArrowWriter(features=features, path=str(path))
        self.seq_len, self.max_rows = seq_len, max_rows
        self.carry = np.empty(0, dtype=np.int32)
        # The documents with tokens in `carry` (the first may have none left): where each starts in it, its number.
        self.carry_starts = np.empty(0, dtype=np.int64)
        self.carry_documents = np.empty(0, dtype=np.int64)
        self.rows = 0

    def add(self, tokens: np.ndarray, lengths: np.ndarray, documents: np.ndarray) -> None:
        """Append documents numbered `documents`, of `lengths` tokens each, whose tokens in order are `tokens`."""
        starts = np.concatenate([self.carry_starts, len(self.carry) + np.cumsum(lengths) - lengths])
        numbers = np.concatenate([self.carry_documents, documents])
        stream = np.concatenate([self.carry, tokens])
        n_rows = int(min(len(stream) // self.seq_len, self.max_rows - self.rows))
        cut = n_rows * self.seq_len
        if n_rows:
            packed = pa.FixedSizeListArray.from_arrays(pa.array(stream[:cut]), self.seq_len)
            first_tokens = np.arange(n_rows) * self.seq_len
            holding = numbers[np.searchsorted(starts, first_tokens, side="right") - 1]
            self.writer.write_table(pa.table({"input_ids": packed, DOCUMENT_COLUMN: pa.array(holding, pa.int64())}))
        self.rows += n_rows
        first = max(int(np.searchsorted(starts, cut, side="right")) - 1, 0)  # the document holding token `cut`
        self.carry = stream[cut:]
        self.carry_starts = np.maximum(starts[first:] - cut, 0)
        self.carry_documents = numbers[first:]

    def close(self) -> int:
        self.writer.finalize()
        self.writer.close()
        return self.rows


def _flat(ids: pa.ChunkedArray) -> np.ndarray:
    return pc.list_flatten(ids).to_numpy()


def _write_rows(
    documents: Iterator[pa.ChunkedArray],
    args: DataArguments,
    folder: Path,
    meta: dict,
    holdout: Holdout | None = None,
) -> int:
    """Cut the stream of `documents` into rows of `seq_len` tokens, appended to `folder`/ROWS_FILE a batch at a
    time, up to `max_corpus_tokens` tokens read; fill `meta` with the document bookkeeping. With `holdout`, the
    validation and test documents go to `folder`/SPLIT_FILES instead. Returns the number of rows in ROWS_FILE."""
    seq_len = args.seq_len
    limit = args.max_corpus_tokens or math.inf
    max_rows = args.max_corpus_tokens // seq_len if args.max_corpus_tokens else math.inf
    writers = {TRAIN: _RowWriter(folder / ROWS_FILE, seq_len, max_rows)}
    if holdout:
        writers.update({split: _RowWriter(folder / name, seq_len, max_rows) for split, name in SPLIT_FILES.items()})
    counts = dict.fromkeys(writers, 0)
    seen = n_documents = 0
    progress = tqdm(desc="tokenizing and packing corpus", unit=" tok", unit_scale=True, total=args.max_corpus_tokens)
    for ids in documents:
        lengths = pc.list_value_length(ids).to_numpy().astype(np.int64)
        ends = seen + np.cumsum(lengths)
        # Documents up to the one that reaches the limit count; the rest of the batch is not read.
        taken = int(np.searchsorted(ends, limit)) + 1 if ends[-1] >= limit else len(ends)
        ids, lengths = ids.slice(0, taken), lengths[:taken]
        numbers = np.arange(n_documents, n_documents + taken, dtype=np.int64)
        splits = document_splits(*holdout, n_documents, taken) if holdout else np.full(taken, TRAIN, dtype=np.int8)
        for split, writer in writers.items():
            mask = splits == split
            chosen = ids.filter(pa.array(mask)) if holdout else ids
            writer.add(_flat(chosen), lengths[mask], numbers[mask])
            counts[split] += int(mask.sum())
        n_documents += taken
        progress.update(ends[taken - 1] - seen)
        seen = int(ends[taken - 1])
        if seen >= limit:
            break
    progress.close()
    meta["documents"] = n_documents
    if holdout:
        for split, name in ((VALIDATION, "validation"), (TEST, "test")):
            meta.update({f"{name}_documents": counts[split], f"{name}_rows": writers[split].close()})
        meta["holdout"] = list(holdout)
    return writers[TRAIN].close()


def _check_held_out_rows(args: DataArguments, meta: dict) -> None:
    """Refuse a random split whose validation or test documents hold fewer rows than asked for."""
    for name in ("validation", "test"):
        wanted = getattr(args, "val_sequences" if name == "validation" else "test_sequences")
        if meta[f"{name}_rows"] < wanted:
            raise InputError(
                f"the random {name} split of corpus {args.corpus!r} holds {meta[f'{name}_documents']:,} documents, "
                f"{meta[f'{name}_rows']} rows of {args.seq_len} tokens, fewer than "
                f"{'val' if name == 'validation' else 'test'}_sequences={wanted} (validation and test together hold "
                f"out at most {MAX_HOLDOUT_FRACTION:.0%} of the documents): lower `val_sequences` or "
                "`test_sequences`, raise `max_corpus_tokens`, add data, or set `validation_split: head`"
            )


def pack_corpus(args: DataArguments, tokenizer: PreTrainedTokenizerBase) -> PackedCorpus:
    """The packed corpus (rows of `seq_len` tokens), memory-mapped from the on-disk cache, built on first use."""
    key = f"{corpus_fingerprint(args)}-{tokenizer_fingerprint(tokenizer)}-L{args.seq_len}-p{PACKING_FORMAT}"
    key += _split_key(args)
    folder = cache_root(args.cache_dir) / "packed" / key

    def build(tmp: Path) -> None:
        meta: dict = {}
        started = time.perf_counter()
        workdir = tmp / "tokenized"
        workdir.mkdir()
        holdout = _holdout(args, load_corpus(args))
        rows = _write_rows(_document_batches(args, tokenizer, workdir), args, tmp, meta, holdout)
        shutil.rmtree(workdir, ignore_errors=True)
        if not rows:
            raise InputError(f"corpus {args.corpus!r} holds fewer than {args.seq_len} tokens: nothing to train on")
        if holdout:
            _check_held_out_rows(args, meta)
        seconds = time.perf_counter() - started
        packed_tokens = (rows + meta.get("validation_rows", 0) + meta.get("test_rows", 0)) * args.seq_len
        logger.info(
            "packed %s documents into %s rows of %s tokens in %.1f s (%.0f tokens/s)",
            f"{meta['documents']:,}",
            f"{rows:,}",
            args.seq_len,
            seconds,
            packed_tokens / seconds,
        )
        meta.update(rows=rows, seq_len=args.seq_len, eos_token_id=tokenizer.eos_token_id)
        (tmp / META_FILE).write_text(json.dumps(meta))

    def read(folder: Path) -> PackedCorpus:
        meta = json.loads((folder / META_FILE).read_text())
        held = {
            split: datasets.Dataset.from_file(str(folder / name)) if "holdout" in meta else None
            for split, name in SPLIT_FILES.items()
        }
        rows = datasets.Dataset.from_file(str(folder / ROWS_FILE))
        return PackedCorpus(rows, held[VALIDATION], held[TEST], meta, key)

    return read_built(folder, build, read)


def _head_rows(packed: PackedCorpus, args: DataArguments) -> tuple[int, int, int]:
    """Under the 'head' split: the first row of test, the first row of training, and the last document that may hold
    validation or test tokens. A split starts at the first row opening in a document after the one holding the first
    token past the split before it, so no document reaches two splits."""
    documents = packed.rows.data.column(DOCUMENT_COLUMN).to_numpy()

    def after(row: int) -> int:
        if row >= len(documents):
            return len(documents)
        return int(np.searchsorted(documents, documents[row], side="right"))

    test_start = after(args.val_sequences)
    test_end = test_start + args.test_sequences
    return test_start, after(test_end), int(documents[min(test_end, len(documents) - 1)])


def split_rows(
    packed: PackedCorpus, args: DataArguments
) -> tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset]:
    """Cut validation, test and exactly `token_budget` training tokens: under the 'head' split, validation is the
    first rows, test the rows after and training the rows after both (`_head_rows`); under 'random', validation and
    test are rows spread over their held-out streams and training the first rows of the training documents' stream.
    Validation and test keep their `document` column; training has none."""
    seq_len, n_val, n_test = args.seq_len, args.val_sequences, args.test_sequences
    if packed.validation is None:
        test_start, n_skip, _ = _head_rows(packed, args)
    else:
        test_start, n_skip = 0, 0
    available = (len(packed.rows) - n_skip) * seq_len
    if args.token_budget > available:
        if n_skip:
            packs = (
                f"packs to {len(packed.rows) * seq_len:,} tokens; validation and test take {n_skip * seq_len:,} "
                f"(({n_val} + {n_test}) x {seq_len} and the documents cut at their ends)"
            )
        else:
            packs = f"packs to {len(packed.rows) * seq_len:,} tokens beside its held-out validation and test documents"
        raise InputError(
            f"corpus {args.corpus!r} {packs}, leaving {max(available, 0):,} for training, fewer than "
            f"token_budget={args.token_budget:,}: lower `token_budget` to at most {max(available, 0):,}, lower "
            "`val_sequences` or `test_sequences`, or add data"
        )
    n_train = math.ceil(args.token_budget / seq_len)
    lengths = [seq_len] * n_train
    lengths[-1] = args.token_budget - (n_train - 1) * seq_len
    if packed.validation is None:
        validation = packed.rows.select(range(n_val))
        test = packed.rows.select(range(test_start, test_start + n_test))
    else:
        validation = packed.validation.select(spread_rows(len(packed.validation), n_val))
        test = packed.test.select(spread_rows(len(packed.test), n_test))
    train = packed.rows.select(range(n_skip, n_skip + n_train)).remove_columns(DOCUMENT_COLUMN)
    return train.add_column("length", lengths), validation, test


def _check_tokenizer_never_saw_held_out(trained_from: dict, packed: PackedCorpus, args: DataArguments) -> None:
    if packed.validation is not None:
        if "holdout" in trained_from and trained_from["holdout"] != packed.meta["holdout"]:
            raise InputError(
                "the tokenizer was trained with another validation and test holdout than the packed corpus's; remove "
                "the tokenizer and packed folders of this corpus from the cache (`cache_dir`) and run again"
            )
        return
    first_doc = trained_from["first_document"]
    if first_doc and _head_rows(packed, args)[2] >= first_doc:
        raise InputError(
            "the validation and test splits would overlap the tokenizer's training text; lower `val_sequences` or "
            "`test_sequences`, or give a pretrained `tokenizer`"
        )


def _documents_beside(rows: datasets.Dataset) -> tuple[datasets.Dataset, np.ndarray]:
    """Held-out rows without their `document` column (what models are handed), and that column."""
    return rows.remove_columns(DOCUMENT_COLUMN), np.asarray(rows[DOCUMENT_COLUMN], dtype=np.int64)


def prepare_data(args: DataArguments) -> PretrainingData:
    """Tokenizer, validation and test splits and the exact-D training split of a run, from the cache when possible."""
    tokenizer, trained_from = prepare_tokenizer(args)
    packed = pack_corpus(args, tokenizer)
    train, validation, test = split_rows(packed, args)
    _check_tokenizer_never_saw_held_out(trained_from, packed, args)
    validation, validation_documents = _documents_beside(validation)
    test, test_documents = _documents_beside(test)
    held_out_rows = sum(len(split) for split in (packed.validation, packed.test) if split is not None)
    return PretrainingData(
        train=train,
        validation=validation,
        test=test,
        validation_documents=validation_documents,
        test_documents=test_documents,
        tokenizer=tokenizer,
        token_budget=args.token_budget,
        corpus_tokens=(len(packed.rows) + held_out_rows) * args.seq_len,
        cache_key=packed.key,
    )
