"""Synthetic generation: samples follow the teacher's distribution, shards resume exactly, bad input is refused."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from transformers import LlamaConfig, LlamaForCausalLM

from hf_infcompute.data import PackedCollator
from hf_infcompute.data.tokenizer import train_bpe_tokenizer
from hf_infcompute.errors import InputError
from hf_infcompute.generation import backends as backends_module
from hf_infcompute.generation import check_same_tokenizer, generate_synthetic, load_synthetic, vllm_ensemble
from hf_infcompute.generation import synthetic as synthetic_module
from hf_infcompute.generation.backends import (
    VLLM_MEMORY_UTILIZATION,
    PooledVLLMSampler,
    SamplingSettings,
    ShardJob,
    pooled_assignment,
    row_seeds,
)
from hf_infcompute.generation.budget import kv_batch_size, kv_bytes_per_token, resolve_dtype

TEXT = [f"document {i}: the quick brown fox jumps over the lazy dog, then naps {i % 7} hours. " * 3 for i in range(60)]
SAMPLES = 2000  # first tokens drawn in the distribution tests


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(TEXT, vocab_size=300)


def tiny_llama(tokenizer, seed: int, logit_scale: float | None = None) -> LlamaForCausalLM:
    """A 1-layer Llama; `logit_scale` redraws the output head so the next-token distribution is far from uniform."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    if logit_scale is not None:
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, logit_scale)
    return model


def save_teacher(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def first_token_probs(model, start_token_id: int) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.tensor([[start_token_id]])).logits[0, -1]
    return torch.softmax(logits.double(), -1).numpy()


def first_token_counts(output_dir: Path, vocab_size: int) -> np.ndarray:
    rows = np.asarray(load_synthetic(output_dir)["input_ids"])
    return np.bincount(rows[:, 1], minlength=vocab_size)


def chi_square_pvalue(counts: np.ndarray, probs: np.ndarray, min_expected: float = 5.0) -> float:
    """Goodness of fit of `counts` to `probs`; cells expecting fewer than `min_expected` draws are pooled."""
    expected = probs / probs.sum() * counts.sum()
    big = expected >= min_expected
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    return float(stats.chisquare(observed, expected).pvalue)


def total_variation(counts: np.ndarray, probs: np.ndarray) -> float:
    return 0.5 * float(np.abs(counts / counts.sum() - probs).sum())


def top_k_renormalized(probs: np.ndarray, k: int) -> np.ndarray:
    kept = np.zeros_like(probs)
    top = np.argsort(probs)[-k:]
    kept[top] = probs[top]
    return kept / kept.sum()


def test_first_tokens_follow_the_teacher_distribution_whatever_its_generation_config(tokenizer, tmp_path):
    model = tiny_llama(tokenizer, seed=0, logit_scale=0.3)
    # Hub-style sampling defaults saved with the teacher must not leak into ancestral sampling.
    model.generation_config.update(do_sample=True, temperature=0.3, top_k=5, repetition_penalty=2.0)
    teacher = save_teacher(model, tokenizer, tmp_path / "teacher")
    assert json.loads((teacher / "generation_config.json").read_text())["top_k"] == 5

    out = tmp_path / "synthetic"
    result = generate_synthetic(teacher, out, num_tokens=2 * SAMPLES, seq_len=2, batch_size=500, seed=1)

    assert result.tokens == 2 * SAMPLES and result.rows == SAMPLES
    counts = first_token_counts(out, len(tokenizer))
    probs = first_token_probs(model, tokenizer.eos_token_id)
    assert chi_square_pvalue(counts, probs) > 1e-3
    assert total_variation(counts, probs) < 0.12
    # The test has the power to see a warper: transformers' default top_k=50 would cut ~30% of the mass.
    assert total_variation(counts, top_k_renormalized(probs, 50)) > 0.2


def test_ensemble_teacher_samples_the_mean_logit_distribution(tokenizer, tmp_path):
    ensemble = pytest.importorskip("hf_infcompute.ensemble")
    members = [tiny_llama(tokenizer, seed=s, logit_scale=0.3) for s in (1, 2)]
    member_dirs = [save_teacher(m, tokenizer, tmp_path / f"member-{i}") for i, m in enumerate(members)]
    teacher = ensemble.LogitEnsembleForCausalLM.from_members([str(d) for d in member_dirs])
    teacher.save_pretrained(tmp_path / "ensemble")
    tokenizer.save_pretrained(tmp_path / "ensemble")

    out = tmp_path / "synthetic"
    result = generate_synthetic(tmp_path / "ensemble", out, num_tokens=2 * SAMPLES, seq_len=2, batch_size=500)

    assert result.manifest["teacher"]["ensemble"] is True
    assert result.manifest["teacher"]["members"] == 2
    with torch.no_grad():
        start = torch.tensor([[tokenizer.eos_token_id]])
        mean_logits = torch.stack([m(start).logits[0, -1] for m in members]).mean(0)
    ensemble_probs = torch.softmax(mean_logits.double(), -1).numpy()
    counts = first_token_counts(out, len(tokenizer))
    assert chi_square_pvalue(counts, ensemble_probs) > 1e-3
    for member in members:
        assert chi_square_pvalue(counts, first_token_probs(member, tokenizer.eos_token_id)) < 1e-6


@pytest.fixture
def teacher_dir(tokenizer, tmp_path) -> Path:
    return save_teacher(tiny_llama(tokenizer, seed=0), tokenizer, tmp_path / "teacher")


# 173 tokens in 11 rows of 16 (the last cut to 13), in 4 shards of 3, 3, 3 and 2 rows.
RESUME_RUN = dict(num_tokens=11 * 16 - 3, seq_len=16, shard_tokens=48, batch_size=3, seed=7)


def test_killed_generation_resumes_to_the_uninterrupted_corpus(teacher_dir, tmp_path, monkeypatch):
    whole = generate_synthetic(teacher_dir, tmp_path / "whole", **RESUME_RUN)
    assert (whole.shards, whole.rows, whole.tokens) == (4, 11, RESUME_RUN["num_tokens"])

    write_shard = synthetic_module._write_shard

    def killed_after_shard_1(output_dir, index, *args, **kwargs):
        write_shard(output_dir, index, *args, **kwargs)
        if index == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(synthetic_module, "_write_shard", killed_after_shard_1)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(teacher_dir, tmp_path / "resumed", **RESUME_RUN)
    assert json.loads((tmp_path / "resumed" / "generation.json").read_text())["status"] == "running"
    shards = sorted(p.name for p in (tmp_path / "resumed" / "data").glob("shard-*"))
    assert shards == ["shard-00000.parquet", "shard-00001.parquet"]
    with pytest.raises(InputError, match="unfinished"):
        load_synthetic(tmp_path / "resumed")

    monkeypatch.setattr(synthetic_module, "_write_shard", write_shard)
    resumed = generate_synthetic(teacher_dir, tmp_path / "resumed", **RESUME_RUN)
    assert resumed.resumed_shards == 2
    assert resumed.sampled_tokens == RESUME_RUN["num_tokens"] - 2 * 3 * 16
    expected, got = load_synthetic(tmp_path / "whole"), load_synthetic(tmp_path / "resumed")
    assert got["input_ids"] == expected["input_ids"] and got["length"] == expected["length"]
    assert sum(got["length"]) == RESUME_RUN["num_tokens"]
    assert got["length"][-1] == 16 - 3 and set(got["length"][:-1]) == {16}
    assert json.loads((tmp_path / "resumed" / "generation.json").read_text())["tokens_produced"] == 173

    # A lost shard is sampled again, identically.
    (tmp_path / "whole" / "data" / "shard-00003.parquet").unlink()
    again = generate_synthetic(teacher_dir, tmp_path / "whole", **RESUME_RUN)
    assert again.resumed_shards == 3
    assert load_synthetic(tmp_path / "whole")["input_ids"] == expected["input_ids"]
    # A finished corpus is not sampled again.
    assert generate_synthetic(teacher_dir, tmp_path / "whole", **RESUME_RUN).sampled_tokens == 0


WORKER = """
import json, os, sys
from hf_infcompute.generation import generate_synthetic
result = generate_synthetic(sys.argv[1], sys.argv[2], rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]), **json.loads(sys.argv[3]))
print(json.dumps({"sampled_tokens": result.sampled_tokens, "complete": result.complete}))
"""


def test_every_worker_samples_its_own_shards_into_one_corpus(teacher_dir, tmp_path):
    whole = generate_synthetic(teacher_dir, tmp_path / "one-worker", **RESUME_RUN)
    env = {**os.environ, "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(teacher_dir), str(tmp_path / "two"), json.dumps(RESUME_RUN)],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    # Shards 0, 2 (3 + 3 rows) and 1, 3 (3 + 2 rows, the last row cut to 13 tokens): both workers sampled theirs.
    assert [r["sampled_tokens"] for r in results] == [96, 77]
    manifest = json.loads((tmp_path / "two" / "generation.json").read_text())
    assert {rank: w["shards"] for rank, w in manifest["workers"].items()} == {"0": [0, 2], "1": [1, 3]}
    assert manifest["status"] == "finished" and manifest["tokens_produced"] == RESUME_RUN["num_tokens"]
    assert (tmp_path / "two" / "README.md").is_file()
    # Which worker sampled a shard does not change it: the corpus is the one a lone worker samples.
    assert load_synthetic(tmp_path / "two")["input_ids"] == whole.load()["input_ids"]


def test_a_killed_workers_shards_resume_and_the_lead_waits_for_them(teacher_dir, tmp_path, monkeypatch):
    expected = generate_synthetic(teacher_dir, tmp_path / "whole", **RESUME_RUN).load()["input_ids"]
    write_shard = synthetic_module._write_shard

    def killed_after_first_shard(output_dir, index, *args, **kwargs):
        write_shard(output_dir, index, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic_module, "_write_shard", killed_after_first_shard)
    with pytest.raises(KeyboardInterrupt):  # worker 1 dies after its shard 1
        generate_synthetic(teacher_dir, tmp_path / "out", rank=1, world_size=2, **RESUME_RUN)
    monkeypatch.setattr(synthetic_module, "_write_shard", write_shard)
    lead = generate_synthetic(teacher_dir, tmp_path / "out", rank=0, world_size=2, **RESUME_RUN)
    assert not lead.complete and lead.sampled_tokens == 96
    waited: dict = {}
    waiter = threading.Thread(
        target=lambda: waited.update(synthetic_module.wait_for_synthetic(tmp_path / "out", poll_s=0.05))
    )
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive()  # shard 3 of worker 1 is missing: the lead waits
    resumed = generate_synthetic(teacher_dir, tmp_path / "out", rank=1, world_size=2, **RESUME_RUN)
    waiter.join(timeout=30)
    assert not waiter.is_alive() and waited["status"] == "finished"
    assert resumed.complete and resumed.resumed_shards == 1 and resumed.sampled_tokens == 16 + 13
    assert load_synthetic(tmp_path / "out")["input_ids"] == expected
    with pytest.raises(InputError, match="rank=2"):
        generate_synthetic(teacher_dir, tmp_path / "out", rank=2, world_size=2, **RESUME_RUN)


def test_pooled_members_sample_one_engine_at_a_time_at_the_full_memory(tmp_path, monkeypatch):
    """Each member's engine opens once for all the call's shards, alone and at the full memory share."""
    opened, alive = [], []
    settings = SamplingSettings(seq_len=4, start_token_id=0, temperature=1.0, top_p=1.0, top_k=0, batch_size=2)

    class FakeEngine:
        def __init__(self, model_name, settings, *, seed, dtype, engine_kwargs):
            assert not alive, "a second engine opened while another was alive"
            alive.append(self)
            opened.append((model_name, engine_kwargs["gpu_memory_utilization"]))
            self.member = int(model_name.rsplit("-", 1)[1])

        def sample(self, seeds):  # a row tells which member drew it and from which seed
            return np.asarray([[0, self.member, s % 1000, 9] for s in seeds], dtype=np.int32)

    def run_member(member_dir, settings, seed, dtype, parts):
        backends_module.sample_member(member_dir, settings, seed, dtype, parts)
        alive.clear()  # the member's process ended

    monkeypatch.setattr(backends_module, "VLLMSampler", FakeEngine)
    members = [f"member-{i}" for i in range(3)]
    sampler = PooledVLLMSampler(members, settings, seed=0, parts_dir=tmp_path / "parts", run_member=run_member)
    jobs = [ShardJob(0, 5, 11), ShardJob(2, 4, 12)]
    shards = {job.index: rows for job, rows in sampler.shards(jobs)}
    assert opened == [(m, VLLM_MEMORY_UTILIZATION) for m in members]
    for job in jobs:
        rows = shards[job.index]
        assert rows[:, 1].tolist() == pooled_assignment(job.num_rows, 3)
        assert rows[:, 2].tolist() == [s % 1000 for s in row_seeds(job.seed, job.num_rows)]
    assert not list((tmp_path / "parts").iterdir())  # parts are dropped once their shard is handed over


def test_rows_start_with_the_document_separator_and_run_through_eos(tokenizer, teacher_dir, tmp_path):
    # A near-uniform 300-token teacher samples EOS about once per 300 tokens: ~13 times in 64 rows of 64.
    generate_synthetic(teacher_dir, tmp_path / "out", num_tokens=64 * 64, seq_len=64, batch_size=16)
    rows = np.asarray(load_synthetic(tmp_path / "out")["input_ids"])
    eos = tokenizer.eos_token_id
    assert rows.shape == (64, 64) and (rows[:, 0] == eos).all()
    inner = [(r, i) for r, i in zip(*np.nonzero(rows[:, 1:-2] == eos))]
    assert inner, "expected some EOS inside rows"
    for r, i in inner:
        # Sampling went on after the EOS (at column i + 1): a stopped row would be padded with one repeated id.
        assert len(set(rows[r, i + 2 :].tolist())) > 1


def test_synthetic_rows_batch_like_packed_training_rows(tokenizer, teacher_dir, tmp_path):
    generate_synthetic(teacher_dir, tmp_path / "out", num_tokens=3 * 8 + 5, seq_len=8, batch_size=4)
    data = load_synthetic(tmp_path / "out")
    batch = PackedCollator(tokenizer.pad_token_id)([data[i] for i in range(len(data))])
    assert batch["input_ids"].shape == (4, 8)
    assert int((batch["labels"] != -100).sum()) == 3 * 8 + 5
    assert batch["attention_mask"][-1].tolist() == [1] * 5 + [0] * 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_tokens": 0}, "num_tokens=0"),
        ({"num_tokens": -5}, "num_tokens=-5"),
        ({"seq_len": 1}, "seq_len=1"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"backend": "jax"}, "backend"),
    ],
)
def test_bad_settings_are_refused(teacher_dir, tmp_path, overrides, message):
    settings = {"num_tokens": 64, "seq_len": 8, **overrides}
    with pytest.raises(InputError, match=message):
        generate_synthetic(teacher_dir, tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()


def test_resume_with_other_settings_names_them(teacher_dir, tmp_path):
    generate_synthetic(teacher_dir, tmp_path / "out", num_tokens=64, seq_len=8, seed=0)
    with pytest.raises(InputError, match=r"seed: 0 on disk vs 1 now; temperature: 1\.0 on disk vs 0\.7 now"):
        generate_synthetic(teacher_dir, tmp_path / "out", num_tokens=64, seq_len=8, seed=1, temperature=0.7)


def test_seq_len_defaults_to_the_teachers_training_length(teacher_dir, tmp_path):
    with pytest.raises(InputError, match="seq_len"):
        generate_synthetic(teacher_dir, tmp_path / "a", num_tokens=64)
    (teacher_dir / "run_record.json").write_text(json.dumps({"seq_len": 16}))
    result = generate_synthetic(teacher_dir, tmp_path / "b", num_tokens=64)
    assert result.manifest["settings"]["seq_len"] == 16 and result.rows == 4


def test_in_memory_teacher_keeps_its_training_mode(tokenizer, tmp_path):
    model = tiny_llama(tokenizer, seed=0).train()
    result = generate_synthetic(model, tmp_path / "out", num_tokens=40, seq_len=8, tokenizer=tokenizer)
    assert result.tokens == 40 and model.training
    assert result.manifest["settings"]["dtype"] == "float32"


def test_teacher_without_tokenizer_starts_rows_from_its_config_eos(tokenizer, tmp_path):
    model = tiny_llama(tokenizer, seed=0)
    model.config.eos_token_id = 5
    model.save_pretrained(tmp_path / "teacher")
    result = generate_synthetic(tmp_path / "teacher", tmp_path / "out", num_tokens=32, seq_len=8)
    assert result.manifest["settings"]["start_token_id"] == 5
    assert {row[0] for row in load_synthetic(tmp_path / "out")["input_ids"]} == {5}


def test_missing_teacher_is_refused(tmp_path):
    with pytest.raises(InputError, match="config.json"):
        generate_synthetic(tmp_path, tmp_path / "out", num_tokens=64, seq_len=8)


def test_check_same_tokenizer_names_the_difference(tokenizer, teacher_dir, tmp_path):
    check_same_tokenizer(teacher_dir, tokenizer)
    generate_synthetic(teacher_dir, tmp_path / "out", num_tokens=16, seq_len=8)
    check_same_tokenizer(tmp_path / "out", tokenizer)  # a generation folder keeps the teacher's tokenizer
    other = train_bpe_tokenizer(TEXT[::-1], vocab_size=280)
    with pytest.raises(InputError, match="vocabulary size 300 vs 280"):
        check_same_tokenizer(tmp_path / "out", other)


def test_vllm_backend_without_vllm_names_the_fix(teacher_dir, tmp_path):
    try:
        import vllm  # noqa: F401

        if torch.cuda.is_available():
            pytest.skip("vLLM and a GPU are present: the backend works here")
    except ImportError:
        pass
    with pytest.raises(InputError, match=r"pip install hf-infcompute\[vllm\].*--backend transformers"):
        generate_synthetic(teacher_dir, tmp_path / "out", num_tokens=64, seq_len=8, backend="vllm")


def test_ensemble_modes_are_checked_before_sampling(tokenizer, tmp_path):
    (tmp_path / "ensemble").mkdir()
    config = {"model_type": "logit_ensemble", "member_configs": [tiny_llama(tokenizer, 0).config.to_dict()]}
    (tmp_path / "ensemble" / "config.json").write_text(json.dumps(config))
    run = dict(num_tokens=64, seq_len=8)
    with pytest.raises(InputError, match="pooled.*vllm backend only.*logit_average or --backend vllm"):
        generate_synthetic(tmp_path / "ensemble", tmp_path / "out", **run, ensemble_mode="pooled")
    with pytest.raises(InputError, match="ensemble_mode='mean'"):
        generate_synthetic(tmp_path / "ensemble", tmp_path / "out", **run, ensemble_mode="mean")
    config["member_configs"].append({"model_type": "gpt2", "n_embd": 32})
    (tmp_path / "ensemble" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="member 1 is a 'gpt2' model.*Llama members only.*pooled"):
        generate_synthetic(tmp_path / "ensemble", tmp_path / "out", **run, backend="vllm")
    assert not (tmp_path / "out").exists()


def test_teacher_dtype_and_batch_follow_the_device(teacher_dir, tmp_path):
    result = generate_synthetic(teacher_dir, tmp_path / "out", num_tokens=64, seq_len=8)
    assert result.manifest["settings"]["dtype"] == "float32" and result.manifest["batch_size_used"] == 64
    assert (resolve_dtype("auto", "cuda"), resolve_dtype("auto", "cpu")) == ("bfloat16", "float32")
    assert resolve_dtype("float32", "cuda:0") == "float32"
    with pytest.raises(InputError, match="dtype='fp8'"):
        resolve_dtype("fp8", "cpu")


def test_kv_budget_batch_size():
    preset_300m = LlamaConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12)
    per_token = kv_bytes_per_token([preset_300m] * 8, dtype_bytes=4)
    assert per_token == 8 * 2 * 12 * 12 * 64 * 4
    # The figure: 8 x 300M at batch 64 x 4,096 tokens in float32 needs about 155 GB of KV cache.
    assert 64 * 4096 * per_token == pytest.approx(155e9, rel=0.01)
    bf16 = kv_bytes_per_token([preset_300m] * 8, dtype_bytes=2)
    assert kv_batch_size(40 * 2**30, bf16, 4096) == 40 * 2**30 // (bf16 * 4096) == 35
    grouped = LlamaConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2)
    assert kv_bytes_per_token([grouped], dtype_bytes=2) == 2 * 2 * 2 * 32 * 2
    assert kv_batch_size(10, 1000, 4096) == 1  # never below one row
    assert kv_batch_size(2**50, 1, 16, max_batch=512) == 512


def test_pooled_mode_splits_rows_across_members_with_distinct_seeds():
    for rows, k in ((10, 3), (7, 8), (4096, 8)):
        owners = pooled_assignment(rows, k)
        shares = np.bincount(owners, minlength=k)
        assert shares.sum() == rows and shares.max() - shares.min() <= 1
    assert pooled_assignment(5, 2) == [0, 1, 0, 1, 0]
    seeds = row_seeds(3, 1000)
    assert len(set(seeds)) == 1000 and row_seeds(3, 1000) == seeds and row_seeds(4, 1000) != seeds


def test_vllm_ensemble_routes_weights_and_averages_logits():
    weights = [
        ("members.0.model.norm.weight", torch.zeros(2)),
        ("members.1.lm_head.weight", torch.ones(3)),
        ("members.10.model.embed_tokens.weight", torch.full((1,), 2.0)),
    ]
    routed = vllm_ensemble.route_weights(weights, num_members=11)
    assert [name for name, _ in routed[0]] == ["model.norm.weight"] and routed[1][0][0] == "lm_head.weight"
    assert routed[10][0][0] == "model.embed_tokens.weight" and all(not part for part in routed[2:10])
    for bad in ("model.norm.weight", "members.2.x", "members.x.y"):
        with pytest.raises(ValueError, match="belongs to no member"):
            vllm_ensemble.route_weights([(bad, torch.zeros(1))], num_members=2)

    logits = [torch.randn(4, 9, generator=torch.Generator().manual_seed(s)).bfloat16() for s in range(3)]
    mean = vllm_ensemble.combine_logits(logits, "logits")
    assert mean.dtype == torch.float32
    torch.testing.assert_close(mean, torch.stack([x.float() for x in logits]).mean(0), atol=1e-6, rtol=0)
    probs = vllm_ensemble.combine_logits(logits, "probs").exp()
    torch.testing.assert_close(probs, torch.stack([x.float().softmax(-1) for x in logits]).mean(0), atol=1e-6, rtol=0)

    member = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 3,
    }
    overrides = vllm_ensemble.engine_overrides({"member_configs": [member, {**member, "num_hidden_layers": 2}]})
    assert overrides == {
        "hidden_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_hidden_layers": 5,
        "architectures": ["LogitEnsembleForCausalLM"],
    }
    with pytest.raises(InputError, match="member 1's attention shape"):
        vllm_ensemble.check_members([member, {**member, "num_key_value_heads": 4}], "ens")


def test_vllm_plugin_is_declared_as_an_entry_point():
    # This module imported `vllm_ensemble` above without vLLM: only `register` and the model class import it.
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '[project.entry-points."vllm.general_plugins"]' in pyproject
    assert 'logit_ensemble = "hf_infcompute.generation.vllm_ensemble:register"' in pyproject


@pytest.mark.gpu
def test_vllm_samples_the_teacher_distribution(tokenizer, tmp_path):
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("the vllm backend needs a CUDA GPU")
    model = tiny_llama(tokenizer, seed=0, logit_scale=0.3)
    teacher = save_teacher(model, tokenizer, tmp_path / "teacher")
    out = tmp_path / "synthetic"
    generate_synthetic(teacher, out, num_tokens=2 * SAMPLES, seq_len=2, backend="vllm", dtype="float32", seed=1)
    counts = first_token_counts(out, len(tokenizer))
    probs = first_token_probs(model, tokenizer.eos_token_id)
    assert chi_square_pvalue(counts, probs) > 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["logit_average", "pooled"])
def test_vllm_ensemble_modes_sample_their_distributions(tokenizer, tmp_path, mode):
    pytest.importorskip("vllm", reason="vLLM is not installed (GPU machines only)")
    if not torch.cuda.is_available():
        pytest.skip("the vllm backend needs a CUDA GPU")
    ensemble = pytest.importorskip("hf_infcompute.ensemble")
    members = [tiny_llama(tokenizer, seed=s, logit_scale=0.3) for s in (1, 2)]
    teacher = ensemble.LogitEnsembleForCausalLM.from_members(members, tokenizer=tokenizer)
    teacher.save_pretrained(tmp_path / "ensemble")
    out = tmp_path / "synthetic"
    generate_synthetic(
        tmp_path / "ensemble",
        out,
        num_tokens=2 * SAMPLES,
        seq_len=2,
        backend="vllm",
        dtype="float32",
        ensemble_mode=mode,
        seed=1,
    )
    counts = first_token_counts(out, len(tokenizer))
    member_probs = [first_token_probs(m, tokenizer.eos_token_id) for m in members]
    with torch.no_grad():
        start = torch.tensor([[tokenizer.eos_token_id]])
        mean_logits = torch.stack([m(start).logits[0, -1] for m in members]).mean(0)
    ensemble_probs = torch.softmax(mean_logits.double(), -1).numpy()
    mixture = np.mean(member_probs, axis=0)
    expected, other = (ensemble_probs, mixture) if mode == "logit_average" else (mixture, ensemble_probs)
    assert chi_square_pvalue(counts, expected) > 1e-3
    assert chi_square_pvalue(counts, other) < 1e-6


def test_cli_generate(teacher_dir, tmp_path, capsys):
    from hf_infcompute.cli import generate

    parser = argparse.ArgumentParser()
    generate.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["generate", str(teacher_dir), "--output", str(tmp_path / "out"), "--num-tokens", "100", "--seq-len", "16"]
    )
    assert args.func(args) == 0
    assert "100 tokens in 7 rows of 16" in capsys.readouterr().out
    assert sum(load_synthetic(tmp_path / "out")["length"]) == 100


def test_corpus_is_a_parquet_dataset_with_a_card_and_the_old_layout_still_loads(teacher_dir, tmp_path):
    import datasets
    from huggingface_hub import DatasetCard

    out = tmp_path / "out"
    generate_synthetic(teacher_dir, out, **RESUME_RUN)
    expected = load_synthetic(out)
    as_hub_dataset = datasets.load_dataset(str(out), split="train")  # what the Hub (or a local clone) serves
    assert as_hub_dataset["input_ids"] == expected["input_ids"] and as_hub_dataset["length"] == expected["length"]
    card = DatasetCard.load(out / "README.md")
    assert card.data.configs[0]["data_files"][0]["path"] == "data/*.parquet"
    assert f"Synthetic corpus sampled from `{teacher_dir}`" in card.text
    assert "173 tokens in 11 rows of 16 token ids" in card.text and "seed 7" in card.text

    old = tmp_path / "old"  # the earlier layout: one save_to_disk folder per shard beside the manifest
    old.mkdir()
    shutil.copy(out / "generation.json", old / "generation.json")
    for index, (start, stop) in enumerate([(0, 3), (3, 6), (6, 9), (9, 11)]):
        expected.select(range(start, stop)).save_to_disk(str(old / f"shard-{index:05d}"))
    assert load_synthetic(old)["input_ids"] == expected["input_ids"]
    with pytest.raises(InputError, match="earlier layout"):
        generate_synthetic(teacher_dir, old, **RESUME_RUN)


def test_push_of_a_corpus_uploads_its_shards_card_and_tokenizer_and_offline_says_so(teacher_dir, tmp_path, capsys):
    from huggingface_hub import DatasetCard, HfApi
    from huggingface_hub.utils import filter_repo_objects

    from hf_infcompute.cli.main import main

    out = tmp_path / "out"
    generate_synthetic(teacher_dir, out, **RESUME_RUN)
    (out / "README.md").unlink()  # push writes the card again from the manifest
    capsys.readouterr()  # the generation's progress bars
    with pytest.MonkeyPatch.context() as offline:
        offline.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
        assert main(["push", str(out), "me/synthetic"]) == 2
    error = capsys.readouterr().err
    assert "offline" in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert DatasetCard.load(out / "README.md").data.configs[0]["data_files"][0]["path"] == "data/*.parquet"

    hub = tmp_path / "hub"  # a local folder stands in for the repository

    def upload_folder(self, *, folder_path, repo_id, repo_type, allow_patterns, **kwargs):
        assert (repo_id, repo_type) == ("me/synthetic", "dataset")
        files = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
        for name in filter_repo_objects(files, allow_patterns=allow_patterns):  # upload_folder's own filter
            (hub / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(folder_path, name), hub / name)

    with pytest.MonkeyPatch.context() as online:
        online.setattr(
            HfApi, "create_repo", lambda self, repo_id, **kwargs: f"https://huggingface.co/datasets/{repo_id}"
        )
        online.setattr(HfApi, "upload_folder", upload_folder)
        assert main(["push", str(out), "me/synthetic"]) == 0
    assert "pushed to https://huggingface.co/datasets/me/synthetic" in capsys.readouterr().out
    uploaded = {p.relative_to(hub).as_posix() for p in hub.rglob("*") if p.is_file()}
    shards = {f"data/shard-{i:05d}.parquet" for i in range(4)}
    tokenizer = {f"tokenizer/{p.name}" for p in (out / "tokenizer").iterdir()}
    assert uploaded == shards | {"README.md"} | tokenizer and tokenizer  # no manifest, no lock or temporary files
