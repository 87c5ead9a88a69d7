"""Cold items: a text-projected student places items it never saw, and `kdrec models extend`
publishes them without retraining."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from distill.serving.bundle import bundle_files
from distill.serving.cold_items import NewItems, NoTextProjection, extend_bundle
from distill.serving.recommend import Recommender
from distill.student.config import StudentConfig
from distill.student.content import ContentConfig
from distill.student.fit import DistillConfig
from distill.student.run import fit_and_evaluate
from distill.teacher.base import TeacherConfig
from distill.teacher.encoder import EncoderTeacher
from distill.texts import TextConfig, item_texts
from distill.training.loop import LoopConfig
from pipelines.cli import app
from storage.registry import Registry
from storage.workdir import WorkDir

NEW = pl.DataFrame(
    {
        "item_id": ["n1", "n2", "i3"],  # i3 is already in the catalog
        "title": ["Brand New Film", "Another Arrival", "Film 3"],
        "year": [2001, 2002, 1953],
        "genres": [["Drama"], ["Comedy", "Action"], ["Drama"]],
    }
)


def encode(model_path, frame: pl.DataFrame) -> np.ndarray:
    if "item_idx" not in frame.columns:
        frame = frame.with_row_index("item_idx")
    texts = item_texts(frame, TextConfig()).get_column("text")
    return EncoderTeacher(TeacherConfig(model_path=model_path)).encode(texts.to_list())


@pytest.fixture
def text_bundle(synthetic, work, tiny_encoder_path):
    """A published sequential student with a text projection of the tiny encoder's embeddings."""
    dataset, split = synthetic
    run = fit_and_evaluate(
        split,
        StudentConfig(dim=8, history_len=6, text_projection=True),
        DistillConfig(alpha=0.0, init="random"),
        LoopConfig(max_epochs=1, batch_size=8),
        soft_labels=None,
        text_emb=encode(tiny_encoder_path, dataset.items()),
    )
    registry = Registry(WorkDir(work).registry)
    registry.publish(bundle_files(run, dataset), validation=run.valid)
    return registry, run


def test_new_items_get_their_text_projection_and_nothing_else_moves(text_bundle, tiny_encoder_path):
    registry, run = text_bundle
    before = Recommender.load(registry.root.parent)
    emb = encode(tiny_encoder_path, NEW)
    files, added = extend_bundle(registry.bundle(), NewItems(NEW, emb))
    assert added == 2
    result = registry.publish(files, validation=run.valid, tag="extended")
    assert result.published
    after = Recommender.load(registry.root.parent)
    assert after.n_items == before.n_items + 2 and after.item_ids[-2:] == ["n1", "n2"]
    text = run.model.net.text  # W x + b of the trained student
    with torch.no_grad():
        expected = text(torch.as_tensor(emb[:2])).numpy()
    np.testing.assert_allclose(after.encoder.item_vecs.numpy()[-2:], expected, atol=1e-6)
    ids = after.encoder.model.net.item_emb.weight.detach().numpy()  # the ID table grew with zeros
    assert ids.shape[0] == after.n_items and not ids[-2:].any()
    np.testing.assert_array_equal(after.user_vecs, before.user_vecs)
    old = before.encoder.item_vecs.numpy()
    np.testing.assert_array_equal(after.encoder.item_vecs.numpy()[: len(old)], old)
    # a new item is servable everywhere: in a history, as a neighbour, in a user's top-k
    assert len(after.recommend_history(["n1", "i2"], k=3)) == 3
    assert "n2" not in {r.item_id for r in after.similar("n2", k=5)}
    everything = after.recommend("u3", k=after.n_items)
    assert {"n1", "n2"} <= {r.item_id for r in everything}
    assert after.manifest["gate"].startswith("validation")
    config = json.loads((after.path / "config.json").read_text())
    assert config["n_items"] == after.n_items and config["extended_from"] == before.version
    assert config["sq8"]["bytes"] == (after.path / "items.sq8.faiss").stat().st_size


@pytest.fixture
def content_bundle(synthetic, work, tiny_encoder_path):
    """The default student's shape: ID embeddings only, plus a content tower."""
    dataset, split = synthetic
    run = fit_and_evaluate(
        split,
        StudentConfig(dim=8, history_len=6),
        DistillConfig(alpha=0.0, init="random"),
        LoopConfig(max_epochs=1, batch_size=8),
        soft_labels=None,
        text_emb=encode(tiny_encoder_path, dataset.items()),
        content=ContentConfig(epochs=2, scale=0.7),
    )
    registry = Registry(WorkDir(work).registry)
    registry.publish(bundle_files(run, dataset), validation=run.valid)
    return registry, run


def test_the_content_tower_places_new_items_for_an_id_only_student(
    content_bundle, tiny_encoder_path
):
    registry, run = content_bundle
    assert run.model.text_vectors(torch.zeros(1, 8)) is None  # no text projection of its own
    before = Recommender.load(registry.root.parent)
    emb = encode(tiny_encoder_path, NEW)
    files, added = extend_bundle(registry.bundle(), NewItems(NEW, emb))
    assert added == 2 and "content.safetensors" in files
    registry.publish(files, validation=run.valid, tag="extended")
    after = Recommender.load(registry.root.parent)
    with torch.no_grad():
        expected = 0.7 * run.content(torch.as_tensor(emb[:2])).numpy()
    np.testing.assert_allclose(after.encoder.item_vecs.numpy()[-2:], expected, atol=1e-6)
    old = before.encoder.item_vecs.numpy()
    np.testing.assert_array_equal(after.encoder.item_vecs.numpy()[: len(old)], old)
    assert {"n1", "n2"} <= {r.item_id for r in after.recommend("u3", k=after.n_items)}
    # the extended bundle carries the tower on: it can be extended again
    again = NEW.with_columns(pl.Series("item_id", ["m1", "m2", "m3"]))
    files, added = extend_bundle(
        registry.bundle(), NewItems(again, encode(tiny_encoder_path, again))
    )
    assert added == 3


def test_a_student_without_text_projection_cannot_place_new_items(published, tiny_encoder_path):
    registry = Registry(published["registry"])
    with pytest.raises(NoTextProjection, match="text_projection: false"):
        extend_bundle(registry.bundle(), NewItems(NEW, encode(tiny_encoder_path, NEW)))


def test_extend_refuses_wrong_width_embeddings_and_nothing_new(text_bundle, tiny_encoder_path):
    registry, _ = text_bundle
    emb = encode(tiny_encoder_path, NEW)
    with pytest.raises(ValueError, match="encode with the teacher LM it was trained with"):
        extend_bundle(registry.bundle(), NewItems(NEW, emb[:, :-1]))
    with pytest.raises(ValueError, match="none of the 1 items is new"):
        extend_bundle(registry.bundle(), NewItems(NEW[2:], emb[2:]))


def test_models_extend_command(text_bundle, tiny_encoder_path, work, tmp_path):
    registry, _ = text_bundle
    items = tmp_path / "new_items.csv"
    NEW.with_columns(pl.col("genres").list.join("|")).write_csv(items)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"teacher": {"model_path": str(tiny_encoder_path)}}))
    first = registry.current_version()
    result = CliRunner().invoke(
        app,
        ["models", "extend", "--items", str(items), "-c", str(config), "--work-dir", str(work)],
    )
    assert result.exit_code == 0, result.output
    assert "2 new items" in result.output
    assert registry.current_version() != first
    assert Recommender.load(registry.root.parent).item_ids[-2:] == ["n1", "n2"]
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,name\nx1,Nope\n")
    result = CliRunner().invoke(
        app, ["models", "extend", "--items", str(bad), "-c", str(config), "--work-dir", str(work)]
    )
    assert result.exit_code != 0
