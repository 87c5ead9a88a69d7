from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from distill.evaluation.baselines import EASE, ItemKNN, Popularity

X = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1]], dtype=np.float32))


def test_popularity_counts():
    assert Popularity().fit(X).scores(X[[0, 2]]).tolist() == [[2, 2, 2, 1]] * 2


def test_ease_matches_direct_formula():
    lam = 2.0
    g = X.toarray().T @ X.toarray() + lam * np.eye(4)
    p = np.linalg.inv(g)
    b = np.eye(4) - p / np.diag(p)  # B = I - P diag(1/diag(P))
    model = EASE(lam).fit(X)
    np.testing.assert_allclose(model.weights, b, atol=1e-6)
    assert np.allclose(np.diag(model.weights), 0)
    np.testing.assert_allclose(model.scores(X[[1]]), X.toarray()[[1]] @ b, atol=1e-5)


def test_itemknn_cosine_by_hand():
    model = ItemKNN().fit(X)
    # items 0 and 1 co-occur once; each was seen twice: cos = 1 / (sqrt2 * sqrt2) = 0.5
    assert model.sim[0, 1] == pytest.approx(0.5)
    assert model.sim[2, 3] == pytest.approx(1 / np.sqrt(2))
    assert model.sim[0, 0] == 0
    pruned = ItemKNN(k=1).fit(X)
    assert (np.count_nonzero(pruned.sim, axis=0) <= 1).all()


def test_ease_rejects_bad_lambda():
    with pytest.raises(ValueError):
        EASE(0)


def test_content_knn_with_k_neighbours_by_hand():
    import numpy as np
    import scipy.sparse as sp

    from distill.evaluation.baselines import ContentKNN

    emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # cosines: 0-1 0.8, 1-2 0.6, 0-2 0
    read_0 = sp.csr_matrix(np.array([[1.0, 0.0, 0.0]]))
    # k = 1: item 0's nearest is 1, item 1's is 0, item 2's is 1; a reader of 0 scores item 1
    scores = ContentKNN(emb, k=1).fit(read_0).scores(read_0)
    np.testing.assert_allclose(scores, [[0.0, 0.8, 0.0]], atol=1e-6)
    # the mean profile (k None) scores every item by its cosine with item 0
    np.testing.assert_allclose(ContentKNN(emb).scores(read_0), [[1.0, 0.8, 0.0]], atol=1e-6)


def test_spd_inverse_matches_a_general_inverse_across_row_blocks():
    from distill.evaluation.baselines import spd_inverse

    rng = np.random.default_rng(0)
    m = rng.normal(size=(50, 50))
    a = m @ m.T + 50 * np.eye(50)
    expected = np.linalg.inv(a)
    got = spd_inverse(a.copy(), rows=7)  # 50 rows in blocks of 7: the last block is short
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(got, got.T)
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        spd_inverse(-np.eye(3))
