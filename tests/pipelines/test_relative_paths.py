"""Relative paths, as a user types them: resolved once where they enter, stored relative to one
anchor inside the work dir, and a plan that points at missing files repaired or refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.teacher.base import AdaptConfig, TeacherConfig, TeacherError
from distill.teacher.cache import PLAN, TeacherCache
from distill.teacher.stage import run_teacher
from pipelines.config import load_config
from storage.atomic import read_json
from storage.datasets import DatasetConfig, ingest, load_dataset
from storage.registry import Registry
from storage.split import make_split
from storage.workdir import WorkDir
from tests.conftest import synthetic_tables, write_tables

TINY_HEAD = {"dim": 8, "n_heads": 2, "history_len": 6, "heads": 1, "loop": {"max_epochs": 2}}
# what the Makefile exports: `kdrec` run without make has none of it
MAKEFILE_ENV = (
    "KDREC_WORK_DIR",
    "PREFECT_HOME",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "OMP_WAIT_POLICY",
)


@pytest.fixture
def shell(tmp_path: Path, monkeypatch) -> Path:
    """The directory the user's shell is in (not the config's, not the work dir's parent)."""
    here = tmp_path / "shell"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.delenv("KDREC_WORK_DIR", raising=False)
    return here


def _teacher(model: Path) -> TeacherConfig:
    return TeacherConfig(model_path=model, users_per_shard=8, adapt=AdaptConfig(**TINY_HEAD))


def _teacher_run_in(work: Path, src: Path, model: Path):
    paths = write_tables(src, synthetic_tables())
    result = ingest(DatasetConfig(name="syn", source="files", **paths), work_dir=work)
    dataset = load_dataset(work, "syn", result.version)
    return run_teacher(_teacher(model), dataset, make_split(dataset), work_dir=work, progress=False)


def test_teacher_stage_with_a_relative_work_dir(shell, tiny_encoder_path):
    """The label stage reads the dataset through the plan: it must find it from the cache."""
    run = _teacher_run_in(Path("work"), Path("src"), tiny_encoder_path)
    assert run.manifest["total_rows"] > 0
    cache = shell / "work" / "cache" / "teacher" / run.plan.fingerprint
    stored = read_json(cache / PLAN)
    # every path inside the work dir relative to the cache folder, the plan's one anchor
    assert stored["dataset_path"] == f"../../../data/syn/{run.plan.dataset_path.rsplit('/')[-1]}"
    assert stored["work_dir"] == "../../.."
    assert stored["adapter_path"].startswith("../adapters/")
    os.chdir(shell.parent)  # read back from another directory
    plan = TeacherCache(cache).plan
    assert Path(plan.dataset_path, "dataset.json").exists()
    assert Path(plan.adapter_path or "").exists()


def test_a_plan_pointing_at_missing_files_is_repaired_or_refused(shell, tiny_encoder_path):
    run = _teacher_run_in(Path("work"), Path("src"), tiny_encoder_path)
    cache = TeacherCache(shell / "work" / "cache" / "teacher" / run.plan.fingerprint)
    version = Path(run.plan.dataset_path).name
    written = read_json(cache.folder / PLAN)
    # what the code before this fix wrote from a relative work dir: the dataset relative to
    # the shell's directory, resolved from the cache folder on read
    broken = {**written, "dataset_path": f"work/data/syn/{version}"}
    (cache.folder / PLAN).write_text(json.dumps(broken))
    plan = TeacherCache(cache.folder).plan
    assert Path(plan.dataset_path) == shell / "work" / "data" / "syn" / version
    assert read_json(cache.folder / PLAN)["dataset_path"] == f"../../../data/syn/{version}"
    # resumed into the label stage: a no-op, not a crash
    again = _teacher_run_in(Path("work"), Path("src"), tiny_encoder_path)
    assert again.stats["reused"] and again.plan.fingerprint == run.plan.fingerprint

    gone = {**written, "dataset_path": "../../../data/syn/0000deadbeef"}
    (cache.folder / PLAN).write_text(json.dumps(gone))
    with pytest.raises(TeacherError, match=rf"(?s)teacher cache {cache.folder}.*rm -r"):
        TeacherCache(cache.folder).plan  # noqa: B018 (the property is the check)


def test_config_paths_are_taken_from_the_config_files_folder(shell, monkeypatch):
    conf = shell.parent / "conf"
    conf.mkdir()
    config = conf / "run.yaml"
    data = {"interactions": "../data/i.csv", "items": "items.csv", "source": "files", "name": "x"}
    config.write_text(yaml.safe_dump({"work_dir": "w", "dataset": data}))
    cfg = load_config(Path("../conf/run.yaml"))
    assert cfg.work_dir == conf / "w"
    assert cfg.dataset.interactions == shell.parent / "data" / "i.csv"
    assert cfg.dataset.items == conf / "items.csv"
    # the CLI's --work-dir and $KDREC_WORK_DIR are the shell's: from the current directory
    assert load_config(Path("../conf/run.yaml"), work_dir=Path("mine")).work_dir == shell / "mine"
    monkeypatch.setenv("KDREC_WORK_DIR", "env-work")
    assert load_config(None).work_dir == shell / "env-work"
    monkeypatch.delenv("KDREC_WORK_DIR")
    assert load_config(None).work_dir == shell / "work"


@pytest.mark.parametrize(
    "command",
    [
        ["teacher", "run", "--local"],  # the stage that crashed, without Prefect: fast
        pytest.param(["run"], marks=pytest.mark.slow),  # the whole pipeline: about 50 s
    ],
    ids=" ".join,
)
def test_kdrec_without_the_makefiles_environment(tmp_path, tiny_encoder_path, command):
    """`kdrec` started directly, from another folder, with a config whose work dir and data are
    relative to it (no $KDREC_WORK_DIR, none of the Makefile's settings)."""
    paths = write_tables(tmp_path / "src", synthetic_tables())
    conf = tmp_path / "conf"
    conf.mkdir()
    config = {
        "work_dir": "work",
        "dataset": {
            "name": "syn",
            "source": "files",
            **{k: os.path.relpath(v, conf) for k, v in paths.items()},
        },
        "teacher": {"model_path": str(tiny_encoder_path), "users_per_shard": 8, "adapt": TINY_HEAD},
        "student": {"dim": 8, "history_len": 6},
        "sasrec": {"dim": 8, "history_len": 6},
        "train": {"max_epochs": 2, "patience": 1, "batch_size": 8},
    }
    (conf / "run.yaml").write_text(yaml.safe_dump(config))
    shell = tmp_path / "shell"
    shell.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in MAKEFILE_ENV}
    kdrec = Path(sys.executable).parent / "kdrec"
    done = subprocess.run(
        [str(kdrec), *command, "--config", "../conf/run.yaml"],
        cwd=shell,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    work = WorkDir(conf / "work")
    (cache,) = TeacherCache.all(work.root)
    assert cache.is_complete()
    if command == ["run"]:
        assert Registry(work.registry, "kdrec").bundle().version
    assert (work.root / ".prefect").is_dir()  # Prefect's state in the run's work dir
    assert list(shell.iterdir()) == []  # nothing written where the shell happened to be
