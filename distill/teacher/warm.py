"""Warm start of the teacher's heads: tonight's heads start from last night's.

The served model's manifest names the teacher cache it was distilled from; that cache's plan
names its adapted heads and the dataset version (the catalog) they were trained on. Tonight's
heads copy every weight, with the ID embedding table mapped onto tonight's catalog by item id:
a known item keeps its row, a new one starts at zero, so its vector is its text projection alone
(the LM places it, as it places new items for the student). Shapes that differ (another head
width, another LM) give no warm start: the heads train from scratch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load

from distill.teacher.adapt import AdaptedTeacher
from distill.teacher.cache import TeacherCache
from storage.datasets import Dataset
from storage.registry import Registry
from storage.workdir import WorkDir

log = logging.getLogger(__name__)
ITEM_TABLE = "item_emb.weight"


@dataclass(frozen=True)
class HeadsWarmStart:
    """Last night's adapted heads and the catalog they were trained on."""

    adapter_path: Path
    item_ids: tuple[str, ...]  # in their item_idx order
    fingerprint: str  # the teacher cache they belong to (part of tonight's adapter key)
    patience: int  # early-stopping patience of a warm-started head


def served_heads(work_dir: Path, model: str, patience: int) -> HeadsWarmStart | None:
    """The heads behind the served model, or None (nothing served, a zero-shot or causal
    teacher, or its cache is gone)."""
    registry = Registry(WorkDir(work_dir).registry, model)
    if registry.current_version() is None:
        return None
    fingerprint = registry.bundle().manifest.get("teacher_fingerprint")
    cache = TeacherCache.of(work_dir, str(fingerprint))
    if not fingerprint or not cache.is_prepared() or cache.plan.adapter_path is None:
        return None
    items = Dataset(Path(cache.plan.dataset_path)).items().get_column("item_id").to_list()
    return HeadsWarmStart(Path(cache.plan.adapter_path), tuple(items), fingerprint, patience)


def start_heads(model: AdaptedTeacher, warm: HeadsWarmStart, item_ids: Sequence[str]) -> int:
    """Load last night's heads into `model` (tonight's catalog `item_ids`); returns how many
    items kept their ID row, 0 when the shapes differ (nothing loaded)."""
    state = load(warm.adapter_path.read_bytes())
    row_of = {item: r for r, item in enumerate(warm.item_ids)}
    pairs = [(r, row_of[i]) for r, i in enumerate(item_ids) if i in row_of]
    carried = 0
    n_old = len({n.split(".")[1] for n in state if n.startswith("heads.")})
    for k, head in enumerate(model.head_nets()):
        prefix = f"heads.{k % max(n_old, 1)}."
        old = {n[len(prefix) :]: v for n, v in state.items() if n.startswith(prefix)}
        mine = head.state_dict()
        if set(old) != set(mine) or any(
            old[n].shape != v.shape for n, v in mine.items() if n != ITEM_TABLE
        ):
            log.warning("teacher warm start skipped: last night's heads have another shape")
            return 0
        table = torch.zeros_like(mine[ITEM_TABLE])
        if pairs:
            new_rows, old_rows = zip(*pairs, strict=True)
            table[list(new_rows)] = old[ITEM_TABLE][list(old_rows)]
        head.load_state_dict({**old, ITEM_TABLE: table})
        carried = len(pairs)
    log.info("teacher heads start from %s: %d of %d items carried over", warm.fingerprint,
             carried, len(item_ids))  # fmt: skip
    return carried
