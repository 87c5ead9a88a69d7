"""Does a larger or more diverse ensemble of teacher heads make a better teacher?
-> bench/results/teacher_ensemble.json.

Trains `--heads` one-head teachers per language model (the default recipe: SASRec + a projection of
the frozen LM item embeddings, seeds 0..heads-1), then scores on MovieLens-100K (standard protocol,
full ranking) every single head and the ensembles of the first k heads of each LM and of all LMs
together. An ensemble's score is the mean of its heads' logits, as `teacher.adapt.heads` does (and,
for comparison, the log of the mean of their softmax probabilities). The size is chosen on
validation; test is reported beside it. Also reported: the standard error of a model's NDCG@10
over the evaluated users, the scale of the differences this benchmark can resolve.

Usage: python -m bench.teacher_ensemble [--heads 4] [--lms minilm,smollm] [--workers 2]
  (~10 min per head on one core; checkpoints under $KDREC_BENCH_WORK/teacher_ensemble, so an
  interrupted run resumes)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bench.common import movielens, save, work_dir
from distill.evaluation.harness import EVAL_FOLDS, Scorer, evaluate
from distill.teacher import adapt
from distill.teacher.base import AdaptConfig, TeacherConfig
from distill.teacher.prepare import load_teacher
from distill.texts import item_texts
from distill.training.loop import available_cores
from distill.training.parallel import map_in_processes

LMS = {
    "minilm": ("all-MiniLM-L6-v2", TeacherConfig()),
    "smollm": (
        "SmolLM2-135M-Instruct (hidden states)",
        TeacherConfig(kind="causal", pairs="candidates"),
    ),
}


def train_one(
    emb: np.ndarray, split, config: AdaptConfig, checkpoint_dir: Path
) -> tuple[dict[str, torch.Tensor], int, float]:
    """One head on (I, T) item embeddings; returns its weights, best epoch and seconds."""
    model = adapt.build_teacher_model(split.n_items, emb.shape[1], config, adapt.FrozenText(emb))
    t0 = time.perf_counter()
    result = adapt.train_head(model, split, config, checkpoint_dir=checkpoint_dir)
    return model.heads[0].state_dict(), result.best_epoch, time.perf_counter() - t0


def scored_once(scorer: Scorer, split) -> Scorer:
    """`scorer` with every user's scores of each fold computed once (a head is a member of many
    ensembles; ML-100K's 943 x 1,682 scores are 6 MB a fold)."""
    every_user = np.arange(split.n_users)
    scores = {fold: torch.as_tensor(scorer(every_user, fold)) for fold in EVAL_FOLDS}
    return lambda users, fold: scores[fold][users]


def mean_of(scorers: Sequence[Scorer], mode: str) -> Scorer:
    """An ensemble scorer: mean logits, or log of the mean softmax probability."""

    def scores(users: np.ndarray, fold: str) -> torch.Tensor:
        outs = [torch.as_tensor(s(users, fold)) for s in scorers]
        if mode == "logits":
            return torch.stack(outs).mean(0)
        return torch.stack([o.softmax(-1) for o in outs]).mean(0).log()

    return scores


def score(scorer: Scorer, split) -> dict[str, float]:
    valid = evaluate(scorer, split, fold="valid")
    test = evaluate(scorer, split)
    per_user = valid.per_user["ndcg@10"]
    return {
        "valid_ndcg@10": valid.primary,
        "valid_se": float(per_user.std(ddof=1) / np.sqrt(len(per_user))),
        "test_ndcg@10": test.primary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=4, help="heads per language model")
    parser.add_argument("--lms", default="minilm,smollm", help="comma-separated: minilm,smollm")
    parser.add_argument("--workers", type=int, default=available_cores())
    args = parser.parse_args()
    lms = args.lms.split(",")
    unknown = sorted(set(lms) - set(LMS))
    if unknown:
        parser.error(f"unknown --lms {unknown}; choose from {sorted(LMS)}")
    work = work_dir()
    dataset, split = movielens(work)
    base = TeacherConfig()
    texts = item_texts(dataset.items(), base.texts).get_column("text").to_list()
    embeddings = {}
    for lm in lms:
        with torch.inference_mode():
            embeddings[lm] = load_teacher(LMS[lm][1], work).encode(texts)
    configs = [
        base.adapt.seeded(seed).model_copy(update={"heads": 1}) for seed in range(args.heads)
    ]
    jobs = [(lm, c) for lm in lms for c in configs]
    ckpt = work / "teacher_ensemble"
    trained = map_in_processes(
        train_one,
        [(embeddings[lm], split, c, ckpt / f"{lm}-seed{c.loop.seed}") for lm, c in jobs],
        workers=args.workers,
    )
    heads: dict[str, list[Scorer]] = {lm: [] for lm in lms}
    rows = []
    for (lm, config), (state, best_epoch, seconds) in zip(jobs, trained, strict=True):
        model = adapt.build_teacher_model(
            split.n_items, embeddings[lm].shape[1], config, adapt.FrozenText(embeddings[lm])
        )
        model.heads[0].load_state_dict(state)
        heads[lm].append(scored_once(adapt.scorer(model, split, config.history_len), split))
        row = {
            "lm": lm,
            "heads": [config.loop.seed],
            "mode": "single",
            **score(heads[lm][-1], split),
        }
        rows.append({**row, "best_epoch": best_epoch, "train_seconds": seconds})
        print(rows[-1], flush=True)
    groups = {lm: heads[lm] for lm in lms}
    if len(lms) > 1:
        groups["+".join(lms)] = [s for k in range(args.heads) for s in (heads[lm][k] for lm in lms)]
    for name, members in groups.items():
        for k in range(2, len(members) + 1):
            for mode in ("logits", "probabilities"):
                row = {
                    "lm": name,
                    "heads": k,
                    "mode": mode,
                    **score(mean_of(members[:k], mode), split),
                }
                rows.append(row)
                print(row, flush=True)
    ensembles = [r for r in rows if r["mode"] != "single"]
    singles = [r for r in rows if r["mode"] == "single"]
    best = max(ensembles or singles, key=lambda r: r["valid_ndcg@10"])
    save(
        "teacher_ensemble",
        {
            "heads_per_lm": args.heads,
            "rows": rows,
            "single_head_mean": {
                key: float(np.mean([r[key] for r in singles]))
                for key in ("valid_ndcg@10", "test_ndcg@10")
            },
            "chosen_on_validation": best,
        },
    )


if __name__ == "__main__":
    main()
