"""Tokenize a corpus once, pack it into fixed-length sequences, and cut the validation and training splits.

The packed stream is the corpus's documents in order, each followed by EOS, cut into rows of `seq_len` tokens.
- Validation: the first `val_sequences` rows. It depends only on the corpus, tokenizer and `seq_len`, so it is
  identical for every run whatever D, the model or the seeds.
- Training: exactly D tokens, the rows after validation; when D is not a multiple of `seq_len`, the last row is cut
  short (its `length` says how many tokens count).
A trained BPE tokenizer learns only from text after a safety margin past the validation documents, and packing checks
that the validation rows end before that text begins.

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
from hf_infcompute.data.cache import build_once, cache_root
from hf_infcompute.data.corpus import corpus_fingerprint, load_corpus
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


def _texts(dataset: datasets.Dataset | datasets.IterableDataset, column: str) -> Iterator[str]:
    index = 0
    for batch in dataset.iter(batch_size=TOKENIZE_BATCH_DOCS):
        for text in batch[column]:
            yield check_text(text, index)
            index += 1


def _margin_chars(args: DataArguments) -> int:
    return args.val_sequences * args.seq_len * MAX_CHARS_PER_TOKEN


def prepare_tokenizer(args: DataArguments) -> tuple[PreTrainedTokenizerBase, int]:
    """The run's tokenizer and the index of the first document it was trained on (0 for a pretrained one)."""
    if args.tokenizer != "bpe":
        return load_pretrained_tokenizer(args.tokenizer), 0
    key = f"bpe-{corpus_fingerprint(args)}-v{args.vocab_size}-c{args.tokenizer_train_chars}-m{_margin_chars(args)}"
    folder = cache_root(args.cache_dir) / "tokenizers" / key

    def build(tmp: Path) -> None:
        first_doc, rest = skip_chars(_texts(load_corpus(args), args.text_column), _margin_chars(args))
        texts = list(take_chars(rest, args.tokenizer_train_chars))
        if not texts:
            raise InputError(
                f"corpus {args.corpus!r} is too small to train a tokenizer beyond its validation split; "
                "add text, lower `val_sequences`, or give a pretrained `tokenizer`"
            )
        train_bpe_tokenizer(texts, args.vocab_size).save_pretrained(tmp)
        (tmp / "trained_from.json").write_text(json.dumps({"first_document": first_doc}))

    build_once(folder, build)
    first_doc = json.loads((folder / "trained_from.json").read_text())["first_document"]
    return PreTrainedTokenizerFast.from_pretrained(folder), first_doc


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
            corpus.select(range(start, stop)), tokenizer, args.text_column,
            num_proc=args.preprocessing_num_workers, cache_file=workdir / f"tokens-{start}.arrow",
            first_document=start,
        )
        for table in window.with_format("arrow").iter(batch_size=TOKENIZE_BATCH_DOCS):
            tokens += int(pc.sum(pc.list_value_length(table["input_ids"])).as_py())
            yield table["input_ids"]
        start = stop
        if limit:
            size = max(FIRST_WINDOW_DOCS, math.ceil(WINDOW_MARGIN * (limit - tokens) * start / max(tokens, 1)))


def _write_rows(documents: Iterator[pa.ChunkedArray], args: DataArguments, path: Path, meta: dict) -> int:
    """Cut the stream of `documents` into rows of `seq_len` tokens, appended to the Arrow file `path` a batch at a
    time, up to `max_corpus_tokens`; fill `meta` with the document bookkeeping. Returns the number of rows."""
    seq_len = args.seq_len
    val_tokens = args.val_sequences * seq_len
    limit = args.max_corpus_tokens or math.inf
    max_rows = args.max_corpus_tokens // seq_len if args.max_corpus_tokens else math.inf
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32"), length=seq_len)})
    carry = np.empty(0, dtype=np.int32)
    seen = n_documents = rows = 0
    meta["validation_end_document"] = None
    progress = tqdm(desc="tokenizing and packing corpus", unit=" tok", unit_scale=True, total=args.max_corpus_tokens)
    with ArrowWriter(features=features, path=str(path)) as writer:
        for ids in documents:
            ends = seen + np.cumsum(pc.list_value_length(ids).to_numpy())
            if meta["validation_end_document"] is None and ends[-1] >= val_tokens:
                meta["validation_end_document"] = n_documents + int(np.searchsorted(ends, val_tokens))
            # Documents up to the one that reaches the limit count; the rest of the batch is not read.
            taken = int(np.searchsorted(ends, limit)) + 1 if ends[-1] >= limit else len(ends)
            tokens = pc.list_flatten(ids).to_numpy()[: ends[taken - 1] - seen]
            n_documents += taken
            progress.update(len(tokens))
            seen += len(tokens)
            stream = np.concatenate([carry, tokens])
            n_rows = int(min(len(stream) // seq_len, max_rows - rows))
            if n_rows:
                packed = pa.FixedSizeListArray.from_arrays(pa.array(stream[: n_rows * seq_len]), seq_len)
                writer.write_table(pa.table({"input_ids": packed}))
            rows += n_rows
            carry = stream[n_rows * seq_len :]
            if seen >= limit:
                break
        writer.finalize()
    progress.close()
    meta["documents"] = n_documents
    return rows


def pack_corpus(args: DataArguments, tokenizer: PreTrainedTokenizerBase) -> tuple[datasets.Dataset, dict, str]:
    """The packed corpus (rows of `seq_len` tokens), memory-mapped from the on-disk cache, built on first use."""
    key = f"{corpus_fingerprint(args)}-{tokenizer_fingerprint(tokenizer)}-L{args.seq_len}-p{PACKING_FORMAT}"
    folder = cache_root(args.cache_dir) / "packed" / key

    def build(tmp: Path) -> None:
        meta: dict = {}
        started = time.perf_counter()
        workdir = tmp / "tokenized"
        workdir.mkdir()
        rows = _write_rows(_document_batches(args, tokenizer, workdir), args, tmp / ROWS_FILE, meta)
        shutil.rmtree(workdir, ignore_errors=True)
        if not rows:
            raise InputError(f"corpus {args.corpus!r} holds fewer than {args.seq_len} tokens: nothing to train on")
        seconds = time.perf_counter() - started
        logger.info(
            "packed %s documents into %s rows of %s tokens in %.1f s (%.0f tokens/s)",
            f"{meta['documents']:,}", f"{rows:,}", args.seq_len, seconds, rows * args.seq_len / seconds,
        )
        meta.update(rows=rows, seq_len=args.seq_len, eos_token_id=tokenizer.eos_token_id)
        (tmp / META_FILE).write_text(json.dumps(meta))

    build_once(folder, build)
    meta = json.loads((folder / META_FILE).read_text())
    return datasets.Dataset.from_file(str(folder / ROWS_FILE)), meta, key


def split_rows(packed: datasets.Dataset, args: DataArguments) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Cut validation (the first rows) and exactly `token_budget` training tokens (the rows after)."""
    seq_len, n_val = args.seq_len, args.val_sequences
    available = (len(packed) - n_val) * seq_len
    if args.token_budget > available:
        raise InputError(
            f"corpus {args.corpus!r} packs to {len(packed) * seq_len:,} tokens; validation takes "
            f"{n_val * seq_len:,} ({n_val} x {seq_len}), leaving {max(available, 0):,} for training, fewer than "
            f"token_budget={args.token_budget:,}: lower `token_budget` to at most {max(available, 0):,}, lower "
            "`val_sequences`, or add data"
        )
    n_train = math.ceil(args.token_budget / seq_len)
    lengths = [seq_len] * n_train
    lengths[-1] = args.token_budget - (n_train - 1) * seq_len
    validation = packed.select(range(n_val))
    train = packed.select(range(n_val, n_val + n_train)).add_column("length", lengths)
    return train, validation


def prepare_data(args: DataArguments) -> PretrainingData:
    """Tokenizer, validation split and the exact-D training split of a run, from the cache when possible."""
    tokenizer, tokenizer_first_doc = prepare_tokenizer(args)
    packed, meta, key = pack_corpus(args, tokenizer)
    val_end = meta["validation_end_document"]
    if tokenizer_first_doc and (val_end is None or val_end >= tokenizer_first_doc):
        raise InputError(
            "the validation split would overlap the tokenizer's training text; lower `val_sequences` or give a "
            "pretrained `tokenizer`"
        )
    train, validation = split_rows(packed, args)
    return PretrainingData(
        train=train,
        validation=validation,
        tokenizer=tokenizer,
        token_budget=args.token_budget,
        corpus_tokens=len(packed) * args.seq_len,
        cache_key=key,
    )
