"""Which language model's items make the best teacher head -> bench/results/teacher_lm.json.

The same one-head teacher (SASRec + a projection of frozen LM item embeddings, the standard recipe,
seed 0) on the item texts encoded by each language model, next to the head on item IDs alone (the
plain SASRec), MovieLens-100K, standard protocol. The choice is made on validation NDCG@10.

  all-MiniLM-L6-v2        the packaged default encoder (mean pooled, 384 dims)
  SmolLM2-135M-Instruct   mean-pooled final hidden states of the packaged GGUF (576 dims)
  all-mpnet-base-v2       with --mpnet PATH, a sentence-transformers folder (768 dims)

Usage: python -m bench.teacher_lm [--mpnet PATH] [--seed 0] [--workers 2] [--dim 128]
       [--only ids,minilm,smollm,mpnet]   (~7-10 min per head on one core)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import movielens, save, work_dir
from distill.evaluation.harness import evaluate
from distill.teacher import adapt
from distill.teacher.base import AdaptConfig, TeacherConfig
from distill.teacher.prepare import load_teacher
from distill.texts import item_texts
from distill.training.loop import available_cores
from distill.training.parallel import map_in_processes


def train_and_score(name: str, emb: np.ndarray, split, config: AdaptConfig) -> dict:
    """One head on `emb` (I, T) item embeddings (T = 0: item IDs only)."""
    text = adapt.FrozenText(emb)
    model = adapt.build_teacher_model(split.n_items, emb.shape[1], config, text)
    t0 = time.perf_counter()
    result = adapt.train_head(model, split, config)
    scorer = adapt.scorer(model, split, config.history_len)
    return {
        "item_representation": name,
        "dims": int(emb.shape[1]),
        "valid_ndcg@10": evaluate(scorer, split, fold="valid").primary,
        "test_ndcg@10": evaluate(scorer, split).primary,
        "best_epoch": result.best_epoch,
        "train_seconds": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpnet", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=available_cores())
    parser.add_argument("--dim", type=int, default=None, help="head width (default: the config's)")
    parser.add_argument(
        "--only", default=None, help="comma-separated: ids,minilm,smollm,mpnet (default: all)"
    )
    args = parser.parse_args()
    wanted = None if args.only is None else set(args.only.split(","))
    work = work_dir()
    dataset, split = movielens(work)
    base = TeacherConfig()
    texts = item_texts(dataset.items(), base.texts).get_column("text").to_list()
    lms = {
        "all-MiniLM-L6-v2": ("minilm", TeacherConfig()),
        "SmolLM2-135M-Instruct (hidden states)": (
            "smollm",
            TeacherConfig(kind="causal", pairs="candidates"),
        ),
    }
    if args.mpnet is not None:
        lms["all-mpnet-base-v2"] = ("mpnet", TeacherConfig(model_path=args.mpnet))
    lms = {name: cfg for name, (short, cfg) in lms.items() if wanted is None or short in wanted}
    embeddings = {}
    if wanted is None or "ids" in wanted:
        embeddings["item IDs only (no LM)"] = np.zeros((split.n_items, 0), np.float32)
    encode_seconds = {}
    for name, cfg in lms.items():
        t0 = time.perf_counter()
        with torch.inference_mode():
            embeddings[name] = load_teacher(cfg, work).encode(texts)
        encode_seconds[name] = time.perf_counter() - t0
        print(f"{name}: {embeddings[name].shape} in {encode_seconds[name]:.0f}s", flush=True)
    config = base.adapt.seeded(args.seed).model_copy(update={"heads": 1})
    if args.dim is not None:
        config = config.model_copy(update={"dim": args.dim})
    rows = map_in_processes(
        train_and_score,
        [(name, emb, split, config) for name, emb in embeddings.items()],
        workers=args.workers,
    )
    for row in rows:
        row["encode_seconds"] = encode_seconds.get(row["item_representation"], 0.0)
        print(row, flush=True)
    best = max(rows, key=lambda r: r["valid_ndcg@10"])
    save(
        "teacher_lm" if args.dim is None else f"teacher_lm_dim{args.dim}",
        {
            "seed": args.seed,
            "head_dim": config.dim,
            "rows": rows,
            "chosen_on_validation": best["item_representation"],
        },
    )


if __name__ == "__main__":
    main()
