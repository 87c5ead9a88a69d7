from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from distill.texts import TextConfig, item_texts, render, text_hash, user_texts


def test_render_drops_sections_with_empty_placeholders():
    tpl = "{title}[ ({year})][. Genres: {genres}][. {description}]"
    assert render(tpl, {"title": "Heat", "year": 1995, "genres": ["Crime", "Drama"]}) == (
        "Heat (1995). Genres: Crime, Drama"
    )
    assert render(tpl, {"title": "Heat", "year": None, "genres": [], "description": "  "}) == "Heat"


def test_bad_template_is_rejected_at_construction():
    with pytest.raises(ValueError, match="bad text template"):
        TextConfig(item_template="{title")


def test_item_texts_hash_content():
    items = pl.DataFrame(
        {
            "item_idx": [0, 1],
            "title": ["A", "B"],
            "year": [2000, None],
            "genres": [["X"], None],
            "description": [None, "d"],
        }
    )
    out = item_texts(items, TextConfig())
    assert out.get_column("text").to_list() == ["A (2000). Genres: X", "B. d"]
    assert out.get_column("text_hash").to_list()[0] == text_hash("A (2000). Genres: X")


def test_user_history_is_train_only_newest_first(synthetic):
    dataset, split = synthetic
    titles = dataset.items().get_column("title").to_list()
    out = user_texts(dataset.users(), split.train_sequences(), titles, TextConfig(history_len=3))
    held_out = split.frame.filter(pl.col("fold") != "train")
    for row in held_out.iter_rows(named=True):
        text = out.row(row["user_idx"], named=True)["text"]
        assert titles[row["item_idx"]] + ";" not in text + ";", "validation/test item leaked"
    seq = split.train_sequences()[0]
    expected = "; ".join(titles[i] for i in seq[::-1][:3])
    assert out.row(0, named=True)["text"].endswith("Recently watched: " + expected)


def test_token_budget_cuts_oldest_history_first():
    users = pl.DataFrame({"user_idx": [0]})
    seqs = [np.array([0, 1, 2, 3])]
    titles = ["oldest one", "two", "three", "newest"]
    cfg = TextConfig(user_template="Seen: {history}", history_len=10, max_tokens=16)
    full = user_texts(users, seqs, titles, cfg).row(0, named=True)
    assert full["text"] == "Seen: newest; three; two; oldest one" and full["n_history"] == 4
    cut = user_texts(users, seqs, titles, cfg, count_tokens=lambda t: len(t.split()) * 3)
    row = cut.row(0, named=True)
    assert row["text"] == "Seen: newest; three; two" and row["n_history"] == 3
