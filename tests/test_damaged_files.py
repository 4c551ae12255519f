"""Damaged files of every format the tool reads, generated: each case works or ends the command with exit code 2 and
one paragraph naming the file, never another exception (property-based, hypothesis)."""

from __future__ import annotations

import gzip
import io
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import micro_llama_config
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from transformers import LlamaForCausalLM, Trainer

from hf_infcompute.cli.main import main
from hf_infcompute.data.tokenizer import train_bpe_tokenizer
from hf_infcompute.records import append_record, write_json_atomic
from hf_infcompute.search.store import SweepStore
from hf_infcompute.study.state import STATE_FILE, StudyState
from hf_infcompute.training.claim import HOLDER_FILE

DOCUMENTS = [f"Document {i} is about {'cats' if i % 2 else 'dogs'} and the habits they keep." for i in range(60)]
TINY_RUN = {
    "vocab_size": 300,
    "seq_len": 16,
    "val_sequences": 2,
    "token_budget": 64,
    "preset": "tiny-0.5m",
    "num_train_epochs": 1,
    "per_device_train_batch_size": 4,
    "precision": "fp32",
    "disable_tqdm": True,
    "save_strategy": "no",
}

# How a file is damaged: emptied, cut at a fraction of its length, or one byte XOR-ed with a mask.
DAMAGE = st.one_of(
    st.just(("empty", 0.0, 0)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
)


def damage(path: Path, how: tuple[str, float, int]) -> None:
    kind, where, mask = how
    data = bytearray(path.read_bytes())
    at = int(where * len(data))
    if kind == "empty":
        data = bytearray()
    elif kind == "truncate":
        data = data[:at]
    else:
        data[at] ^= mask
    path.write_bytes(bytes(data))


class Worked(Exception):
    """Raised where training would start: everything before it read its files."""


@pytest.fixture
def stop_before_training(monkeypatch) -> None:
    def refuse(self, *args, **kwargs):
        raise Worked

    monkeypatch.setattr(Trainer, "train", refuse)


def run_cli(argv: list[str]) -> str:
    """Run the command; it works (`Worked`, or exit 0) or exits with 2 and one paragraph: return stderr."""
    err_stream = io.StringIO()
    with redirect_stderr(err_stream), redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except Worked:
            code = 0
    err = err_stream.getvalue()
    assert code in (0, 2), err[-2000:]
    assert "Traceback" not in err
    if code == 2:
        assert err.count("error:") == 1 and err.strip(), err
    return err if code == 2 else ""


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


def write_corpus(folder: Path, suffix: str) -> Path:
    path = folder / f"corpus{suffix}"
    if suffix.endswith(".gz"):
        plain = write_corpus(folder, suffix.removesuffix(".gz"))
        path.write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    elif suffix == ".arrow":
        table = pa.table({"text": DOCUMENTS})
        with pa.ipc.new_stream(str(path), table.schema) as writer:
            writer.write_table(table)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": text}) + "\n" for text in DOCUMENTS))
    elif suffix == ".json":
        path.write_text(json.dumps([{"text": text} for text in DOCUMENTS]))
    elif suffix == ".txt":
        path.write_text("".join(text + "\n" for text in DOCUMENTS))
    else:
        pq.write_table(pa.table({"text": DOCUMENTS}), path)
    return path


CORPUS_FORMATS = [".jsonl", ".json", ".txt", ".parquet", ".arrow", ".jsonl.gz", ".txt.gz"]


@pytest.mark.parametrize("suffix", CORPUS_FORMATS)
def test_every_corpus_format_is_read(suffix, tmp_path, stop_before_training):
    recipe = tmp_path / "run.yaml"
    corpus = write_corpus(tmp_path, suffix)
    recipe.write_text(yaml.safe_dump({**TINY_RUN, "corpus": str(corpus), "cache_dir": str(tmp_path / "cache")}))
    assert run_cli(["pretrain", str(recipe), "--output", str(tmp_path / "out")]) == ""


@pytest.mark.parametrize("suffix", CORPUS_FORMATS)
@example(how=("flip", 0.9258835904550239, 50))  # found by generation: a Parquet footer pyarrow reads as an OSError
@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=DAMAGE)
def test_a_damaged_corpus_file_works_or_is_named(suffix, how, stop_before_training, cache_dir):
    with scratch() as folder:
        corpus = write_corpus(folder, suffix)
        damage(corpus, how)
        recipe = folder / "run.yaml"
        recipe.write_text(yaml.safe_dump({**TINY_RUN, "corpus": str(corpus), "cache_dir": str(folder / "cache")}))
        err = run_cli(["pretrain", str(recipe), "--output", str(folder / "out")])
        assert not err or str(corpus) in err or "corpus" in err


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A tiny Llama with its BPE tokenizer, saved like a hub checkpoint."""
    folder = tmp_path_factory.mktemp("base")
    tokenizer = train_bpe_tokenizer(DOCUMENTS, 300)
    config = micro_llama_config(
        vocab_size=len(tokenizer), max_position_embeddings=64, eos_token_id=tokenizer.eos_token_id
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "tokenizer.json"])
@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=DAMAGE)
def test_a_damaged_model_folder_works_or_is_named(name, how, model_folder, stop_before_training):
    with scratch() as folder:
        base = folder / "base"
        base.mkdir()
        for path in model_folder.iterdir():
            (base / path.name).write_bytes(path.read_bytes())
        damage(base / name, how)
        corpus = write_corpus(folder, ".jsonl")
        settings = {**TINY_RUN, "corpus": str(corpus), "cache_dir": str(folder / "cache")}
        recipe = folder / "run.yaml"
        recipe.write_text(yaml.safe_dump({**settings, "base_model": str(base), "tokenizer": str(base)}))
        err = run_cli(["cpt", str(recipe), "--output", str(folder / "out")])
        assert not err or str(base) in err


def write_study_folder(folder: Path) -> dict[str, Path]:
    """A study folder as the tool writes it: study.json, a record, a sweep (settings, grid, a point, a claim), a
    run's claim holder and a model folder's run record. Returns each file by its kind."""
    StudyState("smoke", "corpus", None, {}, {}, {}, {}, [], 1, 1.0).save(folder / STATE_FILE)
    record = {"run_id": "r1", "status": "finished", "val_loss": 3.0, "kind": "pretrain", "config": {}}
    store = SweepStore(folder / "sweeps" / "standard-tiny-0.5m-8192")
    store.bind({"corpus": "corpus"})
    store.record_grid({"learning_rate": [0.003], "num_train_epochs": [1, 2]})
    from hf_infcompute.search.store import PointResult

    point = {"learning_rate": 0.003, "num_train_epochs": 1}
    store.record(PointResult(point, "finished", 3.0, extra={"run_id": "r1"}))
    claim = store.try_claim({"learning_rate": 0.003, "num_train_epochs": 2}, "w")
    assert claim is not None
    claim._stop.set()  # keep the claim file, stop its heartbeat thread
    recipe = folder / "run.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RUN, "corpus": str(write_corpus(folder, ".jsonl"))}))
    model = folder / "runs" / "r1" / "model"
    write_json_atomic(model / "run_record.json", record)
    write_json_atomic(folder / "runs" / "r1" / HOLDER_FILE, {"pid": 1, "host": "elsewhere", "claimed_at": 0})
    return {
        "study": folder / STATE_FILE,
        "record": append_record(folder, record),
        "sweep": store.directory / "sweep.json",
        "grid": store.directory / "grid.json",
        "point": store.result_path(point),
        "claim": claim.path,
        "holder": folder / "runs" / "r1" / HOLDER_FILE,
        "card": model / "run_record.json",
        "recipe": recipe,
    }


SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
STATE_COMMANDS = {
    "study": lambda folder, files: ["study", str(SMOKE), "--output", str(folder), "--report-only"],
    "record": lambda folder, files: ["study", str(SMOKE), "--output", str(folder), "--report-only"],
    "sweep": lambda folder, files: ["search", str(files["recipe"]), "--output", str(files["sweep"].parent)],
    "grid": lambda folder, files: ["status", str(folder)],
    "point": lambda folder, files: ["status", str(folder)],
    "claim": lambda folder, files: ["status", str(folder)],
    "holder": lambda folder, files: ["status", str(folder)],
    "card": lambda folder, files: ["push", str(files["card"].parent), "me/model", "--card-only"],
}


@pytest.mark.parametrize("kind", list(STATE_COMMANDS))
@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=DAMAGE)
def test_damaged_state_works_or_is_named(kind, how, stop_before_training):
    with scratch() as folder:
        files = write_study_folder(folder)
        damage(files[kind], how)
        err = run_cli(STATE_COMMANDS[kind](folder, files))
        # A damaged record or sweep is named, or skipped with a warning and its folder named by what follows.
        assert not err or files[kind].name in err or str(files[kind].parent.parent) in err


@pytest.mark.parametrize("name", ["rows.arrow", "packing.json", "tokenizer.json", "trained_from.json"])
@settings(max_examples=5, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=DAMAGE)
def test_a_damaged_cache_entry_is_built_again(name, how, stop_before_training, caplog):
    with scratch() as folder:
        recipe = folder / "run.yaml"
        cache = folder / "cache"
        recipe.write_text(
            yaml.safe_dump({**TINY_RUN, "corpus": str(write_corpus(folder, ".jsonl")), "cache_dir": str(cache)})
        )
        argv = ["pretrain", str(recipe), "--output", str(folder / "out")]
        assert run_cli(argv) == ""  # builds the tokenizer and the packed corpus
        (path,) = cache.rglob(name)
        damage(path, how)
        caplog.clear()
        assert run_cli(argv) == ""
        rebuilt = [r.getMessage() for r in caplog.records if "building it again" in r.getMessage()]
        assert len(rebuilt) <= 1 and all(path.parent.name in message for message in rebuilt)


@settings(max_examples=10)
@given(how=DAMAGE)
def test_a_study_resuming_over_a_damaged_study_json_rebuilds_it_with_one_line(how):
    from hf_infcompute.study.state import previous_sessions

    with scratch() as folder:
        files = write_study_folder(folder)
        damage(files["study"], how)
        with _warnings() as seen:
            sessions, wall_time_s = previous_sessions(folder)
        rebuilt = [line for line in seen if "rebuilt from the records" in line]
        assert len(rebuilt) <= 1 and isinstance(sessions, int) and isinstance(wall_time_s, float)
        if rebuilt:
            assert (sessions, wall_time_s) == (0, 0.0)


@contextmanager
def _warnings() -> Iterator[list[str]]:
    """The messages of the warnings logged inside."""
    import logging

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logging.getLogger("hf_infcompute").addHandler(handler)
    try:
        yield seen
    finally:
        logging.getLogger("hf_infcompute").removeHandler(handler)
