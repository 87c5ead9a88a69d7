"""Read the teacher's soft labels shard by shard.

Two shapes per user range (see `distill.teacher.labels.score_shard`): the label after the whole
train history, kept sparse as each user's scored items and their scores (`users`: every item
under `pairs: all`, the candidates under `pairs: candidates`), and the teacher's top-K after
every prefix of the history (`positions`). Nothing is ever (users x items) dense unless a caller
asks for `block` on a small catalog, so memory stays bounded by one shard's pairs (plus an
optional cache of decoded shards up to `cache_bytes`).
When everything decoded fits in that budget (MovieLens scale), `whole()` joins the shards into one,
so a student can shuffle all its examples together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import Tensor

from distill.teacher.cache import TeacherCache


@dataclass(frozen=True)
class PositionLabels:
    """Top-K teacher labels after each prefix from user u's first labelled position on: row
    first_row[u] + t - first_position[u] is user u after t items (every prefix: first_position
    1; `teacher.position_last`: the last P prefixes only)."""

    items: Tensor  # (N, K) int64 item indices
    scores: Tensor  # (N, K) float32 teacher logits
    first_row: np.ndarray  # (shard users,) row of the first labelled position; -1 for none
    first_position: np.ndarray  # (shard users,) that position (>= 1)

    def labelled(self, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """(N,) bool: whether (shard-local user, position) has a label."""
        return (self.first_row[users] >= 0) & (positions >= self.first_position[users])

    def gather(self, users: np.ndarray, positions: np.ndarray) -> tuple[Tensor, Tensor]:
        """(items, scores), each (N, K), for N labelled (shard-local user, position) pairs."""
        rows = torch.as_tensor(self.first_row[users] + positions - self.first_position[users])
        return self.items[rows], self.scores[rows]


@dataclass(frozen=True)
class UserLabels:
    """The teacher's label after each user's whole train history, sparse (CSR): shard-local user
    r scored items[indptr[r]:indptr[r + 1]] with those scores (items sorted per user)."""

    indptr: np.ndarray  # (shard users + 1,) int64
    items: Tensor  # (N,) int64 item indices
    scores: Tensor  # (N,) float32 teacher logits

    @property
    def nbytes(self) -> int:
        return self.items.numel() * 12 + self.indptr.nbytes

    def gather(self, rows: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """(row in `rows`, item, score) of every scored pair of these shard-local users."""
        starts, counts = self.indptr[rows], np.diff(self.indptr)[rows]
        owner = np.repeat(np.arange(len(rows)), counts)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        index = torch.as_tensor(np.repeat(starts, counts) + offsets)
        return torch.as_tensor(owner), self.items[index], self.scores[index]

    def dense(self, rows: np.ndarray, columns: Tensor | None, n_items: int) -> Tensor:
        """(len(rows), C) teacher scores on `columns` (sorted item indices; None = every item),
        NaN where the teacher did not score the pair."""
        owner, items, scores = self.gather(rows)
        if columns is None:
            out = torch.full((len(rows), n_items), float("nan"))
            out[owner, items] = scores
            return out
        out = torch.full((len(rows), len(columns)), float("nan"))
        at = torch.searchsorted(columns, items).clamp(max=len(columns) - 1)
        hit = columns[at] == items
        out[owner[hit], at[hit]] = scores[hit]
        return out


def _first_rows(
    local_users: np.ndarray, positions: np.ndarray, n_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row and position of each user's first labelled position, given the user and position of
    every row (sorted by user, then position; contiguous positions per user)."""
    first = np.full(n_users, -1, dtype=np.int64)
    first_position = np.ones(n_users, dtype=np.int64)
    uniq, index = np.unique(local_users, return_index=True)
    first[uniq] = index
    first_position[uniq] = positions[index]
    return first, first_position


class SoftLabels:
    def __init__(self, cache: TeacherCache | Path, *, cache_bytes: int = 512 << 20) -> None:
        cache = cache if isinstance(cache, TeacherCache) else TeacherCache(Path(cache))
        self.plan = cache.plan
        self.store = self.plan.store
        self.store.verify()  # a damaged shard is a clear error before training starts
        self.n_items = self.plan.n_items
        self.cache_bytes = cache_bytes
        self._users: dict[str, UserLabels] = {}  # decoded shards, by key, within cache_bytes
        self._positions: dict[str, PositionLabels] = {}

    @property
    def fingerprint(self) -> str:
        return self.plan.fingerprint

    @property
    def is_whole(self) -> bool:
        """One shard of every user (`whole()`), so training shuffles all examples together."""
        return False

    @property
    def shards(self) -> list[tuple[str, int, int]]:
        return self.plan.shards

    def users(self, key: str) -> UserLabels:
        """The whole-history labels of the shard's users, sparse."""
        if key in self._users:
            return self._users[key]
        _, start, end = next(s for s in self.shards if s[0] == key)
        frame = (
            self.store.read_shard(key, verify=False)
            .filter(pl.col("position") == -1)
            .sort("user_idx", "item_idx")
        )
        counts = np.bincount(frame.get_column("user_idx").to_numpy() - start, minlength=end - start)
        labels = UserLabels(
            indptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            items=torch.as_tensor(frame.get_column("item_idx").to_numpy().astype(np.int64)),
            scores=torch.as_tensor(frame.get_column("score").to_numpy().copy()),
        )
        if self._cached_bytes() + labels.nbytes <= self.cache_bytes:
            self._users[key] = labels
        return labels

    def block(self, key: str) -> Tensor:
        """(end - start, I) float32 teacher scores for the shard's users; NaN = not scored.
        Dense: for small catalogs and tests; training reads `users`."""
        _, start, end = next(s for s in self.shards if s[0] == key)
        return self.users(key).dense(np.arange(end - start), None, self.n_items)

    def positions(self, key: str) -> PositionLabels:
        """The teacher's top-K after every prefix, for the shard's users."""
        if key in self._positions:
            return self._positions[key]
        _, start, end = next(s for s in self.shards if s[0] == key)
        frame = (
            self.store.read_shard(key, verify=False)
            .filter(pl.col("position") > 0)
            .sort("user_idx", "position", descending=[False, False], maintain_order=True)
        )
        if frame.is_empty():
            raise ValueError(
                f"teacher cache {self.plan.cache_dir} has no per-position labels "
                "(teacher.position_top_k is 0, or the teacher has no adapted head)"
            )
        users = frame.get_column("user_idx").to_numpy()
        positions = frame.get_column("position").to_numpy()
        k = min(int(self.plan.config["position_top_k"]), self.n_items)  # rows per position
        n = len(frame) // k
        first_row, first_position = _first_rows(users[::k] - start, positions[::k], end - start)
        labels = PositionLabels(
            items=torch.as_tensor(frame.get_column("item_idx").to_numpy().astype(np.int64)).view(
                n, k
            ),
            scores=torch.as_tensor(frame.get_column("score").to_numpy().copy()).view(n, k),
            first_row=first_row,
            first_position=first_position,
        )
        used = self._cached_bytes()
        if used + labels.items.numel() * 12 <= self.cache_bytes:
            self._positions[key] = labels
        return labels

    def decoded_bytes(self) -> int:
        """What decoding every shard takes in memory: 12 bytes a scored pair (item, score), for
        the whole-history labels and the per-position ones alike."""
        return int(self.store.manifest().get("total_rows", 0)) * 12

    def fits_in_memory(self) -> bool:
        """Whether every shard decoded fits in `cache_bytes` (then `whole()` may be used)."""
        return self.decoded_bytes() <= self.cache_bytes

    def whole(self) -> SoftLabels:
        """These labels as one shard ("all", 0, n_users), decoded once and kept: training can
        then shuffle every example together instead of shard by shard. Only when
        `decoded_bytes()` fits in `cache_bytes`."""
        if not self.fits_in_memory():
            raise ValueError(
                f"soft labels need {self.decoded_bytes() >> 20} MiB decoded, over the "
                f"{self.cache_bytes >> 20} MiB budget: read them shard by shard"
            )
        return _Whole(self)

    def _cached_bytes(self) -> int:
        """Bytes held by decoded shards: whole-history and per-position labels alike."""
        users = sum(v.nbytes for v in self._users.values())
        return users + sum(v.items.numel() * 12 for v in self._positions.values())

    def _forget(self) -> None:
        """Drop the decoded shards (their joined copy is held instead)."""
        self._users.clear()
        self._positions.clear()


class _Whole(SoftLabels):
    """Every shard of `parts` decoded and joined as the single shard ("all", 0, n_users)."""

    def __init__(self, parts: SoftLabels) -> None:
        self.plan, self.store, self.n_items = parts.plan, parts.store, parts.n_items
        self.cache_bytes, self._parts = parts.cache_bytes, parts
        self._users, self._positions = {}, {}

    @property
    def shards(self) -> list[tuple[str, int, int]]:
        return [("all", 0, self.plan.n_users)]

    @property
    def is_whole(self) -> bool:
        return True

    def users(self, key: str) -> UserLabels:
        if "all" not in self._users:
            parts = [self._parts.users(k) for k, _, _ in self._ordered()]
            offsets = np.cumsum([0] + [len(p.items) for p in parts[:-1]])
            self._users["all"] = UserLabels(
                indptr=np.concatenate(
                    [[0]] + [p.indptr[1:] + o for p, o in zip(parts, offsets, strict=True)]
                ).astype(np.int64),
                items=torch.cat([p.items for p in parts]),
                scores=torch.cat([p.scores for p in parts]),
            )
            self._parts._forget()  # noqa: SLF001 (held once, here)
        return self._users["all"]

    def positions(self, key: str) -> PositionLabels:
        if "all" not in self._positions:
            parts = [self._parts.positions(k) for k, _, _ in self._ordered()]
            offsets = np.cumsum([0] + [len(p.items) for p in parts[:-1]])
            first = [
                np.where(p.first_row >= 0, p.first_row + off, -1)
                for p, off in zip(parts, offsets, strict=True)
            ]
            self._positions["all"] = PositionLabels(
                items=torch.cat([p.items for p in parts]),
                scores=torch.cat([p.scores for p in parts]),
                first_row=np.concatenate(first),
                first_position=np.concatenate([p.first_position for p in parts]),
            )
            self._parts._forget()  # noqa: SLF001 (held once, here)
        return self._positions["all"]

    def _ordered(self) -> list[tuple[str, int, int]]:
        shards = sorted(self._parts.shards, key=lambda s: s[1])
        covered = [s[1] for s in shards] + [self.plan.n_users]
        if covered[0] != 0 or any(s[2] != nxt for s, nxt in zip(shards, covered[1:], strict=True)):
            raise ValueError(f"shards of {self.plan.cache_dir} do not tile the users: {shards}")
        return shards
