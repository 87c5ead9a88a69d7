"""Time to quality of `make run`: the recipe it had before, against the one it ships, in one run.

    python -m bench.recipe_time [--work /tmp/kdrec-recipe-time] [--only before|after]

Runs the `distill` flow (`kdrec run --config ...`) once per recipe, each in its own emptied work
dir, one after the other on the same machine (nothing else should run): "after" is
configs/default.yaml as shipped; "before" is the same file with the training recipe `make run`
had until this benchmark (`BEFORE`: two teacher heads, patience 20 for the heads and the
distilled student). Records per recipe the command's wall time, the flow's stage timings, and
every report row's validation and test NDCG@10 (seed 0: what `make run` reports).
Results: bench/results/recipe_time.json.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import save

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "configs" / "default.yaml"
# the recipe `make run` trained with before this benchmark, as overrides of the shipped default
BEFORE: dict[str, Any] = {
    "teacher": {"adapt": {"heads": 2, "loop": {"patience": 20}}},
    "distill": {"patience": None},
}
TIMINGS = re.compile(r"stage timings \(s\): (\{.*?\})")


def merged(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def run_recipe(name: str, config: dict, work: Path) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KDREC_", "PREFECT_"))}
    kdrec = Path(sys.executable).with_name("kdrec")
    t0 = time.perf_counter()
    done = subprocess.run(
        [str(kdrec), "run", "--config", str(path), "--work-dir", str(work)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise SystemExit(f"{name}: kdrec run failed ({done.returncode}):\n{output[-3000:]}")
    found = TIMINGS.search(output)
    report = json.loads(next(iter(sorted((work / "runs").glob("*/report.json")))).read_text())
    rows = [
        {
            "model": row["model"],
            "test_ndcg@10": row["metrics"]["ndcg@10"]["mean"],
            "valid_ndcg@10": (row.get("valid_ndcg@10") or {}).get("mean"),
            "train_seconds": row.get("train_seconds"),
        }
        for row in report["rows"]
    ]
    result = {
        "seconds": seconds,
        "stage_seconds": ast.literal_eval(found.group(1)) if found else None,
        "rows": rows,
    }
    print(name, json.dumps(result, indent=1), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/kdrec-recipe-time"))
    parser.add_argument("--only", choices=["before", "after"], default=None)
    args = parser.parse_args()
    shipped = yaml.safe_load(DEFAULT.read_text())
    recipes = {"before": merged(shipped, BEFORE), "after": shipped}
    results = {
        name: run_recipe(name, config, args.work / name)
        for name, config in recipes.items()
        if args.only in (None, name)
    }
    if len(results) == 2:
        before, after = results["before"]["seconds"], results["after"]["seconds"]
        results["after_vs_before_seconds"] = after / before
    save("recipe_time", {"before_overrides": BEFORE, "recipes": results})


if __name__ == "__main__":
    main()
