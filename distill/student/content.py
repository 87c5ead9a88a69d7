"""The student's content path: vectors, from the teacher LM's item embeddings, for the items a
student has no trained vector for (no train interaction yet: new items).

A sequential student's item vectors are ID embeddings; an item nobody has touched has none worth
serving. After the student is trained, a small content tower g (linear, or one hidden layer)
learns to map an item's LM embedding into the student's item space, on the student frozen as it
serves: at every step a random share `item_dropout` of the catalog is represented by g(text)
instead of its ID vector, and the full softmax of every training position's next item is taken
over that mixed catalog (DropoutNet's idea, applied after training so the student's warm vectors
stay exactly as trained; ALDI's aim, a text vector on the warm vectors' scale). With `alpha` the
teacher's top-K after each prefix (the cached position labels) is distilled into the same mixed
softmax. A cold item is then served as `scale` * g(text), `scale` calibrating how often new items
reach a list against the warm items they displace (chosen on validation: `split.new_items`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from distill.nn.sampled import SampledSoftmax
from distill.student.sequential import SequentialStudent
from distill.teacher.soft_labels import SoftLabels
from distill.training import losses


class ContentConfig(BaseModel):
    """How the distilled student's content tower is trained and calibrated."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True  # train one for the distilled sequential student (needs an LM teacher)
    item_dropout: float = Field(0.3, gt=0, lt=1)  # share of items represented by text per step
    alpha: float = Field(0.5, ge=0)  # weight of KD to the teacher's top-K after every prefix
    hidden: int = Field(0, ge=0)  # hidden width of the tower; 0 = one linear map
    epochs: int = Field(5, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(256, ge=1)  # training positions per step
    max_positions: int = Field(200_000, ge=1)  # positions sampled to train it (bounded memory)
    # cold items are served as scale * g(text); with split.new_items the scale is chosen on the
    # validation half instead, by `choose_by` (fixed before any test number of a study):
    #   mixed        the best validation *mixed* NDCG@10: every held-out interaction of a user
    #                (the next warm item and the user's new items) in one ranking, new items
    #                competing with warm ones: what users get
    #   warm_budget  an explicit exploration budget: the best new-among-all NDCG@10 whose warm
    #                validation NDCG@10 stays at or above (1 - max_warm_loss) x the reference:
    #                the plain SASRec of the same seed ("plain": a surplus of the distilled
    #                student over it is spent on new items) or the same student with its new
    #                items unplaced ("self")
    scale: float = Field(0.9, gt=0)
    choose_by: Literal["mixed", "warm_budget"] = "mixed"
    max_warm_loss: float = Field(0.01, ge=0, lt=1)
    calibrate_against: Literal["plain", "self"] = "plain"
    scales: list[float] = Field(  # the grid that choice searches
        default_factory=lambda: [0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1, 1.25, 1.5]
    )
    # the new-items baselines' tuning grids, each chosen on the validation half by the best
    # mixed NDCG@10 (the product's rule): the DropoutNet-style student's ID dropout (one
    # training per value and seed) and content kNN's neighbours per item (null: the mean
    # profile of the user's items against every item)
    dropoutnet_id_dropout: list[float] = Field(default_factory=lambda: [0.2, 0.5, 0.8])
    content_knn_k: list[int | None] = Field(default_factory=lambda: [None, 10, 50, 200])


class ContentTower(nn.Module):
    """g: LM item embedding (N, T) -> the student's item space (N, D)."""

    def __init__(self, text_dim: int, dim: int, hidden: int = 0) -> None:
        super().__init__()
        self.text_dim, self.dim, self.hidden = text_dim, dim, hidden
        self.net = (
            nn.Linear(text_dim, dim)
            if not hidden
            else nn.Sequential(nn.Linear(text_dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        )

    def forward(self, text_emb: Tensor) -> Tensor:
        return self.net(text_emb)  # (N, D)

    def shape(self) -> dict[str, int]:
        """What rebuilds it from its state dict (the bundle's config records it)."""
        return {"text_dim": self.text_dim, "dim": self.dim, "hidden": self.hidden}


def cold_items(train_counts: np.ndarray) -> np.ndarray:
    """(I,) bool: items with no train interaction, which a student serves from text."""
    return np.asarray(train_counts) == 0


@dataclass(frozen=True)
class Placement:
    """How a student's items are served: its trained vectors, with every cold item's vector
    replaced by `scale` times its text vector. `text_vecs` None: it has no content path, and
    its cold items keep whatever their untrained vectors score."""

    item_vecs: Tensor  # (I, D) as trained
    cold: Tensor  # (I,) bool
    text_vecs: Tensor | None  # (I, D) unscaled text vectors (rows of warm items unused)
    scale: float = 1.0

    def served(self, scale: float | None = None) -> Tensor:
        """(I, D) the vectors a user is served from (and a history is read with)."""
        if self.text_vecs is None:
            return self.item_vecs
        s = self.scale if scale is None else scale
        return torch.where(self.cold[:, None], s * self.text_vecs, self.item_vecs)

    def with_scale(self, scale: float) -> Placement:
        return Placement(self.item_vecs, self.cold, self.text_vecs, scale)


def fit_content(
    student: SequentialStudent,
    inputs: Tensor,
    targets: Tensor,
    slots: tuple[np.ndarray, np.ndarray] | None,
    item_emb: np.ndarray,
    config: ContentConfig,
    *,
    seed: int,
    soft_labels: SoftLabels | None = None,
    unknown: Tensor | None = None,
    sampler: SampledSoftmax | None = None,
) -> ContentTower:
    """Train a content tower on a frozen sequential student. `inputs`/`targets` (W, L) are its
    training windows; `slots` the (user, position) of every window slot (for the teacher's
    labels, used when `soft_labels` is given and `config.alpha` > 0). `unknown` (I,) bool:
    items no one has touched, left out of the softmax (else the tower would learn that exactly
    the new items' texts are never chosen). `sampler`: each step's softmax over its sampled
    columns, log-Q corrected, and the tower run on those items' texts only (large catalogs)."""
    generator = torch.Generator().manual_seed(seed)
    student.eval()
    keep = targets != -100
    labels_of = targets[keep]
    n = len(labels_of)
    chosen = torch.randperm(n, generator=generator)[: config.max_positions]
    with torch.no_grad():
        item_vecs = student.item_vectors()
        states = states_at(student, inputs, targets, item_vecs, chosen)
    labels_of = labels_of[chosen]
    t_items: Tensor | None = None
    t_scores: Tensor | None = None
    t_has = torch.ones(len(chosen), dtype=torch.bool)  # positions with a teacher label
    if soft_labels is not None and config.alpha > 0 and slots is not None:
        users, positions = (a[keep.numpy()][chosen.numpy()] for a in slots)
        t_items, t_scores, t_has = _position_labels(soft_labels, users, positions)
        if unknown is not None:
            t_scores = t_scores.masked_fill(unknown[t_items], losses.NEG)
    text = torch.as_tensor(item_emb, dtype=torch.float32)
    torch.manual_seed(seed)
    tower = ContentTower(text.shape[1], item_vecs.shape[1], config.hidden)
    optimizer = torch.optim.Adam(tower.parameters(), lr=config.lr)
    n_items = len(item_vecs)
    for _ in range(config.epochs):
        order = torch.randperm(len(labels_of), generator=generator)
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            drop = torch.rand(n_items, generator=generator) < config.item_dropout
            sel = t_has[rows]
            labelled = rows[sel]
            target = labels_of[rows]
            kd_items = None if t_items is None else t_items[labelled]
            if sampler is None:  # every item a column
                mixed = torch.where(drop[:, None], tower(text), item_vecs)  # (I, D)
                logits = states[rows] @ mixed.T
                if unknown is not None:
                    logits = logits.masked_fill(unknown, losses.NEG)
            else:  # the step's sampled columns only, log-Q corrected (large catalogs)
                cols, log_q_cols = sampler.columns(target, kd_items)
                mixed = torch.where(drop[cols, None], tower(text[cols]), item_vecs[cols])
                logits = states[rows] @ mixed.T - log_q_cols
                if unknown is not None:
                    logits = logits.masked_fill(unknown[cols], losses.NEG)
                target = torch.searchsorted(cols, target)
                if kd_items is not None:
                    kd_items = torch.searchsorted(cols, kd_items)
            log_q = F.log_softmax(logits, dim=-1)
            loss = F.nll_loss(log_q, target)
            if kd_items is not None and t_scores is not None and len(labelled):
                loss = loss + config.alpha * losses.kd_topk_kl(
                    logits[sel], kd_items, t_scores[labelled], 1.0, log_q=log_q[sel]
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return tower.eval()


def states_at(
    student: SequentialStudent,
    inputs: Tensor,
    targets: Tensor,
    item_vecs: Tensor,
    chosen: Tensor,
    chunk: int = 2048,
) -> Tensor:
    """(len(chosen), D) the user state before each chosen training target (`chosen` indexes the
    non-padding slots in window order). Only the windows holding a chosen slot are run, so
    memory is the sample's, not every position's (a large catalog has tens of millions)."""
    keep = targets != -100
    window_of = keep.nonzero()[:, 0]  # (N,) the window of every non-padding slot
    windows = torch.unique(window_of[chosen])  # sorted
    states = torch.cat(  # (slots of those windows, D), in slot order
        [student.position_states(inputs[w], targets[w], item_vecs) for w in windows.split(chunk)]
    )
    # slot j of the original order -> its row among the kept windows' slots
    kept_slots = torch.isin(window_of, windows)
    row_of = torch.cumsum(kept_slots, 0) - 1
    return states[row_of[chosen]]


def _position_labels(
    soft_labels: SoftLabels, users: np.ndarray, positions: np.ndarray
) -> tuple[Tensor, Tensor, Tensor]:
    """The teacher's top-K (items, scores), each (N, K), after each (user, position), and
    (N,) whether it has one (`teacher.position_last` labels the last prefixes only)."""
    items: Tensor | None = None
    scores: Tensor | None = None
    has = torch.zeros(len(users), dtype=torch.bool)
    for key, start, end in soft_labels.shards:
        mine = np.flatnonzero((users >= start) & (users < end))
        if not len(mine):
            continue
        labels = soft_labels.positions(key)
        mine = mine[labels.labelled(users[mine] - start, positions[mine])]
        if not len(mine):
            continue
        got_items, got_scores = labels.gather(users[mine] - start, positions[mine])
        if items is None or scores is None:
            items = torch.zeros((len(users), got_items.shape[1]), dtype=torch.long)
            scores = torch.zeros((len(users), got_items.shape[1]))
        items[mine], scores[mine] = got_items, got_scores
        has[mine] = True
    if items is None or scores is None:
        raise ValueError("no teacher labels for the content tower's positions")
    return items, scores, has
