from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.nn.sampled import SampledSoftmax
from distill.nn.sasrec import SASRec


def test_columns_hold_the_targets_and_extra_sorted_unique_with_their_inclusion_probability():
    counts = np.array([6, 2, 0, 1, 1, 0, 0, 0, 0, 0])  # 10 targets in all
    sampler = SampledSoftmax(counts, n_negatives=4)
    torch.manual_seed(0)
    targets = torch.tensor([0, 0, 3])
    columns, log_q = sampler.columns(targets, extra=torch.tensor([[7, 0]]))
    assert {0, 3, 7} <= set(columns.tolist())
    assert torch.equal(columns, torch.unique(columns))  # sorted, no repeats
    # item j is in the sample unless each of 3 popularity draws and 4 uniform ones missed it
    inclusion = [1 - (1 - counts[j] / 10) ** 3 * (1 - 1 / 10) ** 4 for j in columns.tolist()]
    torch.testing.assert_close(log_q, torch.log(torch.tensor(inclusion, dtype=torch.float32)))


def test_of_targets_counts_the_training_targets_and_skips_padding():
    sampler = SampledSoftmax.of_targets(np.array([[1, 1, -100], [2, -100, -100]]), 4, 2)
    torch.testing.assert_close(sampler.pop, torch.tensor([0, 2 / 3, 1 / 3, 0], dtype=torch.float64))


def _fit_popularity(correction: str, steps: int = 400) -> float:
    """A model with no context (one logit per item) fit on targets drawn from a skewed
    popularity with the sampled softmax; the full softmax's optimum is softmax(logits) = pop.
    Returns the total variation distance from it."""
    n_items, batch = 40, 32
    pop = 1.0 / np.arange(1, n_items + 1)
    pop /= pop.sum()
    rng = np.random.default_rng(0)
    sampler = SampledSoftmax(pop * 1000, n_negatives=8)
    logits = torch.zeros(n_items, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    torch.manual_seed(0)
    for _ in range(steps):
        targets = torch.as_tensor(rng.choice(n_items, size=batch, p=pop))
        columns, log_q = sampler.columns(targets)
        scores = logits[columns].expand(batch, -1)
        if correction == "inclusion":  # the sampler's
            scores = scores - log_q
        elif correction == "expected_count":  # B pop_j + N / I: for samples kept with repeats
            scores = scores - torch.log(batch * sampler.pop[columns] + 8 / n_items).float()
        loss = F.cross_entropy(scores, torch.searchsorted(columns, targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    fitted = torch.softmax(logits.detach(), 0).numpy()
    return 0.5 * float(np.abs(fitted - pop).sum())


def test_the_log_q_correction_recovers_the_full_softmax_optimum():
    """Without the correction the in-batch negatives push popular items down (the known
    popularity bias of a sampled softmax); with it the fit matches the popularity. The expected
    number of draws, used on a de-duplicated sample, over-corrects the popular items."""
    corrected = _fit_popularity("inclusion")
    assert corrected < 0.08
    assert _fit_popularity("none") > 2 * corrected
    assert _fit_popularity("expected_count") > 2 * corrected


def test_sasrec_loss_on_a_sampled_softmax_runs_and_differs_from_the_full_one():
    torch.manual_seed(0)
    model = SASRec(30, dim=8, max_len=5, n_layers=1, n_heads=2)
    inputs = torch.randint(30, (4, 5))
    targets = torch.randint(30, (4, 5))
    targets[0, 3:] = -100
    sampler = SampledSoftmax.of_targets(targets, 30, n_negatives=5)
    vecs = model.item_vectors()
    full = model.loss(inputs, targets, vecs)
    sampled = model.loss(inputs, targets, vecs, sampler)
    assert math.isfinite(sampled.item()) and sampled.item() != pytest.approx(full.item())
    sampled.backward()
    assert model.item_emb is not None and model.item_emb.weight.grad is not None


def test_bad_sampler_arguments_are_refused():
    with pytest.raises(ValueError, match="n_negatives"):
        SampledSoftmax(np.ones(3), 0)
    with pytest.raises(ValueError, match="1-D"):
        SampledSoftmax(np.ones((2, 2)), 3)
