"""FAISS inner-product item index: exact up to 100K items, HNSW above (recall checked at build)."""

from __future__ import annotations

import faiss
import numpy as np

EXACT_LIMIT = 100_000
MIN_RECALL = 0.98


def build_index(
    item_vecs: np.ndarray,
    *,
    queries: np.ndarray | None = None,
    k: int = 10,
    exact_limit: int = EXACT_LIMIT,
) -> tuple[faiss.Index, float]:
    """(index, recall@k vs exact search on `queries`); 1.0 for the exact index."""
    vecs = np.ascontiguousarray(item_vecs, dtype=np.float32)
    if len(vecs) <= exact_limit:
        index = faiss.IndexFlatIP(vecs.shape[1])
        index.add(vecs)
        return index, 1.0
    index = faiss.IndexHNSWFlat(vecs.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 200
    index.hnsw.efSearch = 256
    index.add(vecs)
    recall = approx_recall(index, vecs, queries, k)
    if recall < MIN_RECALL:
        raise RuntimeError(f"approximate index recall@{k} {recall:.3f} < {MIN_RECALL}")
    return index, recall


def build_sq8(item_vecs: np.ndarray) -> faiss.Index:
    """int8 scalar-quantised item vectors (FAISS SQ8, one byte per dimension; ~4x smaller than
    float32), searched exhaustively by inner product."""
    vecs = np.ascontiguousarray(item_vecs, dtype=np.float32)
    index = faiss.IndexScalarQuantizer(
        vecs.shape[1], faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index.train(vecs)
    index.add(vecs)
    return index


def sq8_with_stats(
    item_vecs: np.ndarray, queries: np.ndarray, exact_bytes: int
) -> tuple[bytes, dict]:
    """The serialised SQ8 index of `item_vecs` and what it costs against the exact index: both
    sizes and its recall@10 against exact search for `queries` (the bundle's user vectors)."""
    index = build_sq8(item_vecs)
    data = to_bytes(index)
    stats = {
        "bytes": len(data),
        "exact_bytes": exact_bytes,
        "recall@10_vs_exact": approx_recall(index, item_vecs, queries, 10),
    }
    return data, stats


def approx_recall(
    index: faiss.Index, vecs: np.ndarray, queries: np.ndarray | None, k: int
) -> float:
    if queries is None or not len(queries):
        rng = np.random.default_rng(0)
        queries = vecs[rng.choice(len(vecs), size=min(1000, len(vecs)), replace=False)]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    exact = np.argsort(-(queries @ vecs.T), axis=1, kind="stable")[:, :k]
    _, approx = index.search(queries, k)
    hits = [len(set(a) & set(e)) for a, e in zip(approx, exact, strict=True)]
    return float(np.sum(hits) / exact.size)


def to_bytes(index: faiss.Index) -> bytes:
    return faiss.serialize_index(index).tobytes()


def from_bytes(data: bytes) -> faiss.Index:
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
