"""Tokenizers: a pretrained one by path or hub id, or a byte-level BPE trained on the corpus's training text; and
tokenizing a corpus into documents of token ids with `datasets`."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import datasets
import pyarrow.compute as pc
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from hf_infcompute.errors import InputError
from hf_infcompute.readers import REEXPORT, check_model_folder

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
TOKENIZE_BATCH_DOCS = 1000
# The tokenizing `map` hands each process batches of about this many bytes of text (at most TOKENIZE_BATCH_DOCS
# documents): a batch's token lists and the tokenizer's encodings take some 100 bytes per token in the worker, and the
# allocator keeps what the largest batches took, so a batch sized in documents lets memory grow with document length.
TOKENIZE_BATCH_BYTES = 2**18
DOCUMENT_FEATURES = datasets.Features({"input_ids": datasets.List(datasets.Value("int32"))})


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE. `<|endoftext|>` separates documents and serves as BOS and EOS."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )


def load_pretrained_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    check_model_folder(name_or_path, fix=f"{REEXPORT} (`save_pretrained`), or set `tokenizer` to another one")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise InputError(
            f"cannot load tokenizer {name_or_path!r} ({error}); give a local tokenizer folder, a hub id, or 'bpe'"
        ) from error
    if tokenizer.eos_token_id is None:
        raise InputError(f"tokenizer {name_or_path!r} has no EOS token, which separates packed documents; set one")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def take_chars(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    """Yield texts until about `max_chars` characters have been yielded."""
    total = 0
    for text in texts:
        if total >= max_chars:
            return
        total += len(text)
        yield text


def skip_chars(texts: Iterable[str], min_chars: int) -> tuple[int, Iterator[str]]:
    """Skip whole documents until at least `min_chars` characters are skipped; returns (documents skipped, rest)."""
    iterator = iter(texts)
    skipped_chars = skipped_docs = 0
    for text in iterator:
        if skipped_chars >= min_chars:
            return skipped_docs, itertools.chain([text], iterator)
        skipped_chars += len(text)
        skipped_docs += 1
    return skipped_docs, iter(())


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps([tokenizer.eos_token, tokenizer.bos_token, tokenizer.pad_token, type(tokenizer).__name__])
    return hashlib.sha256((vocab + extra).encode()).hexdigest()[:16]


def check_text(text: str | None, index: int) -> str:
    """`text`, the document numbered `index` (from 0) in corpus order; a null one is refused, naming the fix."""
    if text is None:
        raise InputError(
            f"document {index} (counting from 0) of the corpus has no text (null or missing): drop that document "
            "or fill its text"
        )
    return text


def encode_documents(
    texts: list[str], indices: list[int], tokenizer: PreTrainedTokenizerBase, eos_token_id: int, first_document: int
) -> dict[str, list]:
    """A batch of documents as token ids, each followed by EOS. A document's number in the corpus, for errors, is
    `first_document` plus its index in the dataset mapped."""
    texts = [check_text(text, first_document + index) for text, index in zip(texts, indices)]
    encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return {"input_ids": [ids + [eos_token_id] for ids in encoded]}


def map_batch_docs(documents: datasets.Dataset, text_column: str) -> int:
    """Documents per batch of the tokenizing `map`: about TOKENIZE_BATCH_BYTES of text at the documents' mean size,
    taken over the Arrow table under `documents` (all of it, where `documents` selects rows by an indices mapping)."""
    table = documents.data
    text_bytes = pc.sum(pc.binary_length(table.column(text_column))).as_py() or 0
    return max(1, min(TOKENIZE_BATCH_DOCS, TOKENIZE_BATCH_BYTES * table.num_rows // max(text_bytes, 1)))


def _map_settings(
    documents: datasets.Dataset | datasets.IterableDataset,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str,
    first_document: int = 0,
    batch_size: int = TOKENIZE_BATCH_DOCS,
) -> dict:
    return {
        "function": encode_documents,
        "batched": True,
        "with_indices": True,
        "batch_size": batch_size,
        "input_columns": [text_column],
        "remove_columns": documents.column_names,
        "features": DOCUMENT_FEATURES,
        "fn_kwargs": {"tokenizer": tokenizer, "eos_token_id": tokenizer.eos_token_id, "first_document": first_document},
    }


def tokenize_documents(
    documents: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str,
    *,
    num_proc: int,
    cache_file: Path,
    first_document: int = 0,
) -> datasets.Dataset:
    """Each document as its token ids followed by EOS (column `input_ids`), in order, memory-mapped from Arrow files
    that `map(batched=True, num_proc=...)` writes at `cache_file` (one per process, each a contiguous shard).
    `documents` start at document `first_document` of the corpus."""
    return documents.map(
        **_map_settings(documents, tokenizer, text_column, first_document, map_batch_docs(documents, text_column)),
        num_proc=num_proc if num_proc > 1 else None,
        cache_file_name=str(cache_file),
        # Named after the output file, new for each build, so that `datasets` need not hash the tokenizer.
        new_fingerprint=hashlib.sha256(str(cache_file).encode()).hexdigest()[:16],
        load_from_cache_file=False,
        desc="tokenizing corpus",
    )


def tokenize_stream(
    documents: datasets.IterableDataset, tokenizer: PreTrainedTokenizerBase, text_column: str
) -> datasets.IterableDataset:
    """`tokenize_documents` for a streamed corpus: tokenized lazily, in this process, as it is read."""
    return documents.map(**_map_settings(documents, tokenizer, text_column))
