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
EASE_NDCG10 = 0.0398  # standard protocol, λ chosen on validation
PUBLIC_SASREC_NDCG10 = 0.102  # RecBole 1.2.1 SASRec (defaults) on this split, standard protocol


@pytest.fixture(scope="module")
def ml(tmp_path_factory):
    work = tmp_path_factory.mktemp("ml-work")
    result = ingest(DatasetConfig(), work_dir=work)
    dataset = load_dataset(work, result.name, result.version)
    return work, dataset, make_split(dataset)


def test_default_teacher_beats_ease_and_reruns_for_free(ml):
    work, dataset, split = ml
    run = run_teacher(TeacherConfig(), dataset, split, work_dir=work, progress=False)
    prefixes = sum(max(len(seq) - 1, 0) for seq in split.train_sequences())
    assert run.manifest["total_rows"] == 943 * 1682 + prefixes * TeacherConfig().position_top_k
    report = read_json(Path(run.plan.cache_dir) / "report.json")
    assert report["zero_shot"]["test"]["ndcg@10"] < 0.02  # unadapted MiniLM teaches little
    assert report["adapted"]["test"]["ndcg@10"] > PUBLIC_SASREC_NDCG10
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


@pytest.fixture(scope="module")
def default_report(ml) -> dict:
    """One seed of every arm of the default report, as `make run` trains them."""
    from distill.student.stage import QualityPlan, quality
    from distill.train import available_cores
    from pipelines.config import RunConfig

    work, dataset, split = ml
    cfg = RunConfig(work_dir=work)
    cache = run_teacher(cfg.teacher, dataset, split, work_dir=work, progress=False).plan.cache_dir
    plan = QualityPlan(
        student=cfg.student,
        sasrec=cfg.sasrec,
        kd=cfg.distill,
        loop=cfg.train,
        seeds=[0],
        content=cfg.content,
    )
    return quality(
        dataset, split, plan, teacher_cache=Path(cache), workers=available_cores()
    ).report.as_json()


def test_default_report_has_a_correct_plain_sasrec(default_report):
    ndcg = {r["model"]: r["metrics"]["ndcg@10"]["mean"] for r in default_report["rows"]}
    # the plain SASRec is a correct implementation: within 95 % of the public one's figure
    assert ndcg["SASRec (no teacher)"] >= 0.95 * PUBLIC_SASREC_NDCG10, ndcg
    assert ndcg["SASRec (no teacher)"] > ndcg["EASE"] > ndcg["Popularity"], ndcg
    assert default_report["kd_vs_best_plain"]["control"] == "SASRec (no teacher)"


@pytest.mark.xfail(
    strict=True,
    reason="issue 10, open: against a globally shuffled SASRec (5 seeds 0.1117) the MiniLM teacher "
    "(0.1095) is no better, and the distilled student ties it (+0.2 %, p = 0.92)",
)
def test_default_report_distillation_beats_the_plain_sasrec(default_report):
    # one seed of the 5-seed bar (+5 %, p < 0.05): distillation clearly ahead of the best plain
    gain = default_report["kd_vs_best_plain"]
    assert gain["relative_gain"] >= 0.03, gain
