"""Champion vs challenger on the same data: the served model scored on tonight's validation fold.

The regression gate must compare two models on one validation fold: a model's validation NDCG@10
from the night it was built was measured on other users' other targets (new data moves every
user's validation item). The served model (the champion) is rebuilt from its bundle and scored
on tonight's split through its own user tower, each user's history re-encoded from tonight's
train items; tonight's candidate (the challenger) is scored on exactly the same users and targets.
Items the champion has never seen it cannot recommend: they score -inf for it (a target that is
one of them is a miss, and is counted). Per-user paired test of the challenger against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distill.evaluation.harness import EvalResult, Scorer, evaluate
from distill.evaluation.stats import paired
from distill.serving.bundle import StudentBundle
from distill.serving.recommend import HistoryEncoder
from storage.datasets import Dataset
from storage.split import Split

METRIC = "ndcg@10"


@dataclass(frozen=True)
class HeadToHead:
    """Both models on tonight's validation fold: same users, same targets."""

    champion_version: str
    champion: EvalResult
    challenger: EvalResult
    unknown_targets: int  # validation targets whose item the champion does not know
    targets: int

    @property
    def test(self) -> dict:
        """The paired comparison of the challenger against the champion (per user, `METRIC`;
        `distill.evaluation.stats`)."""
        return paired(
            [self.challenger], [self.champion], names=("challenger", self.champion_version)
        ).as_json()

    def as_json(self) -> dict:
        return {
            "champion_version": self.champion_version,
            "fold": "validation, tonight's split (same users and targets for both)",
            "champion": self.champion.metrics,
            "challenger": self.challenger.metrics,
            "unknown_targets": self.unknown_targets,
            "targets": self.targets,
            "test": self.test,
        }


def champion_scorer(bundle: StudentBundle, dataset: Dataset, split: Split) -> Scorer:
    """(users, fold) -> (B, tonight's items) scores of the bundle's student: each history
    re-encoded through its user tower (items it does not know left out of the history), items
    it does not know at -inf."""
    items = bundle.items(["item_id", "vector"])
    row_of = {item: r for r, item in enumerate(items.get_column("item_id").to_list())}
    tonight = dataset.items().get_column("item_id").to_list()
    rows = np.array([row_of.get(item, -1) for item in tonight])  # tonight's idx -> champion row
    known = rows >= 0
    encoder = HistoryEncoder.from_bundle(bundle, bundle.item_vectors())
    item_vecs = encoder.item_vecs[torch.as_tensor(rows[known])]  # (known, D)

    def scores(users: np.ndarray, fold: str) -> torch.Tensor:
        seqs = split.input_sequences(fold)
        histories = [[int(rows[i]) for i in seqs[u] if known[i]] for u in users]
        user_vecs = torch.as_tensor(encoder(histories))  # (B, D)
        out = torch.full((len(users), len(tonight)), -torch.inf)
        out[:, torch.as_tensor(known)] = user_vecs @ item_vecs.T
        return out

    return scores


def head_to_head(
    bundle: StudentBundle, version: str, challenger: Scorer, dataset: Dataset, split: Split
) -> HeadToHead:
    """The champion (`bundle`, published as `version`) and the challenger on tonight's
    validation fold."""
    champion = evaluate(champion_scorer(bundle, dataset, split), split, fold="valid")
    ours = evaluate(challenger, split, fold="valid")
    known = set(bundle.items(["item_id"]).get_column("item_id").to_list())
    tonight = dataset.items().get_column("item_id").to_list()
    target_items = split.matrix("valid")[split.evaluated_users("valid")].indices
    unknown = int(sum(tonight[i] not in known for i in target_items))
    return HeadToHead(version, champion, ours, unknown, len(target_items))
