from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from distill.evaluation.harness import evaluate, metrics_from_ranks, ranks_of_targets
from storage.split import Split


def test_rank_masking_and_tie_break():
    scores = torch.tensor([[0.4, 0.9, 0.3, 0.5, 0.5]])
    targets = (np.zeros(4, dtype=int), np.array([0, 2, 3, 4]))
    ranks = ranks_of_targets(scores, (np.array([0]), np.array([1])), targets)
    # item 1 masked; items 3 and 4 tie at 0.5 and the lower index wins
    assert ranks.tolist() == [2, 3, 0, 1]


def _sorted_ranks(scores, exclude, targets):
    """Reference: each target's position in a stable descending sort of its masked row."""
    scores = scores.clone()
    t_rows, t_cols = (torch.as_tensor(a) for a in targets)
    kept = scores[t_rows, t_cols]
    scores[torch.as_tensor(exclude[0]), torch.as_tensor(exclude[1])] = -torch.inf
    scores[t_rows, t_cols] = kept
    scores = torch.nan_to_num(scores, nan=-torch.inf)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    full = torch.empty_like(order).scatter_(
        1, order, torch.arange(scores.shape[1]).expand_as(order)
    )
    return full[t_rows, t_cols]


def test_ranks_equal_a_stable_sort_with_ties_nan_and_masks():
    rng = np.random.default_rng(0)
    scores = torch.as_tensor(rng.integers(0, 6, size=(40, 30)).astype(np.float32))  # many ties
    scores[rng.random((40, 30)) < 0.05] = float("nan")
    scores[rng.random((40, 30)) < 0.05] = -torch.inf
    exclude = (rng.integers(0, 40, size=200), rng.integers(0, 30, size=200))
    targets = (np.repeat(np.arange(40), 2), rng.integers(0, 30, size=80))
    got = ranks_of_targets(scores, exclude, targets, chunk=7)
    assert torch.equal(got, _sorted_ranks(scores, exclude, targets))


def test_single_target_metrics_by_hand():
    scores = torch.tensor([[0.4, 0.9, 0.3, 0.5, 0.5]])
    targets = (np.array([0]), np.array([4]))
    ranks = ranks_of_targets(scores, (np.array([0]), np.array([1])), targets)
    m = metrics_from_ranks(ranks, targets, 1, ks=(1, 2))
    assert m["hr@1"][0] == 0 and m["hr@2"][0] == 1 and m["mrr"][0] == 0.5
    assert m["ndcg@2"][0] == pytest.approx(1 / math.log2(3))
    assert m["recall@2"][0] == 1.0


def test_two_target_metrics_by_hand():
    scores = torch.tensor([[0.4, 0.9, 0.3, 0.5, 0.5]])
    targets = (np.array([0, 0]), np.array([4, 2]))  # ranks 1 and 3
    ranks = ranks_of_targets(scores, (np.array([0]), np.array([1])), targets)
    m = metrics_from_ranks(ranks, targets, 1, ks=(2, 4))
    assert m["recall@2"][0] == 0.5 and m["hr@2"][0] == 1 and m["mrr"][0] == 0.5
    assert m["ndcg@2"][0] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    ideal = 1 + 1 / math.log2(3)
    assert m["ndcg@4"][0] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)


def _split() -> Split:
    # user 0: train {0,1}, valid 2, test 3; user 1: train {1}, valid 0, test 2
    frame = pl.DataFrame(
        {
            "user_idx": [0, 0, 0, 0, 1, 1, 1],
            "item_idx": [0, 1, 2, 3, 1, 0, 2],
            "timestamp": [1, 2, 3, 4, 1, 2, 3],
            "fold": ["train", "train", "valid", "test", "train", "valid", "test"],
        }
    )
    return Split(frame=frame, n_users=2, n_items=4)


def test_evaluate_excludes_train_and_valid_on_test():
    # every user scores items 0 > 1 > 2 > 3; after excluding train+valid only the target and
    # possibly one more remain
    fixed = np.array([4.0, 3.0, 2.0, 1.0], dtype=np.float32)
    res = evaluate(lambda u, fold: np.tile(fixed, (len(u), 1)), _split(), ks=(1,))
    # user 0: excluded {0,1,2} -> target 3 at rank 0; user 1: excluded {1,0} -> target 2 rank 0
    assert res.per_user["hr@1"].tolist() == [1.0, 1.0]
    valid = evaluate(lambda u, fold: np.tile(fixed, (len(u), 1)), _split(), fold="valid", ks=(1,))
    # user 0: excluded {0,1} -> valid item 2 at rank 0; user 1: excluded {1} -> item 0 rank 0
    assert valid.metrics["hr@1"] == 1.0 and valid.users.tolist() == [0, 1]


def test_evaluate_batches_give_same_result():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(2, 4)).astype(np.float32)
    a = evaluate(lambda u, fold: table[u], _split(), batch_size=1)
    b = evaluate(lambda u, fold: table[u], _split(), batch_size=64)
    assert a.metrics == b.metrics


def test_wrong_scorer_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="expected \\(2, 4\\)"):
        evaluate(lambda u, fold: np.zeros((len(u), 3)), _split())


def test_standard_protocol_feeds_the_validation_item_at_test():
    # each item is followed by the next one (0 -> 1 -> 2 -> 3): a scorer that recommends what
    # follows the user's last input item hits user 0's test item 3 only if its input ends with the
    # validation item 2; from the train items alone (last = 1) it would recommend 2.
    split = Split(
        frame=pl.DataFrame(
            {
                "user_idx": [0, 0, 0, 0],
                "item_idx": [0, 1, 2, 3],
                "timestamp": [1, 2, 3, 4],
                "fold": ["train", "train", "valid", "test"],
            }
        ),
        n_users=1,
        n_items=5,
    )

    def follows_last(histories):
        def scores(users, fold):
            out = np.tile(np.arange(5, dtype=np.float32) / 100, (len(users), 1))  # else 4 > 3
            for row, user in enumerate(users):
                out[row, histories(fold)[user][-1] + 1] = 1.0
            return out

        return scores

    assert split.input_sequences("test")[0].tolist() == [0, 1, 2]
    assert split.input_sequences("valid")[0].tolist() == [0, 1]
    standard = follows_last(split.input_sequences)
    assert evaluate(standard, split, ks=(1,)).metrics["hr@1"] == 1.0
    assert evaluate(standard, split, fold="valid", ks=(1,)).metrics["hr@1"] == 1.0
    train_only = follows_last(lambda fold: split.train_sequences())
    assert evaluate(train_only, split, ks=(1,)).metrics["hr@1"] == 0.0
