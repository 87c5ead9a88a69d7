"""Tonight's teacher heads start from last night's: ID rows carried by item id, new ones at zero."""

from __future__ import annotations

import numpy as np
import torch

from distill.teacher.adapt import FrozenText, build_teacher_model
from distill.teacher.base import AdaptConfig
from distill.teacher.warm import HeadsWarmStart, start_heads
from distill.training.loop import save_weights


def test_heads_carry_known_items_and_place_new_ones_by_text(tmp_path):
    config = AdaptConfig(dim=8, n_heads=2, history_len=5, heads=2)
    old_ids = ["a", "b", "c"]
    last_night = build_teacher_model(3, 4, config, FrozenText(np.ones((3, 4), np.float32)))
    path = tmp_path / "adapter.safetensors"
    save_weights(last_night, path, last_night.trainable_state())
    warm = HeadsWarmStart(path, tuple(old_ids), "fp-last-night", patience=5)
    tonight_ids = ["c", "new", "a", "b"]
    text = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    tonight = build_teacher_model(4, 4, config.model_copy(update={"seed": 7}), FrozenText(text))
    assert start_heads(tonight, warm, tonight_ids) == 3
    for old, new in zip(last_night.heads, tonight.heads, strict=True):
        table, old_table = new.item_emb.weight.detach(), old.item_emb.weight.detach()
        assert torch.equal(table[[0, 2, 3]], old_table[[2, 0, 1]])  # c, a, b carried by id
        assert not table[1].any()  # the new item: no ID row, its text projection alone
        assert torch.equal(new.text.weight, old.text.weight)
        assert torch.equal(new.blocks[0].qkv.weight, old.blocks[0].qkv.weight)
    with torch.no_grad():
        vectors = tonight.item_vectors()
        projected = torch.cat([h.text(torch.as_tensor(text[1:2])) for h in tonight.heads], 1)
    assert torch.allclose(vectors[1], projected[0])


def test_heads_of_another_shape_do_not_warm_start(tmp_path):
    small = AdaptConfig(dim=8, n_heads=2, history_len=5, heads=1)
    last_night = build_teacher_model(3, 4, small, FrozenText(np.ones((3, 4), np.float32)))
    path = tmp_path / "adapter.safetensors"
    save_weights(last_night, path, last_night.trainable_state())
    wider = build_teacher_model(
        3, 4, small.model_copy(update={"dim": 16}), FrozenText(np.ones((3, 4), np.float32))
    )
    before = wider.heads[0].item_emb.weight.detach().clone()
    assert start_heads(wider, HeadsWarmStart(path, ("a", "b", "c"), "fp", 5), ["a", "b", "c"]) == 0
    assert torch.equal(wider.heads[0].item_emb.weight, before)
