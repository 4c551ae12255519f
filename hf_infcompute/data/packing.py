"""Tokenize a corpus once, pack it into fixed-length sequences, and cut the validation and training splits.

The packed stream is the corpus's documents in order, each followed by EOS, cut into rows of `seq_len` tokens.
- Validation: the first `val_sequences` rows. It depends only on the corpus, tokenizer and `seq_len`, so it is
  identical for every run whatever D, the model or the seeds.
- Training: exactly D tokens, the rows after validation; when D is not a multiple of `seq_len`, the last row is cut
  short (its `length` says how many tokens count).
A trained BPE tokenizer learns only from text after a safety margin past the validation documents, and packing checks
that the validation rows end before that text begins.

With `validation_split: random`, a seeded per-document rule (`holdout.py`) holds whole documents out instead: they
are packed into a stream of their own, validation is `val_sequences` rows spread evenly over it, training rows are
packed from the other documents only, and a trained BPE tokenizer learns from the other documents only.

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
from hf_infcompute.data.holdout import held_out, holdout_fraction, spread_rows
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
# characters per validation token before training a tokenizer keeps it off the validation text.
MAX_CHARS_PER_TOKEN = 8
# Under `max_corpus_tokens`, a corpus is tokenized in windows of documents: the first this long, each next one sized
# from the tokens per document so far, with this margin, to reach the limit.
FIRST_WINDOW_DOCS = TOKENIZE_BATCH_DOCS
WINDOW_MARGIN = 1.1
META_FILE = "packing.json"
ROWS_FILE = "rows.arrow"
HELD_OUT_FILE = "held_out.arrow"
TRAINED_FROM_FILE = "trained_from.json"
# The layout of a packed cache entry, part of its key (1: a `save_to_disk` folder; 2: one Arrow file of rows).
PACKING_FORMAT = 2


@dataclass(frozen=True)
class PretrainingData:
    """The splits of one run: `train` holds exactly `token_budget` tokens, `validation` `val_sequences` full rows."""

    train: datasets.Dataset
    validation: datasets.Dataset
    tokenizer: PreTrainedTokenizerBase
    token_budget: int
    corpus_tokens: int
    cache_key: str

    @property
    def validation_fingerprint(self) -> str:
        """A short hash of the validation tokens: equal fingerprints mean runs were scored on the same text."""
        tokens = np.asarray(self.validation["input_ids"], dtype=np.int32)
        return hashlib.sha256(tokens.tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class PackedCorpus:
    """A packed cache entry: `rows` (the stream's rows; under a random split, of the documents not held out),
    `held_out` (the held-out documents' rows, under a random split only), its bookkeeping `meta` and its `key`."""

    rows: datasets.Dataset
    held_out: datasets.Dataset | None
    meta: dict
    key: str


def _texts(
    dataset: datasets.Dataset | datasets.IterableDataset, column: str, holdout: tuple[int, float] | None = None
) -> Iterator[str]:
    """The documents' texts in order; with `holdout` (validation seed, fraction), those not held out only."""
    index = 0
    for batch in dataset.iter(batch_size=TOKENIZE_BATCH_DOCS):
        texts = batch[column]
        keep = ~held_out(*holdout, index, len(texts)) if holdout else np.ones(len(texts), dtype=bool)
        for offset, text in enumerate(texts):
            text = check_text(text, index + offset)
            if keep[offset]:
                yield text
        index += len(texts)


def _holdout(args: DataArguments, corpus: datasets.Dataset | datasets.IterableDataset) -> tuple[int, float] | None:
    """(validation seed, fraction of documents held out) under a random split, else None.

    The fraction is sized from a lower bound on the tokens read: `max_corpus_tokens` and, for a corpus read whole,
    its characters over `MAX_CHARS_PER_TOKEN`. It depends on the corpus and the validation size only.
    """
    if args.validation_split != "random":
        return None
    tokens = args.max_corpus_tokens or math.inf
    if isinstance(corpus, datasets.Dataset):
        chars = pc.sum(pc.utf8_length(corpus.data.column(args.text_column))).as_py() or 0
        tokens = min(tokens, chars / MAX_CHARS_PER_TOKEN)
    return args.validation_seed, holdout_fraction(args.val_sequences * args.seq_len, tokens)


def _holdout_key(args: DataArguments) -> str:
    """The part of a cache key that names a random split (empty for 'head', so its keys stay as they were)."""
    if args.validation_split != "random":
        return ""
    return f"-random{args.validation_seed}-t{args.val_sequences * args.seq_len}"


def _margin_chars(args: DataArguments) -> int:
    return args.val_sequences * args.seq_len * MAX_CHARS_PER_TOKEN


def prepare_tokenizer(args: DataArguments) -> tuple[PreTrainedTokenizerBase, dict]:
    """The run's tokenizer and what it was trained from: `first_document`, the index of the first document it was
    trained on (0 for a pretrained one), and under a random split the `holdout` (seed, fraction) it never saw."""
    if args.tokenizer != "bpe":
        return load_pretrained_tokenizer(args.tokenizer), {"first_document": 0}
    key = f"bpe-{corpus_fingerprint(args)}-v{args.vocab_size}-c{args.tokenizer_train_chars}"
    key += _holdout_key(args) if args.validation_split == "random" else f"-m{_margin_chars(args)}"
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
                f"corpus {args.corpus!r} is too small to train a tokenizer beyond its validation split; "
                "add text, lower `val_sequences`, or give a pretrained `tokenizer`"
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
    """Cuts a stream of tokens into rows of `seq_len` tokens, appended to an Arrow file (at most `max_rows`)."""

    def __init__(self, path: Path, seq_len: int, max_rows: float) -> None:
        features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32"), length=seq_len)})
        self.writer = ArrowWriter(features=features, path=str(path))
        self.seq_len, self.max_rows = seq_len, max_rows
        self.carry = np.empty(0, dtype=np.int32)
        self.rows = 0

    def add(self, tokens: np.ndarray) -> None:
        stream = np.concatenate([self.carry, tokens])
        n_rows = int(min(len(stream) // self.seq_len, self.max_rows - self.rows))
        if n_rows:
            packed = pa.FixedSizeListArray.from_arrays(pa.array(stream[: n_rows * self.seq_len]), self.seq_len)
            self.writer.write_table(pa.table({"input_ids": packed}))
        self.rows += n_rows
        self.carry = stream[n_rows * self.seq_len :]

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
    holdout: tuple[int, float] | None = None,
) -> int:
    """Cut the stream of `documents` into rows of `seq_len` tokens, appended to `folder`/ROWS_FILE a batch at a
    time, up to `max_corpus_tokens` tokens read; fill `meta` with the document bookkeeping. With `holdout`
    (validation seed, fraction), the held-out documents go to `folder`/HELD_OUT_FILE instead. Returns the number of
    rows in ROWS_FILE."""
    seq_len = args.seq_len
    val_tokens = args.val_sequences * seq_len
    limit = args.max_corpus_tokens or math.inf
    max_rows = args.max_corpus_tokens // seq_len if args.max_corpus_tokens else math.inf
    rows = _RowWriter(folder / ROWS_FILE, seq_len, max_rows)
    held = _RowWriter(folder / HELD_OUT_FILE, seq_len, max_rows) if holdout else None
    seen = n_documents = n_held_out = 0
    meta["validation_end_document"] = None
    progress = tqdm(desc="tokenizing and packing corpus", unit=" tok", unit_scale=True, total=args.max_corpus_tokens)
    for ids in documents:
        ends = seen + np.cumsum(pc.list_value_length(ids).to_numpy())
        if not holdout and meta["validation_end_document"] is None and ends[-1] >= val_tokens:
            meta["validation_end_document"] = n_documents + int(np.searchsorted(ends, val_tokens))
        # Documents up to the one that reaches the limit count; the rest of the batch is not read.
        taken = int(np.searchsorted(ends, limit)) + 1 if ends[-1] >= limit else len(ends)
        if held is None:
            tokens = _flat(ids)[: ends[taken - 1] - seen]
            rows.add(tokens)
        else:
            ids = ids.slice(0, taken)
            mask = held_out(*holdout, n_documents, taken)
            held.add(_flat(ids.filter(pa.array(mask))))
            rows.add(_flat(ids.filter(pa.array(~mask))))
            n_held_out += int(mask.sum())
        n_documents += taken
        progress.update(ends[taken - 1] - seen)
        seen = int(ends[taken - 1])
        if seen >= limit:
            break
    progress.close()
    meta["documents"] = n_documents
    if held is not None:
        meta.update(held_out_documents=n_held_out, held_out_rows=held.close(), holdout=list(holdout))
    return rows.close()


def pack_corpus(args: DataArguments, tokenizer: PreTrainedTokenizerBase) -> PackedCorpus:
    """The packed corpus (rows of `seq_len` tokens), memory-mapped from the on-disk cache, built on first use."""
    key = f"{corpus_fingerprint(args)}-{tokenizer_fingerprint(tokenizer)}-L{args.seq_len}-p{PACKING_FORMAT}"
    key += _holdout_key(args)
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
        if holdout and meta["held_out_rows"] < args.val_sequences:
            raise InputError(
                f"the random validation split of corpus {args.corpus!r} holds {meta['held_out_documents']:,} "
                f"documents, {meta['held_out_rows']} rows of {args.seq_len} tokens, fewer than val_sequences="
                f"{args.val_sequences}: lower `val_sequences`, raise `max_corpus_tokens`, add data, or set "
                "`validation_split: head`"
            )
        seconds = time.perf_counter() - started
        packed_tokens = (rows + meta.get("held_out_rows", 0)) * args.seq_len
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
        held = datasets.Dataset.from_file(str(folder / HELD_OUT_FILE)) if "held_out_rows" in meta else None
        return PackedCorpus(datasets.Dataset.from_file(str(folder / ROWS_FILE)), held, meta, key)

    return read_built(folder, build, read)


def split_rows(packed: PackedCorpus, args: DataArguments) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Cut validation and exactly `token_budget` training tokens: under the 'head' split, validation is the first
    rows and training the rows after; under 'random', validation is rows spread over the held-out stream and
    training the first rows of the other documents' stream."""
    seq_len, n_val = args.seq_len, args.val_sequences
    n_skip = 0 if packed.held_out is not None else n_val
    available = (len(packed.rows) - n_skip) * seq_len
    if args.token_budget > available:
        if n_skip:
            packs = f"packs to {len(packed.rows) * seq_len:,} tokens; validation takes {n_val * seq_len:,}"
        else:
            packs = f"packs to {len(packed.rows) * seq_len:,} tokens beside its held-out validation documents"
        raise InputError(
            f"corpus {args.corpus!r} {packs} ({n_val} x {seq_len}), leaving {max(available, 0):,} for training, fewer "
            f"than token_budget={args.token_budget:,}: lower `token_budget` to at most {max(available, 0):,}, lower "
            "`val_sequences`, or add data"
        )
    n_train = math.ceil(args.token_budget / seq_len)
    lengths = [seq_len] * n_train
    lengths[-1] = args.token_budget - (n_train - 1) * seq_len
    if packed.held_out is None:
        validation = packed.rows.select(range(n_val))
    else:
        validation = packed.held_out.select(spread_rows(len(packed.held_out), n_val))
    train = packed.rows.select(range(n_skip, n_skip + n_train)).add_column("length", lengths)
    return train, validation


def _check_tokenizer_never_saw_validation(trained_from: dict, meta: dict) -> None:
    if "holdout" in meta:
        if "holdout" in trained_from and trained_from["holdout"] != meta["holdout"]:
            raise InputError(
                "the tokenizer was trained with another validation holdout than the packed corpus's; remove the "
                "tokenizer and packed folders of this corpus from the cache (`cache_dir`) and run again"
            )
        return
    first_doc, val_end = trained_from["first_document"], meta["validation_end_document"]
    if first_doc and (val_end is None or val_end >= first_doc):
        raise InputError(
            "the validation split would overlap the tokenizer's training text; lower `val_sequences` or give a "
            "pretrained `tokenizer`"
        )


def prepare_data(args: DataArguments) -> PretrainingData:
    """Tokenizer, validation split and the exact-D training split of a run, from the cache when possible."""
    tokenizer, trained_from = prepare_tokenizer(args)
    packed = pack_corpus(args, tokenizer)
    _check_tokenizer_never_saw_validation(trained_from, packed.meta)
    train, validation = split_rows(packed, args)
    held_out_rows = len(packed.held_out) if packed.held_out is not None else 0
    return PretrainingData(
        train=train,
        validation=validation,
        tokenizer=tokenizer,
        token_budget=args.token_budget,
        corpus_tokens=(len(packed.rows) + held_out_rows) * args.seq_len,
        cache_key=packed.key,
    )
