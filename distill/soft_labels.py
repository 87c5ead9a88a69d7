"""Read the teacher's soft labels shard by shard.

Two shapes per user range (see `distill.teacher.stage.score_shard`): the label after the whole
train history as a dense (users x items) block, where pairs the teacher did not score (candidate
policy) are NaN; and the teacher's top-K after every prefix of the history (`positions`).
Memory stays bounded by one shard (plus an optional cache of decoded shards up to `cache_bytes`).
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
    def is_whole(self) -> bool:
        """One shard of every user (`whole()`), so training shuffles all examples together."""
        return False

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

    def decoded_bytes(self) -> int:
        """What decoding every shard takes in memory: the dense whole-history blocks (4 bytes a
        cell) and the per-position labels (12 bytes a row)."""
        rows = int(self.store.manifest().get("total_rows", 0))
        return self.plan.n_users * self.n_items * 4 + rows * 12

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
        """Bytes held by decoded shards: dense blocks and per-position labels alike."""
        return sum(
            v.numel() * 4 if torch.is_tensor(v) else v.items.numel() * 12
            for v in self._cache.values()
        )


class _Whole(SoftLabels):
    """Every shard of `parts` decoded and joined as the single shard ("all", 0, n_users)."""

    def __init__(self, parts: SoftLabels) -> None:
        self.plan, self.store, self.n_items = parts.plan, parts.store, parts.n_items
        self.cache_bytes, self._parts = parts.cache_bytes, parts
        self._cache = {}

    @property
    def shards(self) -> list[tuple[str, int, int]]:
        return [("all", 0, self.plan.n_users)]

    @property
    def is_whole(self) -> bool:
        return True

    def block(self, key: str) -> Tensor:
        if "block" not in self._cache:
            self._cache["block"] = torch.cat([self._parts.block(k) for k, _, _ in self._ordered()])
            self._parts._cache.clear()  # noqa: SLF001 (held once, here)
        return self._cache["block"]

    def positions(self, key: str) -> PositionLabels:
        if "positions" not in self._cache:
            parts = [self._parts.positions(k) for k, _, _ in self._ordered()]
            offsets = np.cumsum([0] + [len(p.items) for p in parts[:-1]])
            first = [
                np.where(p.first_row >= 0, p.first_row + off, -1)
                for p, off in zip(parts, offsets, strict=True)
            ]
            self._cache["positions"] = PositionLabels(
                items=torch.cat([p.items for p in parts]),
                scores=torch.cat([p.scores for p in parts]),
                first_row=np.concatenate(first),
            )
            self._parts._cache.clear()  # noqa: SLF001 (held once, here)
        return self._cache["positions"]

    def _ordered(self) -> list[tuple[str, int, int]]:
        shards = sorted(self._parts.shards, key=lambda s: s[1])
        covered = [s[1] for s in shards] + [self.plan.n_users]
        if covered[0] != 0 or any(s[2] != nxt for s, nxt in zip(shards, covered[1:], strict=True)):
            raise ValueError(f"shards of {self.plan.cache_dir} do not tile the users: {shards}")
        return shards
