from __future__ import annotations

import math

import pytest
import torch

from distill.losses import kd_kl, kd_mse, kd_rank, multi_positive_ce


def test_kl_is_zero_when_logits_match():
    x = torch.randn(3, 7)
    assert kd_kl(x, x.clone(), t=2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_by_hand_and_t_squared_scaling():
    s, t_logits = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    # teacher p = (3/4, 1/4), student q = (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_kl(s, t_logits, t=1.0).item() == pytest.approx(expected, rel=1e-5)
    # at temperature t the logits are divided by t and the result multiplied by t**2
    assert kd_kl(s * 2, t_logits * 2, t=2.0).item() == pytest.approx(4 * expected, rel=1e-5)


def test_kl_gradient_pulls_student_towards_teacher():
    s = torch.zeros(1, 3, requires_grad=True)
    kd_kl(s, torch.tensor([[2.0, 0.0, 0.0]]), t=1.0).backward()
    assert s.grad[0, 0] < 0 and s.grad[0, 1] > 0  # gradient descent raises item 0


def test_masked_items_do_not_count():
    s = torch.tensor([[0.0, 5.0, 0.0]])
    t_logits = torch.tensor([[0.0, -5.0, 0.0]])
    mask = torch.tensor([[False, True, False]])
    assert kd_kl(s, t_logits, t=1.0, mask=mask).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_mse(s, t_logits, mask=mask).item() == pytest.approx(0.0)
    assert kd_mse(s, t_logits).item() == pytest.approx(100 / 3)


def test_rank_loss_prefers_teacher_top_items():
    teacher = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    good = kd_rank(torch.tensor([[3.0, 2.0, 0.0, 0.0]]), teacher, k=2, lam=1.0)
    bad = kd_rank(torch.tensor([[0.0, 0.0, 3.0, 2.0]]), teacher, k=2, lam=1.0)
    assert good < bad
    # masking the teacher's best item moves the top-2 to items 1 and 2
    masked = kd_rank(
        torch.tensor([[9.0, 0.0, 0.0, 0.0]]),
        teacher,
        k=2,
        lam=1.0,
        mask=torch.tensor([[True, False, False, False]]),
    )
    assert masked.item() == pytest.approx(math.log(3.0), rel=1e-4)


def test_multi_positive_ce_by_hand():
    logits = torch.zeros(2, 4)
    positives = torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 0, 0]])  # second user has none: skipped
    assert multi_positive_ce(logits, positives).item() == pytest.approx(math.log(4.0))
