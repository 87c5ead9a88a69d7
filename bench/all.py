"""`make bench-all`: regenerate every committed result in bench/results/, dependencies first.

    python -m bench.all [--list] [--only RESULT ...] [--missing-provenance] [--dry-run]

Each committed result file has one recipe here: the study that writes it, its arguments, and what
it needs before it can run. Needs are prepared once per invocation, in the bench work dir
($KDREC_BENCH_WORK, else the work dir):
- `published`: a published default bundle (`kdrec run`, skipped when the registry has one);
- `scale`: the scale study's scratch folder kept under <work>/bench-scale, whose x100 size holds
  the large teacher cache (`{scale_cache}` in the arguments).
Each study records the git commit and command line in what it writes (bench/common.py `save`).
`--missing-provenance` runs only the recipes whose results predate that record (they carry it
after the fact: the commit that committed them and their recorded command, with a note). The
whole list is a day or more on 2 CPU cores (`hours` is each recipe's rough cost there); run it a
few results at a time with `--only`, on an otherwise idle machine, since many studies time things.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import RESULTS, work_dir

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Recipe:
    results: tuple[str, ...]  # the bench/results/<name>.json files the study writes
    study: str  # the bench module
    args: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()  # "published", "scale" (see the module docstring)
    hours: float = 0.5  # rough cost on 2 idle CPU cores

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", f"bench.{self.study}", *self.args]


RECIPES: tuple[Recipe, ...] = (
    # the stage benchmarks and the whole pipeline's timings (`make bench`)
    Recipe(("latest", "teacher", "student"), "run_all", hours=1.0),
    Recipe(("scale",), "scale", ("--root", "{scale_root}", "--resume"), hours=8.0),
    Recipe(("scale_two_tower",), "scale_stages", hours=0.5),
    Recipe(("roofline",), "roofline", hours=0.3),
    Recipe(("vector_parquet",), "vector_parquet", ("--cache", "{scale_cache}"), ("scale",), 0.2),
    Recipe(("candidate_index",), "candidate_index", ("--cache", "{scale_cache}"), ("scale",), 0.3),
    Recipe(("contention",), "contention", hours=0.3),
    Recipe(("dask_cluster",), "dask_cluster", hours=0.5),
    Recipe(("fresh_clone",), "fresh_clone", hours=0.4),
    Recipe(("recipe_time",), "recipe_time", hours=0.4),
    # serving, on the published default bundle
    Recipe(("serve_index",), "serve_index", needs=("published",), hours=0.1),
    Recipe(("serve",), "serve_load", needs=("published",), hours=0.2),
    # model studies (many trainings each)
    Recipe(("sasrec_grid",), "sasrec_grid", hours=1.5),
    Recipe(("schedule",), "schedule", hours=1.2),
    Recipe(("kd_sweep",), "kd_sweep", hours=4.0),
    Recipe(("prune",), "prune", hours=0.5),
    Recipe(("teacher_lm",), "teacher_lm", hours=1.0),
    Recipe(("teacher_lm_dim128",), "teacher_lm", ("--dim", "128", "--only", "ids,minilm"), hours=1),
    Recipe(("teacher_ensemble",), "teacher_ensemble", ("--heads", "4"), hours=0.5),
    Recipe(("cold_items",), "cold_items", hours=0.5),
    Recipe(("warm_start",), "warm_start", hours=0.3),
    Recipe(("new_items",), "new_items", hours=2.0),
    Recipe(("quality",), "quality", ("--config", "configs/default.yaml"), hours=1.0),
    Recipe(
        ("quality_64x1",),
        "quality",
        ("--config", "configs/student_64x1.yaml", "--name", "quality_64x1"),
        hours=1.0,
    ),
    Recipe(
        ("quality_new_items",),
        "quality",
        ("--config", "configs/new_items.yaml", "--name", "quality_new_items"),
        hours=2.5,
    ),
    Recipe(("nightly_replay",), "nightly_replay", hours=0.7),
    Recipe(("frontier",), "frontier", hours=6.0),
    # replays the trainings the recipes above left in the bench work dir (no training)
    Recipe(("patience",), "patience", needs=("published",), hours=0.05),
)


class _Unfilled(dict):
    """Placeholders not prepared yet (a dry run) stay as they are."""

    def __missing__(self, key: str) -> str:
        return f"{{{key}}}"


def has_provenance(result: str) -> bool:
    path = RESULTS / f"{result}.json"
    if not path.exists():
        return False
    data = json.loads(path.read_text())
    # results older than the record carry it after the fact (a "provenance" note): the commit
    # that committed them and their recorded command; a re-run makes it first-hand
    first_hand = "provenance" not in data
    return isinstance(data, dict) and "git_commit" in data and "argv" in data and first_hand


def prepare(need: str, work: Path) -> dict[str, str]:
    """Make `need` exist in the bench work dir; the argument placeholders it fills."""
    if need == "published":
        from storage.registry import Registry
        from storage.workdir import WorkDir

        if Registry(WorkDir(work).registry, "kdrec").current_version() is None:
            kdrec = Path(sys.executable).parent / "kdrec"
            subprocess.run([str(kdrec), "run", "--work-dir", str(work)], cwd=ROOT, check=True)
        return {}
    if need == "scale":
        from distill.teacher.cache import TeacherCache

        root = work / "bench-scale"
        largest = root / "x100" / "work"  # bench/scale.py's folder for its x100 size
        caches = TeacherCache.all(largest)
        if not caches:
            scale = Recipe((), "scale", ("--root", str(root), "--resume"))
            subprocess.run(scale.command, cwd=ROOT, check=True)
            caches = TeacherCache.all(largest)
        if not caches:
            raise SystemExit(f"the scale study left no teacher cache under {root}/x100")
        return {"scale_cache": str(caches[-1].folder)}
    raise ValueError(f"unknown need {need!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the recipes and stop")
    parser.add_argument("--only", nargs="+", default=None, help="result names to regenerate")
    parser.add_argument(
        "--missing-provenance",
        action="store_true",
        help="only results without the commit and command line that produced them",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args()
    chosen = [
        r
        for r in RECIPES
        if (args.only is None or set(r.results) & set(args.only))
        and (not args.missing_provenance or not all(map(has_provenance, r.results)))
    ]
    if args.only:
        unknown = set(args.only) - {name for r in RECIPES for name in r.results}
        if unknown:
            raise SystemExit(f"no recipe writes {sorted(unknown)}; `python -m bench.all --list`")
    work = work_dir().absolute()
    fills = {"scale_root": str(work / "bench-scale")}
    total = sum(r.hours for r in chosen)
    print(f"{len(chosen)} recipes, about {total:.1f} h on 2 idle cores; work dir {work}")
    for i, recipe in enumerate(chosen, 1):
        provenance = "yes" if all(map(has_provenance, recipe.results)) else "no"
        line = f"[{i}/{len(chosen)}] {', '.join(recipe.results)} (~{recipe.hours:g} h)"
        if args.list:
            print(f"{line}: python -m bench.{recipe.study} {' '.join(recipe.args)}", end="")
            print(f"  needs {list(recipe.needs)}, first-hand provenance: {provenance}")
            continue
        if not args.dry_run:
            for need in recipe.needs:
                fills.update(prepare(need, work))
        command = [part.format_map(_Unfilled(fills)) for part in recipe.command]
        print(line, " ".join(command[1:]), flush=True)
        if args.dry_run:
            continue
        t0 = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True)
        print(f"{line} done in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
