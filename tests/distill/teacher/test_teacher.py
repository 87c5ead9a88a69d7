from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.teacher.base import TeacherConfig, TeacherError
from distill.teacher.causal import CausalLMTeacher
from distill.teacher.encoder import EncoderTeacher

TEXTS = ["Heat (1995). Genres: Crime", "Toy Story", "a much longer text " * 8, "x"]


def test_encoder_embeddings_are_normalised_and_order_independent(tiny_encoder_path):
    small = EncoderTeacher(TeacherConfig(model_path=tiny_encoder_path, batch_size=1))
    big = EncoderTeacher(TeacherConfig(model_path=tiny_encoder_path, batch_size=64))
    a, b = small.encode(TEXTS), big.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)  # padding and bucketing do not change results
    np.testing.assert_allclose(big.encode(TEXTS[::-1]), b[::-1], atol=1e-5)
    assert small.forward_passes == 4 and big.forward_passes == 2


def test_missing_model_path_fails_before_work(tmp_path):
    with pytest.raises(TeacherError, match="does not exist"):
        EncoderTeacher(TeacherConfig(model_path=tmp_path / "nope"))
    with pytest.raises(TeacherError, match="no config.json"):
        EncoderTeacher(TeacherConfig(model_path=tmp_path))


def test_unsupported_architectures_are_clear_errors(tiny_encoder_path, tiny_causal_path, tmp_path):
    with pytest.raises(TeacherError, match="not a causal LM"):
        CausalLMTeacher(
            TeacherConfig(kind="causal", model_path=tiny_encoder_path, pairs="candidates"),
            cache_root=tmp_path,
        )
    with pytest.raises(TeacherError, match="decoder"):
        EncoderTeacher(TeacherConfig(model_path=tiny_causal_path))


def test_empty_model_path_is_rejected():
    with pytest.raises(ValueError, match="model_path is empty"):
        TeacherConfig(model_path=Path(""))


@pytest.mark.parametrize("batch_size", [3, 64])
def test_prefix_sharing_matches_naive_scoring(tiny_causal_path, tmp_path, batch_size):
    cfg = TeacherConfig(
        kind="causal", model_path=tiny_causal_path, pairs="candidates", batch_size=batch_size
    )
    teacher = CausalLMTeacher(cfg, cache_root=tmp_path)
    items = [f"Film {i} ({1990 + i}). Genres: Drama" + ", Comedy" * (i % 4) for i in range(10)]
    user = "Age 30. Recently watched: Heat; Alien; Toy Story"
    shared, naive = teacher.score_shared(user, items), teacher.score_naive(user, items)
    assert shared.shape == (10,) and np.isfinite(shared).all()
    np.testing.assert_allclose(shared, naive, atol=1e-3)
    assert np.ptp(shared) > 0  # not a constant: the item text matters


def test_causal_embeddings(tiny_causal_path, tmp_path):
    cfg = TeacherConfig(kind="causal", model_path=tiny_causal_path, pairs="candidates")
    emb = CausalLMTeacher(cfg, cache_root=tmp_path).encode(TEXTS)
    assert emb.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_both_teachers_implement_the_teacher_protocol(
    tiny_encoder_path, tiny_causal_path, tmp_path
):
    from distill.teacher.base import Teacher
    from distill.teacher.prepare import load_teacher

    encoder = load_teacher(TeacherConfig(model_path=tiny_encoder_path), tmp_path)
    causal = load_teacher(
        TeacherConfig(kind="causal", model_path=tiny_causal_path, pairs="candidates"), tmp_path
    )
    for teacher in (encoder, causal):
        assert isinstance(teacher, Teacher)
        vectors = teacher.encode(["a film", "another film"])
        assert vectors.shape[0] == 2 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert not isinstance(object(), Teacher)


# the teacher fingerprint hashed this flat dict before the heads' loop became `adapt.loop`
FLAT_DEFAULT_ADAPT = {
    "mode": "frozen",
    "unfreeze_layers": 1,
    "lora_r": 8,
    "lora_alpha": 16,
    "dim": 64,
    "history_len": 50,
    "n_layers": 2,
    "n_heads": 2,
    "dropout": 0.5,
    "id_embeddings": True,
    "heads": 2,
    "lr": 0.001,
    "weight_decay": 0.0,
    "batch_size": 64,
    "max_epochs": 200,
    "patience": 20,
    "seed": 0,
}


def test_adapt_config_composes_the_loop_and_keeps_the_fingerprint_of_the_flat_layout():
    from distill.teacher.base import AdaptConfig
    from distill.training.loop import LoopConfig, config_hash

    # caches built before stay valid (the default then: 2 heads, patience 20)
    then = AdaptConfig(heads=2, loop=LoopConfig(patience=20))
    assert then.fingerprint() == FLAT_DEFAULT_ADAPT
    # ... and hashes to what it hashed to then (the hash itself is part of every fingerprint)
    assert config_hash(then.fingerprint()) == (
        "60fa49a89f2f3b30ef160bbcbffa197ab83673fe1822c4637783ca2f6a7629be"
    )
    # a config (or a cache's plan.json) written with the loop's keys directly under adapt
    old = AdaptConfig.model_validate({"dim": 8, "n_heads": 2, "max_epochs": 3, "patience": 2})
    assert old == AdaptConfig(dim=8, n_heads=2, loop=LoopConfig(max_epochs=3, patience=2))
    assert old.fingerprint()["max_epochs"] == 3 and "loop" not in old.fingerprint()
    assert AdaptConfig().seeded(5).loop.seed == 5 and AdaptConfig().loop.seed == 0
    smoothed = AdaptConfig(loop=LoopConfig(smoothing=0.5)).fingerprint()
    assert smoothed["smoothing"] == 0.5  # a loop setting the flat layout lacked is hashed when set
