"""The recipe at the scale teams have: `kdrec run` on synthetic catalogs at ×1, ×10, ×100 ML-100K.

    python -m bench.scale --scales 10 [--seeds 2] [--root DIR] [--resume]
    python -m bench.scale --scales 100 --epochs 1      # a stated epoch budget
    make bench-scale                                    # ×1, ×10, ×100

Per size, in a scratch folder `<root>/x<scale>/`: the synthetic catalog (bench/synthetic.py: text
carries signal by construction), then the real `kdrec run` binary on it (the same code as a
team's run: the regime is picked from the item count, pipelines/regime.py) with `--seeds` seeds
per arm, then a second `kdrec run` of the zero-shot two-tower recipe (configs/large_catalog.yaml,
the row to beat; same work dir, same evaluated users, the same training loop: the LM embeddings
and the plain rows' checkpoints are reused).
Measured: the run's wall time and stage timings (the run's
timings.json), peak RSS of the whole process tree (sampled every second: the flow, its training
workers, the Prefect server), the caches' disk, every training's epochs (the checkpoints'
progress.json), every report row's test NDCG@10 / HR@10, and the seed-aware paired tests
(distill/evaluation/stats.py) of the distilled student against the plain SASRec and of both
against the zero-shot two-tower (per-user results from each run's per_user.parquet, the same
users). With `--epochs` every training runs that budget instead of the regime's (`epoch_budget`
in the record); every size's `seconds` is measured (`projected: false`).

Results: bench/results/scale.json, one entry per size in `sizes`, merged with earlier entries of
other sizes (each entry keeps its own git_commit and argv).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

from bench import synthetic
from bench.common import RESULTS, argv_in_repo, git_commit, save
from distill.student.stage import SASREC_ROW
from storage.atomic import atomic_write_json, read_json

ROOT = Path(__file__).resolve().parents[1]
SCALES = (1, 10, 100)
ZERO_SHOT = ROOT / "configs" / "large_catalog.yaml"
DEVICE = "no GPU was lent to the session that measured this (device status: not drawn)"


def recipe_config(scale: float, folder: Path, files: dict[str, Path], seeds: int) -> dict:
    """The run config of one size: the default config on the synthetic files; the regime is
    the run's own choice."""
    return {
        "work_dir": str(folder / "work"),
        "dataset": {
            "name": f"syn-x{scale:g}",
            "source": "files",
            "interactions": str(files["interactions"]),
            "items": str(files["items"]),
        },
        "seeds": list(range(seeds)),
    }


def zero_shot_config(recipe: dict, epochs: int | None) -> dict:
    """configs/large_catalog.yaml on the same data and work dir, not published, with the
    recipe's training loop (the regime's batch, rate, epoch budget and schedule): the report's
    plain rows then reuse the recipe run's checkpoints, and only the two-tower rows train. (With
    the two-tower's earlier settings, lr 0.01 and 256 users a step, the plain SASRec rows of this
    run train at 256 windows a step, whose in-batch columns make the sampled softmax nearly a
    full one: 220 s an epoch at x10 instead of 40.)"""
    config = yaml.safe_load(ZERO_SHOT.read_text())
    config |= {k: recipe[k] for k in ("work_dir", "dataset", "seeds")}
    config["model_name"] = "zero-shot"
    config["publish"] = False
    if epochs:
        config["scaling"] = {"epochs": epochs}
    return config


class PeakRss:
    """The largest total RSS of a process and its descendants, sampled every `every` s, with
    when it was reached and each process's share then (which stage held the memory)."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        self.peak = 0
        self.at_seconds = 0.0
        self.processes: list[dict] = []
        self._t0 = time.perf_counter()
        self._proc = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            try:
                procs = [self._proc, *self._proc.children(recursive=True)]
                sizes = []
                for p in procs:
                    with contextlib.suppress(psutil.Error):  # a worker that just exited
                        sizes.append(
                            {"cmd": " ".join(p.cmdline()[-2:])[-80:], "rss": p.memory_info().rss}
                        )
                total = sum(s["rss"] for s in sizes)
                if total > self.peak:
                    self.peak, self.at_seconds = total, time.perf_counter() - self._t0
                    self.processes = [
                        {"cmd": s["cmd"], "rss_mb": round(s["rss"] / 2**20, 1)} for s in sizes
                    ]
            except psutil.Error:
                return
            self._stop.wait(every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def kdrec_run(config: dict, path: Path, log: Path) -> dict:
    """`kdrec run --config path` as a team runs it; (seconds, peak RSS, the run folder)."""
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("KDREC_WORK_DIR", "PREFECT_HOME")}
    env["TQDM_DISABLE"] = "1"
    # this checkout's code, whatever checkout the environment's editable install points at (the
    # kdrec entry point imports through the installed finder, which comes after sys.path)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    kdrec = Path(sys.executable).parent / "kdrec"
    runs = Path(config["work_dir"]) / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(kdrec), "run", "--config", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        rss = PeakRss(proc.pid)
        code = proc.wait()
        peak = rss.stop()
    seconds = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"kdrec run exited {code}; its log: {log}")
    [run] = sorted(set(runs.iterdir()) - before)
    return {
        "seconds": seconds,
        "peak_rss_mb": round(peak / 2**20, 1),
        "peak_at_seconds": round(rss.at_seconds, 1),
        "peak_processes": rss.processes,
        "run_dir": str(run),
    }


def epochs_trained(work: Path) -> list[dict]:
    """Every training's epochs in the work dir's caches (the checkpoints' progress.json)."""
    found = []
    for progress in sorted((work / "cache").rglob("progress.json")):
        p = read_json(progress)
        found.append(
            {
                "training": p["desc"],
                "epochs": p["epoch"] + 1,
                "best_epoch": p["best_epoch"] + 1,
                "max_epochs": p["max_epochs"],
                "seconds": p["seconds"],
                "seconds_per_epoch": round(p["seconds"] / (p["epoch"] + 1), 2),
            }
        )
    return found


def disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def rows_of(report: dict) -> list[dict]:
    return [
        {
            "model": r["model"],
            "role": r["role"],
            "distilled": r["distilled"],
            "test_ndcg@10": round(r["metrics"]["ndcg@10"]["mean"], 4),
            "test_ndcg@10_std": round(r["metrics"]["ndcg@10"]["std"], 4),
            "test_hr@10": round(r["metrics"]["hr@10"]["mean"], 4),
            "train_seconds": r["train_seconds"],
        }
        for r in report["rows"]
    ]


def cross_tests(recipe_run: Path, zero_shot_run: Path, report: dict, zs_report: dict) -> list:
    """The seed-aware paired tests of the recipe's rows against the zero-shot two-tower's
    distilled row, on the same users (each run's per_user.parquet)."""
    from distill.evaluation.report.per_user import read_per_user
    from distill.evaluation.stats import paired

    ours = read_per_user(recipe_run / "per_user.parquet")
    theirs = read_per_user(zero_shot_run / "per_user.parquet")
    zero_shot = next(r["model"] for r in zs_report["rows"] if r["distilled"])
    distilled = next(r["model"] for r in report["rows"] if r["distilled"])
    tests = []
    for model in (distilled, SASREC_ROW):
        found = paired(ours[model], theirs[zero_shot], names=(model, f"zero-shot {zero_shot}"))
        tests.append(found.as_json())
    return tests


def measured_run(config: dict, folder: Path, name: str, resume: bool) -> dict:
    """`kdrec run` of `config`, its measurement kept as `<folder>/<name>.json` (reused with
    `resume`: the record is rebuilt from the run folder without running it again)."""
    kept = folder / f"{name}.json"
    if resume and kept.exists():
        return read_json(kept)
    measured = kdrec_run(config, folder / f"{name}.yaml", folder / f"{name}.log")
    atomic_write_json(kept, measured)
    return measured


def run_size(scale: float, root: Path, seeds: int, epochs: int | None, resume: bool) -> dict:
    """One size: the recipe's run, the zero-shot run, what they measured. With `resume`, a run
    whose measurement is under `folder` (recipe.json, zero_shot.json) is not run again: the
    record is rebuilt from its run folder."""
    folder = root / f"x{scale:g}"
    folder.mkdir(parents=True, exist_ok=True)
    files = synthetic.generate(scale, folder / "files")
    recipe = recipe_config(scale, folder, files, seeds)
    if epochs:
        recipe["scaling"] = {"epochs": epochs}
    print(f"x{scale:g}: kdrec run (log {folder / 'recipe.log'})", flush=True)
    measured = measured_run(recipe, folder, "recipe", resume)
    work = Path(recipe["work_dir"])
    if "epochs" not in measured:  # the recipe's own, before the zero-shot run adds to the caches
        measured |= {"epochs": epochs_trained(work), "cache_bytes": disk_bytes(work / "cache")}
        atomic_write_json(folder / "recipe.json", measured)
    run = Path(measured["run_dir"])
    report, timings = read_json(run / "report.json"), read_json(run / "timings.json")
    print(f"x{scale:g}: zero-shot two-tower run (log {folder / 'zero_shot.log'})", flush=True)
    zs = measured_run(zero_shot_config(recipe, epochs), folder, "zero_shot", resume)
    zs_run = Path(zs["run_dir"])
    zs_report = read_json(zs_run / "report.json")
    dataset = read_json(next((work / "data").rglob("dataset.json")))
    record = {
        "scale": scale,
        "regime": timings["regime"],
        "seconds": round(measured["seconds"], 1),
        "projected": False,
        "peak_rss_mb": measured["peak_rss_mb"],
        "peak_at_seconds": measured.get("peak_at_seconds"),
        "peak_processes": measured.get("peak_processes"),
        "cache_bytes": measured["cache_bytes"],
        "stages": timings["seconds"],
        "epochs": measured["epochs"],
        "epoch_budget": epochs,
        "roofline_fraction": None,  # bench/roofline.py measures it per size
        "interactions": dataset["tables"]["interactions"]["rows"],
        "users": dataset.get("n_users"),
        "items": dataset.get("n_items"),
        "seeds": seeds,
        "rows": rows_of(report),
        "tests": [report[k] for k in ("kd_vs_no_kd", "kd_vs_best_plain") if k in report]
        + cross_tests(run, zs_run, report, zs_report),
        "zero_shot": {
            "config": str(ZERO_SHOT.relative_to(ROOT)),
            "seconds": round(zs["seconds"], 1),
            "peak_rss_mb": zs["peak_rss_mb"],
            "rows": rows_of(zs_report),
            "note": "same work dir: the LM embeddings and the plain rows' checkpoints were "
            "reused (its time has no LM pass and no plain SASRec training)",
        },
        "git_commit": git_commit(),
        "argv": argv_in_repo(),
    }
    return record


def merged(sizes: list[dict]) -> list[dict]:
    """These sizes with the other sizes of the existing result file."""
    path = RESULTS / "scale.json"
    old = json.loads(path.read_text()).get("sizes", []) if path.exists() else []
    mine = {s["scale"] for s in sizes}
    kept = [s for s in old if s.get("scale") not in mine and "regime" in s]
    return sorted(kept + sizes, key=lambda s: s["scale"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    parser.add_argument("--seeds", type=int, default=2, help="students per arm (default 2)")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="every training's epoch budget (default: the regime's)",
    )
    parser.add_argument("--root", type=Path, default=None, help="scratch folder (default: tmp)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the runs measured under --root (recipe.json, zero_shot.json)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    root = Path(args.root or Path(os.environ.get("TMPDIR", "/tmp")) / "kdrec-scale")
    sizes = []
    for scale in args.scales:
        record = run_size(scale, root, args.seeds, args.epochs, args.resume)
        print(json.dumps({k: v for k, v in record.items() if k != "epochs"}), flush=True)
        sizes.append(record)
    save("scale", {"device": DEVICE, "sizes": merged(sizes)})
    if not args.keep and args.root is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
