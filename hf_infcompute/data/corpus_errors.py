"""Name the file and line of a bad local corpus, once `datasets` has failed to read it or found a document without
text: the files are re-read here, on the error path only, to say where the problem is and how to fix it."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

FIX_LINE = (
    "fix or delete that line (a cut-off last line means the file was not completely written or copied), or remove "
    "the file from the corpus if it is not JSON lines"
)


# What a cut-off or damaged gzip file raises while it is read.
GZIP_ERRORS = (OSError, EOFError, zlib.error)


def corpus_format(path: Path) -> str:
    """The suffix that says how a corpus file is read: `.jsonl` for `part.jsonl` and for `part.jsonl.gz`."""
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


def _json_line_problem(number: int, line: bytes, text_column: str) -> str | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return f"line {number} is not UTF-8 text: {FIX_LINE}"
    except json.JSONDecodeError as error:
        return f"line {number} is not valid JSON ({error.msg}, column {error.colno}): {FIX_LINE}"
    if not isinstance(record, dict):
        return f'line {number} is not a JSON object: write one object per line, e.g. {{"{text_column}": "..."}}'
    value = record.get(text_column)
    if value is not None and not isinstance(value, str):
        return f"line {number}: `{text_column}` is a {type(value).__name__}, not a string: make it a string"
    return None


def _file_problem(path: Path, text_column: str) -> str | None:
    if path.suffix == ".gz":
        try:
            with gzip.open(path) as handle:
                while handle.read(2**20):
                    pass
        except GZIP_ERRORS as error:
            return f"is not a whole gzip file ({error}): compress or copy it again, or remove it from the corpus"
    if path.suffix == ".arrow":
        try:
            with pa.memory_map(str(path)) as source:
                pa.ipc.open_stream(source).read_all()
        except (pa.ArrowException, OSError) as error:
            return f"is not a readable Arrow stream file ({error}): write it again, or remove it from the corpus"
        return None
    if path.suffix == ".parquet":
        try:
            pq.read_metadata(path)
        except Exception as error:  # pyarrow raises several types for a file that is not Parquet
            return f"is not a readable Parquet file ({error}): rewrite it, or remove it from the corpus"
        return None
    if corpus_format(path) == ".json":
        try:
            json.loads(b"".join(line for _, line in _lines(path)).decode("utf-8"))
            return None
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass  # not one JSON document: read it as JSON lines below
    for number, line in _lines(path):
        if corpus_format(path) == ".txt":
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return f"line {number} is not UTF-8 text: re-encode the file as UTF-8, or remove it from the corpus"
        else:
            problem = _json_line_problem(number, line, text_column)
            if problem:
                return problem
    return None


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error


def unreadable_corpus_message(files: list[Path], text_column: str, error: BaseException) -> str:
    """One paragraph naming the first bad file (and line) of a corpus `datasets` could not read, and the fix."""
    for path in files:
        problem = _file_problem(path, text_column)
        if problem:
            return f"corpus file {path}: {problem}."
    cause = _root_cause(error)
    names = ", ".join(str(p) for p in files[:5]) + (", ..." if len(files) > 5 else "")
    return (
        f"cannot read the corpus files {names} ({type(cause).__name__}: {cause}): check that every file is complete "
        "and in the format its suffix says (.jsonl: one JSON object per line; .txt: UTF-8 lines; .parquet; .arrow; "
        "any of the first three compressed as .gz)."
    )


def first_null_text(files: list[Path], text_column: str) -> tuple[Path, int] | None:
    """The file and line of the first JSON-lines document whose `text_column` is null or missing."""
    for path in files:
        if corpus_format(path) not in (".jsonl", ".json"):
            return None
        for number, line in _lines(path):
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                return None  # a .json file holding one JSON document: no line to name
            if isinstance(record, dict) and record.get(text_column) is None:
                return path, number
    return None
