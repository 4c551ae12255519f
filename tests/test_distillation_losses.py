"""Token-level KD loss and the real:synthetic batch mix, tested as pure functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hf_infcompute.distillation import mixed_batch_counts, token_kd_loss
from hf_infcompute.errors import InputError


def random_logits(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kl_is_zero_when_the_student_equals_the_teacher(temperature):
    logits = random_logits(2, 5, 11, seed=0)
    loss = token_kd_loss(logits.clone(), logits, temperature=temperature)
    assert abs(loss.item()) < 1e-6


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_matches_a_hand_computation(temperature):
    student = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    teacher = np.array([[0.0, 2.0, 0.0], [1.0, -1.0, 0.0]])

    def softmax(x):
        e = np.exp(x / temperature - (x / temperature).max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(teacher), softmax(student)
    per_position = (p * (np.log(p) - np.log(q))).sum(-1) * temperature**2
    loss = token_kd_loss(torch.tensor(student), torch.tensor(teacher), temperature=temperature)
    assert loss.item() == pytest.approx(per_position.mean(), rel=1e-6)
    none = token_kd_loss(torch.tensor(student), torch.tensor(teacher), temperature=temperature, reduction="none")
    np.testing.assert_allclose(none.numpy(), per_position, rtol=1e-6)
    summed = token_kd_loss(torch.tensor(student), torch.tensor(teacher), temperature=temperature, reduction="sum")
    assert summed.item() == pytest.approx(per_position.sum(), rel=1e-6)


def test_masked_positions_do_not_count():
    student, teacher = random_logits(2, 4, 7, seed=1), random_logits(2, 4, 7, seed=2)
    labels = torch.tensor([[3, 1, -100, -100], [2, -100, 5, 6]])
    mask = labels != -100
    loss = token_kd_loss(student, teacher, labels)
    assert loss.item() == pytest.approx(token_kd_loss(student, teacher, mask).item())
    per_position = token_kd_loss(student, teacher, reduction="none")
    assert loss.item() == pytest.approx(per_position[mask].mean().item(), rel=1e-6)
    changed = student.clone()
    changed[~mask] = 100.0  # what the student says at ignored positions does not matter
    assert token_kd_loss(changed, teacher, labels).item() == pytest.approx(loss.item())
    nothing = token_kd_loss(student.requires_grad_(), teacher, torch.zeros_like(mask))
    assert nothing.item() == 0.0
    nothing.backward()


def test_gradient_reaches_only_the_student():
    student = random_logits(3, 6, seed=3).requires_grad_()
    teacher = random_logits(3, 6, seed=4).requires_grad_()
    token_kd_loss(student, teacher, temperature=2.0).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_minimising_the_loss_recovers_the_teacher_distribution():
    teacher = random_logits(4, 9, seed=5)
    student = torch.zeros(4, 9, requires_grad=True)
    optimizer = torch.optim.Adam([student], lr=0.1)
    start = token_kd_loss(student, teacher).item()
    for _ in range(300):
        optimizer.zero_grad()
        loss = token_kd_loss(student, teacher)
        loss.backward()
        optimizer.step()
    assert loss.item() < 1e-3 * start
    torch.testing.assert_close(student.softmax(-1), teacher.softmax(-1), atol=2e-3, rtol=0)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="vocabulary"):
        token_kd_loss(torch.zeros(2, 5), torch.zeros(2, 6))
    with pytest.raises(ValueError, match="labels"):
        token_kd_loss(torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize(("batch_size", "fraction"), [(64, 0.75), (16, 0.9), (7, 0.5), (8, 0.0), (8, 1.0), (5, 1 / 3)])
def test_mixed_batch_counts_keep_the_fraction(batch_size, fraction):
    steps = 300
    counts = [mixed_batch_counts(batch_size, fraction, step) for step in range(steps)]
    assert all(real + synthetic == batch_size for real, synthetic in counts)
    synthetic = [s for _, s in counts]
    assert max(synthetic) - min(synthetic) <= 1
    assert abs(sum(synthetic) - fraction * batch_size * steps) < 1
    if math.isclose(fraction * batch_size, round(fraction * batch_size)):
        assert set(synthetic) == {round(fraction * batch_size)}


def test_mixed_batch_counts_mix_rather_than_round():
    # 0.9 x 16 = 14.4 synthetic sequences per step: exactly 72 in every 5 steps (rounding would give 70).
    assert [mixed_batch_counts(16, 0.9, step)[1] for step in range(5)] == [14, 14, 15, 14, 15]


@pytest.mark.parametrize(("batch_size", "fraction"), [(0, 0.5), (8, -0.1), (8, 1.5)])
def test_mixed_batch_counts_refuse_bad_input(batch_size, fraction):
    with pytest.raises(InputError):
        mixed_batch_counts(batch_size, fraction)
