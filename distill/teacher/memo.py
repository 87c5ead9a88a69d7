"""Values a process loads once and reuses across the tasks it runs (a Dask worker, a training
process or the CLI runs many): the LM teacher, adapted heads, what shard tasks share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    """`get(key, load)` calls `load()` the first time a key is asked for and keeps the value; past
    `limit` keys every value is dropped at once (a process that moved on to other caches)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._values: dict[str, T] = {}

    def get(self, key: str, load: Callable[[], T]) -> T:
        if key not in self._values:
            if len(self._values) >= self.limit:
                self._values.clear()
            self._values[key] = load()
        return self._values[key]

    def clear(self) -> None:
        self._values.clear()
