"""`make bench-all`: every committed result has a recipe, and every study is used by one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench import all as bench_all
from bench.__main__ import studies
from bench.common import RESULTS


def test_every_committed_result_has_a_recipe_and_every_study_one_result():
    written = {name for recipe in bench_all.RECIPES for name in recipe.results}
    committed = {path.stem for path in RESULTS.glob("*.json")}
    assert committed <= written, f"no recipe regenerates {sorted(committed - written)}"
    used = {recipe.study for recipe in bench_all.RECIPES}
    run_by_run_all = {"teacher_bench", "student_bench"}  # run_all writes their results too
    assert set(studies()) - {"all"} - run_by_run_all == used
    for recipe in bench_all.RECIPES:
        assert set(recipe.needs) <= {"published", "scale"}, recipe
        assert recipe.study in studies(), recipe


def test_a_dry_run_prints_each_command_without_running_it(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bench.all", "--dry-run", "--only", "vector_parquet", "prune"],
        capture_output=True,
        text=True,
        check=True,
        env={"KDREC_BENCH_WORK": str(tmp_path), "PATH": ""},
    ).stdout
    assert "2 recipes" in out
    assert "bench.vector_parquet --cache {scale_cache}" in out and "bench.prune" in out
    assert not list(tmp_path.iterdir())  # nothing prepared, nothing run


def test_every_committed_result_records_the_commit_and_the_command_that_made_it():
    import json

    for path in RESULTS.glob("*.json"):
        data = json.loads(path.read_text())
        assert data.get("git_commit") and data.get("argv"), f"{path.name} lacks its provenance"


def test_a_result_records_its_command_relative_to_the_repository():
    from bench.common import argv_in_repo

    root = Path(__file__).resolve().parents[2]
    argv = [str(root / "bench" / "quality.py"), "--config", str(root / "configs" / "x.yaml")]
    assert argv_in_repo(argv) == ["bench/quality.py", "--config", "configs/x.yaml"]
    assert argv_in_repo(["bench.quality", "/elsewhere/w"]) == ["bench.quality", "/elsewhere/w"]


def test_a_study_changing_its_own_outputs_is_not_dirty_code(tmp_path):
    """git_commit marks -dirty for changed code, not for a study's own result files and plots
    (the frontier writes its plot before its JSON, and runs in several invocations)."""
    from bench.common import git_commit

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for name in ("bench/results/a.json", "docs/img/a.png", "distill/x.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    (tmp_path / "bench/results/a.json").write_text("2")
    (tmp_path / "docs/img/a.png").write_text("2")
    assert not git_commit(tmp_path).endswith("-dirty")
    (tmp_path / "distill/x.py").write_text("2")
    assert git_commit(tmp_path).endswith("-dirty")
