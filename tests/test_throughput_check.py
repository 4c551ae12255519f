"""The throughput/MFU GPU check's configuration: 150M at vocabulary 128,256, the chunked loss as `pretrain` installs it,
`plan`'s micro-batch and a step count that is stable and fits the check's time limit (no GPU timing here)."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hf_infcompute.cli.main import main
from hf_infcompute.training.loss_forward import computes_loss_in_chunks

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "benchmarks"))

import gpu_checks  # noqa: E402
import trainer_throughput  # noqa: E402

H100 = "NVIDIA H100 80GB HBM3"


class StandInTokenizer:
    """What `model_config_for` reads of a tokenizer: its length and special ids (the 2,048-token BPE's shape)."""

    bos_token_id, eos_token_id, pad_token_id = 0, 1, 2

    def __len__(self) -> int:
        return gpu_checks.THROUGHPUT_BPE_VOCAB


def plan_micro_batch(capsys: pytest.CaptureFixture, memory_gib: float) -> int:
    """The 150M micro-batch `hf-infcompute plan` prints for the paper's recipe on `memory_gib`."""
    arguments = ["plan", str(gpu_checks.PAPER_RECIPE), "--vocab-size", "128256", "--gpu-memory", str(memory_gib)]
    assert main([*arguments, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["presets"]["llama-150m"]["micro_batch"]


@pytest.mark.parametrize("memory_gib", [79.1, 20.0])
def test_the_check_runs_150m_at_128k_with_the_chunked_loss_and_plans_micro_batch(capsys, tmp_path, memory_gib):
    configuration = gpu_checks.throughput_configuration("cuda", memory_gib, H100)
    planned = plan_micro_batch(capsys, memory_gib)
    assert configuration["micro_batch"] == planned
    cli = trainer_throughput.parser().parse_args(configuration["flags"])
    assert (cli.preset, cli.model_vocab_size, cli.seq_len, cli.batch) == ("llama-150m", 128_256, 4096, planned)
    assert cli.precision == ["bf16"] and cli.compile == ["no", "regional"] and cli.single_run

    # The model the script trains (on the meta device: shapes, not weights): 128,256 rows, the chunked loss installed.
    run = trainer_throughput.run_config(cli, "bf16", "no", str(tmp_path))
    assert run.training.per_device_train_batch_size == planned and run.training.loss_implementation == "chunked"
    with torch.device("meta"):
        model = trainer_throughput.model_for(run, SimpleNamespace(tokenizer=StandInTokenizer()), cli.model_vocab_size)
    assert model.lm_head.weight.shape[0] == model.model.embed_tokens.weight.shape[0] == 128_256
    assert computes_loss_in_chunks(model) and model.loss_implementation == "chunked"


def test_the_plan_not_a_constant_decides_the_micro_batch():
    assert (
        gpu_checks.throughput_configuration("cuda", 79.1, H100)["micro_batch"]
        > gpu_checks.throughput_configuration("cuda", 20.0, H100)["micro_batch"]
        > 0
    )


def test_the_step_count_is_stable_and_fits_the_checks_time_limit():
    configuration = gpu_checks.throughput_configuration("cuda", 79.1, H100)
    cli = trainer_throughput.parser().parse_args(configuration["flags"])
    assert cli.warmup == gpu_checks.THROUGHPUT_WARMUP >= 3
    assert cli.steps - cli.warmup == gpu_checks.THROUGHPUT_TIMED_STEPS
    # The mean over the timed steps at the largest per-step spread the check accepts: within 1%.
    assert gpu_checks.THROUGHPUT_STABLE_RSD / math.sqrt(gpu_checks.THROUGHPUT_TIMED_STEPS) < 0.01
    # Four runs (loop and Trainer, eager and compiled) down to 20% MFU, plus the fixed costs, inside the step's limit.
    limits = dict(re.findall(r"\[(\w+)\]=(\d+)", (REPOSITORY / "benchmarks" / "gpu_check.sh").read_text()))
    assert int(limits["throughput"]) == gpu_checks.THROUGHPUT_LIMIT_S
    assert configuration["runs"] == 4
    assert configuration["estimated_seconds"] <= gpu_checks.THROUGHPUT_LIMIT_S
    # The corpus holds the run's tokens at the BPE's measured ~4 characters per token.
    tokens = (cli.steps * cli.batch + 64) * cli.seq_len
    assert configuration["corpus_chars"] >= 4 * tokens


def test_a_model_vocabulary_below_the_tokenizers_is_refused(tmp_path):
    from hf_infcompute.errors import InputError

    cli = trainer_throughput.parser().parse_args(["--model-vocab-size", "1000", "--loss-implementation", "chunked"])
    run = trainer_throughput.run_config(cli, "fp32", "no", str(tmp_path))
    with pytest.raises(InputError, match="--model-vocab-size 1000 is below the tokenizer's 2048"):
        trainer_throughput.model_for(run, SimpleNamespace(tokenizer=StandInTokenizer()), 1000)


def test_step_rsd_is_the_relative_sample_sd():
    measured = trainer_throughput.Measurement(1.0, 1.0, 0.0, 0.0, [1.0, 1.1, 0.9, 1.0])
    assert measured.step_rsd == pytest.approx(math.sqrt(0.02 / 3))
    assert trainer_throughput.Measurement(1.0, 1.0, 0.0, 0.0, [2.0]).step_rsd == 0.0
