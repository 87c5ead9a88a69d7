"""Read the teacher's soft labels shard by shard, as dense (users x items) blocks.

Memory stays bounded by one shard (plus an optional cache of decoded shards up to `cache_bytes`,
which lets MovieLens-scale runs keep everything in memory). Pairs the teacher did not score
(candidate policy) are NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from distill.teacher.stage import TeacherPlan


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
        frame = self.store.read_shard(key, verify=False)
        dense = np.full((end - start, self.n_items), np.nan, dtype=np.float32)
        dense[
            frame.get_column("user_idx").to_numpy() - start, frame.get_column("item_idx").to_numpy()
        ] = frame.get_column("score").to_numpy()
        block = torch.from_numpy(dense)
        used = sum(t.numel() * 4 for t in self._cache.values())
        if used + block.numel() * 4 <= self.cache_bytes:
            self._cache[key] = block
        return block

    def scorer(self):
        """The teacher as a recommender for `distill.evaluate` (unscored pairs rank last)."""

        def scores(users: np.ndarray) -> Tensor:
            out = torch.full((len(users), self.n_items), -torch.inf)
            for key, start, end in self.shards:
                rows = np.flatnonzero((users >= start) & (users < end))
                if len(rows):
                    block = self.block(key)[users[rows] - start]
                    out[rows] = torch.nan_to_num(block, nan=-torch.inf)
            return out

        return scores
