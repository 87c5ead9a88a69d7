"""FAISS inner-product item indexes.

`build_index`: the serving index, exact up to 100K items, HNSW above (exact again if its recall
at build falls short).
`candidate_index`: the teacher's candidate retrieval, exact up to 5,000 items, HNSW above (a
query visits a graph neighbourhood instead of the whole catalog).
Recall checks sample at most `RECALL_QUERIES` queries, so they cost the same at any user count.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

log = logging.getLogger(__name__)

EXACT_LIMIT = 100_000
MIN_RECALL = 0.98
CANDIDATE_EXACT_LIMIT = 5_000
RECALL_QUERIES = 2_000


def exact_index(item_vecs: np.ndarray) -> faiss.IndexFlatIP:
    """Exhaustive inner-product search over `item_vecs`."""
    vecs = np.ascontiguousarray(item_vecs, dtype=np.float32)
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    return index


def build_index(
    item_vecs: np.ndarray,
    *,
    queries: np.ndarray | None = None,
    k: int = 10,
    exact_limit: int = EXACT_LIMIT,
) -> tuple[faiss.Index, float]:
    """(index, recall@k vs exact search on `queries`); 1.0 for the exact index.

    Above `exact_limit` items: HNSW (M 32, efConstruction 40, efSearch 256) if its recall@k
    reaches MIN_RECALL, else the exact index (a slower search, never a worse answer). On the
    scale benchmark's 106K student vectors efConstruction 40 builds in half the time of 200 at
    recall@10 0.995 (against 1.0)."""
    vecs = np.ascontiguousarray(item_vecs, dtype=np.float32)
    if len(vecs) <= exact_limit:
        return exact_index(vecs), 1.0
    index = faiss.IndexHNSWFlat(vecs.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.hnsw.efSearch = 256
    index.add(vecs)
    recall = approx_recall(index, vecs, queries, k)
    if recall < MIN_RECALL:
        log.warning(
            "HNSW recall@%d %.3f < %.2f on %d items: serving the exact index",
            k,
            recall,
            MIN_RECALL,
            len(vecs),
        )
        return exact_index(vecs), 1.0
    return index, recall


def candidate_index(item_vecs: np.ndarray, *, exact_limit: int = CANDIDATE_EXACT_LIMIT):
    """The teacher's candidate retrieval: exact inner-product search up to `exact_limit` items;
    above, HNSW (M 32, efConstruction 40, efSearch 128) over float16 copies of the vectors, whose
    search grows with log(items) rather than items. Built on one thread, so the same vectors give
    the same index (and the same soft-label shards) on every run. Recall@50 of MiniLM teacher
    vectors against exact search (bench/scale.py's data): 0.98 at 13K items, 0.90 at 106K, the
    same as float32 vectors give (0.903 either way at 106K), while a search reads half the bytes:
    1.4x faster at 106K items (bench/candidate_index.py). Candidates are scored
    exactly by the teacher, so a miss only replaces one candidate by a near one."""
    vecs = np.ascontiguousarray(item_vecs, dtype=np.float32)
    if len(vecs) <= exact_limit:
        return exact_index(vecs)
    index = faiss.IndexHNSWSQ(
        vecs.shape[1], faiss.ScalarQuantizer.QT_fp16, 32, faiss.METRIC_INNER_PRODUCT
    )
    index.hnsw.efConstruction = 40
    index.hnsw.efSearch = 128
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # a parallel build depends on thread timing
    try:
        index.train(vecs)  # fp16 has nothing to learn; FAISS still wants the call
        index.add(vecs)
    finally:
        faiss.omp_set_num_threads(threads)
    return index


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
    rng = np.random.default_rng(0)
    if queries is None or not len(queries):
        queries = vecs[rng.choice(len(vecs), size=min(1000, len(vecs)), replace=False)]
    elif len(queries) > RECALL_QUERIES:
        queries = queries[np.sort(rng.choice(len(queries), size=RECALL_QUERIES, replace=False))]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, len(vecs))
    _, exact = exact_index(vecs).search(queries, k)  # FAISS's top k: a heap per query, no sort
    _, approx = index.search(queries, k)
    hits = [len(set(a) & set(e)) for a, e in zip(approx, exact, strict=True)]
    return float(np.sum(hits) / exact.size)


def to_bytes(index: faiss.Index) -> bytes:
    return faiss.serialize_index(index).tobytes()


def from_bytes(data: bytes) -> faiss.Index:
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
