from __future__ import annotations

import base64
import dataclasses
import json

import numpy as np
import pytest

from distill.evaluation.harness import EvalResult
from distill.evaluation.report.bars import bars, finish
from distill.evaluation.report.build import paired_test
from distill.evaluation.report.model import (
    REPORT_METRICS,
    ModelRow,
    Report,
    Row,
    ServingCost,
    Stat,
)
from distill.evaluation.report.plots import PLOTS
from distill.evaluation.report.render import embedded_images, markdown, relative_images
from distill.evaluation.stats import Comparison, SeedView


def _row(model: str, role: str, ndcg: float, params: int = 10, distilled: bool = False) -> Row:
    return Row(
        model=model,
        role=role,
        distilled=distilled,
        metrics={m: Stat(ndcg if m == "ndcg@10" else 0.1, 0.0) for m in REPORT_METRICS},
        params=params,
        train_seconds=1.0,
        users_per_second=10.0,
    )


def _cost(student_vs_sasrec: float) -> ServingCost:
    return ServingCost(
        seconds_per_user={"student": 1.0, "sasrec": 1.0 / student_vs_sasrec},
        student_vs_sasrec=student_vs_sasrec,
        teacher_vs_student=None,
        teacher_nightly_seconds={"lm_encode": 0.0, "adaptation": 0.0},
        users=3,
    )


def _comparison(gain: float, ci_low: float, p: float = 0.01) -> Comparison:
    """kd vs the SASRec: `gain` with the 95 % interval (ci_low, gain + 0.05)."""
    seeds = SeedView([0.1 * (1 + gain)] * 2, [0.1] * 2, 0.1 * gain, 0.0, 2)
    return Comparison(
        "ndcg@10",
        "Student sequential (KD kl)",
        "SASRec (no teacher)",
        0.1 * (1 + gain),
        0.1,
        gain,
        (ci_low, gain + 0.05),
        p,
        10,
        seeds,
    )


def _report(gain: float, ci_low: float, teacher: float, student_vs_sasrec: float) -> Report:
    return Report(
        dataset="ml@1",
        split="leave-one-out",
        seeds=[0, 1],
        rows=[
            _row("EASE", "baseline", 0.04),
            _row("SASRec (no teacher)", "baseline", 0.100),
            _row("Teacher", "teacher", teacher),
            _row("Student sequential (KD kl)", "student", 0.1 * (1 + gain), distilled=True),
        ],
        breakdown={"activity": {}, "popularity": {}},
        tests={"kd_vs_best_plain": _comparison(gain, ci_low)},
        cost=_cost(student_vs_sasrec),
    )


def test_bars_hold_just_inside_their_targets():
    out = bars(_report(gain=0.05, ci_low=0.001, teacher=0.1101, student_vs_sasrec=1.10))
    assert {k: v.holds for k, v in out.items()} == {
        "beats_best_plain": True,
        "teacher_vs_sasrec": True,
        "serving_cost": True,
    }


@pytest.mark.parametrize(
    ("kwargs", "failing"),
    [
        ({"gain": 0.049}, "beats_best_plain"),
        ({"ci_low": 0.0}, "beats_best_plain"),  # significant = the CI excludes 0
        ({"teacher": 0.1099}, "teacher_vs_sasrec"),
        ({"student_vs_sasrec": 1.11}, "serving_cost"),
    ],
)
def test_each_bar_fails_just_past_its_target(kwargs, failing):
    values = {"gain": 0.05, "ci_low": 0.01, "teacher": 0.12, "student_vs_sasrec": 1.0, **kwargs}
    out = bars(_report(**values))
    assert [k for k, v in out.items() if not v.holds] == [failing]


def test_serving_cost_bar_needs_no_more_parameters_than_sasrec():
    report = _report(gain=0.1, ci_low=0.01, teacher=0.12, student_vs_sasrec=1.0)
    report.rows[-1] = dataclasses.replace(report.rows[-1], params=11)
    assert not bars(report)["serving_cost"].holds


def _model_row(name: str, per_user: list[list[float]]) -> ModelRow:
    results = [
        EvalResult({"ndcg@10": float(np.mean(v))}, {"ndcg@10": np.array(v)}, np.arange(len(v)))
        for v in per_user
    ]
    return ModelRow(name, "student", False, results, 1, [0.0] * len(results), 1.0)


def test_paired_test_by_hand_and_pairs_a_deterministic_control_with_every_seed():
    treated = _model_row("kd", [[0.2, 0.4, 0.6], [0.3, 0.5, 0.7]])
    control = _model_row("plain", [[0.1, 0.3, 0.5]])  # one result: paired with both seeds
    out = paired_test(treated, control)
    # users are the unit: seed means 0.25, 0.45, 0.65 against 0.1, 0.3, 0.5
    assert out.n_pairs == 3 and (out.treated, out.control) == ("kd", "plain")
    assert out.relative_gain == pytest.approx(0.45 / 0.3 - 1)
    # three users, each +0.15: Wilcoxon's exact two-sided p for n = 3 all positive is 2/8
    assert out.p_value == pytest.approx(0.25)
    assert out.seeds.treated == pytest.approx([0.4, 0.5]) and out.seeds.control == [0.3]
    assert out.seeds.diff_mean == pytest.approx(0.15) and out.seeds.favour_treated == 2
    assert paired_test(control, control).p_value == 1.0


def test_a_model_row_reports_its_seeds_mean_and_spread():
    row = ModelRow(
        "kd",
        "student",
        True,
        [
            EvalResult({m: v for m in REPORT_METRICS}, {}, np.arange(2))
            for v in (0.1, 0.3)  # two seeds
        ],
        params=7,
        train_seconds=[2.0, 4.0],
        users_per_second=5.0,
        valid=[0.2, 0.4],
    ).row()
    assert row.metrics["ndcg@10"] == Stat(pytest.approx(0.2), pytest.approx(0.1))
    assert row.train_seconds == 3.0
    assert row.valid is not None and row.valid.seeds == [0.2, 0.4]
    assert row.as_json()["valid_ndcg@10"]["mean"] == pytest.approx(0.3)


def _full_report() -> Report:
    rows = [_row(name, role, 0.1) for name, role in (("EASE", "baseline"), ("Teacher", "teacher"))]
    rows.append(_row("Student", "student", 0.1))
    by_bucket = {b: {"users": 3, **{r.model: 0.1 for r in rows}} for b in ("heavy", "cold")}
    return Report(
        dataset="d",
        split="leave-one-out",
        seeds=[0],
        rows=rows,
        breakdown={"activity": by_bucket, "popularity": {}},
    )


def test_markdown_tables_fit_a_browser_and_images_come_last():
    text = markdown(_full_report(), [("Validation curve", "data:image/png;base64,AAAA")])
    table_lines = [line for line in text.splitlines() if line.startswith("|")]
    assert table_lines and max(line.count("|") - 1 for line in table_lines) <= 7
    assert "| model | cold | heavy |" in text  # one row per model, buckets in their natural order
    assert "| Teacher | 0.1000 | 0.1000 |" in text
    assert text.rstrip().endswith("![Validation curve](data:image/png;base64,AAAA)")


def test_report_images_link_the_plots_on_disk_and_embed_them_for_the_ui(tmp_path):
    (tmp_path / "val_ndcg.png").write_bytes(b"\x89PNG fake")
    assert relative_images(tmp_path) == [(PLOTS[0][1], "val_ndcg.png")]
    [(caption, src)] = embedded_images(tmp_path)
    assert src == "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()


def test_report_round_trips_through_report_json_and_finishes_once():
    report = _report(gain=0.06, ci_low=0.02, teacher=0.12, student_vs_sasrec=1.0)
    cost, report.cost = report.cost, None
    report.settings = {"teacher_fingerprint": "abc", "student": {"kind": "sequential"}}
    served = {"previous_model": {"version": "v1"}, "delta_vs_previous": {"ndcg@10": 0.01}}
    finish(report, cost, served)
    assert set(report.bars) == {"beats_best_plain", "teacher_vs_sasrec", "serving_cost"}
    # the bars of the finished report, worked out by hand: +6 %, p 0.01 holds; 0.12 / 0.1
    # = 1.200x holds; 1.00x the SASRec's serving time with as many parameters holds
    assert report.bars["beats_best_plain"].value == (
        "+6.0% vs SASRec (no teacher) (95% CI +2.0% … +11.0%), p=0.01"
    )
    assert report.bars["teacher_vs_sasrec"].value == "1.200x (0.1200 vs 0.1000)"
    assert all(bar.holds for bar in report.bars.values())
    flat = json.loads(json.dumps(report.as_json()))  # report.json's contract: flat keys
    assert flat["teacher_fingerprint"] == "abc" and flat["cost"]["student_vs_sasrec"] == 1.0
    assert flat["kd_vs_best_plain"]["p_value"] == 0.01 and flat["bars"]["serving_cost"]["holds"]
    assert flat["rows"][2]["metrics"]["ndcg@10"] == {"mean": 0.12, "std": 0.0}
    assert flat["previous_model"] == {"version": "v1"} and flat["protocol"] == "standard"
    assert Report.from_json(flat) == report  # report.json read back is the same report
    with pytest.raises(ValueError, match="already finished"):
        finish(report, cost, {})
    text = markdown(report)
    assert "| Teacher | teacher | 0.1000 | 0.1200 | 0.1000 | 0.1000 |" in text
    assert "| Teacher | 10 | 1.0 | 10 |" in text  # the cost table: params, train s, users/s
    assert (
        "(SASRec (no teacher); per-user ndcg@10): +6.0% (95% CI +2.0% … +11.0%, significant), "
        "Wilcoxon p = 0.01, 10 users; seeds: 2/2 favour Student sequential (KD kl)"
    ) in text
    assert "- teacher_vs_sasrec: teacher >= 1.10x the plain SASRec's NDCG@10" in text
