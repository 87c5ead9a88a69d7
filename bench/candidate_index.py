"""The teacher's candidate index on a large catalog: HNSW over float32 vectors, over float16
vectors, and over float16 vectors laid out cluster by cluster (what `candidate_index` builds).

    python -m bench.candidate_index --cache /tmp/kdrec-scale-*/x100/work/cache/teacher/<fingerprint>

Reads a teacher cache with `pairs: candidates` (the ×100 size of `make bench-scale` keeps its
cache under the scratch folder the bench prints) and compares, on its own item and user vectors:
build seconds (one thread; the laid-out index is `distill.index.candidate_index`
itself), recall@K
against exact search on the first RECALL_USERS users, and the search time of the first
SEARCH_USERS users in shards of `users_per_shard` (the threads `auto` gives), the indexes
taking turns ROUNDS times.
Results: bench/results/candidate_index.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np

from bench.common import save
from distill.index import LAYOUT_CLUSTERS, approx_recall, candidate_graph, candidate_index
from distill.teacher.cache import TeacherCache
from distill.training.loop import apply_threads

RECALL_USERS = 2_000
SEARCH_USERS = 24_576
ROUNDS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="a teacher cache folder")
    args = parser.parse_args()
    apply_threads("auto")
    cache = TeacherCache(args.cache)
    config = cache.plan.teacher_config
    items = np.ascontiguousarray(cache.vectors("items"), dtype=np.float32)
    users = np.ascontiguousarray(cache.vectors("users"), dtype=np.float32)[:SEARCH_USERS]
    k, shard = config.candidates_top_k, config.users_per_shard
    rows: dict[str, dict] = {}
    indexes = {}
    builders = {
        "float32": lambda v: candidate_graph(v, float16=False),
        "float16": candidate_graph,
        "float16, cluster layout": lambda v: candidate_index(v, exact_limit=0),
    }
    for storage, build_index in builders.items():
        t0 = time.perf_counter()
        indexes[storage] = build_index(items)
        build = time.perf_counter() - t0
        recall = approx_recall(indexes[storage], items, users[:RECALL_USERS], k)
        rows[storage] = {"build_s": round(build, 2), f"recall@{k}": round(recall, 4)}
        rows[storage]["search_s"] = []
    for _ in range(ROUNDS):
        for storage, index in indexes.items():
            t0 = time.perf_counter()
            for start in range(0, len(users), shard):
                index.search(users[start : start + shard], k)
            rows[storage]["search_s"].append(round(time.perf_counter() - t0, 2))
    laid_out = rows["float16, cluster layout"]["search_s"]

    def ratios(slower: str) -> list[float]:
        return [round(a / b, 3) for a, b in zip(rows[slower]["search_s"], laid_out, strict=True)]

    save(
        "candidate_index",
        {
            "command": "python -m bench.candidate_index --cache <the x100 teacher cache>",
            "items": len(items),
            "users_searched": len(users),
            "k": k,
            "users_per_shard": shard,
            "threads": faiss.omp_get_max_threads(),
            "hnsw": {"M": 32, "efConstruction": 40, "efSearch": 128},
            "rows": rows,
            "layout_clusters": LAYOUT_CLUSTERS,
            "search_float32_over_laid_out": ratios("float32"),
            "search_float16_over_laid_out": ratios("float16"),
            "median_float16_over_laid_out": float(np.median(ratios("float16"))),
        },
    )


if __name__ == "__main__":
    main()
