"""Sparse soft labels and the distillation term over sampled columns (large catalogs)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from distill import index as faiss_index
from distill.evaluation.harness import evaluate
from distill.student.build import build_student
from distill.student.config import StudentConfig
from distill.student.fit import DistillConfig, UserData, user_loss
from distill.teacher.base import AdaptConfig
from distill.teacher.soft_labels import SoftLabels, UserLabels
from distill.teacher.stage import run_teacher
from tests.conftest import candidates_teacher


@pytest.fixture
def candidate_cache(synthetic, work, tiny_encoder_path):
    dataset, split = synthetic
    cfg = candidates_teacher(tiny_encoder_path, AdaptConfig(mode="none"))
    return run_teacher(cfg, dataset, split, work_dir=work, progress=False).plan.cache_dir


def test_user_labels_gather_and_dense_on_columns():
    labels = UserLabels(
        indptr=np.array([0, 2, 2, 5]),
        items=torch.tensor([1, 4, 0, 2, 4]),
        scores=torch.tensor([0.1, 0.4, 1.0, 1.2, 1.4]),
    )
    owner, items, scores = labels.gather(np.array([2, 0]))
    assert owner.tolist() == [0, 0, 0, 1, 1]
    assert items.tolist() == [0, 2, 4, 1, 4]
    torch.testing.assert_close(scores, torch.tensor([1.0, 1.2, 1.4, 0.1, 0.4]))
    full = labels.dense(np.array([0, 1, 2]), None, 6)
    nan = float("nan")
    expected = torch.tensor(
        [
            [nan, 0.1, nan, nan, 0.4, nan],
            [nan] * 6,
            [1.0, nan, 1.2, nan, 1.4, nan],
        ]
    )
    torch.testing.assert_close(full, expected, equal_nan=True)
    columns = torch.tensor([1, 2, 5])  # item 0 and 4 are not columns: dropped, not misplaced
    torch.testing.assert_close(
        labels.dense(np.array([0, 2]), columns, 6), expected[[0, 2]][:, columns], equal_nan=True
    )


def test_candidate_labels_are_sparse_per_user(synthetic, candidate_cache):
    """Decoded labels hold each user's candidates only (no users x items block)."""
    _, split = synthetic
    soft = SoftLabels(candidate_cache)
    train = split.train
    for key, start, end in soft.shards:
        users = soft.users(key)
        counts = np.diff(users.indptr)
        assert len(counts) == end - start
        assert (counts >= 5).all() and (counts <= 5 + 3 + np.diff(train.indptr)[start:end]).all()
        assert users.items.numel() < (end - start) * split.n_items
    assert soft.decoded_bytes() == int(soft.store.manifest()["total_rows"]) * 12


def test_sampled_columns_give_the_same_distillation_term(synthetic, candidate_cache):
    """Under pairs: candidates the KD term reads only each user's scored items, so computing it
    over the sampled columns (candidates + positives + negatives) equals computing it over every
    item; the CE term does change (a sampled softmax)."""
    _, split = synthetic
    soft = SoftLabels(candidate_cache)
    data = UserData(split, 6)
    key, start, end = soft.shards[0]
    batch = (key, start, np.arange(start, end))
    torch.manual_seed(0)
    model = build_student(
        StudentConfig(kind="two_tower", dim=8), split.n_users, split.n_items, None
    )
    model.eval()  # no dropout: both calls see the same vectors
    kd = DistillConfig(init="random")
    model.n_negatives = 0
    _, dense_parts = user_loss(model, data, kd, soft, batch)
    model.n_negatives = 4
    _, sampled_parts = user_loss(model, data, kd, soft, batch)
    assert sampled_parts["l_k"] == pytest.approx(dense_parts["l_k"], rel=1e-5)
    assert sampled_parts["l_c"] != pytest.approx(dense_parts["l_c"], rel=1e-3)


def _clustered(n_items: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 16))
    items = centers[rng.integers(20, size=n_items)] + 0.3 * rng.normal(size=(n_items, 16))
    queries = centers[rng.integers(20, size=n_queries)] + rng.normal(size=(n_queries, 16))
    return items.astype(np.float32), queries.astype(np.float32)


def test_candidate_index_is_hnsw_above_the_limit_deterministic_with_high_recall():
    items, queries = _clustered(3000, 200)
    exact = faiss_index.candidate_index(items)
    approx = faiss_index.candidate_index(items, exact_limit=1000)
    assert type(exact.index).__name__ == "IndexFlatIP" and not len(exact.centroids)
    assert type(approx.index).__name__ == "IndexHNSWSQ" and len(approx.centroids) == 30
    assert faiss_index.approx_recall(approx, items, queries, 10) >= 0.95
    assert faiss_index.approx_recall(exact, items, queries, 10) == 1.0
    again = faiss_index.candidate_index(items, exact_limit=1000)  # same index, same shards
    assert again.to_bytes() == approx.to_bytes()
    loaded = faiss_index.CandidateIndex.from_bytes(approx.to_bytes())
    assert (loaded.search(queries, 10)[1] == approx.search(queries, 10)[1]).all()


def test_candidate_index_cluster_layout_returns_the_plain_graphs_answers():
    """Entries stored cluster by cluster and queries visited cluster by cluster: each query
    still gets what the same graph in insertion order returns, as item indices."""
    items, queries = _clustered(3000, 300)
    laid_out = faiss_index.candidate_index(items, exact_limit=1000)
    assert not (laid_out.ids == np.arange(len(items))).all()  # the layout did move entries
    plain = faiss_index.candidate_graph(items)  # the same graph, in insertion order
    want_scores, want = plain.search(queries, 20)
    scores, found = laid_out.search(queries, 20)
    assert [set(row) for row in found] == [set(row) for row in want]
    np.testing.assert_allclose(np.sort(scores, axis=1), np.sort(want_scores, axis=1), rtol=1e-6)
    assert (np.sort(scores, axis=1)[:, ::-1] == scores).all()  # best first, as FAISS gives


def test_evaluation_on_a_seeded_user_sample(synthetic):
    _, split = synthetic
    sampled = replace(split, eval_users=7)
    users = sampled.evaluated_users("test")
    assert len(users) == 7 and set(users) <= set(split.users_with("test"))
    assert (users == sampled.evaluated_users("test")).all()  # the same sample every time
    assert (
        replace(split, eval_users=10_000).evaluated_users("test") == split.users_with("test")
    ).all()
    scores = lambda u, fold: torch.rand(len(u), split.n_items)  # noqa: E731
    assert (evaluate(scores, sampled).users == users).all()


def test_sampled_two_tower_trains_sparse_rows_and_resumes_exactly(synthetic, candidate_cache):
    """With sampled negatives the tables get sparse gradients (SparseAdam: rows a step did not
    use stay put); the joint optimizer's state survives a checkpoint round trip exactly."""
    from distill.training.loop import (
        JointOptimizer,
        LoopConfig,
        _restore,
        _state_bytes,
        make_optimizer,
    )

    _, split = synthetic
    soft = SoftLabels(candidate_cache)
    data = UserData(split, 6)
    config = StudentConfig(kind="two_tower", dim=8, sampled_negatives=3, text_projection=True)
    text = np.random.default_rng(0).normal(size=(split.n_items, 5)).astype(np.float32)
    loop = LoopConfig(lr=0.01)

    def fresh():
        torch.manual_seed(0)
        model = build_student(config, split.n_users, split.n_items, text)
        return model, make_optimizer(model, loop)

    def step(model, optimizer, seed):
        torch.manual_seed(seed)
        key, start, end = soft.shards[0]
        loss, _ = user_loss(
            model,
            data,
            DistillConfig(init="random"),
            soft,
            (key, start, np.arange(start, start + 4)),
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model, optimizer = fresh()
    assert isinstance(optimizer, JointOptimizer)  # AdamW (text projection) + SparseAdam (tables)
    before = model.users.weight.detach().clone()
    step(model, optimizer, 1)
    moved = (model.users.weight.detach() != before).any(dim=1)
    assert moved[:4].all() and not moved[4:].any()  # only the batch's users moved
    step(model, optimizer, 2)
    saved = _state_bytes(model, optimizer)
    again, again_opt = fresh()
    _restore(again, again_opt, saved)
    step(model, optimizer, 3)
    step(again, again_opt, 3)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
