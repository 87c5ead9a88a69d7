"""Serving: load a published bundle and recommend with one FAISS search per user.

Known users are served from the user vectors stored in the bundle. A history of item ids (an
anonymous or session user, or a known user's clicks since the last retrain) goes through the
student's own user tower, rebuilt from the bundle's weights: no retraining, the same vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import torch

from distill.nn.layers import left_padded
from distill.serving.bundle import INDEX_FILES, StudentBundle
from distill.student.build import StudentNet, build_student, int8_tower
from distill.student.config import StudentConfig
from storage.embeddings import embedding_matrix
from storage.errors import KdrecError
from storage.pseudonyms import Pseudonymiser
from storage.registry import Bundle, Registry
from storage.workdir import WorkDir

TOWERS = ("float32", "int8")  # the user tower's precision for posted histories


class UnknownUser(KdrecError, KeyError):
    def __str__(self) -> str:
        return f"unknown user id {self.args[0]!r} (use --fallback popular for unknown users)"


class BadRequest(KdrecError, ValueError):
    """A request that cannot be served as asked (k out of range, an empty history)."""


class UnknownItems(KdrecError, KeyError):
    """Item ids that are not in the bundle's catalog."""

    def __init__(self, ids: Sequence[str], n_items: int) -> None:
        super().__init__(list(ids))
        self.ids = list(ids)
        self.n_items = n_items

    def __str__(self) -> str:
        shown = ", ".join(repr(i) for i in self.ids[:5])
        return (
            f"{len(self.ids)} unknown item id{'s' if len(self.ids) != 1 else ''} "
            f"(not among the model's {self.n_items} items): {shown}"
        )


@dataclass
class Recommendation:
    item_id: str
    title: str
    score: float


@dataclass
class Contribution:
    item_id: str
    title: str
    delta: float  # score(item | history) - score(item | history without this item)


@dataclass
class Explanation:
    item_id: str
    score: float
    contributions: list[Contribution]  # largest first


class HistoryEncoder:
    """User vectors from histories of item indices, with the bundle's student (eval mode)."""

    def __init__(
        self,
        model: StudentNet,
        item_vecs: np.ndarray,
        history_len: int,
        text_dim: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.item_vecs = torch.as_tensor(item_vecs)  # (I, D), as published
        self.history_len = history_len
        self.n_items = len(item_vecs)
        self.text_dim = text_dim  # width of the LM embeddings it projects; None: no projection

    @classmethod
    def from_bundle(cls, bundle: StudentBundle, item_vecs: np.ndarray) -> HistoryEncoder:
        """The bundle's student, over its published item vectors."""
        state = bundle.state()
        config = bundle.config
        student = StudentConfig(**config["student"])
        text = next((v for k, v in state.items() if k.endswith("text.weight")), None)
        text_dim = None if text is None else int(text.shape[1])
        # the projection's input width; its frozen LM embeddings are already in item_vecs
        text_emb = None if text_dim is None else np.zeros((len(item_vecs), text_dim), np.float32)
        model = build_student(student, config["n_users"], len(item_vecs), text_emb)
        model.load_state_dict(state)
        return cls(model, item_vecs, student.history_len, text_dim)

    def int8(self) -> HistoryEncoder:
        """The same encoder with its linear layers in int8 (`int8_tower`)."""
        return HistoryEncoder(
            int8_tower(self.model), self.item_vecs.numpy(), self.history_len, self.text_dim
        )

    def window(self, history: Sequence[int]) -> list[int]:
        """The part of a history (oldest first) that the user vector reads."""
        return list(history)[-self.history_len :]

    def __call__(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, D) float32 user vectors for histories of item indices, oldest first."""
        seqs = [np.asarray(self.window(h), dtype=np.int64) for h in histories]
        hist = torch.as_tensor(left_padded(seqs, self.history_len, self.n_items))
        with torch.no_grad():
            return self.model.history_vectors(hist, self.item_vecs).numpy()


class Recommender:
    def __init__(
        self,
        bundle_path: Path,
        users: pl.DataFrame,
        items: pl.DataFrame,
        index,
        user_vecs: np.ndarray,
        encoder: HistoryEncoder,
        pseudonymise: Pseudonymiser | None = None,
    ) -> None:
        self.path = bundle_path
        self.items = items
        self.index = index
        self.user_vecs = user_vecs
        self.encoder = encoder
        self.pseudonymise = pseudonymise or Pseudonymiser(None)  # raw id -> stored id
        self.user_row = {u: i for i, u in enumerate(users.get_column("user_id").to_list())}
        self.seen = users.get_column("seen").to_list()
        self.item_ids = items.get_column("item_id").to_list()
        self.item_row = {item: i for i, item in enumerate(self.item_ids)}
        self.titles = items.get_column("title").to_list()
        self.popular_order = np.argsort(-items.get_column("popularity").to_numpy(), kind="stable")

    @classmethod
    def load(
        cls,
        registry: Path,
        model: str = "kdrec",
        version: str = "current",
        *,
        verify: bool = True,
        index: str = "exact",
        tower: str = "float32",
        work_dir: Path | None = None,
    ) -> Recommender:
        """`index`: "exact" (float32) or "sq8" (int8, when the bundle was published with it);
        `tower`: "float32" or "int8", the user tower that encodes posted histories (known users
        are served from the bundle's stored vectors either way); `work_dir`: the work dir whose
        key file pseudonymised the bundle's user ids ($KDREC_ID_KEY wins; None: that only)."""
        published = Registry(registry, model).bundle(version)
        if verify:
            published.verify()
        if index not in INDEX_FILES:
            raise BadRequest(f"index must be one of {sorted(INDEX_FILES)}, got {index!r}")
        if tower not in TOWERS:
            raise BadRequest(f"tower must be one of {list(TOWERS)}, got {tower!r}")
        bundle = StudentBundle(published.path)
        search_index = bundle.index(index)
        users, items = bundle.users(), bundle.items()
        vecs = embedding_matrix(users.to_arrow().column("vector"))
        encoder = HistoryEncoder.from_bundle(
            bundle, embedding_matrix(items.to_arrow().column("vector"))
        )
        if tower == "int8":
            encoder = encoder.int8()
        ids = bundle.config.get("user_ids") or {}
        pseudo = Pseudonymiser.for_bundle(ids.get("scheme"), ids.get("key_id"), work_dir)
        users, items = users.drop("vector"), items.drop("vector")
        return cls(bundle.path, users, items, search_index, vecs, encoder, pseudo)

    @classmethod
    def in_work_dir(
        cls, work_dir: Path, model: str = "kdrec", version: str = "current"
    ) -> Recommender:
        """A work dir's published model, with the user-id key from the same work dir."""
        return cls.load(WorkDir(work_dir).registry, model, version, work_dir=work_dir)

    @property
    def version(self) -> str:
        return self.path.name

    @cached_property
    def manifest(self) -> dict:
        return Bundle(self.path).manifest

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def _check_k(self, k: int) -> int:
        if k <= 0:
            raise BadRequest(f"k must be positive, got {k}")
        return min(k, self.n_items)

    def recommend(
        self, user_id: str, k: int = 10, *, exclude_seen: bool = True, fallback: str | None = None
    ) -> list[Recommendation]:
        return self.recommend_batch([user_id], k, exclude_seen=exclude_seen, fallback=fallback)[0]

    def recommend_batch(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        fallback: str | None = None,
    ) -> list[list[Recommendation]]:
        k = self._check_k(k)
        rows: list[tuple[int, int]] = []
        out: list[list[Recommendation]] = [[] for _ in user_ids]
        for pos, uid in enumerate(user_ids):
            row = self.user_row.get(self.pseudonymise(uid))
            if row is None:
                if fallback != "popular":
                    raise UnknownUser(uid)
                out[pos] = self.popular(k)
            else:
                rows.append((pos, row))
        if rows:
            vecs = self.user_vecs[[r for _, r in rows]]
            seen = [self.seen[r] if exclude_seen else [] for _, r in rows]
            for (pos, _), recs in zip(rows, self._search(vecs, seen, k), strict=True):
                out[pos] = recs
        return out

    def item_rows(self, item_ids: Sequence[str]) -> list[int]:
        """Catalog rows of item ids; UnknownItems names every id that is not in the catalog."""
        unknown = [i for i in item_ids if str(i) not in self.item_row]
        if unknown:
            raise UnknownItems(unknown, self.n_items)
        return [self.item_row[str(i)] for i in item_ids]

    def recommend_history(
        self, history: Sequence[str], k: int = 10, *, exclude_seen: bool = True
    ) -> list[Recommendation]:
        """Top-k for a history of item ids (oldest first) through the student's user tower:
        anonymous and session users, or a known user's clicks since the last retrain."""
        if not history:
            raise BadRequest("history is empty: give at least one item id (oldest first)")
        k = self._check_k(k)
        rows = self.item_rows(history)
        return self._search(self.encoder([rows]), [rows if exclude_seen else []], k)[0]

    def similar(self, item_id: str, k: int = 10) -> list[Recommendation]:
        """The k items whose vectors score highest against this item's vector (itself excluded)."""
        k = self._check_k(k)
        (row,) = self.item_rows([item_id])
        return self._search(self.encoder.item_vecs[row : row + 1].numpy(), [[row]], k)[0]

    def explain(self, user_id: str, item_id: str, top: int = 5) -> Explanation:
        """Which items of the user's history raised the item's score most: each history item's
        contribution is the score drop when it is left out of the history (same vectors)."""
        row = self.user_row.get(self.pseudonymise(user_id))
        if row is None:
            raise UnknownUser(user_id)
        (item,) = self.item_rows([item_id])
        window = self.encoder.window(self.seen[row])
        if not window:
            return Explanation(str(item_id), float("nan"), [])
        without = [window[:j] + window[j + 1 :] for j in range(len(window))]
        vecs = self.encoder([window, *without])  # (1 + L, D)
        scores = vecs @ self.encoder.item_vecs[item].numpy()  # (1 + L,)
        deltas = scores[0] - scores[1:]
        order = np.argsort(-deltas, kind="stable")[: max(top, 0)]
        return Explanation(
            str(item_id),
            float(scores[0]),
            [
                Contribution(self.item_ids[window[j]], self.titles[window[j]], float(deltas[j]))
                for j in order
            ],
        )

    def popular(self, k: int) -> list[Recommendation]:
        k = self._check_k(k)
        return [
            Recommendation(self.item_ids[i], self.titles[i], float("nan"))
            for i in self.popular_order[:k]
        ]

    def _search(
        self, vecs: np.ndarray, exclude: Sequence[Sequence[int]], k: int
    ) -> list[list[Recommendation]]:
        """One FAISS search for (B, D) vectors; each row drops its `exclude` items."""
        depth = min(k + max((len(e) for e in exclude), default=0), self.n_items)
        scores, idx = self.index.search(np.ascontiguousarray(vecs, dtype=np.float32), depth)
        out = []
        for drop, s_row, i_row in zip(exclude, scores, idx, strict=True):
            banned = set(drop)
            picks = [
                (i, s) for i, s in zip(i_row, s_row, strict=True) if i >= 0 and i not in banned
            ][:k]
            out.append(
                [Recommendation(self.item_ids[i], self.titles[i], float(s)) for i, s in picks]
            )
        return out
