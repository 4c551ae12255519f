"""The chunked LM-head losses equal the full ones (values and gradients), hold less memory, and train the same."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_infcompute.distillation.arguments import DistillationTrainingArguments
from hf_infcompute.distillation.losses import (
    chunked_distillation_loss,
    chunked_token_kd_loss,
    token_kd_loss,
)
from hf_infcompute.distillation.teacher_logits import TeacherChunkLogits
from hf_infcompute.distillation.trainer import DistillationTrainer
from hf_infcompute.ensemble import LogitEnsembleForCausalLM
from hf_infcompute.errors import InputError
from hf_infcompute.training import (
    parse_run_config,
    pretrain,
)
from hf_infcompute.training.loss_forward import install_loss_forward
from hf_infcompute.training.losses import chunked_causal_lm_loss
from hf_infcompute.training.pretraining import build_model_for, build_trainer
from hf_infcompute.training.validation import CHUNK_TOKENS

VOCAB = 1000
REPO = Path(__file__).resolve().parents[1]


def tiny_llama(seed: int = 0, tie: bool = False) -> LlamaForCausalLM:
    """About 210K parameters (untied): hidden 64, 2 layers, vocabulary 1,000."""
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def padded_batch() -> dict[str, torch.Tensor]:
    """Three rows of 24 tokens; the last row is partial (16 tokens, then padding masked out of attention and loss)."""
    input_ids = torch.randint(0, VOCAB, (3, 24), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 16:] = 0
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def loss_and_grads(model: torch.nn.Module, batch: dict, **kwargs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**batch, **kwargs).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(loss_a, grads_a, loss_b, grads_b, atol=1e-5):
    torch.testing.assert_close(loss_a, loss_b, atol=atol, rtol=0)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=atol, rtol=0, msg=name)


@pytest.mark.parametrize("num_items_in_batch", [None, 50])
@pytest.mark.parametrize("tie", [False, True])
def test_chunked_forward_equals_the_full_loss_and_gradients(num_items_in_batch, tie):
    full = tiny_llama(tie=tie)
    chunked = copy.deepcopy(full)
    install_loss_forward(chunked, "chunked", chunk_tokens=10)  # 72 positions: the last chunk is partial
    batch = padded_batch()
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": torch.tensor(num_items_in_batch)}
    assert_same(*loss_and_grads(full, batch, **extra), *loss_and_grads(chunked, batch, **extra))
    assert chunked(**batch).logits is None
    # Without labels the model is its own: logits for generation and lm-eval.
    torch.testing.assert_close(chunked(input_ids=batch["input_ids"]).logits, full(input_ids=batch["input_ids"]).logits)
    copied = copy.deepcopy(chunked)  # a copy computes with its own weights
    assert copied.forward.__self__ is copied


def test_chunked_loss_under_regional_compilation_equals_the_full_loss():
    """`compile_regions` (the Trainer's `torch_compile`) wraps the LM head in an `OptimizedModule`: the chunked loss
    still finds it and gives the full loss (dynamo's eager backend: the wrapping, without code generation)."""
    from accelerate.utils import compile_regions

    full = tiny_llama()
    chunked = copy.deepcopy(full)
    install_loss_forward(chunked, "chunked", chunk_tokens=10)
    compiled = compile_regions(chunked, backend="eager")
    assert isinstance(compiled.get_output_embeddings(), torch._dynamo.eval_frame.OptimizedModule)
    batch = padded_batch()
    loss = compiled(**batch).loss
    loss.backward()  # into the parameters `chunked` shares with its compiled regions, under `chunked`'s names
    grads = {name: p.grad for name, p in chunked.named_parameters() if p.grad is not None}
    assert_same(*loss_and_grads(full, batch), loss.detach(), grads)
    assert compiled(**batch).logits is None


def test_chunked_causal_lm_loss_is_the_transformers_loss_with_a_bias():
    from transformers.loss.loss_utils import ForCausalLMLoss

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 9, 16, generator=generator, requires_grad=True)
    weight = torch.randn(40, 16, generator=generator, requires_grad=True)
    bias = torch.randn(40, generator=generator, requires_grad=True)
    labels = torch.randint(0, 40, (3, 9), generator=generator)
    labels[0, 4:] = -100
    expected = ForCausalLMLoss(hidden @ weight.T + bias, labels, 40)
    got = chunked_causal_lm_loss(hidden, weight, labels, bias=bias, chunk_tokens=4)
    torch.testing.assert_close(got, expected)
    inputs = (hidden, weight, bias)
    for a, b in zip(torch.autograd.grad(expected, inputs), torch.autograd.grad(got, inputs), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert torch.isnan(chunked_causal_lm_loss(hidden, weight, torch.full_like(labels, -100)))  # as transformers


def student_and_teacher_states(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2, 7, 16, generator=generator, requires_grad=True)
    weight = torch.randn(30, 16, generator=generator, requires_grad=True)
    bias = torch.randn(30, generator=generator, requires_grad=True)
    teacher = torch.randn(2, 7, 30, generator=generator) * 2
    labels = torch.randint(0, 30, (2, 7), generator=generator)
    labels[1, 3:] = -100
    return hidden, weight, bias, teacher, labels


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_chunked_kd_equals_token_kd_loss_and_its_gradients(temperature):
    hidden, weight, bias, teacher, labels = student_and_teacher_states()
    flat_teacher = teacher.reshape(-1, teacher.shape[-1])
    student_logits = hidden @ weight.T + bias
    expected = token_kd_loss(student_logits[:, :-1], teacher[:, :-1], labels[:, 1:], temperature=temperature)
    got = chunked_token_kd_loss(
        hidden,
        weight,
        lambda start, end: flat_teacher[start:end],
        labels,
        temperature=temperature,
        student_bias=bias,
        chunk_tokens=3,
    )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    inputs = (hidden, weight, bias)
    for a, b in zip(torch.autograd.grad(expected, inputs), torch.autograd.grad(got, inputs), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # The trainer's mix: (1 - alpha) * CE + alpha * KD in one pass.
    ce = torch.nn.functional.cross_entropy(student_logits[:, :-1].reshape(-1, 30), labels[:, 1:].reshape(-1))
    mixed = chunked_distillation_loss(
        hidden,
        weight,
        bias,
        teacher_logits=lambda start, end: flat_teacher[start:end],
        labels=labels,
        alpha=0.3,
        temperature=temperature,
        chunk_tokens=5,
    )
    torch.testing.assert_close(mixed, 0.7 * ce + 0.3 * expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("combine", ["logits", "probs"])
def test_teacher_chunk_logits_are_the_teachers_logits(combine):
    batch = padded_batch()
    single = tiny_llama(seed=3).eval()
    ensemble = LogitEnsembleForCausalLM.from_members([tiny_llama(seed=4), tiny_llama(seed=5)], combine=combine).eval()
    for teacher in (single, ensemble):
        expected = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        chunks = TeacherChunkLogits(teacher, batch["input_ids"], batch["attention_mask"])
        got = torch.cat([chunks(start, min(start + 10, 72)) for start in range(0, 72, 10)])
        torch.testing.assert_close(got, expected.reshape(-1, VOCAB).float(), atol=1e-5, rtol=0)


def test_distillation_trainer_gives_the_same_token_level_loss_chunked_and_full(tmp_path):
    batch = padded_batch()
    teacher = LogitEnsembleForCausalLM.from_members([tiny_llama(seed=4), tiny_llama(seed=5)]).eval()
    results = []
    for implementation in ("full", "chunked"):
        args = DistillationTrainingArguments(
            output_dir=str(tmp_path / implementation),
            precision="fp32",
            loss_implementation=implementation,
            loss_chunk_tokens=16,
            report_to=[],
            kd_mode="token",
            teacher="in memory",
            synthetic_fraction=0.0,
            kd_temperature=2.0,
            kd_alpha=0.4,
        )
        student = tiny_llama()
        install_loss_forward(student, implementation, args.loss_chunk_tokens)
        trainer = DistillationTrainer(model=student, args=args, num_real=1, teacher=teacher)
        student.train()
        loss = trainer.compute_loss(student, dict(batch))
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in student.named_parameters() if p.grad is not None}))
    assert_same(*results[0], *results[1])


def test_lora_model_gives_the_same_loss_and_gradients_chunked_with_activation_checkpointing():
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    full = get_peft_model(tiny_llama(), lora)
    chunked = copy.deepcopy(full)
    install_loss_forward(chunked, "chunked", chunk_tokens=16)
    chunked.activation_checkpointing_enable()
    full.train(), chunked.train()
    full_result, chunked_result = loss_and_grads(full, padded_batch()), loss_and_grads(chunked, padded_batch())
    assert all("lora_" in name for name in full_result[1])
    assert_same(*full_result, *chunked_result)


def test_unknown_or_unavailable_loss_implementation_is_an_input_error():
    with pytest.raises(InputError, match="unknown loss_implementation"):
        install_loss_forward(tiny_llama(), "fused", 1024)
    with pytest.raises(InputError, match="loss_chunk_tokens"):
        install_loss_forward(tiny_llama(), "chunked", 0)
    if importlib.util.find_spec("liger_kernel") is None or not torch.cuda.is_available():
        with pytest.raises(InputError, match="liger-kernel"):
            install_loss_forward(tiny_llama(), "liger", 1024)


PEAK_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from hf_infcompute.training.loss_forward import install_loss_forward

    config = LlamaConfig(vocab_size=32768, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024)
    model = LlamaForCausalLM(config)
    install_loss_forward(model, sys.argv[1], 1024)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    input_ids = torch.randint(0, 32768, (8, 1024))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024))
    """
)


def step_peak_mib(implementation: str) -> float:
    """Peak resident memory (MiB) one forward and backward adds, measured in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, implementation],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_chunked_step_at_a_32k_vocabulary_needs_at_most_half_the_memory():
    full, chunked = step_peak_mib("full"), step_peak_mib("chunked")
    # 8 x 1,024 tokens x 32,768: 1 GiB of fp32 logits alone on the full path.
    assert full > 1024
    assert chunked <= full / 2, (full, chunked)


def test_pretrain_chunked_equals_full_and_checkpointing_runs(tiny_run, tmp_path):
    settings = {**tiny_run, "num_train_epochs": 1, "token_budget": 4096}
    head_calls = []

    def factory(run, data, callbacks=None):
        trainer = build_trainer(run, data, callbacks)

        def hook(module, inputs, output):
            tokens = output.shape[:-1].numel()
            head_calls.append((run.training.loss_implementation, torch.is_grad_enabled(), tokens))

        trainer.model.lm_head.register_forward_hook(hook)
        return trainer

    full = pretrain({**settings, "loss_implementation": "full"}, tmp_path / "full", trainer_factory=factory)
    chunked = pretrain(
        {**settings, "loss_implementation": "chunked", "gradient_checkpointing": True},
        tmp_path / "chunked",
        trainer_factory=factory,
    )
    # Training never built the chunked run's logits; only the per-row validation scoring did, without gradients and
    # a bounded chunk of rows at a time.
    assert {(grad, tokens <= CHUNK_TOKENS) for impl, grad, tokens in head_calls if impl == "chunked"} == {(False, True)}
    assert any(impl == "full" and grad for impl, grad, _ in head_calls)
    assert chunked["status"] == "finished"
    assert chunked["val_loss"] == pytest.approx(full["val_loss"], abs=1e-4)
    # Neither setting changes results, so neither is in the run's identity: finished runs stay valid.
    assert chunked["run_id"] == full["run_id"]


def test_lora_adapters_start_from_the_runs_seed(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "base")
    run = parse_run_config(
        {"base_model": str(tmp_path / "base"), "corpus": str(tmp_path), "token_budget": 1024, "lora_r": 4, "seed": 3}
    )
    first, second = build_model_for(run, None), build_model_for(run, None)
    torch.manual_seed(123)  # whatever the global generator holds
    third = build_model_for(run, None)
    for (name, a), b, c in zip(first.named_parameters(), second.parameters(), third.parameters(), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c), name


def test_auto_chunks_where_the_logits_are_large_and_not_where_they_are_small():
    from hf_infcompute.planning.memory import resolve_loss_implementation

    assert resolve_loss_implementation("auto", 16 * 128, 4096) == "full"  # the quickstart: 32 MiB of logits
    assert resolve_loss_implementation("auto", 16 * 4096, 128_256) == "chunked"  # the paper: 33.6 GB
    assert resolve_loss_implementation("full", 16 * 4096, 128_256) == "full"
    with pytest.raises(InputError, match="unknown loss_implementation"):
        resolve_loss_implementation("fused", 1, 1)
