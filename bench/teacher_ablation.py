"""What does the language model buy? -> bench/results/teacher_ablation.json.

Trains the default teacher head a second time *without* the LM's item embeddings (item ID
embeddings only, same architecture, seed and budget), then distills the default student from each
teacher. Rows: the two teachers as recommenders, the student without distillation, and the student
distilled from each teacher, all on the same seeds and through the same harness.

Usage: python bench/teacher_ablation.py [--seeds 0,1]   (~4 min for the extra head, ~40 s per
two-tower student on 2 cores; needs the default teacher cache, built here when missing)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import default_teacher, fit_seeds, save, work_dir  # noqa: E402
from distill.evaluate import evaluate  # noqa: E402
from distill.soft_labels import SoftLabels  # noqa: E402
from distill.student.fit import DistillConfig  # noqa: E402
from distill.teacher import adapt  # noqa: E402
from distill.teacher.stage import read_vectors  # noqa: E402
from pipelines.config import RunConfig  # noqa: E402


class DenseLabels:
    """In-memory soft labels with the `SoftLabels` interface the student reads. Same shard layout
    as the real teacher's, so students distilled from either see the same batches."""

    def __init__(
        self, scores: np.ndarray, shards: list[tuple[str, int, int]], fingerprint: str
    ) -> None:
        self.scores = torch.as_tensor(scores, dtype=torch.float32)
        self.shards, self.fingerprint = shards, fingerprint
        self._rows = {key: (start, end) for key, start, end in shards}

    def block(self, key: str) -> torch.Tensor:
        start, end = self._rows[key]
        return self.scores[start:end]


def id_only_teacher(split, config: RunConfig) -> tuple[np.ndarray, float]:
    """The default head without the LM's text: (user x item scores, training seconds)."""
    cfg = config.teacher.adapt
    no_text = adapt.FrozenText(np.zeros((split.n_items, 0), np.float32))
    model = adapt.build_teacher_model(split.n_items, 0, cfg, no_text)
    result = adapt.train_head(model, split, cfg)
    hist = torch.as_tensor(adapt.history_matrix(split, cfg.history_len))
    model.eval()
    with torch.no_grad():
        items = model.item_vectors().detach()
        users = model.user_vectors(hist, items)
    return (users @ items.T).numpy(), result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1", help="comma-separated student seeds")
    seeds = [int(s) for s in parser.parse_args().seeds.split(",")]

    work = work_dir()
    cfg = RunConfig(work_dir=work)
    _, split, cache = default_teacher(work, cfg)
    text_emb = read_vectors(cache, "items", "embedding")
    lm_teacher = SoftLabels(cache)
    t0 = time.perf_counter()
    scores, head_seconds = id_only_teacher(split, cfg)
    print(f"ID-only teacher head trained in {time.perf_counter() - t0:.0f}s", flush=True)
    id_teacher = DenseLabels(scores, lm_teacher.shards, "id-only-head")

    def as_teacher(scorer) -> dict:
        return {
            "test_ndcg@10": evaluate(scorer, split).primary,
            "valid_ndcg@10": evaluate(scorer, split, fold="valid").primary,
        }

    rows = {
        "teacher LM + head": as_teacher(lm_teacher.scorer()),
        "teacher head without LM (ID only)": {
            **as_teacher(lambda u: torch.as_tensor(scores[u])),
            "train_seconds": head_seconds,
        },
    }
    arms = {
        "student, no distillation": (DistillConfig(alpha=0.0), lm_teacher),  # alpha 0: ignored
        "student <- head without LM": (cfg.distill, id_teacher),
        "student <- LM + head": (cfg.distill, lm_teacher),
    }
    for name, (kd, labels) in arms.items():
        runs = fit_seeds(
            split, cfg.student, kd, cfg.train, seeds, soft_labels=labels, text_emb=text_emb
        )
        rows[name] = {
            "test_ndcg@10": float(np.mean([r.test.primary for r in runs])),
            "valid_ndcg@10": float(np.mean([r.valid["ndcg@10"] for r in runs])),
            "per_seed_test": [r.test.primary for r in runs],
        }
        print(f"{name}: test {rows[name]['test_ndcg@10']:.4f}", flush=True)
    save(
        "teacher_ablation",
        {
            "student": cfg.student.model_dump(),
            "distill": cfg.distill.model_dump(),
            "seeds": seeds,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
