"""Tokenize a corpus once, pack it into fixed-length sequences, and cut the validation and training splits.

The packed stream is the corpus's documents in order, each followed by EOS, cut into rows of `seq_len` tokens.
- Validation: the first `val_sequences` rows. It depends only on the corpus, tokenizer and `seq_len`, so it is
  identical for every run whatever D, the model or the seeds.
- Training: exactly D tokens, the rows after validation; when D is not a multiple of `seq_len`, the last row is cut
  short (its `length` says how many tokens count).
A trained BPE tokenizer learns only from text after a safety margin past the validation documents, and packing checks
that the validation rows end before that text begins.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from hf_infcompute.data.arguments import DataArguments
from hf_infcompute.data.cache import build_once, cache_root
from hf_infcompute.data.corpus import corpus_fingerprint, load_corpus
from hf_infcompute.data.tokenizer import (
    load_pretrained_tokenizer,
    skip_chars,
    take_chars,
    tokenizer_fingerprint,
    train_bpe_tokenizer,
)
from hf_infcompute.errors import InputError

# No byte-level BPE on natural text averages more than this many characters per token; skipping this many
# characters per validation token before training a tokenizer keeps it off the validation text.
MAX_CHARS_PER_TOKEN = 8
TOKENIZE_BATCH_DOCS = 1000
META_FILE = "packing.json"


@dataclass(frozen=True)
class PretrainingData:
    """The splits of one run: `train` holds exactly `train_tokens` tokens, `validation` `val_sequences` full rows."""

    train: datasets.Dataset
    validation: datasets.Dataset
    tokenizer: PreTrainedTokenizerBase
    train_tokens: int
    corpus_tokens: int
    cache_key: str

    @property
    def validation_fingerprint(self) -> str:
        """A short hash of the validation tokens: equal fingerprints mean runs were scored on the same text."""
        tokens = np.asarray(self.validation["input_ids"], dtype=np.int32)
        return hashlib.sha256(tokens.tobytes()).hexdigest()[:16]


def _texts(dataset: datasets.Dataset | datasets.IterableDataset, column: str) -> Iterator[str]:
    for batch in dataset.iter(batch_size=TOKENIZE_BATCH_DOCS):
        yield from batch[column]


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


def _packed_rows(
    dataset: datasets.Dataset | datasets.IterableDataset,
    args: DataArguments,
    tokenizer: PreTrainedTokenizerBase,
    meta: dict,
) -> Iterator[dict]:
    """Yield rows of `seq_len` tokens from the EOS-separated document stream; fill `meta` as it goes."""
    seq_len, eos = args.seq_len, tokenizer.eos_token_id
    val_tokens = args.val_sequences * seq_len
    limit = args.max_corpus_tokens or math.inf
    buffer = np.empty(0, dtype=np.int64)
    seen = documents = 0
    meta["validation_end_document"] = None
    progress = tqdm(desc="tokenizing corpus", unit=" tok", unit_scale=True)
    for batch in dataset.iter(batch_size=TOKENIZE_BATCH_DOCS):
        encoded = tokenizer(batch[args.text_column], add_special_tokens=False)["input_ids"]
        pieces = []
        for ids in encoded:
            pieces.append(np.asarray(ids + [eos], dtype=np.int64))
            seen += len(ids) + 1
            if meta["validation_end_document"] is None and seen >= val_tokens:
                meta["validation_end_document"] = documents
            documents += 1
        progress.update(sum(len(p) for p in pieces))
        buffer = np.concatenate([buffer, *pieces])
        n_rows = len(buffer) // seq_len
        for row in buffer[: n_rows * seq_len].reshape(n_rows, seq_len):
            yield {"input_ids": row}
        buffer = buffer[n_rows * seq_len :]
        if seen >= limit:
            break
    progress.close()
    meta["documents"] = documents


def pack_corpus(args: DataArguments, tokenizer: PreTrainedTokenizerBase) -> tuple[datasets.Dataset, dict, str]:
    """The packed corpus (rows of `seq_len` tokens) from the on-disk cache, building it on first use."""
    key = f"{corpus_fingerprint(args)}-{tokenizer_fingerprint(tokenizer)}-L{args.seq_len}"
    folder = cache_root(args.cache_dir) / "packed" / key

    def build(tmp: Path) -> None:
        meta: dict = {}
        features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"), length=args.seq_len)})
        rows = list(_packed_rows(load_corpus(args), args, tokenizer, meta))
        if args.max_corpus_tokens:
            rows = rows[: args.max_corpus_tokens // args.seq_len]
        if not rows:
            raise InputError(f"corpus {args.corpus!r} holds fewer than {args.seq_len} tokens: nothing to train on")
        packed = datasets.Dataset.from_dict(
            {"input_ids": np.stack([r["input_ids"] for r in rows]).astype(np.int32)}, features=features
        )
        packed.save_to_disk(str(tmp / "rows"))
        meta.update(rows=len(packed), seq_len=args.seq_len, eos_token_id=tokenizer.eos_token_id)
        (tmp / META_FILE).write_text(json.dumps(meta))

    build_once(folder, build)
    meta = json.loads((folder / META_FILE).read_text())
    return datasets.load_from_disk(str(folder / "rows")), meta, key


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
        train_tokens=args.token_budget,
        corpus_tokens=len(packed) * args.seq_len,
        cache_key=key,
    )
