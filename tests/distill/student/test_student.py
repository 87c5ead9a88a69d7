from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.index import build_index
from distill.serving.bundle import bundle_files
from distill.serving.recommend import Recommender, UnknownUser
from distill.student import stage as student_stage
from distill.student.build import build_student
from distill.student.config import StudentConfig
from distill.student.cost import serving_cost
from distill.student.fit import DistillConfig, UserData, start_from, student_scorer, train_student
from distill.student.jobs import TrainJob, plain_kd, run_jobs
from distill.student.run import fit_and_evaluate
from distill.teacher.base import AdaptConfig, TeacherConfig
from distill.teacher.cache import TeacherCache
from distill.teacher.soft_labels import SoftLabels
from distill.teacher.stage import run_teacher
from distill.training.loop import LoopConfig
from storage.registry import Provenance, Registry
from storage.workdir import WorkDir
from tests.conftest import candidates_teacher

LOOP = LoopConfig(max_epochs=3, patience=2, batch_size=8, lr=5e-3)


def tiny_teacher_config(model_path: Path, **changes: object) -> TeacherConfig:
    """The teacher every test here distils from (`teacher_work`), with `changes`."""
    return TeacherConfig(
        model_path=model_path,
        users_per_shard=8,
        adapt=AdaptConfig(dim=8, n_heads=2, history_len=6, heads=1, loop=LoopConfig(max_epochs=2)),
        **changes,
    )


@pytest.fixture(scope="session")
def teacher_work(tmp_path_factory, tiny_encoder_path) -> tuple[Path, str]:
    """A work dir with the synthetic dataset and its tiny teacher, built once per test run:
    (work dir, the cache folder's name)."""
    from storage.datasets import DatasetConfig, ingest, load_dataset
    from storage.split import make_split
    from tests.conftest import synthetic_tables, write_tables

    root = tmp_path_factory.mktemp("teacher-work")
    work = root / "work"
    paths = write_tables(root / "src", synthetic_tables())
    result = ingest(DatasetConfig(name="syn", source="files", **paths), work_dir=work)
    dataset = load_dataset(work, "syn", result.version)
    cfg = tiny_teacher_config(tiny_encoder_path)
    run = run_teacher(cfg, dataset, make_split(dataset), work_dir=work, progress=False)
    return work, Path(run.plan.cache_dir).relative_to(work).as_posix()


@pytest.fixture
def teacher_cache(synthetic, work, teacher_work) -> Path:
    """The session's teacher work dir copied into this test's (the same dataset version as
    `synthetic`'s): the cache folder, whose plan reads this copy's files."""
    source, cache = teacher_work
    shutil.copytree(source, work, dirs_exist_ok=True)
    return work / cache


@pytest.mark.parametrize("kind", ["two_tower", "sequential"])
@pytest.mark.parametrize("loss", ["kl", "mse", "rank"])
def test_students_train_with_every_loss(synthetic, teacher_cache, kind, loss):
    _, split = synthetic

    def train():
        return train_student(
            split,
            StudentConfig(kind=kind, dim=8, history_len=6),
            DistillConfig(loss=loss, rank_k=3),
            LOOP,
            soft_labels=SoftLabels(teacher_cache),
            text_emb=TeacherCache(teacher_cache).vectors("items", "embedding"),
        )

    if kind == "sequential" and loss == "mse":  # top-K labels have no logits to regress on
        with pytest.raises(ValueError, match="top-K"):
            train()
        return
    model, result = train()
    assert len(result.history) >= 1 and 0 <= result.best_epoch < 3
    assert "l_k" in result.history[0] and np.isfinite(result.history[0]["l_k"])
    with torch.no_grad():
        assert model.item_vectors().shape == (split.n_items, 8)


@pytest.mark.parametrize("text_projection", [False, True])
def test_a_student_started_from_the_teacher_scores_as_its_head(
    synthetic, teacher_cache, text_projection
):
    """distill.init: teacher. Folded (ID-only student) or not, the student starts as the head."""
    _, split = synthetic
    emb = TeacherCache(teacher_cache).vectors("items", "embedding")
    config = StudentConfig(kind="sequential", dim=8, history_len=6, text_projection=text_projection)
    student = build_student(config, split.n_users, split.n_items, emb)
    start_from(student, TeacherCache(teacher_cache).head_state(0, fold_text=not text_projection))
    users = np.arange(split.n_users)
    ours = student_scorer(student, UserData(split, 6))(users, "test")
    head, item_vecs = TeacherCache(teacher_cache).head_user_vectors(split, "test")
    with torch.no_grad():
        theirs = head(torch.as_tensor(users)) @ torch.as_tensor(item_vecs).T
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_a_student_of_another_shape_cannot_start_from_the_head(synthetic, teacher_cache):
    _, split = synthetic
    student = build_student(
        StudentConfig(dim=16, history_len=6), split.n_users, split.n_items, None
    )
    with pytest.raises(ValueError, match="shaped like the teacher head.*mismatches"):
        start_from(student, TeacherCache(teacher_cache).head_state(0, fold_text=True))


def test_alpha_zero_ignores_the_teacher(synthetic, teacher_cache):
    """Given the soft labels but alpha 0, training is exactly training without them."""
    _, split = synthetic

    def train(soft_labels):
        return train_student(
            split,
            StudentConfig(dim=8, history_len=6),
            DistillConfig(alpha=0.0, init="random"),
            LOOP,
            soft_labels=soft_labels,
            text_emb=None,
        )

    with_labels, result = train(SoftLabels(teacher_cache))
    without, reference = train(None)
    assert "l_k" not in result.history[0]
    assert result.history == reference.history
    for a, b in zip(with_labels.state_dict().values(), without.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_the_distilled_student_stops_on_its_own_patience(synthetic, teacher_cache):
    """distill.patience replaces train.patience for a student that uses the teacher; the
    undistilled arms keep train.patience. A step too small to move anything: validation never
    improves after the first epoch, so a run lasts exactly patience + 1 epochs."""
    _, split = synthetic
    loop = LoopConfig(max_epochs=6, patience=4, batch_size=8, lr=1e-9)

    def epochs(kd: DistillConfig) -> int:
        _, result = train_student(
            split,
            StudentConfig(dim=8, history_len=6),
            kd,
            loop,
            soft_labels=SoftLabels(teacher_cache),
            text_emb=None,
        )
        return len(result.history)

    assert epochs(DistillConfig(init="random", patience=None)) == 5  # None: train.patience
    assert epochs(DistillConfig(init="random", patience=1)) == 2
    assert epochs(DistillConfig(alpha=0.0, init="random", patience=1)) == 5  # undistilled
    plain = plain_kd(DistillConfig(patience=1, lr=0.5))
    assert (plain.patience, plain.lr) == (None, None)


@pytest.mark.parametrize("kind", ["two_tower", "sequential"])
def test_students_train_with_a_sampled_softmax(synthetic, teacher_cache, kind):
    _, split = synthetic
    _, result = train_student(
        split,
        StudentConfig(kind=kind, dim=8, history_len=6, sampled_negatives=5),
        DistillConfig(),
        LOOP,
        soft_labels=SoftLabels(teacher_cache),
        text_emb=TeacherCache(teacher_cache).vectors("items", "embedding"),
    )
    assert all(np.isfinite(row["l_c"]) and row["l_c"] > 0 for row in result.history)


@pytest.mark.parametrize("kind", ["two_tower", "sequential"])
def test_resume_from_checkpoint_equals_uninterrupted(
    synthetic, teacher_cache, tmp_path, monkeypatch, kind
):
    from distill.student import fit as fit_module

    _, split = synthetic
    soft, emb = SoftLabels(teacher_cache), TeacherCache(teacher_cache).vectors("items", "embedding")
    cfg, kd = StudentConfig(kind=kind, dim=8, history_len=6), DistillConfig()
    loop = LOOP.model_copy(update={"patience": 10, "max_epochs": 4})
    full, _ = train_student(split, cfg, kd, loop, soft_labels=soft, text_emb=emb)

    real = fit_module._batches

    def crashing(*args):
        inner = real(*args)

        def batches(epoch):
            if epoch == 2:
                raise KeyboardInterrupt("simulated crash in epoch 2")
            yield from inner(epoch)

        return batches

    ckpt = tmp_path / "ckpt"
    monkeypatch.setattr(fit_module, "_batches", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_student(split, cfg, kd, loop, soft_labels=soft, text_emb=emb, checkpoint_dir=ckpt)
    monkeypatch.setattr(fit_module, "_batches", real)
    resumed, result = train_student(
        split, cfg, kd, loop, soft_labels=soft, text_emb=emb, checkpoint_dir=ckpt
    )
    assert result.resumed_from == 1 and len(result.history) == 4
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_checkpoint_in_training_elsewhere_is_waited_for_then_reused(synthetic, tmp_path):
    """Two trainers of one checkpoint (the flow's SASRec beside the student stage's job): the
    second waits for the first's lock, then resumes the finished checkpoint without training."""
    import threading
    import time

    from storage.atomic import exclusive

    _, split = synthetic
    cfg, kd = StudentConfig(dim=8, history_len=6), DistillConfig(alpha=0, init="random")
    ckpt = tmp_path / "ckpt"
    train = lambda: train_student(  # noqa: E731
        split, cfg, kd, LOOP, soft_labels=None, text_emb=None, checkpoint_dir=ckpt
    )
    first, done = train()
    held, released = threading.Event(), []

    def hold() -> None:
        with exclusive(ckpt / ".lock", what="test"):
            held.set()
            time.sleep(1.0)
            released.append(time.monotonic())

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    second, again = train()
    returned = time.monotonic()
    holder.join()
    assert released and returned >= released[0]  # it waited for the holder
    assert again.resumed_from == len(done.history) - 1 and again.history == done.history
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_whole_soft_labels_equal_the_shards_joined(synthetic, teacher_cache):
    """`SoftLabels.whole()` (one shuffle over every example) reads the same labels as the
    shards it joins, for every user and position; over the memory budget it refuses."""
    _, split = synthetic
    parts = SoftLabels(teacher_cache)
    assert len(parts.shards) > 1
    whole = parts.whole()
    assert whole.shards == [("all", 0, split.n_users)]
    data = UserData(split, 6)
    keep = data.owner >= 0
    users, positions = data.owner[keep], data.position[keep]
    got_items, got_scores = whole.positions("all").gather(users, positions)
    for key, start, end in parts.shards:
        mine = (users >= start) & (users < end)
        items, scores = parts.positions(key).gather(users[mine] - start, positions[mine])
        assert torch.equal(got_items[torch.as_tensor(mine)], items)
        assert torch.equal(got_scores[torch.as_tensor(mine)], scores)
        torch.testing.assert_close(whole.block("all")[start:end], parts.block(key), equal_nan=True)
    with pytest.raises(ValueError, match="over the 0 MiB budget"):
        SoftLabels(teacher_cache, cache_bytes=0).whole()


def test_bounded_position_labels_are_the_last_prefixes_of_the_full_ones(
    synthetic, teacher_cache, work, tiny_encoder_path
):
    """`teacher.position_last: 2` keeps the head's top-K after each user's last 2 prefixes
    only (same head, same labels there), in its own cache; a student distils from them (KD on
    the labelled slots only)."""
    dataset, split = synthetic
    cfg = tiny_teacher_config(tiny_encoder_path, position_last=2)
    bounded_dir = Path(
        run_teacher(cfg, dataset, split, work_dir=work, progress=False).plan.cache_dir
    )
    assert bounded_dir != teacher_cache
    full = SoftLabels(teacher_cache).whole().positions("all")
    bounded = SoftLabels(bounded_dir).whole().positions("all")
    data = UserData(split, 6)
    keep = data.owner >= 0
    users, positions = data.owner[keep], data.position[keep]
    last = np.array([len(s) - 1 for s in split.train_sequences()])
    has = bounded.labelled(users, positions)
    assert np.array_equal(has, positions > last[users] - 2)
    assert len(bounded.items) == int(np.minimum(last, 2).sum()) < len(full.items)
    items, scores = bounded.gather(users[has], positions[has])
    full_items, full_scores = full.gather(users[has], positions[has])
    assert torch.equal(items, full_items)
    torch.testing.assert_close(scores, full_scores)
    _, result = train_student(
        split,
        StudentConfig(dim=8, history_len=6, n_heads=2),
        DistillConfig(init="random"),
        LOOP,
        soft_labels=SoftLabels(bounded_dir),
        text_emb=None,
    )
    assert all(np.isfinite(row["l_k"]) and row["l_k"] > 0 for row in result.history)


def test_soft_labels_on_candidate_shards_hold_exactly_the_scored_pairs(
    synthetic, work, tiny_encoder_path
):
    """pairs: candidates: each user's dense row has the shard's scores at its candidates and NaN
    everywhere else (the KD term drops NaN columns); train items are scored too (mask_seen
    decides whether they count)."""
    import polars as pl

    dataset, split = synthetic
    cfg = candidates_teacher(
        tiny_encoder_path,
        AdaptConfig(dim=8, n_heads=2, history_len=6, heads=1, loop=LoopConfig(max_epochs=2)),
    )
    labels = SoftLabels(
        run_teacher(cfg, dataset, split, work_dir=work, progress=False).plan.cache_dir
    )
    train = split.matrix("train").toarray() > 0
    for key, start, end in labels.shards:
        block = labels.block(key).numpy()
        rows = labels.store.read_shard(key).filter(pl.col("position") == -1)
        expected = np.full_like(block, np.nan)
        expected[rows["user_idx"].to_numpy() - start, rows["item_idx"].to_numpy()] = rows["score"]
        np.testing.assert_array_equal(block, expected)  # NaN where not scored, equal elsewhere
        scored = np.isfinite(block)
        assert (scored.sum(axis=1) >= 5).all() and (scored.sum(axis=1) < split.n_items).all()
        assert scored[train[start:end]].all()


def test_faiss_matches_exact_search_with_ties():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(200, 16)).astype(np.float32)
    items[10] = items[11]  # a tie
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    index, recall = build_index(items)
    _, got = index.search(queries, 10)
    scores = queries @ items.T
    for q in range(len(queries)):
        kth = np.sort(scores[q])[::-1][9]
        assert (scores[q, got[q]] >= kth - 1e-5).all()  # every returned item is a true top-10
    approx, recall = build_index(items, queries=queries, exact_limit=50)
    assert recall >= 0.98 and type(approx).__name__ == "IndexHNSWFlat"


def test_an_approximate_index_short_of_the_recall_bar_falls_back_to_exact(monkeypatch, caplog):
    from distill import index as faiss_index

    items = np.random.default_rng(1).normal(size=(200, 16)).astype(np.float32)
    monkeypatch.setattr(faiss_index, "MIN_RECALL", 1.01)  # no HNSW can reach it
    index, recall = build_index(items, exact_limit=50)
    assert type(index).__name__ == "IndexFlatIP" and recall == 1.0
    assert "serving the exact index" in caplog.text


def test_publish_load_and_recommend(synthetic, teacher_cache, work):
    dataset, split = synthetic
    tiny = StudentConfig(dim=8, history_len=6)
    plan = student_stage.QualityPlan(
        student=tiny, sasrec=tiny, kd=DistillConfig(), loop=LOOP, seeds=[0, 1]
    )
    result = student_stage.quality(dataset, split, plan, teacher=TeacherCache(teacher_cache))
    report, rows, best = result.report.as_json(), result.rows, result.best
    assert [r["model"] for r in report["rows"]] == [
        "Popularity",
        "ItemKNN",
        "EASE",
        "SASRec (no teacher)",
        "Teacher",
        "Student two-tower (no KD)",
        "Student sequential (KD kl)",
    ]
    assert report["protocol"] == "standard"
    assert report["kd_vs_no_kd"]["control"] == "SASRec (no teacher)"
    assert report["kd_vs_no_kd"]["n_pairs"] == len(rows[0].results[0].users)  # users, not x seeds
    plain = [r for r in report["rows"] if r["role"] != "teacher" and not r["distilled"]]
    best_plain = max(plain, key=lambda r: r["metrics"]["ndcg@10"]["mean"])
    assert report["kd_vs_best_plain"]["control"] == best_plain["model"]
    files = bundle_files(best, dataset, result.report)
    reg = Registry(WorkDir(work).registry, "kdrec")
    result = reg.publish(files, Provenance(dataset=dataset.ref), validation=best.valid)
    rec = Recommender.in_work_dir(work)
    seen = set(
        dataset.interactions()
        .filter(dataset.interactions()["user_id"] == "u3")
        .get_column("item_id")
    )
    recs = rec.recommend("u3", k=5)
    assert len(recs) == 5 and not seen & {r.item_id for r in recs}
    assert [r.score for r in recs] == sorted([r.score for r in recs], reverse=True)
    assert len(rec.recommend("u3", k=10_000)) == dataset.n_items - len(seen)
    with pytest.raises(UnknownUser):
        rec.recommend("nobody")
    assert len(rec.recommend("nobody", k=3, fallback="popular")) == 3
    with pytest.raises(ValueError, match="k must be positive"):
        rec.recommend("u3", k=0)
    batch = rec.recommend_batch(["u3", "u4"], k=4)
    assert [r.item_id for r in batch[0]] == [r.item_id for r in recs[:4]]
    assert result.published


@pytest.mark.parametrize("kind", ["two_tower", "sequential"])
@pytest.mark.parametrize("text_projection", [True, False])
def test_every_student_variant_publishes_and_serves(
    synthetic, teacher_cache, work, kind, text_projection
):
    dataset, split = synthetic
    run = fit_and_evaluate(
        split,
        StudentConfig(kind=kind, dim=8, history_len=6, text_projection=text_projection),
        DistillConfig(),
        LOOP.model_copy(update={"max_epochs": 1}),
        soft_labels=SoftLabels(teacher_cache),
        text_emb=TeacherCache(teacher_cache).vectors("items", "embedding"),
    )
    cost = serving_cost(TeacherCache(teacher_cache), run, run, split, n_users=4, repeats=1)
    assert cost.seconds_per_user["teacher"] > 0 and cost.student_vs_sasrec is not None
    assert cost.student_vs_sasrec > 0
    files = bundle_files(run, dataset)
    Registry(WorkDir(work).registry, "kdrec").publish(files, validation=run.valid)
    recs = Recommender.in_work_dir(work).recommend("u3", k=3)
    assert len(recs) == 3 and all(np.isfinite(r.score) for r in recs)


def test_jobs_in_worker_processes_match_jobs_in_order(synthetic, teacher_cache):
    _, split = synthetic
    jobs = [
        TrainJob(StudentConfig(dim=8, history_len=6), kd, LOOP.model_copy(update={"seed": 3}), None)
        for kd in (DistillConfig(alpha=0.0), DistillConfig())
    ]
    cache = TeacherCache(teacher_cache)
    in_order = run_jobs(jobs, split, cache, workers=1)
    parallel = run_jobs(jobs, split, cache, workers=2)
    for a, b in zip(in_order, parallel, strict=True):
        assert b.kd == a.kd and b.seed == a.seed
        assert b.test.metrics["ndcg@10"] == pytest.approx(a.test.metrics["ndcg@10"], abs=1e-6)


def test_soft_labels_cache_counts_both_label_shapes(teacher_cache):
    soft = SoftLabels(teacher_cache)
    key = soft.shards[0][0]
    positions, users = soft.positions(key), soft.users(key)  # both cached, in either order
    assert soft._cached_bytes() == positions.items.numel() * 12 + users.nbytes
    assert users.nbytes == users.items.numel() * 12 + users.indptr.nbytes
    soft.users(soft.shards[1][0])  # a cache holding per-position labels still takes users
    assert len(soft._users) + len(soft._positions) == 3


def test_teacher_status_describes_a_complete_cache(teacher_cache, work):
    from typer.testing import CliRunner

    from pipelines.cli import app

    status = TeacherCache(teacher_cache).status()
    assert status.complete and status.shards_done == status.shards >= 2
    assert status.fingerprint == teacher_cache.name and status.kind == "embedding"
    assert status.bytes > 0 and 0 <= status.test_ndcg <= 1
    out = CliRunner().invoke(app, ["teacher", "status", "--work-dir", str(work)]).output
    assert status.fingerprint in out and f"{status.shards}/{status.shards}" in out
