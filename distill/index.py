"""FAISS inner-product item indexes.

`build_index`: the serving index, exact up to 100K items, HNSW above (exact again if its recall
at build falls short).
`candidate_index`: the teacher's candidate retrieval, exact up to 5,000 items, HNSW above (a
query visits a graph neighbourhood instead of the whole catalog), laid out cluster by cluster.
Recall checks sample at most `RECALL_QUERIES` queries, so they cost the same at any user count.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import faiss
import numpy as np

log = logging.getLogger(__name__)

EXACT_LIMIT = 100_000
MIN_RECALL = 0.98
CANDIDATE_EXACT_LIMIT = 5_000
RECALL_QUERIES = 2_000
LAYOUT_CLUSTERS = 256


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


@dataclass(frozen=True)
class CandidateIndex:
    """The teacher's candidate retrieval over item vectors, searched like a FAISS index.

    Up to the exact limit, `index` is exact and `ids`, `centroids` are empty. Above, `index`
    is an HNSW graph whose entries are stored cluster by cluster: entry e holds item `ids[e]`,
    items of one k-means cluster side by side in memory, and `search` visits the queries cluster
    by cluster (nearest of `centroids`). Neighbouring queries then walk neighbouring parts of
    the graph while they are still in the CPU caches. The layout moves entries, not edges: the
    results are the plain graph's (a test compares them)."""

    index: faiss.Index
    ids: np.ndarray  # (entries,) int64: the item each index entry holds; empty = the identity
    centroids: np.ndarray  # (clusters, dim) float32; empty = queries in the order given

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item indices), each (queries, k), as `faiss.Index.search` (-1 = none)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if not len(self.centroids):
            scores, found = self.index.search(queries, k)
        else:
            order = np.argsort(np.argmax(queries @ self.centroids.T, axis=1), kind="stable")
            scores = np.empty((len(queries), k), np.float32)
            found = np.empty((len(queries), k), np.int64)
            scores[order], found[order] = self.index.search(queries[order], k)
        if len(self.ids):
            found = np.where(found >= 0, self.ids[np.maximum(found, 0)], -1)
        return scores, found

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            index=np.frombuffer(to_bytes(self.index), dtype=np.uint8),
            ids=self.ids,
            centroids=self.centroids,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CandidateIndex:
        with np.load(io.BytesIO(data)) as parts:
            return cls(from_bytes(parts["index"].tobytes()), parts["ids"], parts["centroids"])


@contextmanager
def one_thread() -> Iterator[None]:
    """FAISS on one OpenMP thread inside the block: a parallel HNSW build or k-means depends on
    thread timing, one thread gives the same index from the same vectors every time."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def candidate_graph(vecs: np.ndarray, *, float16: bool = True) -> faiss.Index:
    """`candidate_index`'s HNSW graph (M 32, efConstruction 40, efSearch 128) in insertion
    order, before its cluster layout; float32 vectors when not `float16` (for the benchmark)."""
    index: faiss.IndexHNSW
    if float16:
        index = faiss.IndexHNSWSQ(  # the stubs miss SWIG's (d, quantizer type, M, metric)
            vecs.shape[1],
            faiss.ScalarQuantizer.QT_fp16,  # type: ignore[arg-type]
            32,
            faiss.METRIC_INNER_PRODUCT,
        )
    else:
        index = faiss.IndexHNSWFlat(vecs.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.hnsw.efSearch = 128
    with one_thread():
        index.train(vecs)  # fp16 has nothing to learn; FAISS still wants the call
        index.add(vecs)
    return index


def candidate_index(
    item_vecs: np.ndarray, *, exact_limit: int = CANDIDATE_EXACT_LIMIT
) -> CandidateIndex:
    """The teacher's candidate retrieval: exact inner-product search up to `exact_limit` items;
    above, HNSW (M 32, efConstruction 40, efSearch 128) over float16 copies of the vectors, whose
    search grows with log(items) rather than items, laid out cluster by cluster (`CandidateIndex`).
    Built on one thread, so the same vectors give the same index (and the same soft-label shards)
    on every run. On bench/scale.py's ×100 MiniLM vectors (106K items; bench/candidate_index.py):
    recall@50 against exact search 0.903, as float32 vectors give, while a search reads half the
    bytes (1.4x faster than float32); the cluster layout makes it 1.075x faster again (the
    graph outgrows the CPU caches there). Candidates are scored exactly by the teacher, so a
    miss only replaces one candidate by a near one."""
    vecs = np.ascontiguousarray(item_vecs, dtype=np.float32)
    none = np.empty(0, np.int64)
    if len(vecs) <= exact_limit:
        return CandidateIndex(exact_index(vecs), none, np.empty((0, vecs.shape[1]), np.float32))
    index = candidate_graph(vecs)
    with one_thread():  # k-means too: its assignments must not depend on thread timing
        clusters = max(1, min(LAYOUT_CLUSTERS, len(vecs) // 100))
        kmeans = faiss.Kmeans(vecs.shape[1], clusters, niter=10, seed=1, spherical=True)
        kmeans.train(vecs)
        _, cluster = kmeans.index.search(vecs, 1)
    ids = np.argsort(cluster[:, 0], kind="stable").astype(np.int64)
    index.permute_entries(ids)  # entry e now holds item ids[e]
    return CandidateIndex(index, ids, np.ascontiguousarray(kmeans.centroids, dtype=np.float32))


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
    index: faiss.Index | CandidateIndex, vecs: np.ndarray, queries: np.ndarray | None, k: int
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
