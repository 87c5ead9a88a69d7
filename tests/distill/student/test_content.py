"""The content tower: text vectors on the frozen student's scale, and how cold items are served."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distill.nn.sampled import SampledSoftmax
from distill.nn.sasrec import windows
from distill.student.config import StudentConfig
from distill.student.content import (
    ContentConfig,
    Placement,
    cold_items,
    fit_content,
    states_at,
)
from distill.student.sequential import SequentialStudent


class FrozenStudent(nn.Module):
    """Item vectors V and one fixed user state per training window (window w's inputs hold w)."""

    def __init__(self, item_vecs: torch.Tensor, states: torch.Tensor) -> None:
        super().__init__()
        self.v, self.states = item_vecs, states

    def item_vectors(self) -> torch.Tensor:
        return self.v

    def position_states(self, inputs, targets, item_vecs) -> torch.Tensor:
        return self.states[inputs[:, 0]][targets != -100]


@pytest.mark.parametrize("negatives", [0, 8])
def test_the_tower_learns_the_students_item_space_from_text(negatives):
    """Over every item, or (`negatives`) over each step's sampled columns, log-Q corrected, the
    tower run on those items' texts only (the large-catalog path)."""
    rng = np.random.default_rng(0)
    n_items, text_dim, dim, windows = 40, 12, 6, 3000
    text = rng.normal(size=(n_items, text_dim)).astype(np.float32)
    mapping = rng.normal(size=(text_dim, dim)).astype(np.float32) / np.sqrt(text_dim)
    item_vecs = torch.as_tensor(text @ mapping).float()  # the items ARE a function of text
    states = torch.as_tensor(rng.normal(size=(windows, 1, dim)).astype(np.float32)) * 2
    logits = (states[:, 0] @ item_vecs.T).numpy()
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    targets = torch.as_tensor([[rng.choice(n_items, p=p)] for p in probs])
    inputs = torch.arange(windows)[:, None]
    config = ContentConfig(item_dropout=0.5, alpha=0.0, epochs=8, lr=1e-2, batch_size=64)
    student = FrozenStudent(item_vecs, states)
    sampler = SampledSoftmax.of_targets(targets, n_items, negatives) if negatives else None
    tower = fit_content(student, inputs, targets, None, text, config, seed=0, sampler=sampler)
    with torch.no_grad():
        placed = tower(torch.as_tensor(text))
    cos = torch.nn.functional.cosine_similarity(placed, item_vecs, dim=1)
    assert cos.mean() > 0.9, cos
    norms = placed.norm(dim=1) / item_vecs.norm(dim=1)  # on the warm vectors' scale
    assert 0.7 < norms.median() < 1.3, norms
    # trained on the same data, an untrained tower is nowhere near
    untrained = fit_content(
        student,
        inputs,
        targets,
        None,
        text,
        config.model_copy(update={"lr": 1e-9}),
        seed=0,
        sampler=sampler,
    )
    with torch.no_grad():
        far = torch.nn.functional.cosine_similarity(
            untrained(torch.as_tensor(text)), item_vecs, dim=1
        )
    assert far.mean() < 0.5


def test_the_states_of_a_sample_of_positions_equal_those_of_every_position():
    """The tower's training states are computed for the windows its sample falls in only (a
    large catalog has tens of millions of positions): the same states as all of them, indexed."""
    torch.manual_seed(0)
    student = SequentialStudent(30, StudentConfig(dim=8, history_len=5, dropout=0.0), None)
    student.eval()
    seqs = [np.random.default_rng(u).integers(0, 30, size=3 + u % 9) for u in range(40)]
    inputs, targets = (torch.as_tensor(a) for a in windows(seqs, 5, 30))
    with torch.no_grad():
        vecs = student.item_vectors()
        every = student.position_states(inputs, targets, vecs)
        chosen = torch.randperm(len(every), generator=torch.Generator().manual_seed(1))[:17]
        torch.testing.assert_close(
            states_at(student, inputs, targets, vecs, chosen, chunk=4), every[chosen]
        )


def test_cold_items_are_served_from_text_at_the_scale():
    item_vecs = torch.arange(12.0).view(4, 3)
    text_vecs = -torch.ones(4, 3)
    cold = torch.as_tensor(cold_items(np.array([3, 0, 1, 0])))
    placement = Placement(item_vecs, cold, text_vecs, scale=0.5)
    served = placement.served()
    assert torch.equal(served[[0, 2]], item_vecs[[0, 2]])
    assert torch.equal(served[[1, 3]], -0.5 * torch.ones(2, 3))
    assert torch.equal(placement.served(2.0)[1], -2 * torch.ones(3))
    assert torch.equal(Placement(item_vecs, cold, None).served(), item_vecs)  # no content path
