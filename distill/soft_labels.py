"""Read the teacher's soft labels shard by shard.

Two shapes per user range (see `distill.teacher.stage.score_shard`): the label after the whole
train history as a dense (users x items) block, where pairs the teacher did not score (candidate
policy) are NaN; and the teacher's top-K after every prefix of the history (`positions`).
Memory stays bounded by one shard (plus an optional cache of decoded shards up to `cache_bytes`,
which lets MovieLens-scale runs keep everything in memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import Tensor

from distill.teacher.stage import TeacherPlan


@dataclass(frozen=True)
class PositionLabels:
    """Top-K teacher labels after each prefix: row first_row[u] + t - 1 is user u after t items."""

    items: Tensor  # (N, K) int64 item indices
    scores: Tensor  # (N, K) float32 teacher logits
    first_row: np.ndarray  # (shard users,) row of position 1; -1 for a user with none

    def gather(self, users: np.ndarray, positions: np.ndarray) -> tuple[Tensor, Tensor]:
        """(items, scores), each (N, K), for N (shard-local user, position >= 1) pairs."""
        rows = torch.as_tensor(self.first_row[users] + positions - 1)
        return self.items[rows], self.scores[rows]


def _first_rows(local_users: np.ndarray, n_users: int) -> np.ndarray:
    """Row of each user's first position, given the user of every row (sorted, contiguous)."""
    first = np.full(n_users, -1, dtype=np.int64)
    uniq, index = np.unique(local_users, return_index=True)
    first[uniq] = index
    return first


class SoftLabels:
    def __init__(self, cache_dir: Path, *, cache_bytes: int = 512 << 20) -> None:
        self.plan = TeacherPlan.load(Path(cache_dir))
        self.store = self.plan.store
        self.store.verify()  # a damaged shard is a clear error before training starts
        self.n_items = self.plan.n_items
        self.cache_bytes = cache_bytes
        self._cache: dict[str, Tensor] = {}

    @property
    def fingerprint(self) -> str:
        return self.plan.fingerprint

    @property
    def shards(self) -> list[tuple[str, int, int]]:
        return self.plan.shards

    def block(self, key: str) -> Tensor:
        """(end - start, I) float32 teacher scores for the shard's users; NaN = not scored."""
        if key in self._cache:
            return self._cache[key]
        _, start, end = next(s for s in self.shards if s[0] == key)
        frame = self.store.read_shard(key, verify=False).filter(pl.col("position") == -1)
        dense = np.full((end - start, self.n_items), np.nan, dtype=np.float32)
        dense[
            frame.get_column("user_idx").to_numpy() - start, frame.get_column("item_idx").to_numpy()
        ] = frame.get_column("score").to_numpy()
        block = torch.from_numpy(dense)
        used = self._cached_bytes()
        if used + block.numel() * 4 <= self.cache_bytes:
            self._cache[key] = block
        return block

    def positions(self, key: str) -> PositionLabels:
        """The teacher's top-K after every prefix, for the shard's users."""
        cache_key = f"positions:{key}"
        if cache_key in self._cache:
            return self._cache[cache_key]
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
        k = min(int(self.plan.config["position_top_k"]), self.n_items)  # rows per position
        n = len(frame) // k
        labels = PositionLabels(
            items=torch.as_tensor(frame.get_column("item_idx").to_numpy().astype(np.int64)).view(
                n, k
            ),
            scores=torch.as_tensor(frame.get_column("score").to_numpy().copy()).view(n, k),
            first_row=_first_rows(users[::k] - start, end - start),
        )
        used = self._cached_bytes()
        if used + labels.items.numel() * 12 <= self.cache_bytes:
            self._cache[cache_key] = labels
        return labels

    def _cached_bytes(self) -> int:
        """Bytes held by decoded shards: dense blocks and per-position labels alike."""
        return sum(
            v.numel() * 4 if torch.is_tensor(v) else v.items.numel() * 12
            for v in self._cache.values()
        )
