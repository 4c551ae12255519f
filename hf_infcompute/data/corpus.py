"""Load a raw text corpus (local files or a hub dataset) as a `datasets` dataset."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path

import datasets

from hf_infcompute.data.arguments import DataArguments
from hf_infcompute.errors import InputError

BUILDER_BY_SUFFIX = {".jsonl": "json", ".json": "json", ".txt": "text", ".parquet": "parquet"}


def _looks_local(corpus: str) -> bool:
    return os.path.exists(corpus) or corpus.startswith((".", "/", "~")) or any(c in corpus for c in "*?")


def local_corpus_files(corpus: str) -> list[Path]:
    """The files of a local corpus (a file, a folder or a glob), sorted; errors name the fix."""
    path = Path(corpus).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in BUILDER_BY_SUFFIX and p.is_file())
        if not files:
            raise InputError(f"corpus folder {path} holds no .jsonl, .json, .txt or .parquet files")
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not files:
            raise InputError(f"corpus {corpus!r} not found: give existing files, a folder, a glob or a hub dataset id")
    suffixes = {p.suffix for p in files}
    unknown = suffixes - set(BUILDER_BY_SUFFIX)
    if unknown:
        raise InputError(f"corpus files must be .jsonl, .json, .txt or .parquet; found {sorted(unknown)}")
    builders = {BUILDER_BY_SUFFIX[s] for s in suffixes}
    if len(builders) > 1:
        raise InputError(f"corpus mixes file formats {sorted(suffixes)}: convert them to one format")
    if all(p.stat().st_size == 0 for p in files):
        raise InputError(f"corpus {corpus!r} is empty")
    return files


def _num_proc(workers: int) -> int | None:
    """`num_proc` for `load_dataset`, which converts corpus files to Arrow in parallel (None: in this process)."""
    return workers if workers > 1 else None


def load_corpus(args: DataArguments) -> datasets.Dataset | datasets.IterableDataset:
    """The documents of the corpus, in a fixed order, with a `text` column."""
    if _looks_local(args.corpus):
        files = local_corpus_files(args.corpus)
        builder = BUILDER_BY_SUFFIX[files[0].suffix]
        dataset = datasets.load_dataset(
            builder, data_files=[str(p) for p in files], split="train",
            num_proc=_num_proc(min(args.preprocessing_num_workers, len(files))),
        )
    else:
        dataset = datasets.load_dataset(
            args.corpus,
            name=args.corpus_config,
            split=args.corpus_split,
            revision=args.corpus_revision,
            streaming=args.streaming,
            num_proc=None if args.streaming else _num_proc(args.preprocessing_num_workers),
        )
    columns = dataset.column_names
    if columns is not None and args.text_column not in columns:
        raise InputError(f"corpus has no column {args.text_column!r} (columns: {columns}); set `text_column`")
    if isinstance(dataset, datasets.Dataset) and len(dataset) == 0:
        raise InputError(f"corpus {args.corpus!r} holds no documents")
    return dataset


def corpus_fingerprint(args: DataArguments) -> str:
    """A key that changes when the corpus content may have changed (local files: names, sizes, mtimes)."""
    if _looks_local(args.corpus):
        files = local_corpus_files(args.corpus)
        parts = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    else:
        parts = [args.corpus, args.corpus_config, args.corpus_split, args.corpus_revision, args.streaming]
    parts.append([args.text_column, args.max_corpus_tokens])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
