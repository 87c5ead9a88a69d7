"""Real models on real MovieLens-100K: the teacher's bar, SmolLM2 prefix sharing, the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.teacher.base import TeacherConfig
from distill.teacher.stage import load_teacher, run_teacher
from storage.atomic import read_json
from storage.datasets import DatasetConfig, ingest, load_dataset
from storage.split import make_split

pytestmark = pytest.mark.slow
EASE_NDCG10 = 0.0375


@pytest.fixture(scope="module")
def ml(tmp_path_factory):
    work = tmp_path_factory.mktemp("ml-work")
    result = ingest(DatasetConfig(), work_dir=work)
    dataset = load_dataset(work, result.name, result.version)
    return work, dataset, make_split(dataset)


def test_default_teacher_beats_ease_and_reruns_for_free(ml):
    work, dataset, split = ml
    run = run_teacher(TeacherConfig(), dataset, split, work_dir=work, progress=False)
    assert run.manifest["total_rows"] == 943 * 1682
    report = read_json(Path(run.plan.cache_dir) / "report.json")
    assert report["zero_shot"]["test"]["ndcg@10"] < 0.02  # unadapted MiniLM teaches little
    assert report["adapted"]["test"]["ndcg@10"] > EASE_NDCG10
    again = run_teacher(TeacherConfig(), dataset, split, work_dir=work, progress=False)
    assert again.stats["forward_passes"] == 0 and again.stats["seconds"] < 10


def test_smollm2_prefix_sharing_matches_naive(ml):
    work, dataset, split = ml
    teacher = load_teacher(TeacherConfig(kind="causal", pairs="candidates", batch_size=8), work)
    items = dataset.items().get_column("title").to_list()[:12]
    user = "Age 24. Gender M. Recently watched: Star Wars (1977); Fargo (1996); Heat (1995)"
    shared, naive = teacher.score_shared(user, items), teacher.score_naive(user, items)
    np.testing.assert_allclose(shared, naive, atol=1e-3)
    assert np.ptp(shared) > 0.01
