"""The teacher stage's artifact: one folder per fingerprint. This module alone knows its files.

<work>/cache/teacher/<fingerprint>/
  plan.json                  TeacherPlan: config, dataset, split cut-off, shards, adapter path;
                             written last by prepare (its presence means "prepared")
  items_texts.parquet        the texts the LM read (item_idx | user_idx, text, text_hash)
  users_texts.parquet
  items.parquet              item_idx, text_hash, embedding (LM), vector (the teacher's scorer)
  users.parquet              user_idx, text_hash, embedding, vector (train input), test_vector
                             (train + validation input: the standard protocol's test input)
  report.json                parameters, adaptation time, zero-shot and adapted metrics
  candidates.npz             pairs: candidates — the FAISS index of item vectors and its
                             layout (distill.index.CandidateIndex)
  soft_labels/               the ShardStore: shards + manifest.json (committed last)

<work>/cache/teacher/adapters/<key>/     AdapterDir: one set of trained heads, shared by every
  adapter.safetensors                    cache built on them; the weights, written last
  training.json                          per head: seed, best epoch, validation, history
  ckpt/<head>/                           the heads' training checkpoints (resume)

Readers (`distill.teacher.soft_labels.SoftLabels(cache)`, students, the monitor, the CLI) take a
`TeacherCache`, never the other way round; the teacher stage
(`distill/teacher/prepare.py` and `labels.py`) writes one through the `write_*` methods.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from distill import index as faiss_index
from distill.evaluation.harness import Scorer, vector_scorer
from distill.teacher.base import TeacherConfig, TeacherError
from distill.teacher.memo import PerProcess
from storage.atomic import atomic_write_bytes, atomic_write_json, read_json, write_parquet
from storage.embeddings import embedding_column, embedding_matrix, vector_layout
from storage.paths import absolute
from storage.shards import ShardStore
from storage.workdir import WorkDir

if TYPE_CHECKING:
    from distill.teacher import adapt
    from storage.split import Split

log = logging.getLogger(__name__)

PLAN = "plan.json"
REPORT = "report.json"
SOFT_LABELS = "soft_labels"  # the ShardStore's folder (storage/shards.py owns what is inside)
CANDIDATE_INDEX = "candidates.npz"
_HEADS: PerProcess[adapt.AdaptedTeacher] = PerProcess(limit=4)  # by adapter path


@dataclass(frozen=True)
class AdapterDir:
    """One set of trained teacher heads (their folder is keyed by what they were trained on)."""

    path: Path

    @classmethod
    def of(cls, work_dir: Path, key: str) -> AdapterDir:
        return cls(WorkDir(work_dir).adapters / key[:20])

    @classmethod
    def all(cls, work_dir: Path) -> list[AdapterDir]:
        """Every trained set of heads under the work dir."""
        return [cls(p.parent) for p in sorted(WorkDir(work_dir).adapters.glob("*/training.json"))]

    @property
    def weights(self) -> Path:
        return self.path / "adapter.safetensors"

    @property
    def training(self) -> Path:
        return self.path / "training.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "ckpt"

    def is_trained(self) -> bool:
        return self.weights.exists()


@dataclass(frozen=True)
class TeacherPlan:
    fingerprint: str
    cache_dir: str
    config: dict
    model_path: str
    dataset_path: str
    split_cutoff: int | None
    n_users: int
    n_items: int
    shards: list[tuple[str, int, int]]  # (key, first user, end user)
    adapter_path: str | None = None  # the adapted head's weights (None: zero-shot or causal)
    work_dir: str | None = None  # the work dir the paths above live in (None: plans before it)

    @property
    def store(self) -> ShardStore:
        return ShardStore(Path(self.cache_dir) / SOFT_LABELS)

    @property
    def teacher_config(self) -> TeacherConfig:
        return TeacherConfig.model_validate(self.config)

    def to_json(self) -> dict:
        """The plan as plan.json records it: every path inside its work dir relative to the
        cache folder (the one anchor of a plan's paths), so a moved or copied work dir reads
        and writes its own files (never the folder it was copied from); paths outside it (the
        packaged LM) absolute."""
        data = asdict(self)
        work = absolute(self.work_dir) if self.work_dir is not None else None
        for name in _WORK_PATHS:
            if not data[name]:
                continue
            path = absolute(data[name])
            inside = work is not None and path.is_relative_to(work)
            data[name] = os.path.relpath(path, absolute(self.cache_dir)) if inside else str(path)
        return data

    @classmethod
    def load(cls, cache_dir: Path) -> TeacherPlan:
        """The plan in `cache_dir`, its relative paths resolved from there. A path that does not
        exist is looked for in the work dir that holds the folder (plans written before paths
        were made absolute stored the dataset relative to the shell's directory) and plan.json
        is rewritten; one that cannot be found is refused (TeacherError), never resumed."""
        cache_dir = absolute(cache_dir)
        data = read_json(cache_dir / PLAN)
        data["shards"] = [tuple(s) for s in data["shards"]]
        for name in _WORK_PATHS:
            if data.get(name) and not Path(data[name]).is_absolute():
                data[name] = os.path.normpath(cache_dir / data[name])
        data["cache_dir"] = str(cache_dir)
        plan = cls(**data)
        repaired = plan._repaired()
        if repaired != plan:
            log.warning("teacher cache %s: plan.json pointed at missing files; repaired", cache_dir)
            atomic_write_json(cache_dir / PLAN, repaired.to_json())
        return repaired

    def _repaired(self) -> TeacherPlan:
        """This plan with each missing path it reads (the dataset, the head's weights) replaced
        by its file in the work dir that holds the cache folder
        (<work>/cache/teacher/<fingerprint>); TeacherError when one is nowhere. `model_path`
        is a record of the LM that wrote the cache, not read again."""
        work = WorkDir(Path(self.cache_dir).parents[2])
        found: dict[str, Any] = {}
        if self.work_dir is not None and not Path(self.work_dir).is_dir():
            found["work_dir"] = str(work.root)
        if not (Path(self.dataset_path) / "dataset.json").exists():
            version = Path(self.dataset_path)
            found["dataset_path"] = _existing(
                self, "dataset_path", work.data / version.parent.name / version.name, "dataset.json"
            )
        if self.adapter_path is not None and not Path(self.adapter_path).exists():
            adapter = AdapterDir(work.adapters / Path(self.adapter_path).parent.name)
            found["adapter_path"] = _existing(self, "adapter_path", adapter.weights)
        return replace(self, **found) if found else self

    def _missing(self, name: str, path: str) -> TeacherError:
        return TeacherError(
            f"teacher cache {self.cache_dir}: plan.json's {name} {path} does not exist and is "
            f"not in this work dir; rebuild it: rm -r {self.cache_dir} && kdrec teacher run "
            "(with the same config)"
        )


def _existing(plan: TeacherPlan, name: str, candidate: Path, inside: str = "") -> str:
    """`candidate` if it exists (with `inside` in it), else the plan's refusal."""
    if (candidate / inside).exists():
        return str(candidate)
    raise plan._missing(name, getattr(plan, name))


_WORK_PATHS = ("work_dir", "model_path", "dataset_path", "adapter_path")


@dataclass(frozen=True)
class TeacherCost:
    """What the teacher costs, for the report: parameters (LM + head) and adaptation time."""

    params: int
    adapt_seconds: float


def cached_scorer(user_vec: dict[str, np.ndarray], item_vec: np.ndarray) -> Scorer:
    """Scores from cached teacher vectors: `vector` for validation, `test_vector` for test."""
    column = {"valid": "vector", "test": "test_vector"}
    return vector_scorer(lambda users, fold: user_vec[column[fold]][users], item_vec)


def vectors_table(
    index_name: str, texts: pl.DataFrame, emb: np.ndarray, vectors: dict[str, np.ndarray]
) -> pa.Table:
    return pa.table(
        {
            index_name: pa.array(texts.get_column(index_name).to_numpy(), pa.int32()),
            "text_hash": pa.array(texts.get_column("text_hash").to_list(), pa.string()),
            "embedding": embedding_column(emb),
            **{name: embedding_column(v) for name, v in vectors.items()},
        }
    )


@dataclass(frozen=True)
class CacheStatus:
    """One line of `kdrec teacher status`."""

    fingerprint: str
    kind: str  # the teacher kind (embedding, causal)
    dataset: str  # the dataset version it was built on
    shards_done: int
    shards: int
    complete: bool  # every shard committed
    bytes: int  # on disk
    test_ndcg: float  # the teacher's own test NDCG@10 (nan when not evaluated)


class TeacherCache:
    """One teacher cache folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).absolute()

    def __repr__(self) -> str:
        return f"TeacherCache({self.folder})"

    @classmethod
    def of(cls, work_dir: Path, fingerprint: str) -> TeacherCache:
        """The cache with that fingerprint in the work dir."""
        return cls(WorkDir(work_dir).teachers / fingerprint)

    @classmethod
    def all(cls, work_dir: Path) -> list[TeacherCache]:
        """Every prepared cache under the work dir, by fingerprint."""
        root = WorkDir(work_dir).teachers
        return [cls(p.parent) for p in sorted(root.glob(f"*/{PLAN}"))]

    # -- state ---------------------------------------------------------------------------------
    def status(self) -> CacheStatus:
        plan, store = self.plan, self.store
        complete = store.exists()
        report = self.report()
        quality = report.get("adapted", report.get("zero_shot", {})).get("test", {})
        return CacheStatus(
            fingerprint=plan.fingerprint,
            kind=plan.config["kind"],
            dataset=Path(plan.dataset_path).name,
            shards_done=len(store.shards()) if complete else len(store.pending()),
            shards=len(plan.shards),
            complete=complete,
            bytes=sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file()),
            test_ndcg=float(quality.get("ndcg@10", float("nan"))),
        )

    @cached_property
    def plan(self) -> TeacherPlan:
        return TeacherPlan.load(self.folder)

    @property
    def fingerprint(self) -> str:
        return self.plan.fingerprint

    @property
    def store(self) -> ShardStore:
        return self.plan.store

    def is_prepared(self) -> bool:
        return (self.folder / PLAN).exists()

    def is_complete(self) -> bool:
        """Prepared and every soft-label shard committed."""
        return ShardStore(self.folder / SOFT_LABELS).exists()

    # -- reading -------------------------------------------------------------------------------
    def vectors(self, which: str, column: str = "vector") -> np.ndarray:
        """(N, D) float32 of "items" or "users": `embedding` (the LM's), `vector` (the
        teacher's; users: from the train input) or, for users, `test_vector` (train +
        validation input)."""
        table = pq.read_table(self.folder / f"{which}.parquet", columns=[column])
        return embedding_matrix(table.column(column))

    def texts(self, which: str) -> list[str]:
        """The texts the LM read, by index: "items" or "users"."""
        return pl.read_parquet(self.folder / f"{which}_texts.parquet").get_column("text").to_list()

    def report(self) -> dict:
        return read_json(self.folder / REPORT)

    def cost(self) -> TeacherCost:
        info = self.report()
        return TeacherCost(
            params=sum(info.get("params", {}).values()),
            adapt_seconds=float(info.get("adapt_seconds") or 0.0),
        )

    def scorer(self) -> Scorer:
        """The teacher as a recommender: its user vectors per fold against its item vectors."""
        users = {c: self.vectors("users", c) for c in ("vector", "test_vector")}
        return cached_scorer(users, self.vectors("items"))

    def candidate_index(self, item_vec: np.ndarray | None = None) -> faiss_index.CandidateIndex:
        """The FAISS index of the teacher's item vectors (written once by prepare; a cache made
        before the index existed gets it on first use)."""
        path = self.folder / CANDIDATE_INDEX
        if path.exists():
            return faiss_index.CandidateIndex.from_bytes(path.read_bytes())
        index = faiss_index.candidate_index(self.vectors("items") if item_vec is None else item_vec)
        atomic_write_bytes(path, index.to_bytes())
        return index

    # -- the adapted head ----------------------------------------------------------------------
    def adapted_head(self) -> adapt.AdaptedTeacher:
        """The adapted head on the cached LM item embeddings (memoised per process)."""
        from distill.teacher import adapt
        from distill.training.loop import load_weights

        plan = self.plan
        adapter_path = plan.adapter_path
        if adapter_path is None:
            raise TeacherError(
                f"teacher cache {self.folder} has no adapted head: set teacher.adapt.mode "
                "(not none) or distill.init: random"
            )

        def load() -> adapt.AdaptedTeacher:
            item_emb = self.vectors("items", "embedding")
            model = adapt.build_teacher_model(
                plan.n_items,
                item_emb.shape[1],
                plan.teacher_config.adapt,
                adapt.FrozenText(item_emb),
            )
            load_weights(model, Path(adapter_path), strict=False)
            return model.eval()

        return _HEADS.get(adapter_path, load)

    def head_state(self, k: int, *, fold_text: bool) -> dict[str, torch.Tensor]:
        """Head k (mod the number of heads) as a plain SASRec state dict, to initialise a
        student of the same shape. With `fold_text` its item table becomes the head's whole item
        vectors (ID embedding + projected LM embedding, computed once), so a student with ID
        embeddings only starts as that head exactly and serves at a plain SASRec's cost."""
        model = self.adapted_head()
        head = model.head_nets()[k % len(model.heads)]
        state = {n: v.detach().clone() for n, v in head.state_dict().items()}
        if fold_text:
            with torch.no_grad():
                state["item_emb.weight"] = head.item_vectors(model.text()).detach().clone()
            state = {n: v for n, v in state.items() if not n.startswith("text.")}
        return state

    def head_user_vectors(self, split: Split, fold: str):
        """(user indices -> (B, D) head user vectors from the fold's input, item vectors
        (I, D)): the adapted teacher as it would serve, on the cached LM item embeddings."""
        from distill.teacher import adapt

        model = self.adapted_head()
        history_len = self.plan.teacher_config.adapt.history_len
        hist = torch.as_tensor(adapt.history_matrix(split, history_len, fold))
        with torch.no_grad():
            item_vecs = model.item_vectors()
        return (lambda users: model.history_vectors(hist[users], item_vecs)), item_vecs.numpy()

    # -- writing (the teacher stage) -----------------------------------------------------------
    def write_texts(self, items: pl.DataFrame, users: pl.DataFrame) -> None:
        write_parquet(self.folder / "items_texts.parquet", items.to_arrow())
        write_parquet(self.folder / "users_texts.parquet", users.to_arrow())

    def write_vectors(self, which: str, table: pa.Table) -> None:
        write_parquet(self.folder / f"{which}.parquet", table, **vector_layout(table))

    def write_report(self, report: dict) -> None:
        atomic_write_json(self.folder / REPORT, report)

    def write_plan(self, plan: TeacherPlan) -> None:
        """Last of prepare's writes: the cache is prepared once this file exists."""
        atomic_write_json(self.folder / PLAN, plan.to_json())
        self.__dict__.pop("plan", None)
