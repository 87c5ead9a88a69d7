"""The report's new-items section: every model of a comparison scored the three ways of the
item-cold-start protocol (`distill/evaluation/new_items.py`) on the held-out items.

Rows: popularity (new items, all at zero, in a seeded random order), a content-only kNN on the LM
item embeddings, the plain SASRec, the teacher (its heads' text projection for the new items), the
same SASRec given a content tower without the teacher, the DropoutNet-style student, and the
report's students. Every content path (a content tower, or a student's own text projection) is
calibrated the same way, on the validation half (`new_items.calibrate`); the runs keep the scale
chosen for them, so the bundle serves what was measured. Metrics are quoted on the test half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from distill.evaluation.baselines import ContentKNN, Popularity
from distill.evaluation.baselines import scorer as baseline_scorer
from distill.evaluation.harness import EvalResult, Scorer, vector_scorer
from distill.evaluation.new_items import (
    VIEWS,
    Calibration,
    NewItemResult,
    NewItemTargets,
    best_mixed,
    calibrate,
    evaluate_new_items,
    warm_ndcg,
)
from distill.evaluation.stats import paired
from distill.nn.sasrec import SASRec
from distill.student.content import ContentConfig
from distill.student.run import StudentRun, content_tower, place_items
from distill.student.sequential import SequentialStudent
from distill.student.stage import DROPOUTNET_ROW, SASREC_ROW, Comparison
from distill.teacher.cache import TeacherCache
from storage.split import Split

SASREC_CONTENT_ROW = "SASRec + content tower (no teacher)"
METRICS = ("ndcg@10", "hr@10")


@dataclass
class NewItemRow:
    """One model's three views, per seed, on both halves; `scales`: its content path's scale
    per seed (None: it has none)."""

    model: str
    role: str
    distilled: bool
    valid: list[NewItemResult]
    test: list[NewItemResult]
    scales: list[float] | None = None
    # per seed with a content path: False where no scale kept its warm floor ("floor unmet")
    floor_met: list[bool] = field(default_factory=list)

    def results(self, view: str, fold: str = "test") -> list[EvalResult]:
        return [r.view(view) for r in (self.test if fold == "test" else self.valid)]

    def block(self, view: str, fold: str = "test") -> dict[str, dict[str, float]]:
        """{"ndcg@10": {"mean", "std"}, "hr@10": {...}} over seeds."""
        out = {}
        for metric in METRICS:
            values = np.array([r.metrics[metric] for r in self.results(view, fold)])
            out[metric] = {"mean": float(values.mean()), "std": float(values.std())}
        return out

    def as_json(self) -> dict:
        return {
            "model": self.model,
            "role": self.role,
            "distilled": self.distilled,
            **{view: self.block(view) for view in VIEWS},
            "valid": {view: self.block(view, "valid") for view in VIEWS},
            "scale": None if self.scales is None else self.scales,
            "floor_unmet": [i for i, met in enumerate(self.floor_met) if not met],
        }


@dataclass
class NewItemsPlan:
    """The held-out items the section scores: their targets and where they come from."""

    targets: NewItemTargets
    share: float
    seed: int
    content: ContentConfig  # how content paths are trained and calibrated
    dropped_users: int = 0  # held-out targets of users with no warm interaction (not scored)
    extra: dict = field(default_factory=dict)


def _fixed(name: str, role: str, scorer: Scorer, split: Split, plan: NewItemsPlan) -> NewItemRow:
    """A deterministic model (one result, whatever the seeds)."""
    folds = [evaluate_new_items(scorer, split, plan.targets, fold=f) for f in ("valid", "test")]
    return NewItemRow(name, role, False, [folds[0]], [folds[1]])


def scorer_at(run: StudentRun, split: Split) -> Callable[[float | None], Scorer]:
    """scale -> the run's scorer with its cold items served at that scale; None: unplaced."""

    def at(scale: float | None) -> Scorer:
        if scale is None:
            placement = replace(run.placement, text_vecs=None)
            return replace(run, placement=placement).scorer(split)
        return run.scorer(split, scale)

    return at


def _choose(
    run: StudentRun, split: Split, plan: NewItemsPlan, floor: float | None, rule: str
) -> Calibration:
    """One run's scale on the validation half: `rule` "mixed" (the best mixed NDCG@10) or
    "warm_budget" (`calibrate`: to `floor`, or its own unplaced warm less max_warm_loss)."""
    at, scales = scorer_at(run, split), plan.content.scales
    if rule == "mixed":
        return best_mixed(at, split, plan.targets, scales)
    budget = plan.content.max_warm_loss
    return calibrate(at, split, plan.targets, scales, max_warm_loss=budget, warm_floor=floor)


def _student(
    name: str,
    role: str,
    runs: list[StudentRun],
    split: Split,
    plan: NewItemsPlan,
    floors: list[float | None],
) -> NewItemRow:
    """A student row; a run with a content path is calibrated on validation by the config's
    rule (`content.choose_by`; with "warm_budget", to its seed's floor, or to its own unplaced
    warm quality less `max_warm_loss` when that is None) and keeps that scale (its placement is
    replaced: the bundle serves what was measured)."""
    valid, test, scales, met = [], [], [], []
    for run, floor in zip(runs, floors, strict=True):
        if run.placement.text_vecs is None:
            valid.append(evaluate_new_items(run.scorer(split), split, plan.targets, fold="valid"))
        else:
            chosen = _choose(run, split, plan, floor, plan.content.choose_by)
            run.placement = run.placement.with_scale(chosen.scale)
            valid.append(chosen.result)
            scales.append(chosen.scale)
            met.append(chosen.floor_met)
        test.append(evaluate_new_items(run.scorer(split), split, plan.targets, fold="test"))
    distilled = any(r.kd.alpha > 0 or r.kd.init != "random" for r in runs)
    return NewItemRow(name, role, distilled, valid, test, scales or None, met)


def _at_own_warm_cost(name: str, runs: list[StudentRun], split: Split, plan: NewItemsPlan):
    """A content path at equal *relative* warm cost: each seed calibrated to lose at most
    `max_warm_loss` of its own warm NDCG@10 with new items unplaced (the runs keep their scale)."""
    loss = plan.content.max_warm_loss
    row = NewItemRow(f"{name} at -{loss:.0%} of its own warm", "relative", False, [], [], [])
    for run in runs:
        chosen = _choose(run, split, plan, None, "warm_budget")
        row.valid.append(chosen.result)
        assert row.scales is not None
        row.scales.append(chosen.scale)
        row.floor_met.append(chosen.floor_met)
        at = scorer_at(run, split)(chosen.scale)
        row.test.append(evaluate_new_items(at, split, plan.targets, fold="test"))
    row.distilled = any(r.kd.alpha > 0 or r.kd.init != "random" for r in runs)
    return row


def _tuned(candidates: list[NewItemRow]) -> tuple[NewItemRow, dict]:
    """The candidate with the best validation mixed NDCG@10 (mean over seeds) and the grid."""
    scores = {r.model: r.block("mixed", "valid")["ndcg@10"]["mean"] for r in candidates}
    best = max(candidates, key=lambda r: scores[r.model])
    return best, {"valid_mixed_ndcg@10": scores, "chosen": best.model}


def teacher_scorer(cache: TeacherCache, split: Split) -> Scorer:
    """The teacher's heads; items with no train interaction scored by their heads' text
    projections alone (their ID rows were only ever negatives)."""
    if cache.plan.adapter_path is None:
        return cache.scorer()
    model = cache.adapted_head()
    cold = torch.as_tensor(np.asarray(split.train.sum(axis=0)).ravel() == 0)
    with torch.no_grad():
        text = model.text()
        item_vecs = model.item_vectors()
        projected = torch.cat([_projection(h, text) for h in model.head_nets()], dim=1)
        item_vecs = torch.where(cold[:, None], projected, item_vecs)
    users = {fold: cache.head_user_vectors(split, fold)[0] for fold in ("valid", "test")}
    return vector_scorer(lambda u, fold: users[fold](torch.as_tensor(u)), item_vecs)


def new_item_rows(
    comparison: Comparison, split: Split, cache: TeacherCache, plan: NewItemsPlan
) -> list[NewItemRow]:
    """Every row of the new-items section (see the module docstring); the baselines' grids
    chosen on validation land in `plan.extra["tuning"]`."""
    item_emb = cache.vectors("items", "embedding")
    tuning: dict[str, dict] = plan.extra.setdefault("tuning", {})
    knn_rows = [
        _fixed(
            f"Content kNN (LM item embeddings, {'mean profile' if k is None else f'k={k}'})",
            "baseline",
            baseline_scorer(ContentKNN(item_emb, k=k).fit(split.train), split),
            split,
            plan,
        )
        for k in plan.content.content_knn_k
    ]
    knn, tuning["content_knn"] = _tuned(knn_rows)
    popularity = baseline_scorer(Popularity().fit(split.train), split)
    rows = [_fixed("Popularity (new items in random order)", "baseline", popularity, split, plan)]
    rows.append(knn)
    sasrec = comparison.runs[SASREC_ROW]
    floors: list[float | None] = [None] * len(sasrec)
    if plan.content.calibrate_against == "plain":  # never below the plain SASRec of that seed
        keep = 1 - plan.content.max_warm_loss
        floors = [keep * warm_ndcg(run.scorer(split), split, plan.targets) for run in sasrec]
    rows.append(_student(SASREC_ROW, "baseline", sasrec, split, plan, floors))
    rows.append(_fixed("Teacher", "teacher", teacher_scorer(cache, split), split, plan))
    no_teacher = plan.content.model_copy(update={"alpha": 0.0})
    with_tower = []
    for run in sasrec:
        if not isinstance(run.model, SequentialStudent):
            raise TypeError(f"the report's SASRec row is a sequential model, not {run.model}")
        tower = content_tower(run.model, split, item_emb, no_teacher, run.seed)
        placement = place_items(run.model, split, item_emb, tower)
        with_tower.append(replace(run, placement=placement, content=tower))
    rows.append(_student(SASREC_CONTENT_ROW, "baseline", with_tower, split, plan, floors))
    dropoutnets = {n: r for n, r in comparison.runs.items() if n.startswith(DROPOUTNET_ROW)}
    if dropoutnets:
        grid = [_student(n, "baseline", r, split, plan, floors) for n, r in dropoutnets.items()]
        dropoutnet, tuning["dropoutnet"] = _tuned(grid)
        rows.append(dropoutnet)
    for name, runs in comparison.runs.items():
        if name != SASREC_ROW and name not in dropoutnets:
            rows.append(_student(name, "student", runs, split, plan, floors))
    distilled = next((r for r in rows if r.distilled and r.role == "student"), None)
    if distilled is None:
        return rows
    content_paths = {
        SASREC_CONTENT_ROW: with_tower,
        distilled.model: comparison.runs[distilled.model],
    }
    if dropoutnets:
        content_paths[dropoutnet.model] = dropoutnets[dropoutnet.model]
        rows += _matched(
            distilled.model,
            content_paths[distilled.model],
            content_paths[dropoutnet.model],
            split,
            plan,
        )
    rows += [_at_own_warm_cost(n, runs, split, plan) for n, runs in content_paths.items()]
    return rows


AS_TRAINED = "as trained (scale 1)"


def _matched(
    name: str,
    runs: list[StudentRun],
    dropoutnet: list[StudentRun],
    split: Split,
    plan: NewItemsPlan,
) -> list[NewItemRow]:
    """The trade at equal absolute warm quality: the DropoutNet-style student serving its
    projection as trained (scale 1), and the distilled student calibrated, seed by seed on
    validation, to lose no more warm NDCG@10 than it does. The runs keep their own scale."""
    theirs_name = f"DropoutNet-style student, {AS_TRAINED}"
    reference = NewItemRow(theirs_name, "matched", False, [], [], [1.0] * len(dropoutnet))
    scales: list[float] = []
    ours = NewItemRow(f"{name} at the DropoutNet's warm", "matched", True, [], [], scales)
    for run, theirs in zip(runs, dropoutnet, strict=True):
        for fold in ("valid", "test"):
            result = evaluate_new_items(theirs.scorer(split, 1.0), split, plan.targets, fold=fold)
            getattr(reference, fold).append(result)
        floor = reference.valid[-1].warm.metrics["ndcg@10"]
        at = scorer_at(run, split)
        chosen = calibrate(at, split, plan.targets, plan.content.scales, warm_floor=floor)
        ours.valid.append(chosen.result)
        scales.append(chosen.scale)
        ours.floor_met.append(chosen.floor_met)
        ours.test.append(evaluate_new_items(at(chosen.scale), split, plan.targets))
    return [reference, ours]


def new_items_section(rows: list[NewItemRow], plan: NewItemsPlan) -> dict:
    """report.json's `new_items` block: the rows, the baselines' tuning on validation and the
    paired comparisons of the distilled student (users the unit, seeds averaged per user:
    `distill.evaluation.stats`; test half): what users get (mixed), new items among all at the
    product's rule, at equal relative and equal absolute warm cost, and warm against the SASRec."""
    return {
        "share": plan.share,
        "seed": plan.seed,
        "items": int(len(plan.targets.items)),
        "targets": {fold: int(plan.targets.halves[fold].nnz) for fold in ("valid", "test")},
        "users": {fold: int(len(plan.targets.users(fold))) for fold in ("valid", "test")},
        "unscored_targets": plan.dropped_users,
        "rule": plan.content.choose_by,
        "tuning": plan.extra.get("tuning", {}),
        "rows": [r.as_json() for r in rows],
        "tests": section_tests(rows),
    }


def section_tests(rows: list[NewItemRow]) -> dict[str, dict]:
    """The distilled student's comparisons, by key: (treated, control, view)."""
    distilled = next((r for r in rows if r.distilled and r.role == "student"), None)
    if distilled is None:
        return {}

    def find(role: str, prefix: str) -> NewItemRow | None:
        return next((r for r in rows if r.role == role and r.model.startswith(prefix)), None)

    sasrec = next((r for r in rows if r.model == SASREC_ROW), None)
    content = next((r for r in rows if r.model == SASREC_CONTENT_ROW), None)
    dropoutnet = find("baseline", DROPOUTNET_ROW)
    relative = find("relative", distilled.model)
    plan = {
        "mixed_vs_sasrec": (distilled, sasrec, "mixed"),
        "mixed_vs_sasrec_content": (distilled, content, "mixed"),
        "mixed_vs_dropoutnet": (distilled, dropoutnet, "mixed"),
        "vs_dropoutnet": (distilled, dropoutnet, "new_among_all"),
        "vs_sasrec_content": (distilled, content, "new_among_all"),
        "warm_vs_sasrec": (distilled, sasrec, "warm"),
        "vs_dropoutnet_equal_warm": (
            find("matched", distilled.model),
            find("matched", "DropoutNet-style"),
            "new_among_all",
        ),
        "relative_vs_sasrec_content": (
            relative,
            find("relative", SASREC_CONTENT_ROW),
            "new_among_all",
        ),
        "relative_vs_dropoutnet": (relative, find("relative", DROPOUTNET_ROW), "new_among_all"),
    }
    tests: dict[str, dict] = {}
    for key, (treated, control, view) in plan.items():
        if treated is not None and control is not None:
            test = paired(
                treated.results(view), control.results(view), names=(treated.model, control.model)
            )
            tests[key] = {"view": view, **test.as_json()}
    return tests


def _projection(head: SASRec, text: torch.Tensor) -> torch.Tensor:
    """A teacher head's projection of the LM item embeddings (its vectors for text-only items)."""
    if head.text is None:
        raise ValueError("this teacher head has no text projection: it cannot place new items")
    return head.text(text)
