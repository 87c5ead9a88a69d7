from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.training.loop import PROGRESS, LoopConfig, fit
from pipelines.progress import TrainingProgress, fraction, read_progress, summary


def _progress(epoch: int, best_epoch: int, done: bool = False, **kw) -> dict:
    return {"desc": "head 0", "epoch": epoch, "best_epoch": best_epoch, "max_epochs": 100,
            "patience": 10, "val": 0.1, "best": 0.2, "done": done, **kw}  # fmt: skip


def test_fraction_counts_towards_the_earliest_stop_and_finishes_at_one():
    assert fraction(_progress(epoch=4, best_epoch=4)) == 5 / 15  # stops by epoch 14 at the latest
    assert fraction(_progress(epoch=98, best_epoch=95)) == 99 / 100  # max_epochs comes first
    assert fraction(_progress(epoch=4, best_epoch=4, done=True)) == 1.0


def _write(root: Path, name: str, progress: dict, age_s: float = 0.0) -> None:
    path = root / name / PROGRESS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(progress))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def test_only_trainings_written_since_the_start_count_and_the_bar_never_goes_back(tmp_path):
    _write(tmp_path, "old", _progress(epoch=1, best_epoch=0), age_s=3600)  # an earlier run
    _write(tmp_path, "a", _progress(epoch=4, best_epoch=4))
    assert list(read_progress(tmp_path, since=time.time() - 60)) == ["a"]
    shown: list[tuple[float, str]] = []
    tracker = TrainingProgress(tmp_path, "k", "heads")
    tracker.since = time.time() - 60
    tracker._update = lambda percent, text: shown.append((percent, text))
    assert tracker.poll() == pytest.approx(100 * 5 / 15)
    _write(tmp_path, "b", _progress(epoch=0, best_epoch=0))  # a second training starts
    assert tracker.poll() == pytest.approx(100 * 5 / 15)  # waits: no drop to (5/15+1/11)/2
    _write(tmp_path, "a", _progress(epoch=4, best_epoch=4, done=True))
    _write(tmp_path, "b", _progress(epoch=10, best_epoch=10, done=True))
    assert tracker.poll() == 100.0
    assert [round(p) for p, _ in shown] == [33, 100]
    assert "head 0: epoch 11/100" in shown[-1][1] and shown[-1][1].count("done") == 2
    assert summary({}) == (0.0, "no training has finished an epoch yet")


def test_fit_writes_its_progress_each_epoch_and_marks_the_end(tmp_path):
    model = nn.Linear(2, 1)
    x = torch.randn(8, 2)
    result = fit(
        model,
        batches=lambda epoch: [x],
        loss_fn=lambda m, b: ((m(b) ** 2).mean(), {}),
        validate=lambda m: 0.5,
        config=LoopConfig(max_epochs=3, patience=1),
        checkpoint_dir=tmp_path,
        desc="tiny",
    )
    written = json.loads((tmp_path / PROGRESS).read_text())
    assert written["done"] and written["desc"] == "tiny"
    assert written["epoch"] == result.history[-1]["epoch"] and written["best_epoch"] == 0
