"""Serving from a bundle: histories through the student's own user tower, similar items,
explanations, and the errors a caller can make."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distill.serving.recommend import BadRequest, Recommender, UnknownItems, UnknownUser


@pytest.fixture(scope="module")
def seq(published) -> Recommender:
    return Recommender.load(published["registry"], version=published["versions"]["sequential"])


@pytest.fixture(scope="module")
def tt(published) -> Recommender:
    return Recommender.load(published["registry"], version=published["versions"]["two_tower"])


def user_history(rec: Recommender, user: str) -> list[str]:
    return [rec.item_ids[i] for i in rec.seen[rec.user_row[user]]]


def test_a_known_users_history_gives_the_published_user_vector(seq):
    """A SASRec user is its history: re-encoding the seen items reproduces the bundle's vector,
    so POST /recommend with that history equals GET /recommend for the user."""
    for user in ("u0", "u7", "u21"):
        history = user_history(seq, user)
        vec = seq.encoder([seq.item_rows(history)])[0]
        np.testing.assert_allclose(vec, seq.user_vecs[seq.user_row[user]], rtol=1e-5, atol=1e-6)
        by_history = seq.recommend_history(history, k=5)
        assert [r.item_id for r in by_history] == [r.item_id for r in seq.recommend(user, k=5)]
        assert not set(history) & {r.item_id for r in by_history}


def test_two_tower_history_vector_is_the_mean_item_vector(tt):
    history = ["i3", "i5", "i9"]
    vec = tt.encoder([tt.item_rows(history)])[0]
    expected = tt.encoder.item_vecs.numpy()[tt.item_rows(history)].mean(0)
    np.testing.assert_allclose(vec, expected, rtol=1e-5, atol=1e-6)
    recs = tt.recommend_history(history, k=tt.n_items)
    assert len(recs) == tt.n_items - 3  # every other item, the history excluded
    scores = [r.score for r in recs]
    assert scores == sorted(scores, reverse=True)


def test_the_history_order_matters_to_a_sequential_student(seq):
    history = ["i1", "i2", "i3", "i4"]
    a = seq.encoder([seq.item_rows(history)])[0]
    b = seq.encoder([seq.item_rows(history[::-1])])[0]
    assert not np.allclose(a, b)


def test_similar_items_are_the_nearest_vectors_without_the_item(seq):
    vecs = seq.encoder.item_vecs.numpy()
    row = seq.item_row["i4"]
    scores = vecs @ vecs[row]
    scores[row] = -np.inf
    expected = [seq.item_ids[i] for i in np.argsort(-scores, kind="stable")[:3]]
    got = seq.similar("i4", k=3)
    assert [r.item_id for r in got] == expected
    assert "i4" not in {r.item_id for r in seq.similar("i4", k=seq.n_items)}


def test_explain_leaves_out_each_history_item(seq):
    user = "u3"
    top = seq.recommend(user, k=1)[0]
    explanation = seq.explain(user, top.item_id, top=100)
    assert explanation.score == pytest.approx(top.score, rel=1e-4, abs=1e-5)
    history = user_history(seq, user)[-seq.encoder.history_len :]
    assert sorted(c.item_id for c in explanation.contributions) == sorted(history)
    deltas = [c.delta for c in explanation.contributions]
    assert deltas == sorted(deltas, reverse=True)
    first = explanation.contributions[0]  # dropping it really moves the score by its delta
    rest = [i for i in history if i != first.item_id]
    vec = seq.encoder([seq.item_rows(rest)])[0]
    without = float(vec @ seq.encoder.item_vecs.numpy()[seq.item_row[top.item_id]])
    assert explanation.score - without == pytest.approx(first.delta, rel=1e-4, abs=1e-5)
    assert len(seq.explain(user, top.item_id, top=2).contributions) == 2


def test_bad_requests_name_what_is_wrong(seq):
    with pytest.raises(UnknownItems, match="2 unknown item ids.*'nope'.*'gone'"):
        seq.recommend_history(["i1", "nope", "gone"])
    with pytest.raises(BadRequest, match="history is empty"):
        seq.recommend_history([])
    with pytest.raises(BadRequest, match="k must be positive"):
        seq.recommend_history(["i1"], k=0)
    with pytest.raises(UnknownItems):
        seq.similar("nope")
    with pytest.raises(UnknownUser):
        seq.explain("nobody", "i1")


def test_the_int8_index_ranks_like_the_exact_one(published, seq):
    sq8 = Recommender.load(
        published["registry"], version=published["versions"]["sequential"], index="sq8"
    )
    assert type(sq8.index).__name__ == "IndexScalarQuantizer"
    report = json.loads((sq8.path / "config.json").read_text())["sq8"]  # recorded in the bundle
    assert report["bytes"] < report["exact_bytes"] and report["recall@10_vs_exact"] > 0.8
    overlap = [
        len({r.item_id for r in sq8.recommend(u, 10)} & {r.item_id for r in seq.recommend(u, 10)})
        for u in seq.user_row
    ]
    assert np.mean(overlap) >= 9.0, overlap
    exact_scores = [r.score for r in seq.recommend("u2", 5)]
    np.testing.assert_allclose([r.score for r in sq8.recommend("u2", 5)], exact_scores, atol=0.05)


def test_the_int8_tower_encodes_histories_like_the_float32_one(published, seq):
    """Its linear layers run in int8: history vectors stay close and the top 10 barely moves;
    known users keep the bundle's stored vectors."""
    int8 = Recommender.load(
        published["registry"], version=published["versions"]["sequential"], tower="int8"
    )
    assert any("quantized" in type(m).__module__ for m in int8.encoder.model.modules())
    assert not any("quantized" in type(m).__module__ for m in seq.encoder.model.modules())
    users = list(seq.user_row)[:20]
    histories = [seq.item_rows(user_history(seq, u)) for u in users]
    exact, approx = seq.encoder(histories), int8.encoder(histories)
    assert not np.array_equal(exact, approx)  # it really runs another arithmetic
    cosine = (
        (exact * approx).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(approx, axis=1)
    )
    assert cosine.min() > 0.99, cosine
    overlap = [
        len(
            {r.item_id for r in int8.recommend_history(user_history(seq, u), 10)}
            & {r.item_id for r in seq.recommend_history(user_history(seq, u), 10)}
        )
        for u in users
    ]
    assert np.mean(overlap) >= 8.0, overlap
    assert [r.item_id for r in int8.recommend("u3", 10)] == [
        r.item_id for r in seq.recommend("u3", 10)
    ]
    with pytest.raises(BadRequest, match="tower must be one of"):
        Recommender.load(
            published["registry"], version=published["versions"]["sequential"], tower="int4"
        )


def test_an_index_the_bundle_lacks_is_a_clear_error(published, tmp_path):
    import shutil

    from storage.registry import Registry

    registry = tmp_path / "registry"
    shutil.copytree(published["registry"], registry)
    bundle = Registry(registry).bundle()
    (bundle.path / "items.sq8.faiss").unlink()
    with pytest.raises(FileNotFoundError, match="no items.sq8.faiss"):
        Recommender.load(registry, index="sq8", verify=False)
    with pytest.raises(BadRequest, match="index must be one of"):
        Recommender.load(registry, index="pq", verify=False)
