"""Load a raw text corpus (local files or a hub dataset) as a `datasets` dataset."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import zlib
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
from datasets.exceptions import DatasetGenerationError, DatasetNotFoundError

from hf_infcompute.data.arguments import DataArguments
from hf_infcompute.data.corpus_errors import corpus_format, first_null_text, unreadable_corpus_message
from hf_infcompute.errors import InputError

BUILDER_BY_SUFFIX = {".jsonl": "json", ".json": "json", ".txt": "text", ".parquet": "parquet", ".arrow": "arrow"}
FORMATS_HELP = (
    "one JSON object per line with a `text` field (.jsonl), UTF-8 text with one document per line (.txt), either "
    "compressed as .gz, or a Parquet or Arrow stream file with a text column"
)


def _looks_local(corpus: str) -> bool:
    return (
        os.path.exists(corpus)
        or corpus.startswith((".", "/", "~"))
        or any(c in corpus for c in "*?")
        or corpus.endswith((*BUILDER_BY_SUFFIX, ".gz"))
    )


def local_corpus_files(corpus: str) -> list[Path]:
    """The files of a local corpus (a file, a folder or a glob), sorted; errors name the fix."""
    path = Path(corpus).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if corpus_format(p) in BUILDER_BY_SUFFIX and p.is_file())
        if not files:
            raise InputError(
                f"corpus folder {path} holds no .jsonl, .json, .txt, .parquet or .arrow files: put the corpus there as "
                f"{FORMATS_HELP}, or point `corpus` at the folder that holds it"
            )
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not files:
            raise InputError(
                f"corpus {corpus!r} not found (resolved to {path.absolute()}): check the path in `corpus`, or give "
                "existing files, a folder, a glob or a Hugging Face Hub dataset id"
            )
    suffixes = {corpus_format(p) for p in files}
    unknown = suffixes - set(BUILDER_BY_SUFFIX)
    if unknown:
        raise InputError(
            f"corpus files must be .jsonl, .json, .txt (each maybe .gz), .parquet or .arrow; found {sorted(unknown)}"
        )
    packed = sorted(str(p) for p in files if p.suffix == ".gz" and corpus_format(p) in (".parquet", ".arrow"))
    if packed:
        raise InputError(f"corpus files {packed[:3]} are compressed Parquet or Arrow files: decompress them")
    builders = {BUILDER_BY_SUFFIX[s] for s in suffixes}
    if len(builders) > 1:
        raise InputError(f"corpus mixes file formats {sorted(suffixes)}: convert them to one format")
    if all(p.stat().st_size == 0 for p in files):
        raise InputError(f"corpus {corpus!r} is empty (its files hold 0 bytes): fill it with {FORMATS_HELP}")
    return files


def _num_proc(workers: int) -> int | None:
    """`num_proc` for `load_dataset`, which converts corpus files to Arrow in parallel (None: in this process)."""
    return workers if workers > 1 else None


def load_corpus(args: DataArguments) -> datasets.Dataset | datasets.IterableDataset:
    """The documents of the corpus, in a fixed order, with a `text` column."""
    files = local_corpus_files(args.corpus) if _looks_local(args.corpus) else []
    try:
        dataset = _load(args, files)
    except (DatasetGenerationError, pa.ArrowException, UnicodeDecodeError, EOFError, zlib.error) as error:
        if not files:
            raise InputError(
                f"cannot read hub dataset {args.corpus!r} ({error.__cause__ or error}): check `corpus`, "
                "`corpus_config` and `corpus_split`, or download it and give the local files"
            ) from error
        raise InputError(unreadable_corpus_message(files, args.text_column, error)) from error
    except OSError as error:  # pyarrow (some Parquet footers) and gzip report damage as an OSError without errno
        if not files or error.errno is not None:
            raise
        raise InputError(unreadable_corpus_message(files, args.text_column, error)) from error
    except ValueError as error:
        # `datasets` refuses files that hold only blank lines with a ValueError about the split.
        if not files or "corresponds to no data" not in str(error):
            raise
        raise InputError(f"corpus {args.corpus!r} holds no documents: fill it with {FORMATS_HELP}") from error
    columns = dataset.column_names
    if columns is not None and args.text_column not in columns:
        raise InputError(f"corpus has no column {args.text_column!r} (columns: {columns}); set `text_column`")
    if isinstance(dataset, datasets.Dataset):
        _check_texts(dataset, args, files)
    return dataset


def _load(args: DataArguments, files: list[Path]) -> datasets.Dataset | datasets.IterableDataset:
    if files:
        return datasets.load_dataset(
            BUILDER_BY_SUFFIX[corpus_format(files[0])],
            data_files=[str(p) for p in files],
            split="train",
            num_proc=_num_proc(min(args.preprocessing_num_workers, len(files))),
        )
    try:
        return datasets.load_dataset(
            args.corpus,
            name=args.corpus_config,
            split=args.corpus_split,
            revision=args.corpus_revision,
            streaming=args.streaming,
            num_proc=None if args.streaming else _num_proc(args.preprocessing_num_workers),
        )
    except (DatasetNotFoundError, ConnectionError) as error:
        raise InputError(
            f"corpus {args.corpus!r} is neither a local path nor a hub dataset that can be reached ({error}): give "
            "existing local files, a folder or a glob, or a hub dataset id (online, or already in the hub cache)"
        ) from error


def _check_texts(dataset: datasets.Dataset, args: DataArguments, files: list[Path]) -> None:
    """Every document has text, and some have more than nothing; errors name the file and line where known."""
    if len(dataset) == 0:
        raise InputError(f"corpus {args.corpus!r} holds no documents: fill it with {FORMATS_HELP}")
    texts = dataset.data.column(args.text_column)
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise InputError(
            f"corpus {args.corpus!r}: column {args.text_column!r} holds {texts.type} values, not text; set "
            f"`text_column` to the column that holds the documents' text (columns: {dataset.column_names})"
        )
    try:
        texts.validate(full=True)  # the JSON and Parquet readers pass on strings that are not UTF-8
    except pa.ArrowInvalid as error:
        raise InputError(unreadable_corpus_message(files, args.text_column, error)) from error
    if texts.null_count:
        index = pc.index(pc.is_null(texts), True).as_py()
        where = first_null_text(files, args.text_column)
        place = f"corpus file {where[0]}, line {where[1]}" if where else f"corpus {args.corpus!r}"
        raise InputError(
            f"{place}: document {index} (counting from 0) has no text (`{args.text_column}` is null or missing), "
            f"and {texts.null_count} document(s) in all: drop those documents or fill their `{args.text_column}`"
        )
    if not pc.sum(pc.utf8_length(texts)).as_py():
        raise InputError(
            f"corpus {args.corpus!r} holds {len(dataset)} documents but no text (every `{args.text_column}` is "
            f"empty): fill it with {FORMATS_HELP}, or set `text_column` to the column that holds the text"
        )


def corpus_fingerprint(args: DataArguments) -> str:
    """A key that changes when the corpus content may have changed (local files: names, sizes, mtimes)."""
    if _looks_local(args.corpus):
        files = local_corpus_files(args.corpus)
        parts = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    else:
        parts = [args.corpus, args.corpus_config, args.corpus_split, args.corpus_revision, args.streaming]
    parts.append([args.text_column, args.max_corpus_tokens])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
