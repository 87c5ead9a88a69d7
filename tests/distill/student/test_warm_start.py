"""Warm start: the published student mapped onto tonight's catalog by item id."""

from __future__ import annotations

import polars as pl
import torch
from safetensors.torch import load as load_tensors

from distill.serving.bundle import StudentBundle
from distill.serving.warm_start import previous_student, warm_start_from
from distill.student.config import StudentConfig
from distill.student.fit import DistillConfig, train_student
from distill.student.jobs import train_job
from distill.student.warm_start import WarmStart, previous_state
from distill.training.loop import LoopConfig
from storage.registry import Registry

CONFIG = StudentConfig(dim=8, history_len=6)  # the shape of the `published` fixture's student


def bundle_state(published) -> tuple[WarmStart, dict]:
    bundle = Registry(published["registry"]).bundle(published["versions"]["sequential"])
    state = load_tensors((bundle.path / "student.safetensors").read_bytes())
    ids = pl.read_parquet(bundle.path / "items.parquet")["item_id"].to_list()
    previous = previous_student(StudentBundle(bundle.path), bundle.version)
    return WarmStart(previous, tuple(ids)), state


def test_items_are_mapped_by_id_and_new_ones_start_fresh(published):
    start, state = bundle_state(published)
    old = state["net.item_emb.weight"]
    tonight = ("new-item", *reversed(start.item_ids))  # a new item first, the rest reordered
    net = previous_state(WarmStart(start.previous, tonight), CONFIG, seed=0)
    assert net["item_emb.weight"].shape == (41, 8)
    torch.testing.assert_close(net["item_emb.weight"][1:], old.flip(0))  # the rows reordered
    assert 0 < net["item_emb.weight"][0].abs().max() < 0.2  # N(0, 0.02)
    torch.testing.assert_close(net["pos_emb.weight"], state["net.pos_emb.weight"])
    text = CONFIG.model_copy(update={"text_projection": True})
    assert previous_state(start, text, seed=0) is None  # another shape: no warm start


def test_training_starts_from_the_published_weights(published):
    start, state = bundle_state(published)
    from storage.split import make_split

    split = make_split(published["dataset"])
    model, _ = train_student(
        split,
        CONFIG,
        DistillConfig(alpha=0.0, init="previous"),
        LoopConfig(max_epochs=1, batch_size=8, lr=1e-9),  # a step too small to move anything
        soft_labels=None,
        text_emb=None,
        init_state=previous_state(start, CONFIG, seed=0),
    )
    torch.testing.assert_close(
        model.net.item_emb.weight.detach(), state["net.item_emb.weight"], atol=1e-5, rtol=0
    )


def test_the_current_version_is_the_start_and_keys_the_checkpoint(published, tmp_path):
    assert warm_start_from(tmp_path, "kdrec", ["a"]) is None  # nothing published yet
    warm = warm_start_from(published["registry"], "kdrec", ["i1", "i2"])
    assert warm.version == published["versions"]["sequential"] and warm.item_ids == ("i1", "i2")
    from storage.split import make_split

    dataset = published["dataset"]
    split = make_split(dataset)
    loop = LoopConfig()
    args = (dataset, split, "fp", CONFIG)
    previous = train_job(*args, DistillConfig(init="previous"), loop, 0, tmp_path, warm)
    assert previous.warm == warm
    moved = warm.previous
    other = WarmStart(
        type(moved)("v-other", moved.config, moved.net, moved.item_ids), warm.item_ids
    )
    again = train_job(*args, DistillConfig(init="previous"), loop, 0, tmp_path, other)
    assert again.checkpoint_dir != previous.checkpoint_dir  # another start, another student
    teacher = train_job(*args, DistillConfig(), loop, 0, tmp_path, warm)
    assert teacher.warm is None  # only init: previous uses it
