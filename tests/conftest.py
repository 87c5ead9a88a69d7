"""Shared fixtures: tiny hand-made tables, written as files, and an isolated work dir."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from distill.student.run import fit_and_evaluate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_tables() -> dict[str, pl.DataFrame]:
    """4 users, 6 items. u1: 4 interactions, u2: 3, u3: 2 (train only), u4: 5 with a time tie."""
    inter = pl.DataFrame(
        {
            "user_id": ["u1"] * 4 + ["u2"] * 3 + ["u3"] * 2 + ["u4"] * 5,
            "item_id": ["a", "b", "c", "d", "b", "c", "e", "a", "f", "e", "d", "c", "b", "a"],
            "timestamp": [10, 20, 30, 40, 5, 6, 7, 1, 2, 100, 200, 300, 300, 400],
            "rating": [5.0, 4, 3, 2, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5],
        }
    )
    items = pl.DataFrame(
        {
            "item_id": ["a", "b", "c", "d", "e", "f"],
            "title": ["Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta"],
            "year": ["1990", "1991", "1992", "1993", "1994", ""],
            "genres": ["Drama|Comedy", "Drama", "Action", "Comedy", "Horror", "Drama"],
            "description": ["first", "second", "third", "fourth", "fifth", "sixth"],
        }
    )
    users = pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4"],
            "age": ["20", "30", "40", "50"],
            "gender": ["F", "M", "F", "M"],
        }
    )
    return {"interactions": inter, "items": items, "users": users}


def write_tables(
    folder: Path, tables: dict[str, pl.DataFrame], fmt: str = "csv"
) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, frame in tables.items():
        path = folder / f"{key}.{fmt}"
        if fmt == "parquet":
            frame.write_parquet(path)
        else:
            frame.write_csv(path, separator="\t" if fmt == "tsv" else ",")
        paths[key] = path
    return paths


def synthetic_tables(
    n_users: int = 30, n_items: int = 40, per_user: int = 8, seed: int = 0
) -> dict[str, pl.DataFrame]:
    """A small random catalog with distinct titles and chronological interactions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    genres = ["Drama", "Comedy", "Action", "Horror", "Romance"]
    rows = {"user_id": [], "item_id": [], "timestamp": []}
    for u in range(n_users):
        for t, i in enumerate(rng.choice(n_items, size=per_user, replace=False)):
            rows["user_id"].append(f"u{u}")
            rows["item_id"].append(f"i{i}")
            rows["timestamp"].append(1_000 + 10 * t + u)
    items = pl.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"Film {i}" for i in range(n_items)],
            "year": [str(1950 + i) for i in range(n_items)],
            "genres": ["|".join(rng.choice(genres, size=2, replace=False)) for _ in range(n_items)],
        }
    )
    users = pl.DataFrame(
        {"user_id": [f"u{u}" for u in range(n_users)], "age": [str(18 + u) for u in range(n_users)]}
    )
    return {"interactions": pl.DataFrame(rows), "items": items, "users": users}


def candidates_teacher(model_path: Path, adapt):
    """A `pairs: candidates` teacher on tiny data: 5 retrieved + 3 random candidates per user,
    8 users a shard; `adapt` is its AdaptConfig."""
    from distill.teacher.base import TeacherConfig

    return TeacherConfig(
        model_path=model_path,
        users_per_shard=8,
        pairs="candidates",
        candidates_top_k=5,
        candidates_random=3,
        adapt=adapt,
    )


@pytest.fixture(scope="session")
def tiny_encoder_path(tmp_path_factory) -> Path:
    from tests.tiny_models import tiny_encoder

    return tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def tiny_causal_path(tmp_path_factory) -> Path:
    from tests.tiny_models import tiny_causal

    return tiny_causal(tmp_path_factory.mktemp("tiny-causal"))


@pytest.fixture
def synthetic(tmp_path: Path, work: Path):
    """(dataset, split) of `synthetic_tables()` ingested into `work`."""
    from storage.datasets import DatasetConfig, ingest, load_dataset
    from storage.split import make_split

    paths = write_tables(tmp_path / "syn", synthetic_tables())
    result = ingest(DatasetConfig(name="syn", source="files", **paths), work_dir=work)
    dataset = load_dataset(work, "syn", result.version)
    return dataset, make_split(dataset)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path / "work"


@pytest.fixture
def tiny_files(tmp_path: Path) -> dict[str, Path]:
    return write_tables(tmp_path / "src", tiny_tables())


@pytest.fixture
def tiny_config(tiny_files: dict[str, Path]):
    from storage.datasets import DatasetConfig

    return DatasetConfig(name="tiny", source="files", **tiny_files)


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """A throwaway Prefect API (SQLite) shared by every flow test of the session."""
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def published(tmp_path_factory) -> dict:
    """A registry with two tiny trained bundles of `synthetic_tables()` (no teacher):
    `sequential` (CURRENT) and `two_tower` (stored, not current). Copy it before changing it."""
    from distill.serving.bundle import bundle_files
    from distill.student.config import StudentConfig
    from distill.student.fit import DistillConfig
    from distill.training.loop import LoopConfig
    from storage.datasets import DatasetConfig, ingest, load_dataset
    from storage.registry import Provenance, Registry
    from storage.split import make_split
    from storage.workdir import WorkDir

    root = tmp_path_factory.mktemp("published")
    work = root / "work"
    paths = write_tables(root / "syn", synthetic_tables())
    result = ingest(DatasetConfig(name="syn", source="files", **paths), work_dir=work)
    dataset = load_dataset(work, "syn", result.version)
    split = make_split(dataset)
    registry = Registry(WorkDir(work).registry, "kdrec")
    versions = {}
    for kind, current in (("two_tower", False), ("sequential", True)):
        run = fit_and_evaluate(
            split,
            StudentConfig(kind=kind, dim=8, history_len=6),
            DistillConfig(alpha=0.0, init="random"),
            LoopConfig(max_epochs=2, patience=1, batch_size=8, lr=5e-3),
            soft_labels=None,
            text_emb=None,
        )
        files = bundle_files(run, dataset)
        published = registry.publish(
            files,
            Provenance(dataset=dataset.ref),
            validation=run.valid,
            set_current=current,
            tag=kind,
        )
        versions[kind] = published.version
    return {"registry": WorkDir(work).registry, "versions": versions, "dataset": dataset}
