from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distill.training.losses import kd_kl, kd_mse, kd_rank, multi_positive_ce


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


def _tiny_split():
    import polars as pl

    from storage.split import Split

    users = [0] * 7 + [1] * 5
    items = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    return Split(
        frame=pl.DataFrame(
            {
                "user_idx": users,
                "item_idx": items,
                "timestamp": list(range(12)),
                "fold": ["train"] * 5 + ["valid", "test"] + ["train"] * 3 + ["valid", "test"],
            }
        ),
        n_users=2,
        n_items=20,
    )


def test_sampled_softmax_over_every_item_equals_full_softmax():
    from distill.nn.sampled import SampledSoftmax
    from distill.student.build import build_student
    from distill.student.config import StudentConfig
    from distill.student.fit import DistillConfig, UserData, window_loss

    split = _tiny_split()
    data = UserData(split, history_len=3)
    torch.manual_seed(0)
    model = build_student(StudentConfig(dim=8, history_len=3, dropout=0.0), 2, 20, None).eval()
    batch = ("all", 0, np.arange(len(data.inputs)))

    def loss(n: int) -> float:
        torch.manual_seed(1)
        sampler = SampledSoftmax.of_targets(data.targets, 20, n) if n else None
        return window_loss(model, data, DistillConfig(alpha=0), None, sampler, batch)[0].item()

    # with many more negatives than items every column is drawn with certainty (log q = 0):
    # the same softmax
    assert loss(2000) == pytest.approx(loss(0), rel=1e-6)
    assert loss(3) != pytest.approx(loss(0))


def test_ragged_sampled_ce_equals_full_when_every_item_is_a_negative():
    """Each row's softmax over its positives + the shared negatives (positives among them
    masked) is the full softmax when the negatives are every item."""
    from distill.training.losses import sampled_multi_positive_ce

    torch.manual_seed(0)
    logits = torch.randn(3, 15)
    positives = torch.zeros(3, 15)
    positives[0, [1, 4]] = 1
    positives[1, 9] = 1  # row 2 has none: left out, as in multi_positive_ce
    owner, items = positives.nonzero(as_tuple=True)
    shared = logits.masked_fill(positives > 0, -torch.inf)
    got = sampled_multi_positive_ce(logits[owner, items], owner, shared)
    assert got.item() == pytest.approx(multi_positive_ce(logits, positives).item(), rel=1e-6)
    unmasked = sampled_multi_positive_ce(logits[owner, items], owner, logits)
    assert unmasked.item() > got.item()  # a positive counted twice in the partition


def test_ragged_kd_kl_equals_the_masked_dense_term():
    from distill.training.losses import ragged_kd_kl

    torch.manual_seed(0)
    student, teacher = torch.randn(4, 10), torch.randn(4, 10)
    mask = torch.rand(4, 10) < 0.4
    mask[:, 0] = False  # every row keeps an item
    rows, items = (~mask).nonzero(as_tuple=True)
    for t in (1.0, 2.5):
        dense = kd_kl(student, teacher, t, mask)
        ragged = ragged_kd_kl(student[rows, items], teacher[rows, items], rows, 4, t)
        assert ragged.item() == pytest.approx(dense.item(), rel=1e-5)


def test_topk_losses_reuse_a_given_student_log_softmax():
    """window_loss hands the CE term's log-softmax to the KD term: the same loss, one softmax."""
    from distill.training.losses import kd_topk_kl, kd_topk_rank

    torch.manual_seed(0)
    logits = torch.randn(5, 12)
    items, scores = torch.randint(0, 12, (5, 4)), torch.randn(5, 4)
    log_q = torch.log_softmax(logits, dim=-1)
    assert torch.allclose(
        kd_topk_kl(logits, items, scores, 1.0, log_q=log_q), kd_topk_kl(logits, items, scores, 1.0)
    )
    assert torch.allclose(
        kd_topk_rank(logits, items, 2.0, log_q=log_q), kd_topk_rank(logits, items, 2.0)
    )


def test_topk_kl_by_hand():
    from distill.training.losses import kd_topk_kl

    # teacher: equal logits on its top-2 columns -> p = (1/2, 1/2); student uniform over 4 -> 1/4
    student = torch.zeros(1, 4)
    items, scores = torch.tensor([[2, 0]]), torch.tensor([[3.0, 3.0]])
    assert kd_topk_kl(student, items, scores, 1.0).item() == pytest.approx(math.log(2))
    # all student mass on the teacher's columns, in the teacher's proportions: zero
    matched = torch.tensor([[5.0, -1e9, 5.0, -1e9]])
    assert kd_topk_kl(matched, items, scores, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    # temperature: loss scaled by T^2 on the softened distributions
    assert kd_topk_kl(student, items, scores, 2.0).item() == pytest.approx(4 * math.log(2))


@pytest.mark.parametrize("loss", ["kl", "mse", "rank"])
def test_kd_term_drops_unscored_and_seen_items(loss):
    """The student's KD term: a NaN teacher column (not a candidate) and the user's train items
    count for nothing; the result equals the loss on the remaining columns alone."""
    from distill.student.fit import DistillConfig, kd_term
    from distill.training.losses import kd_kl, kd_mse, kd_rank

    student = torch.tensor([[1.0, 2.0, 0.5, -1.0]])
    teacher = torch.tensor([[float("nan"), 3.0, 0.0, 5.0]])  # item 0 was not scored
    seen = torch.tensor([[0, 0, 0, 1]])  # item 3 is a train item
    reference = {
        "kl": lambda s, t: kd_kl(s, t, 1.0),
        "mse": kd_mse,
        "rank": lambda s, t: kd_rank(s, t, 1, 5.0),
    }[loss]
    config = DistillConfig(loss=loss, rank_k=1)
    got = kd_term(config, student, teacher, seen)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(reference(student[:, 1:3], teacher[:, 1:3]).item(), rel=1e-5)
    unmasked = kd_term(config.model_copy(update={"mask_seen": False}), student, teacher, seen)
    assert unmasked.item() == pytest.approx(
        reference(student[:, 1:], teacher[:, 1:]).item(), rel=1e-5
    )
