"""LogitEnsembleForCausalLM: logits are the member mean, saving round-trips (tied weights, remote code), generate
with a per-member cache equals a naive decode, scoring builds no cache and its chunked or streamed K-curve equals the
naive mean, the soup is the weight mean, and bad members are refused naming the member."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from hf_infcompute.data import PackedCollator
from hf_infcompute.data.tokenizer import train_bpe_tokenizer
from hf_infcompute.ensemble import (
    EnsembleMemberError,
    LogitEnsembleConfig,
    LogitEnsembleForCausalLM,
    average_weights,
    build_ensemble,
)
from hf_infcompute.ensemble.curve import MemberPlacement, ensemble_curve, members_fit
from hf_infcompute.ensemble.modeling_logit_ensemble import OUTPUT_CACHE_FIELD, EnsembleCache
from hf_infcompute.errors import InputError
from hf_infcompute.training.validation import row_chunks, sequence_losses

TEXT = [f"member {i} of the ensemble reads the quick brown fox, then sleeps {i % 5} hours. " * 2 for i in range(40)]
CONTEXT = 64


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(TEXT, vocab_size=300)


def tiny_llama(tokenizer, seed: int, tie: bool = False, **overrides) -> LlamaForCausalLM:
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=CONTEXT,
        tie_word_embeddings=tie,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**settings, **overrides})).eval()


def tiny_gpt2(tokenizer, seed: int) -> GPT2LMHeadModel:
    """A member with learned absolute positions: it sees wrong `position_ids` (a RoPE member would not)."""
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=CONTEXT,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def save_member(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def members(tokenizer):
    """Three members: tied and untied embeddings, different seeds."""
    return [tiny_llama(tokenizer, 0, tie=True), tiny_llama(tokenizer, 1), tiny_llama(tokenizer, 2, tie=True)]


@pytest.fixture(scope="module")
def member_dirs(members, tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    return [save_member(m, tokenizer, root / f"member-{i}") for i, m in enumerate(members)]


@pytest.fixture(scope="module")
def ensemble_dir(member_dirs, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ensemble")
    build_ensemble(member_dirs, folder)
    return folder


def token_batch(tokenizer, batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, len(tokenizer), (batch, length), generator=generator)


@torch.no_grad()
def member_logits(members, input_ids: torch.Tensor) -> torch.Tensor:
    return torch.stack([member(input_ids, use_cache=False).logits for member in members])


# ------------------------------------------------------------------ combining


@torch.no_grad()
def test_logits_are_the_member_mean_and_loss_is_its_cross_entropy(members, tokenizer):
    ensemble = LogitEnsembleForCausalLM.from_members(members).eval()
    input_ids = token_batch(tokenizer)
    labels = input_ids.clone()
    labels[0, :3] = -100
    output = ensemble(input_ids, labels=labels)

    expected = member_logits(members, input_ids).mean(0)
    torch.testing.assert_close(output.logits, expected, atol=1e-6, rtol=0)
    shifted = F.cross_entropy(expected[:, :-1].reshape(-1, expected.shape[-1]), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(output.loss, shifted, atol=1e-6, rtol=0)
    # The mean of logits is a model of its own: its loss is none of the members'.
    for logits in member_logits(members, input_ids):
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        assert not torch.allclose(output.loss, loss)


@torch.no_grad()
def test_probs_combine_is_the_log_of_the_mean_probability(members, tokenizer):
    ensemble = LogitEnsembleForCausalLM.from_members(members, combine="probs").eval()
    input_ids = token_batch(tokenizer)
    output = ensemble(input_ids, labels=input_ids)

    expected = torch.log(torch.softmax(member_logits(members, input_ids), dim=-1).mean(0))
    torch.testing.assert_close(output.logits, expected, atol=1e-6, rtol=1e-6)
    assert torch.allclose(output.logits.exp().sum(-1), torch.ones(()), atol=1e-5)
    nll = -expected[:, :-1].gather(-1, input_ids[:, 1:, None]).mean()
    torch.testing.assert_close(output.loss, nll, atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_one_member_is_that_member_exactly(members, tokenizer):
    input_ids = token_batch(tokenizer)
    for combine in ("logits", "probs"):
        ensemble = LogitEnsembleForCausalLM.from_members([members[1]], combine=combine).eval()
        expected = members[1](input_ids).logits
        if combine == "probs":
            expected = torch.log_softmax(expected, -1)
        assert torch.equal(ensemble(input_ids).logits, expected)


@torch.no_grad()
def test_members_of_different_architectures_combine(members, tokenizer):
    mixed = [members[0], tiny_gpt2(tokenizer, 3)]
    ensemble = LogitEnsembleForCausalLM.from_members(mixed).eval()
    input_ids = token_batch(tokenizer)
    torch.testing.assert_close(ensemble(input_ids).logits, member_logits(mixed, input_ids).mean(0), atol=1e-6, rtol=0)
    assert ensemble.config.vocab_size == len(tokenizer) and ensemble.config.max_position_embeddings == CONTEXT


def test_gradients_reach_every_member(tokenizer):
    ensemble = LogitEnsembleForCausalLM.from_members([tiny_llama(tokenizer, s, tie=s == 0) for s in (0, 1)])
    input_ids = token_batch(tokenizer)
    ensemble(input_ids, labels=input_ids).loss.backward()
    for member in ensemble.members:
        assert member.model.embed_tokens.weight.grad.abs().sum() > 0
        assert member.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ scoring on the device: no caches, chunks, streaming


class CallLog:
    """Forward-hooks members to record (member index, use_cache) of every call."""

    def __init__(self, members):
        self.calls: list[tuple[int, object]] = []
        self.handles = [
            member.register_forward_pre_hook(self._hook(index), with_kwargs=True)
            for index, member in enumerate(members)
        ]

    def _hook(self, index: int):
        def record(module, args, kwargs):
            self.calls.append((index, kwargs.get("use_cache")))

        return record

    def __enter__(self) -> CallLog:
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def test_scoring_without_use_cache_builds_no_cache(members, tokenizer):
    ensemble = LogitEnsembleForCausalLM.from_members(members).eval()
    assert ensemble.config.use_cache  # what `generate` defaults to; a plain call still builds nothing
    with CallLog(members) as log:
        output = ensemble(token_batch(tokenizer), labels=token_batch(tokenizer))
    assert getattr(output, OUTPUT_CACHE_FIELD) is None
    assert log.calls == [(0, False), (1, False), (2, False)]


def validation_rows(tokenizer, rows: int = 5, length: int = 12) -> datasets.Dataset:
    ids = token_batch(tokenizer, batch=rows, length=length, seed=3)
    lengths = [length] * (rows - 1) + [length - 4]  # a short last row: padding and an attention mask
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "length": lengths})


@torch.no_grad()
def naive_curve(members, data: datasets.Dataset, pad: int, combine: str) -> list[float]:
    """Per-token NLL of each prefix ensemble, every row at once, mean of all members' logits then log-softmax."""
    batch = PackedCollator(pad)([data[i] for i in range(len(data))])
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    stacked = torch.stack([m(**inputs, use_cache=False).logits[:, :-1].float() for m in members])
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    curve = []
    for k in range(1, len(members) + 1):
        if combine == "logits":
            log_probs = torch.log_softmax(stacked[:k].mean(0), -1)
        else:
            log_probs = torch.log(torch.softmax(stacked[:k], -1).mean(0))
        picked = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        curve.append(float(-(picked * mask).sum() / mask.sum()))
    return curve


@torch.no_grad()
@pytest.mark.parametrize("combine", ["logits", "probs"])
def test_chunked_and_streamed_curve_equals_the_naive_mean(members, tokenizer, combine):
    data = validation_rows(tokenizer)
    pad = tokenizer.pad_token_id
    expected = naive_curve(members, data, pad, combine)
    with CallLog(members) as log:
        # Batches of 2 rows, reduced one row (12 tokens) at a time.
        chunked = ensemble_curve(members, data, pad, batch_size=2, chunk_tokens=12, stream=False)
    assert {use_cache for _, use_cache in log.calls} == {False}
    assert [index for index, _ in log.calls[:6]] == [0, 1, 2, 0, 1, 2]  # resident: chunk by chunk
    torch.testing.assert_close(chunked.ensemble[combine], expected, atol=1e-5, rtol=0)
    with CallLog(members) as log:
        streamed = ensemble_curve(members, data, pad, batch_size=2, chunk_tokens=12, stream=True)
    assert [index for index, _ in log.calls[:6]] == [0, 0, 1, 1, 2, 2]  # streamed: member by member in a batch
    torch.testing.assert_close(streamed.ensemble[combine], expected, atol=1e-5, rtol=0)
    assert streamed.members == pytest.approx(chunked.members, abs=1e-6)
    assert chunked.members[1] == pytest.approx(naive_curve(members[1:2], data, pad, combine)[0], abs=1e-5)
    # Per row: the rows' means weighted by their targets are the curve's points, and a member's rows are what
    # `sequence_losses` scores for it alone.
    rows = np.array(chunked.sequences[combine])
    assert rows.shape == (len(members), len(data))
    targets = (PackedCollator(pad)([data[i] for i in range(len(data))])["labels"][:, 1:] != -100).sum(-1).numpy()
    np.testing.assert_allclose(rows @ targets / targets.sum(), expected, atol=1e-5)
    np.testing.assert_allclose(streamed.sequences[combine], chunked.sequences[combine], atol=2e-6)
    alone = sequence_losses(members[1], data, pad, batch_size=2, chunk_tokens=12)
    assert alone == pytest.approx(chunked.member_sequences[1], abs=2e-6)
    # The full-K point is the ensemble model's own loss.
    if combine == "logits":
        batch = PackedCollator(pad)([data[i] for i in range(len(data))])
        loss = LogitEnsembleForCausalLM.from_members(members)(**batch).loss
        assert float(loss) == pytest.approx(expected[-1], abs=1e-5)


def test_members_fit_keeps_headroom_and_chunks_cover_the_batch():
    assert members_fit([30, 30], free_bytes=100, headroom=0.3)
    assert not members_fit([40, 40], free_bytes=100, headroom=0.3)
    assert not members_fit([1], free_bytes=0)
    assert row_chunks(5, 12, chunk_tokens=24) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert row_chunks(3, 4096, chunk_tokens=1000) == [slice(0, 1), slice(1, 2), slice(2, 3)]


def test_cpu_scoring_keeps_every_member_resident(members):
    assert not MemberPlacement(members, torch.device("cpu")).streamed


# ------------------------------------------------------------------ saving and loading


@torch.no_grad()
def test_save_and_load_round_trip(ensemble_dir, members, tokenizer):
    config = json.loads((ensemble_dir / "config.json").read_text())
    assert config["model_type"] == "logit_ensemble" and len(config["member_configs"]) == 3
    assert config["auto_map"] == {
        "AutoConfig": "configuration_logit_ensemble.LogitEnsembleConfig",
        "AutoModelForCausalLM": "modeling_logit_ensemble.LogitEnsembleForCausalLM",
    }
    loaded = AutoModelForCausalLM.from_pretrained(ensemble_dir).eval()
    assert isinstance(loaded, LogitEnsembleForCausalLM) and isinstance(loaded.config, LogitEnsembleConfig)
    input_ids = token_batch(tokenizer)
    assert torch.equal(loaded(input_ids).logits, member_logits(members, input_ids).mean(0))
    for member, original in zip(loaded.members, members):
        assert (member.lm_head.weight is member.model.embed_tokens.weight) == original.config.tie_word_embeddings
        assert torch.equal(member.lm_head.weight, original.lm_head.weight)
    assert AutoTokenizer.from_pretrained(ensemble_dir).get_vocab() == tokenizer.get_vocab()


@torch.no_grad()
def test_loads_in_a_fresh_process_without_the_package(ensemble_dir, tokenizer, tmp_path):
    input_ids = token_batch(tokenizer)
    torch.save(input_ids, tmp_path / "input_ids.pt")
    script = textwrap.dedent(
        f"""
        import importlib.util, sys, torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(ensemble_dir)!r}, trust_remote_code=True).eval()
        assert "hf_infcompute" not in sys.modules, "loading imported hf_infcompute"
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model(torch.load("input_ids.pt")).logits
        torch.save(logits, "logits.pt")
        print("importable:", importlib.util.find_spec("hf_infcompute") is not None)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = AutoModelForCausalLM.from_pretrained(ensemble_dir).eval()(input_ids).logits
    assert torch.equal(torch.load(tmp_path / "logits.pt"), expected)


@torch.no_grad()
def test_load_in_another_dtype_converts_every_member(ensemble_dir):
    loaded = AutoModelForCausalLM.from_pretrained(ensemble_dir, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert loaded(torch.tensor([[5, 6, 7]])).logits.dtype == torch.float32  # combined in float32


# ------------------------------------------------------------------ generation


@torch.no_grad()
def naive_greedy(ensemble, input_ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Full recompute at every step, argmax of the ensemble's (mean) logits; no cache."""
    for _ in range(steps):
        logits = ensemble(input_ids, use_cache=False).logits[:, -1]
        input_ids = torch.cat([input_ids, logits.argmax(-1, keepdim=True)], dim=-1)
    return input_ids


@pytest.fixture(scope="module")
def position_sensitive_ensemble(members, tokenizer):
    """A Llama and a GPT-2 member: wrong positions under left padding would change the GPT-2 member's logits."""
    return LogitEnsembleForCausalLM.from_members([members[0], tiny_gpt2(tokenizer, 4)]).eval()


@torch.no_grad()
def test_cached_greedy_generation_equals_naive_decoding(position_sensitive_ensemble, tokenizer):
    prompt = token_batch(tokenizer, batch=2, length=5, seed=1)
    with CallLog(position_sensitive_ensemble.members) as log:
        output = position_sensitive_ensemble.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=10,
            do_sample=False,
            eos_token_id=None,
            return_dict_in_generate=True,
            output_logits=True,
        )
    assert len(log.calls) == 2 * 10 and {use_cache for _, use_cache in log.calls} == {True}  # members keep caches
    assert isinstance(getattr(output, OUTPUT_CACHE_FIELD), EnsembleCache)
    assert torch.equal(output.sequences, naive_greedy(position_sensitive_ensemble, prompt, 10))
    # Each step's logits (from the members' caches) equal a full recompute over the same tokens.
    recomputed = position_sensitive_ensemble(output.sequences, use_cache=False).logits[:, prompt.shape[1] - 1 : -1]
    torch.testing.assert_close(torch.stack(output.logits, dim=1), recomputed, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_left_padded_batch_matches_single_prompts(position_sensitive_ensemble, tokenizer):
    pad = tokenizer.pad_token_id
    prompts = [token_batch(tokenizer, batch=1, length=n, seed=n)[0] for n in (3, 7)]
    width = max(len(p) for p in prompts)
    input_ids = torch.stack([F.pad(p, (width - len(p), 0), value=pad) for p in prompts])
    attention_mask = torch.stack([F.pad(torch.ones_like(p), (width - len(p), 0)) for p in prompts])
    settings = dict(
        max_new_tokens=8,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=pad,
        return_dict_in_generate=True,
        output_logits=True,
    )
    batched = position_sensitive_ensemble.generate(input_ids, attention_mask=attention_mask, **settings)
    for row, prompt in enumerate(prompts):
        single = position_sensitive_ensemble.generate(
            prompt[None], attention_mask=torch.ones_like(prompt[None]), **settings
        )
        assert torch.equal(batched.sequences[row, width:], single.sequences[0, len(prompt) :])
        # Same positions as the unpadded prompt: the GPT-2 member's absolute position embeddings would show a shift.
        torch.testing.assert_close(
            torch.stack([step[row] for step in batched.logits]),
            torch.stack([step[0] for step in single.logits]),
            atol=1e-5,
            rtol=1e-5,
        )


@torch.no_grad()
def test_samples_from_bos_at_temperature_one(ensemble_dir, tokenizer):
    ensemble = AutoModelForCausalLM.from_pretrained(ensemble_dir).eval()
    torch.manual_seed(0)
    samples = ensemble.generate(
        max_new_tokens=12, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=4
    )
    assert samples.shape[0] == 4 and samples[:, 0].eq(tokenizer.bos_token_id).all()
    assert 1 < samples.shape[1] <= 13 and samples.max() < len(tokenizer)
    assert len({tuple(row.tolist()) for row in samples}) > 1  # sampled, not greedy


# ------------------------------------------------------------------ bad members


def test_members_that_disagree_are_refused_naming_the_member(members, member_dirs, tokenizer, tmp_path):
    other_vocab = tiny_llama(tokenizer, 5, vocab_size=len(tokenizer) + 8)
    with pytest.raises(InputError, match=r"member 1 .*vocabulary size \(vocab_size\) 308.* member 0 .* 300"):
        build_ensemble([members[0], other_vocab])
    other_context = save_member(tiny_llama(tokenizer, 5, max_position_embeddings=2 * CONTEXT), None, tmp_path / "long")
    with pytest.raises(InputError, match=r"member 2 \(.*long\) has context length .*128.* 64"):
        build_ensemble([*member_dirs[:2], other_context])
    other_tokenizer = train_bpe_tokenizer([t.upper() for t in TEXT], vocab_size=300)
    retokenized = save_member(tiny_llama(tokenizer, 5), other_tokenizer, tmp_path / "retokenized")
    with pytest.raises(InputError, match=r"member 1 \(.*retokenized\)'s tokenizer differs from member 0"):
        build_ensemble([member_dirs[0], retokenized])
    # The self-contained modeling code raises a ValueError of its own, which `build_ensemble` reports as bad input.
    with pytest.raises(EnsembleMemberError):
        LogitEnsembleForCausalLM.from_members([members[0], other_vocab])


def test_missing_or_half_written_members_must_be_retrained(member_dirs, tmp_path):
    with pytest.raises(InputError, match="at least one member"):
        build_ensemble([])
    with pytest.raises(InputError, match=r"member 1 .*no model folder.*must be trained"):
        build_ensemble([member_dirs[0], tmp_path / "never-trained"])
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_text((member_dirs[0] / "config.json").read_text())
    with pytest.raises(InputError, match=r"member 1 .*config-only.* no weights.*\(re\)trained"):
        build_ensemble([member_dirs[0], config_only])
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    for file in member_dirs[0].iterdir():
        (interrupted / file.name).write_bytes(file.read_bytes())
    (interrupted / "training_incomplete").touch()
    with pytest.raises(InputError, match=r"member 0 .*half-written.*\(re\)trained"):
        build_ensemble([interrupted])
    with pytest.raises(InputError, match="combine"):
        build_ensemble(member_dirs, combine="median")


# ------------------------------------------------------------------ model soup


@torch.no_grad()
def test_soup_is_the_mean_of_the_weights_and_reloads(members, member_dirs, tokenizer, tmp_path):
    soup = average_weights([member_dirs[0], member_dirs[2]], tmp_path / "soup")  # the two tied members
    for name, parameter in soup.state_dict().items():
        expected = torch.stack([member.state_dict()[name] for member in (members[0], members[2])]).mean(0)
        torch.testing.assert_close(parameter, expected, atol=1e-7, rtol=1e-6)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "soup").eval()
    assert type(reloaded) is LlamaForCausalLM
    input_ids = token_batch(tokenizer)
    assert torch.equal(reloaded(input_ids).logits, soup.eval()(input_ids).logits)
    assert AutoTokenizer.from_pretrained(tmp_path / "soup").get_vocab() == tokenizer.get_vocab()


def test_soup_refuses_members_of_different_architectures(members, tokenizer):
    with pytest.raises(InputError, match=r"member 1's config differs from member 0's in \['num_hidden_layers'\]"):
        average_weights([members[1], tiny_llama(tokenizer, 6, num_hidden_layers=1)])
    with pytest.raises(InputError, match="member 1 is a GPT2LMHeadModel"):
        average_weights([members[1], tiny_gpt2(tokenizer, 6)])
