"""Real MovieLens-100K: ingest and the baseline cross-check numbers from the foundation issue."""

from __future__ import annotations

import pytest

from distill.evaluation.baselines import EASE, ItemKNN, Popularity
from distill.evaluation.harness import evaluate
from storage.datasets import DatasetConfig, ingest, load_dataset
from storage.split import make_split

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ml_split(tmp_path_factory):
    work = tmp_path_factory.mktemp("ml")
    result = ingest(DatasetConfig(), work_dir=work)
    ds = load_dataset(work, result.name, result.version)
    assert (ds.n_users, ds.n_items) == (943, 1682)
    assert ds.meta["tables"]["interactions"]["rows"] == 100_000
    assert not ingest(DatasetConfig(), work_dir=work).created  # idempotent
    return make_split(ds)


@pytest.mark.parametrize(
    ("model", "ndcg10", "hr10"),
    [(Popularity(), 0.0255, 0.050), (EASE(200.0), 0.0375, 0.083), (ItemKNN(), 0.0275, None)],
)
def test_baselines_match_independent_numbers(ml_split, model, ndcg10, hr10):
    # the cross-check predates the standard protocol: it scored test from train rows only
    model.fit(ml_split.train)
    metrics = evaluate(lambda u, fold: model.scores(ml_split.train[u]), ml_split).metrics
    assert metrics["ndcg@10"] == pytest.approx(ndcg10, abs=0.002)
    if hr10 is not None:
        assert metrics["hr@10"] == pytest.approx(hr10, abs=0.004)
