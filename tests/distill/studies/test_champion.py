"""The regression gate compares the candidate with the served model on the same validation fold.

Two nights built so that comparing with the number the served model recorded on its own night's
split decides wrongly: new data that makes validation harder for every model (that comparison
refuses a candidate exactly as good as the served one) and new data that makes it easier (it lets
a clearly worse candidate through)."""

from __future__ import annotations

import copy

import numpy as np
import polars as pl
import pytest
import torch

from distill.evaluation.harness import evaluate
from distill.nn.layers import left_padded
from distill.serving.bundle import StudentBundle, bundle_files
from distill.student.config import StudentConfig
from distill.student.fit import DistillConfig, UserData, student_scorer
from distill.student.run import fit_and_evaluate
from distill.studies.champion import head_to_head
from distill.training.loop import LoopConfig
from storage.datasets import DatasetConfig, ingest, load_dataset
from storage.registry import Registry
from storage.split import make_split
from storage.workdir import WorkDir
from tests.conftest import synthetic_tables, write_tables

USERS = [f"u{u}" for u in range(30)]
NIGHT = 10**6  # the night's interactions come after every earlier one


def version(tmp_path, work, name: str, night: dict[str, list[str]] | None = None):
    """A dataset version: the synthetic interactions plus, per user, the night's items in order
    (the last two of a user become its validation and test items)."""
    tables = synthetic_tables()
    if night:
        rows = [(u, i, NIGHT + k) for u, items in night.items() for k, i in enumerate(items)]
        extra = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")
        tables["interactions"] = pl.concat(
            [tables["interactions"], extra.cast(tables["interactions"].schema)]
        )
    paths = write_tables(tmp_path / name, tables)
    dataset = load_dataset(
        work,
        "syn",
        ingest(DatasetConfig(name="syn", source="files", **paths), work_dir=work).version,
    )
    return dataset, make_split(dataset)


@pytest.fixture
def served(tmp_path, work):
    """The served model: a student trained on the synthetic interactions."""
    dataset, split = version(tmp_path, work, "day0")
    run = fit_and_evaluate(
        split,
        StudentConfig(dim=16, history_len=8, dropout=0.1),
        DistillConfig(alpha=0.0, init="random"),
        LoopConfig(max_epochs=15, patience=15, batch_size=16, lr=5e-3),
        soft_labels=None,
        text_emb=None,
    )
    return dataset, run


def favourites(model, dataset) -> dict[str, list[str]]:
    """Per user, the model's two best unseen items after the user's whole history."""
    hist = torch.as_tensor(left_padded(dataset.sequences(), 8, dataset.n_items))
    with torch.no_grad():
        item_vecs = model.item_vectors()
        scores = model.user_vectors(torch.arange(30), hist, item_vecs) @ item_vecs.T
    for u, seq in enumerate(dataset.sequences()):
        scores[u, torch.as_tensor(seq)] = -torch.inf
    ids = dataset.items().get_column("item_id").to_list()
    return {USERS[u]: [ids[i] for i in torch.topk(scores[u], 2).indices] for u in range(30)}


def random_night(seed: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    return {u: [f"i{i}" for i in rng.choice(40, 2, replace=False)] for u in USERS}


def scorer(model, split):
    return student_scorer(model, UserData(split, 8))


def test_a_harder_night_publishes_a_candidate_as_good_as_the_served_one(tmp_path, work, served):
    day0, run = served
    registry = Registry(WorkDir(work).registry)
    # the served model's own night made validation easy: its items were the model's favourites
    easy, easy_split = version(tmp_path, work, "easy", favourites(run.model, day0))
    recorded = evaluate(scorer(run.model, easy_split), easy_split, fold="valid").metrics
    current = registry.publish(bundle_files(run, easy), validation=recorded).version
    # tonight two random interactions a user: harder for every model; the candidate IS the model
    tonight, split = version(tmp_path, work, "hard", random_night(1))
    versus = head_to_head(
        StudentBundle(registry.bundle().path), current, scorer(run.model, split), tonight, split
    )
    candidate = versus.challenger.metrics
    assert candidate["ndcg@10"] < 0.9 * recorded["ndcg@10"]  # what the old gate compared
    assert not registry.gate(candidate)[0]  # ... and it refused
    assert versus.champion.metrics == pytest.approx(candidate)  # same model, same fold
    result = registry.publish(
        bundle_files(run, tonight), validation=candidate, versus=versus.as_json()
    )
    assert result.published and "on tonight's validation fold" in result.reason
    manifest = registry.bundle().manifest
    assert manifest["versus_champion"]["champion_version"] == current


def test_an_easier_night_refuses_a_worse_candidate(tmp_path, work, served):
    day0, run = served
    registry = Registry(WorkDir(work).registry)
    # the served model's own night made validation hard: random items
    hard, hard_split = version(tmp_path, work, "hard", random_night(2))
    recorded = evaluate(scorer(run.model, hard_split), hard_split, fold="valid").metrics
    current = registry.publish(bundle_files(run, hard), validation=recorded).version
    # tonight the new items are what the served model expects: easier for every model
    tonight, split = version(tmp_path, work, "easy", favourites(run.model, day0))
    worse = copy.deepcopy(run.model)
    with torch.no_grad():  # a clearly worse candidate: noise on its item vectors
        table = worse.net.item_emb.weight
        noise = torch.randn(table.shape, generator=torch.Generator().manual_seed(0))
        table += 1.5 * table.std() * noise
    versus = head_to_head(
        StudentBundle(registry.bundle().path), current, scorer(worse, split), tonight, split
    )
    candidate = versus.challenger.metrics
    assert candidate["ndcg@10"] > recorded["ndcg@10"]  # what the old gate compared
    assert registry.gate(candidate)[0]  # ... and it let the candidate through
    assert versus.champion.metrics["ndcg@10"] > 1.2 * candidate["ndcg@10"]
    result = registry.publish(
        bundle_files(run, tonight), validation=candidate, versus=versus.as_json()
    )
    assert not result.published and result.reason.startswith("refused")
    assert registry.current_version() == current
