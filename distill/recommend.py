"""Serving: load a published bundle and recommend with one FAISS search per user."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from distill.index import from_bytes
from storage.embeddings import embedding_matrix
from storage.registry import Registry


class UnknownUser(KeyError):
    def __str__(self) -> str:
        return f"unknown user id {self.args[0]!r} (use --fallback popular for unknown users)"


@dataclass
class Recommendation:
    item_id: str
    title: str
    score: float


class Recommender:
    def __init__(
        self,
        bundle_path: Path,
        users: pl.DataFrame,
        items: pl.DataFrame,
        index,
        user_vecs: np.ndarray,
    ) -> None:
        self.path = bundle_path
        self.items = items
        self.index = index
        self.user_vecs = user_vecs
        self.user_row = {u: i for i, u in enumerate(users.get_column("user_id").to_list())}
        self.seen = users.get_column("seen").to_list()
        self.item_ids = items.get_column("item_id").to_list()
        self.titles = items.get_column("title").to_list()
        self.popular_order = np.argsort(-items.get_column("popularity").to_numpy(), kind="stable")

    @classmethod
    def load(
        cls, registry: Path, model: str = "kdrec", version: str = "current", *, verify: bool = True
    ) -> Recommender:
        bundle = Registry(registry, model).bundle(version)
        if verify:
            bundle.verify()
        users = pl.read_parquet(bundle.path / "users.parquet")
        items = pl.read_parquet(bundle.path / "items.parquet")
        index = from_bytes((bundle.path / "items.faiss").read_bytes())
        vecs = embedding_matrix(users.to_arrow().column("vector"))
        return cls(bundle.path, users.drop("vector"), items, index, vecs)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def _check_k(self, k: int) -> int:
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
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
        rows, out = [], [None] * len(user_ids)
        for pos, uid in enumerate(user_ids):
            row = self.user_row.get(str(uid))
            if row is None:
                if fallback != "popular":
                    raise UnknownUser(uid)
                out[pos] = self.popular(k)
            else:
                rows.append((pos, row))
        if rows:
            extra = max((len(self.seen[r]) for _, r in rows), default=0) if exclude_seen else 0
            depth = min(k + extra, self.n_items)
            scores, idx = self.index.search(self.user_vecs[[r for _, r in rows]], depth)
            for (pos, row), s_row, i_row in zip(rows, scores, idx, strict=True):
                seen = set(self.seen[row]) if exclude_seen else set()
                picks = [
                    (i, s) for i, s in zip(i_row, s_row, strict=True) if i >= 0 and i not in seen
                ][:k]
                out[pos] = [
                    Recommendation(self.item_ids[i], self.titles[i], float(s)) for i, s in picks
                ]
        return out

    def popular(self, k: int) -> list[Recommendation]:
        k = self._check_k(k)
        return [
            Recommendation(self.item_ids[i], self.titles[i], float("nan"))
            for i in self.popular_order[:k]
        ]
