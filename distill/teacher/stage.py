"""The teacher stage's one control flow, `orchestrate`, over its steps (prepare, score each
shard, commit): `LocalSteps` runs them in this process (`run_teacher`, the CLI's --local and the
benches), `pipelines/teacher_flow.py` as Prefect tasks. The steps themselves live in
`prepare.py` (texts -> LM embeddings -> adapted heads -> plan) and `labels.py` (shards of soft
labels, the manifest).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from distill.teacher import labels
from distill.teacher.base import TeacherConfig
from distill.teacher.cache import TeacherCache, TeacherPlan
from distill.teacher.prepare import load_teacher, prepare
from distill.teacher.warm import HeadsWarmStart
from storage.datasets import Dataset
from storage.shards import ShardInfo
from storage.split import Split

log = logging.getLogger(__name__)


@dataclass
class TeacherRun:
    """What one teacher stage did, wherever it ran (here, or as the Prefect flow's tasks)."""

    plan: TeacherPlan
    manifest: dict
    stats: dict  # prepare's (texts encoded, seconds) + reused/repaired or scoring speed

    @property
    def cache(self) -> TeacherCache:
        """The committed cache the student stage reads."""
        return TeacherCache(Path(self.plan.cache_dir))

    @property
    def fingerprint(self) -> str:
        return self.plan.fingerprint

    @property
    def pairs(self) -> int:
        return int(self.manifest.get("total_rows", 0))

    @property
    def reused(self) -> bool:
        """True when the cache was already complete: no teacher work was done."""
        return bool(self.stats.get("reused", False))

    @property
    def texts_encoded(self) -> int:
        """Item and user texts the LM encoded in this run (0 when every text was cached)."""
        stats = self.stats
        return int(stats.get("item_texts_encoded", 0) + stats.get("user_texts_encoded", 0))

    @property
    def warm_start(self) -> dict | None:
        """Where the heads started from (`HeadsWarmStart.summary()`), None when from scratch."""
        return self.stats.get("warm_start")

    def summary(self) -> dict:
        """The run as plain JSON, for `kdrec teacher run` and the nightly record."""
        return {
            "cache_dir": self.plan.cache_dir,
            "fingerprint": self.plan.fingerprint,
            "pairs": self.pairs,
            **self.stats,
        }


class TeacherSteps(Protocol):
    """How the teacher stage's steps run: in this process (`LocalSteps`), or as the Prefect
    flow's tasks (pipelines/teacher_flow.py). `orchestrate` is the one control flow over them."""

    def prepare(self) -> tuple[TeacherPlan, dict]:
        """Texts, LM embeddings, the adapted head and the plan; with prepare's stats."""
        ...

    def repair(self, cache_dir: Path) -> list[str]: ...

    def score(self, cache_dir: Path, keys: list[str]) -> Iterator[ShardInfo]:
        """Score every shard of `keys`, yielding each as it completes (in any order)."""
        ...

    def commit(self, cache_dir: Path, infos: list[ShardInfo]) -> dict: ...


@dataclass(frozen=True)
class LocalSteps:
    """The teacher stage's steps in this process, one shard after the other."""

    config: TeacherConfig
    dataset: Dataset
    split: Split
    work_dir: Path
    warm: HeadsWarmStart | None = None

    def prepare(self) -> tuple[TeacherPlan, dict]:
        stats: dict = {}
        plan = prepare(
            self.config,
            self.dataset,
            self.split,
            work_dir=self.work_dir,
            stats=stats,
            warm=self.warm,
        )
        return plan, stats

    def repair(self, cache_dir: Path) -> list[str]:
        return labels.repair(cache_dir, work_dir=self.work_dir)

    def score(self, cache_dir: Path, keys: list[str]) -> Iterator[ShardInfo]:
        for key in keys:
            yield labels.score_shard(cache_dir, key, work_dir=self.work_dir)

    def commit(self, cache_dir: Path, infos: list[ShardInfo]) -> dict:
        return labels.commit(cache_dir, infos)


def orchestrate(
    steps: TeacherSteps,
    *,
    progress: bool = True,
    on_shard: Callable[[int, int], None] | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> TeacherRun:
    """The teacher stage, wherever its steps run: prepare; a complete cache is verified (damaged
    shards recomputed) and reused; otherwise every shard is scored, then committed at once.
    `on_shard(done, total)` before the first shard and after each (the flow's UI progress)."""
    from tqdm.auto import tqdm

    out = logger or log
    t0 = time.perf_counter()
    plan, stats = steps.prepare()
    cache_dir = Path(plan.cache_dir)
    if labels.is_complete(cache_dir):
        repaired = steps.repair(cache_dir)
        out.info(
            "teacher cache %s is complete: no teacher work%s",
            plan.fingerprint,
            f" (recomputed damaged shards {repaired})" if repaired else "",
        )
        stats.update(reused=True, repaired=repaired, seconds=time.perf_counter() - t0)
        return TeacherRun(plan, plan.store.manifest(), stats)
    t1 = time.perf_counter()
    infos: list[ShardInfo] = []
    bar = tqdm(total=len(plan.shards), desc="teacher shards", disable=None if progress else True)
    if on_shard is not None:
        on_shard(0, len(plan.shards))
    for info in steps.score(cache_dir, [s[0] for s in plan.shards]):
        infos.append(info)
        bar.update(1)
        if on_shard is not None:
            on_shard(len(infos), len(plan.shards))
    bar.close()
    manifest = steps.commit(cache_dir, infos)
    score_s = time.perf_counter() - t1
    pairs_per_s = manifest["total_rows"] / max(score_s, 1e-9)
    encoded = stats.get("item_texts_encoded", 0) + stats.get("user_texts_encoded", 0)
    out.info(
        "teacher %s: %d texts encoded (%.1f texts/s), %d pairs scored in %.1fs "
        "(%.0f pairs/s), total %.1fs",
        plan.fingerprint,
        encoded,
        encoded / max(stats.get("encode_seconds", 0.0), 1e-9),
        manifest["total_rows"],
        score_s,
        pairs_per_s,
        time.perf_counter() - t0,
    )
    stats.update(
        reused=False,
        score_seconds=score_s,
        pairs_per_second=pairs_per_s,
        seconds=time.perf_counter() - t0,
    )
    return TeacherRun(plan, manifest, stats)


def run_teacher(
    config: TeacherConfig,
    dataset: Dataset,
    split: Split,
    *,
    work_dir: Path,
    progress: bool = True,
    warm: HeadsWarmStart | None = None,
) -> TeacherRun:
    """The whole teacher stage in this process (the Prefect flow runs shards as tasks instead)."""
    teacher = load_teacher(config, work_dir)
    passes_before = teacher.forward_passes
    run = orchestrate(LocalSteps(config, dataset, split, work_dir, warm), progress=progress)
    run.stats["forward_passes"] = teacher.forward_passes - passes_before
    return run
