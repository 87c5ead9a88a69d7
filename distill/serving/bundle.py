"""The published bundle's files: the one module that writes them and reads them back.

    student.safetensors  the student's weights
    content.safetensors  optional: its content tower (LM item embedding -> item vector), which
                         places items it has never seen (`kdrec models extend`)
    config.json          its StudentConfig and DistillConfig, seed, catalog size, the serving
                         index's kind and recall, the user-id scheme, the int8 index's stats,
                         the content tower's shape and scale
    items.parquet        item_idx, item_id, title, popularity, vector (the served item vectors:
                         items with no train interaction placed from their text)
    users.parquet        user_idx, user_id (raw, or HMAC with pseudonyms), seen, vector
    items.faiss          the serving index: exact, HNSW above 100K items (distill/index.py)
    items.sq8.faiss      optional: its int8 copy, for `kdrec serve --index sq8`
    report.json          the run's report, byte for byte

`bundle_files` builds them from a trained student; `StudentBundle` reads a published folder.
The registry (storage/registry.py) adds manifest.json (+ manifest.sig), verifies and publishes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np
import polars as pl
import pyarrow as pa
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save
from torch import Tensor

from distill import index as faiss_index
from distill.evaluation.report.model import Report
from distill.nn.layers import left_padded
from distill.student.build import StudentNet
from distill.student.config import StudentConfig
from distill.student.content import ContentTower, Placement
from distill.student.fit import DistillConfig
from storage.atomic import dumps_json, parquet_bytes
from storage.datasets import Dataset
from storage.embeddings import embedding_column, embedding_matrix, vector_layout
from storage.errors import NotFound
from storage.pseudonyms import SCHEME, key_id, pseudonym


class TrainedStudent(Protocol):
    """What a bundle is built from (a `distill.student.run.StudentRun` is one)."""

    model: StudentNet
    config: StudentConfig
    kd: DistillConfig
    seed: int
    placement: Placement
    content: ContentTower | None


STUDENT = "student.safetensors"
CONTENT = "content.safetensors"
CONFIG = "config.json"
ITEMS = "items.parquet"
USERS = "users.parquet"
REPORT = "report.json"
INDEX_FILES = {"exact": "items.faiss", "sq8": "items.sq8.faiss"}


def serving_vectors(
    model: StudentNet, dataset: Dataset, history_len: int, item_vecs: Tensor
) -> tuple[np.ndarray, list[np.ndarray]]:
    """User vectors from each user's whole known history (serving time) read with the served
    item vectors, and the seen items."""
    seqs = dataset.sequences()
    hist = torch.as_tensor(left_padded(seqs, history_len, dataset.n_items))
    model.eval()
    with torch.no_grad():
        users = torch.arange(dataset.n_users)
        vecs = torch.cat(
            [
                model.user_vectors(users[i : i + 1024], hist[i : i + 1024], item_vecs)
                for i in range(0, dataset.n_users, 1024)
            ]
        )
    return vecs.numpy(), seqs


def bundle_files(
    run: TrainedStudent,
    dataset: Dataset,
    report: Report | None = None,
    *,
    quantized: bool = True,
    user_key: bytes | None = None,
) -> dict[str, bytes]:
    """The files of a publishable bundle; `quantized` adds the int8 index, `user_key` stores
    HMAC(user_key, user id) instead of raw user ids."""
    model = run.model
    served = run.placement.served().detach()
    item_vecs = served.numpy()
    user_vecs, seen = serving_vectors(model, dataset, run.config.history_len, served)
    items = dataset.items()
    popularity = np.bincount(
        dataset.interactions().get_column("item_idx").to_numpy(), minlength=dataset.n_items
    )
    users = dataset.users()
    users_table = pa.table(
        {
            "user_idx": pa.array(np.arange(dataset.n_users, dtype=np.int32)),
            "user_id": pa.array(
                [pseudonym(user_key, u) if user_key else u for u in users["user_id"].to_list()],
                pa.string(),
            ),
            "seen": pa.ListArray.from_arrays(
                np.concatenate([[0], np.cumsum([len(s) for s in seen])]).astype(np.int32),
                pa.array(np.concatenate(seen).astype(np.int32), pa.int32()),
            ),
            "vector": embedding_column(user_vecs),
        }
    )
    indexes, index_config = index_files(item_vecs, user_vecs, quantized=quantized)
    config = {
        "student": run.config.model_dump(),
        "distill": run.kd.model_dump(),
        "seed": run.seed,
        "n_users": dataset.n_users,
        "n_items": dataset.n_items,
        **index_config,
        "user_ids": {"scheme": SCHEME, "key_id": key_id(user_key)} if user_key else None,
        "content": None
        if run.content is None
        else {**run.content.shape(), "scale": run.placement.scale},
    }
    content = {} if run.content is None else {CONTENT: state_bytes(run.content.state_dict())}
    return {
        **indexes,
        **content,
        STUDENT: state_bytes(model.state_dict()),
        CONFIG: config_bytes(config),
        ITEMS: items_bytes(
            items.get_column("item_id").to_list(),
            items.get_column("title").to_list(),
            popularity,
            item_vecs,
        ),
        USERS: parquet_bytes(users_table, **vector_layout(users_table)),
        # the run folder's bytes exactly; {} for a bundle built outside a run (tests, benches)
        REPORT: dumps_json(report.as_json() if report is not None else {}).encode(),
    }


def index_files(
    item_vecs: np.ndarray, user_vecs: np.ndarray, *, quantized: bool
) -> tuple[dict[str, bytes], dict]:
    """The serving index (and its int8 copy when `quantized`) and what config.json records of
    them: the kind and recall@10 against exact search on the user vectors, the int8 sizes."""
    index, recall = faiss_index.build_index(item_vecs, queries=user_vecs)
    exact = faiss_index.to_bytes(index)
    files = {INDEX_FILES["exact"]: exact}
    config: dict = {"index": type(index).__name__, "index_recall@10": recall}
    if quantized:
        files[INDEX_FILES["sq8"]], config["sq8"] = faiss_index.sq8_with_stats(
            item_vecs, user_vecs, len(exact)
        )
    return files, config


def items_bytes(
    item_ids: list[str], titles: list[str], popularity: np.ndarray, item_vecs: np.ndarray
) -> bytes:
    table = pa.table(
        {
            "item_idx": pa.array(np.arange(len(item_ids), dtype=np.int32)),
            "item_id": pa.array(item_ids, pa.string()),
            "title": pa.array(titles, pa.string()),
            "popularity": pa.array(np.asarray(popularity).astype(np.int64)),
            "vector": embedding_column(item_vecs),
        }
    )
    return parquet_bytes(table, **vector_layout(table))


def state_bytes(state: dict[str, Tensor]) -> bytes:
    return save({k: v.detach().contiguous().cpu() for k, v in state.items()})


def config_bytes(config: dict) -> bytes:
    return json.dumps(config, indent=2, sort_keys=True).encode()


@dataclass(frozen=True)
class StudentBundle:
    """A bundle folder's contents, read back (verify it first: storage.registry.Bundle)."""

    path: Path

    @cached_property
    def config(self) -> dict:
        return json.loads((self.path / CONFIG).read_text())

    def state(self) -> dict[str, Tensor]:
        return load_tensors((self.path / STUDENT).read_bytes())

    def items(self, columns: list[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(self.path / ITEMS, columns=columns)

    def users(self, columns: list[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(self.path / USERS, columns=columns)

    def item_vectors(self) -> np.ndarray:
        return embedding_matrix(self.items(["vector"]).to_arrow().column("vector"))

    def user_vectors(self) -> np.ndarray:
        return embedding_matrix(self.users(["vector"]).to_arrow().column("vector"))

    def content_tower(self) -> tuple[ContentTower, float] | None:
        """The student's content tower and the scale its vectors are served at, or None."""
        shape = self.config.get("content")
        if not shape:
            return None
        tower = ContentTower(shape["text_dim"], shape["dim"], shape["hidden"])
        tower.load_state_dict(load_tensors((self.path / CONTENT).read_bytes()))
        return tower.eval(), float(shape["scale"])

    def has_index(self, kind: str) -> bool:
        return (self.path / INDEX_FILES[kind]).exists()

    def index(self, kind: str = "exact") -> faiss.Index:
        if not self.has_index(kind):
            raise NotFound(
                f"bundle {self.path} has no {INDEX_FILES[kind]} ({kind} index); "
                "publish with quantized_index: true or serve with --index exact"
            )
        return faiss_index.from_bytes((self.path / INDEX_FILES[kind]).read_bytes())

    def raw(self, name: str) -> bytes:
        """A file's bytes as published (what a derived bundle carries over unchanged)."""
        return (self.path / name).read_bytes()
