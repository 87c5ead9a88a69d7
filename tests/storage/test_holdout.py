"""The item-cold-start protocol's data: a derived version without the held-out items' interactions
(the items stay in the catalog) and their interactions in two seeded halves."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from storage.errors import DataError
from storage.holdout import HeldOutItems, hold_out_items


def test_held_out_items_lose_their_interactions_and_keep_their_place(synthetic, work):
    dataset, _ = synthetic
    held = hold_out_items(dataset, share=0.25, seed=3, work_dir=work)
    warm = held.warm
    assert warm.path != dataset.path and warm.n_items == dataset.n_items == 40
    new_ids = set(
        held.warm.items()
        .filter(pl.col("item_idx").is_in(held.item_idx))
        .get_column("item_id")
        .to_list()
    )
    assert len(new_ids) == 10 and len(held.item_idx) == 10
    # the warm version has none of their interactions, the held-out table all of them
    assert not set(warm.interactions().get_column("item_id").to_list()) & new_ids
    original = dataset.interactions()
    expected = original.filter(pl.col("item_id").is_in(list(new_ids)))
    assert held.interactions.height == expected.height > 0
    assert warm.interactions().height + expected.height == original.height
    # two disjoint halves of the items; every target in the users x items matrices
    valid, test = (set(np.unique(held.targets(h).indices)) for h in ("valid", "test"))
    assert valid and test and not valid & test and valid | test <= set(held.item_idx)
    both = held.targets("valid") + held.targets("test")
    assert both.nnz == expected.height
    assert set(np.unique(both.indices)) <= set(held.item_idx)
    # the same arguments find the same version; the hold-out reads back from the version
    again = hold_out_items(dataset, share=0.25, seed=3, work_dir=work)
    assert again.warm.path == warm.path and again.interactions.equals(held.interactions)
    assert HeldOutItems.of(warm) == HeldOutItems(warm, 0.25, 3)
    assert HeldOutItems.of(dataset) is None
    other = hold_out_items(dataset, share=0.25, seed=4, work_dir=work)
    assert not np.array_equal(other.item_idx, held.item_idx)


@pytest.mark.parametrize("share", [0.0, 1.0, 0.01])
def test_a_share_that_leaves_no_halves_is_a_clear_error(synthetic, work, share):
    dataset, _ = synthetic
    with pytest.raises(DataError, match="share of new items|at least 2"):
        hold_out_items(dataset, share=share, seed=0, work_dir=work)
