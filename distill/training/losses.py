"""Losses: L = L_c + alpha * L_k. Pure tensor functions; the student module only gathers inputs.

All take dense (B, I) logits. `mask` (B, I) is True for items excluded from a distribution
(the user's train items, or items outside the teacher's candidate set); excluded items get
probability zero in both teacher and student distributions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NEG = -1e9  # large negative instead of -inf: keeps gradients finite under masking


def _masked(logits: Tensor, mask: Tensor | None) -> Tensor:
    return logits if mask is None else logits.masked_fill(mask, NEG)


def multi_positive_ce(logits: Tensor, positives: Tensor) -> Tensor:
    """Full-softmax CE averaged over each user's positives. logits (B, I), positives (B, I) 0/1."""
    logp = F.log_softmax(logits, dim=-1)
    per_user = -(logp * positives).sum(-1) / positives.sum(-1).clamp(min=1)
    return per_user[positives.sum(-1) > 0].mean()


def kd_kl(
    student_logits: Tensor, teacher_logits: Tensor, t: float, mask: Tensor | None = None
) -> Tensor:
    """KL(teacher || student) over the last dim at temperature t, scaled by t**2 (Hinton et al.)."""
    s = F.log_softmax(_masked(student_logits, mask) / t, dim=-1)
    p = F.log_softmax(_masked(teacher_logits, mask) / t, dim=-1)
    return F.kl_div(s, p, log_target=True, reduction="batchmean") * t * t


def kd_mse(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error between logits over the items not masked out."""
    sq = (student_logits - teacher_logits) ** 2
    if mask is None:
        return sq.mean()
    keep = ~mask
    return (sq * keep).sum() / keep.sum().clamp(min=1)


def kd_rank(
    student_logits: Tensor, teacher_logits: Tensor, k: int, lam: float, mask: Tensor | None = None
) -> Tensor:
    """Top-K ranking distillation (in the spirit of RD / DLLM2Rec).

    The teacher's top-K items (after masking) are pseudo-positives with weight w_r ∝ exp(-r/lam)
    for rank r = 0..K-1; loss = -sum_r w_r log softmax(student)[item_r].
    """
    top = torch.topk(_masked(teacher_logits, mask), k, dim=-1).indices  # (B, K)
    return kd_topk_rank(_masked(student_logits, mask), top, lam)


def kd_topk_kl(
    logits: Tensor, t_items: Tensor, t_scores: Tensor, t: float, *, log_q: Tensor | None = None
) -> Tensor:
    """KL(teacher || student) where the teacher keeps only its top-K items, scaled by t**2.

    logits (N, C) student logits over C columns; t_items (N, K) the teacher's top-K columns and
    t_scores (N, K) its logits for them. The teacher's distribution is its softmax over those K
    (zero elsewhere); the student's is its softmax over all C columns. `log_q`: that student
    log-softmax (of logits / t) when the caller already has it (the CE term's, at t = 1).
    """
    p = F.log_softmax(t_scores / t, dim=-1)  # (N, K)
    if log_q is None:
        log_q = F.log_softmax(logits / t, dim=-1)
    q = log_q.gather(-1, t_items)  # (N, K)
    return (p.exp() * (p - q)).sum(-1).mean() * t * t


def kd_topk_rank(
    logits: Tensor, t_items: Tensor, lam: float, *, log_q: Tensor | None = None
) -> Tensor:
    """Ranking distillation on the teacher's top-K columns t_items (N, K), best first:
    -sum_r w_r log softmax(student)[item_r], with w_r proportional to exp(-r / lam).
    `log_q`: log_softmax(logits) when the caller already has it."""
    k = t_items.shape[-1]
    weights = torch.exp(-torch.arange(k, dtype=logits.dtype, device=logits.device) / lam)
    log_q = F.log_softmax(logits, dim=-1) if log_q is None else log_q
    logp = log_q.gather(-1, t_items)  # (N, K)
    return -(logp * (weights / weights.sum())).sum(-1).mean()


# -- ragged (per-user lists of items): for catalogs where (batch x items) is too large ----------
def segment_logsumexp(values: Tensor, owner: Tensor, n: int) -> Tensor:
    """(n,) log-sum-exp of `values` (N,) grouped by `owner` (N,) in 0..n-1; -inf for a group with
    no values."""
    top = torch.full((n,), -torch.inf, dtype=values.dtype, device=values.device)
    top = top.scatter_reduce(0, owner, values.detach(), reduce="amax")
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    sums = torch.zeros(n, dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, owner, torch.exp(values - top[owner]))
    return top + torch.log(sums)


def ragged_kd_kl(student: Tensor, teacher: Tensor, owner: Tensor, n: int, t: float) -> Tensor:
    """KL(teacher || student) at temperature t (scaled by t**2) where each of n rows has its own
    item list: `student` and `teacher` (N,) logits of (row `owner`, item) pairs. Equals `kd_kl`
    on dense rows masked to those lists; averaged over the n rows, as `batchmean` is."""
    log_p = teacher / t - segment_logsumexp(teacher / t, owner, n)[owner]
    log_q = student / t - segment_logsumexp(student / t, owner, n)[owner]
    per_pair = log_p.exp() * (log_p - log_q)
    return torch.zeros(n, dtype=student.dtype).index_add(0, owner, per_pair).sum() / n * t * t


def ragged_kd_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error over the (row, item) pairs given: `kd_mse` on those pairs."""
    return ((student - teacher) ** 2).mean()


def sampled_multi_positive_ce(
    positive_logits: Tensor, owner: Tensor, shared_logits: Tensor
) -> Tensor:
    """`multi_positive_ce` over a sampled softmax: row u's softmax runs over its own positives
    (`positive_logits` (P,), rows `owner`) and the negatives shared by the batch
    (`shared_logits` (B, N), -inf where a negative is one of the row's positives)."""
    n = shared_logits.shape[0]
    log_z = torch.logaddexp(
        torch.logsumexp(shared_logits, dim=1), segment_logsumexp(positive_logits, owner, n)
    )
    per_positive = log_z[owner] - positive_logits
    counts = torch.zeros(n, dtype=per_positive.dtype).index_add(
        0, owner, torch.ones_like(per_positive)
    )
    per_user = torch.zeros(n, dtype=per_positive.dtype).index_add(0, owner, per_positive)
    has = counts > 0
    return (per_user[has] / counts[has]).mean()
