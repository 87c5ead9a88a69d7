"""Stopping rules replayed: what a shorter patience or a smoothed stopping metric would have cost
and saved, on trainings already run (no training: each epoch's validation NDCG@10 is recorded).

    python -m bench.patience [--work DIR ...] [--patience 5 10 15 20] [--smoothing 0 0.5 0.8]

Training is deterministic per seed, so a run stopped by another rule would have followed exactly
the recorded curve up to its own stop: the replay is exact for every rule that stops no later than
the recorded run (patience 20, the default, on the raw metric). A rule that would have gone on
past the recorded curve is counted as `censored` and left out of the means.

Read: every student checkpoint under <work>/cache/students/ (its per-epoch history is in the
checkpoint's metadata) and every teacher head under <work>/cache/teacher/adapters/ (training.json).
Per curve and rule: the epoch it stops after, the selected epoch's validation NDCG@10 (the raw
value of the weights the rule keeps), and both against the recorded run; seconds saved = epochs
saved x the run's mean seconds per epoch. Results: bench/results/patience.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors import safe_open

from bench.common import save, work_dir
from distill.teacher.cache import AdapterDir
from storage.atomic import read_json
from storage.workdir import WorkDir


def curves(work: Path) -> list[dict]:
    """Every recorded training curve in the work dir: kind, per-epoch validation, s/epoch."""
    out = []
    for progress_path in sorted(WorkDir(work).students.glob("*/progress.json")):
        progress = read_json(progress_path)
        ckpt = progress_path.parent / "checkpoint.safetensors"
        if not progress.get("done") or not ckpt.exists():
            continue
        with safe_open(str(ckpt), "pt") as handle:
            history = json.loads(handle.metadata()["progress"])["history"]
        epochs = len(history)
        out.append(
            {
                "source": f"{work.name}/{progress_path.parent.name}",
                "kind": "student kd" if " kd " in progress["desc"] else "student no-kd",
                "desc": progress["desc"],
                "patience": progress["patience"],
                "max_epochs": progress["max_epochs"],
                "val": [h["val"] for h in history],
                "seconds_per_epoch": progress["seconds"] / max(epochs, 1),
            }
        )
    for adapter in AdapterDir.all(work):
        for head in read_json(adapter.training)["heads"]:
            history = head["history"]
            out.append(
                {
                    "source": f"{work.name}/{adapter.path.name}",
                    "kind": "teacher head",
                    "desc": f"teacher head seed {head['seed']}",
                    "patience": 20,
                    "max_epochs": 200,
                    "val": [h["val"] for h in history],
                    "seconds_per_epoch": head["seconds"] / max(len(history), 1),
                }
            )
    return out


def replay(val: list[float], patience: int, smoothing: float) -> tuple[int, int] | None:
    """(epochs run, selected epoch) of the loop's rule (distill/training/loop.py: stop once
    `patience` epochs pass without a gain of the EMA-smoothed metric, keep the best smoothed
    epoch), or None when the rule would run past the recorded curve."""
    best, best_epoch, smoothed = -1.0, -1, None
    for epoch, score in enumerate(val):
        if best_epoch >= 0 and epoch - best_epoch > patience:
            return epoch, best_epoch
        smoothed = score if smoothed is None else smoothing * smoothed + (1 - smoothing) * score
        if smoothed > best:
            best, best_epoch = smoothed, epoch
    if best_epoch >= 0 and len(val) - best_epoch > patience:  # the check before the next epoch
        return len(val), best_epoch
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, nargs="+", default=None)
    parser.add_argument("--patience", type=int, nargs="+", default=[5, 10, 15, 20])
    parser.add_argument("--smoothing", type=float, nargs="+", default=[0.0, 0.5, 0.8])
    args = parser.parse_args()
    runs, seen = [], set()
    for work in args.work or [work_dir()]:
        for curve in curves(work):
            key = (curve["kind"], tuple(round(v, 10) for v in curve["val"]))
            if key not in seen:  # the same training found in two work dirs counts once
                seen.add(key)
                runs.append(curve)
    if not runs:
        raise SystemExit("no finished training under the work dirs: run `kdrec run` first")
    rows = []
    for run in runs:
        recorded = replay(run["val"], run["patience"], 0.0)
        if recorded is None:  # stopped by max_epochs: nothing to compare a rule against
            continue
        base_epochs, base_best = recorded
        for patience in args.patience:
            for smoothing in args.smoothing:
                got = replay(run["val"], patience, smoothing)
                row = {
                    "source": run["source"],
                    "kind": run["kind"],
                    "desc": run["desc"],
                    "patience": patience,
                    "smoothing": smoothing,
                    "recorded_epochs": base_epochs,
                    "recorded_valid": run["val"][base_best],
                    "censored": got is None,
                }
                if got is not None:
                    epochs, best = got
                    row |= {
                        "epochs": epochs,
                        "valid": run["val"][best],
                        "epoch_share": epochs / base_epochs,
                        "seconds_saved": (base_epochs - epochs) * run["seconds_per_epoch"],
                        "valid_change": run["val"][best] / run["val"][base_best] - 1,
                    }
                rows.append(row)
    summary = []
    for kind in sorted({r["kind"] for r in rows}):
        for patience in args.patience:
            for smoothing in args.smoothing:
                mine = [
                    r
                    for r in rows
                    if (r["kind"], r["patience"], r["smoothing"]) == (kind, patience, smoothing)
                ]
                done = [r for r in mine if not r["censored"]]
                if not done:
                    continue
                summary.append(
                    {
                        "kind": kind,
                        "patience": patience,
                        "smoothing": smoothing,
                        "curves": len(mine),
                        "censored": len(mine) - len(done),
                        "epoch_share": float(np.mean([r["epoch_share"] for r in done])),
                        "seconds_saved": float(np.mean([r["seconds_saved"] for r in done])),
                        "valid_change": float(np.mean([r["valid_change"] for r in done])),
                        "worst_valid_change": float(min(r["valid_change"] for r in done)),
                    }
                )
                line = summary[-1]
                print(
                    f"{kind:14s} patience {patience:2d} smoothing {smoothing:.1f}: "
                    f"{line['epoch_share']:.0%} of the epochs, validation "
                    f"{line['valid_change']:+.2%} (worst {line['worst_valid_change']:+.2%}), "
                    f"{len(done)}/{len(mine)} curves",
                    flush=True,
                )
    save(
        "patience",
        {
            "work_dirs": [str(w) for w in args.work or [work_dir()]],
            "summary": summary,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
