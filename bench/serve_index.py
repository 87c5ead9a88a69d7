"""Exact (float32) against int8 (SQ8) item index on a published bundle: size, latency, NDCG@10.

    python -m bench.serve_index [--registry work/registry] [--queries 2000]

Under the standard protocol (the test item of each ML-100K user, the input every item before it,
ranking excludes the input), through the bundle's own user tower and each FAISS index: exactly what
`kdrec serve --index exact|sq8` does. Both indexes are built from the bundle's item vectors with the
functions publishing uses. Latency is one user per call (the service's case), best of 3 passes
over `--queries` users, median per call. Results: bench/results/serve_index.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import movielens, save
from distill import index as faiss_index
from distill.serving.recommend import Recommender
from distill.student.fit import UserData
from storage.workdir import WorkDir


def ndcg_at_10(index, user_vecs: np.ndarray, seen: list[set[int]], targets: np.ndarray) -> float:
    depth = min(10 + max(len(s) for s in seen), index.ntotal)
    _, idx = index.search(np.ascontiguousarray(user_vecs), depth)
    gains = []
    for row, banned, target in zip(idx, seen, targets, strict=True):
        ranked = [i for i in row if i >= 0 and i not in banned][:10]
        gains.append(1 / np.log2(ranked.index(target) + 2) if target in ranked else 0.0)
    return float(np.mean(gains))


def median_call_ms(call, queries: np.ndarray) -> float:
    best = []
    for _ in range(3):
        times = []
        for q in queries:
            t0 = time.perf_counter()
            call(q)
            times.append(time.perf_counter() - t0)
        best.append(np.median(times))
    return float(min(best) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", type=Path, default=None, help="default: the work dir's")
    parser.add_argument("--model", default="kdrec")
    parser.add_argument("--queries", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a `kdrec serve` worker
    work = Path(os.environ.get("KDREC_WORK_DIR", "work"))
    rec = Recommender.load(args.registry or WorkDir(work).registry, args.model, work_dir=work)
    dataset, split = movielens(work)
    if rec.manifest.get("dataset") != dataset.ref:
        raise SystemExit(f"bundle is of {rec.manifest.get('dataset')}, work dir has {dataset.ref}")
    encoder = rec.encoder
    data = UserData(split, encoder.history_len)
    test = split.fold("test").sort("user_idx")
    users = test.get_column("user_idx").to_numpy()
    targets = test.get_column("item_idx").to_numpy()
    inputs = split.matrix("train", "valid")
    seen = [set(inputs[u].indices.tolist()) for u in users]
    with torch.no_grad():
        user_vecs = encoder.model.history_vectors(data.hist["test"][users], encoder.item_vecs)
    user_vecs = user_vecs.numpy()
    item_vecs = encoder.item_vecs.numpy()
    exact, _ = faiss_index.build_index(item_vecs)
    indexes = {
        "exact (IndexFlatIP, float32)": exact,
        "sq8 (int8)": faiss_index.build_sq8(item_vecs),
    }
    rng = np.random.default_rng(0)
    picks = rng.choice(len(users), size=min(args.queries, len(users)), replace=False)
    hist = data.hist["test"][users[picks]]
    rows = []
    for name, index in indexes.items():

        def search(i, index=index):
            index.search(user_vecs[i : i + 1], 10 + len(seen[i]))

        def serve_one(i, index=index):
            with torch.no_grad():
                vec = encoder.model.history_vectors(hist[i : i + 1], encoder.item_vecs)
            index.search(vec.numpy(), 10 + len(seen[picks[i]]))

        rows.append(
            {
                "index": name,
                "bytes": len(faiss_index.to_bytes(index)),
                "test_ndcg@10": round(ndcg_at_10(index, user_vecs, seen, targets), 4),
                "search_p50_ms": round(median_call_ms(search, picks), 4),
                "user_vector_plus_search_p50_ms": round(
                    median_call_ms(serve_one, np.arange(len(picks))), 4
                ),
            }
        )
        print(rows[-1], flush=True)
    exact_ndcg = rows[0]["test_ndcg@10"]
    for row in rows:
        row["ndcg_loss_vs_exact"] = round(exact_ndcg - row["test_ndcg@10"], 4)
        row["size_vs_exact"] = round(row["bytes"] / rows[0]["bytes"], 3)
    path = save(
        "serve_index",
        {
            "command": "python -m bench.serve_index " + " ".join(sys.argv[1:]),
            "bundle": rec.version,
            "dataset": dataset.ref,
            "n_items": rec.n_items,
            "dim": int(item_vecs.shape[1]),
            "users": len(users),
            "rows": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
