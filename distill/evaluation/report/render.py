"""The report rendered: markdown (report.md, the Prefect artifact and the terminal share it),
its images, and the two writers of a run folder's report files."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

from distill.evaluation.report.build import BUCKETS
from distill.evaluation.report.model import ModelRow, Report, Stat
from distill.evaluation.report.per_user import write_per_user
from distill.evaluation.report.plots import plots, write_plots
from distill.evaluation.stats import Comparison
from storage.atomic import atomic_write_json, atomic_write_text
from storage.rundir import RunDir

TRAIN_SECONDS_NOTE = (
    "† train s: each model's total training time, mean over seeds, including earlier runs whose "
    "checkpoints (or cached teacher heads) this run resumed or reused; this run's own stage "
    "times are in the log line `stage timings (s)`."
)


def relative_images(folder: Path) -> list[tuple[str, str]]:
    """Plots as links relative to report.md (renders in editors and on file hosts)."""
    return [(caption, path.name) for caption, path in plots(folder)]


def embedded_images(folder: Path) -> list[tuple[str, str]]:
    """Plots as data URIs: the Prefect UI renders them inside the markdown artifact."""
    return [
        (caption, "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode())
        for caption, path in plots(folder)
    ]


def markdown(
    report: Report, images: Sequence[tuple[str, str]] = (), publish: str | None = None
) -> str:
    """The report as markdown; `images` are (caption, src) pairs shown at the end; `publish` is
    the regression gate's decision once known (it is not part of report.json, which the bundle
    carries and which is written before publishing).

    Tables stay narrow (at most 7 columns) so that they fit a browser window without scrolling:
    quality and cost are separate tables, and breakdowns have one row per model."""
    settings = report.settings
    lines = [
        f"# kdrec report — {report.dataset}",
        "",
        f"split: {report.split}, seeds: {report.seeds}, test fold, full ranking, "
        f"{report.protocol} protocol (test input = train + validation items)",
        "",
        f"regime: {settings.get('regime', 'full')}; "
        f"teacher fingerprint: {settings.get('teacher_fingerprint', '-')}; student: "
        f"{settings.get('student', {}).get('kind', '-')}; distillation: "
        f"{settings.get('distill', {}).get('loss', '-')}, alpha "
        f"{settings.get('distill', {}).get('alpha', '-')}",
        "",
        "| model | role | HR@10 | NDCG@10 | MRR | Recall@20 |",
        "|---|---|---|---|---|---|",
    ]

    def cell(metrics: dict[str, Stat], key: str) -> str:
        value = metrics[key]
        return f"{value.mean:.4f}" + (f" ± {value.std:.4f}" if value.std else "")

    for r in report.rows:
        m = r.metrics
        lines.append(
            f"| {r.model} | {r.role} | {cell(m, 'hr@10')} | {cell(m, 'ndcg@10')} | "
            f"{cell(m, 'mrr')} | {cell(m, 'recall@20')} |"
        )
    lines += ["", "Cost:", "", "| model | params | train s† | users/s |", "|---|---|---|---|"]
    for r in report.rows:
        lines.append(
            f"| {r.model} | {r.params:,} | {r.train_seconds:.1f} | {r.users_per_second:,.0f} |"
        )
    lines += ["", TRAIN_SECONDS_NOTE]
    for key, title in (
        ("kd_vs_no_kd", "Distilled vs the same model without the teacher"),
        ("kd_vs_best_plain", "Distilled vs the best undistilled model"),
    ):
        if key in report.tests:
            k = report.tests[key]
            lines += ["", f"{title} ({k.control}; per-user {k.metric}): {k.line()}"]
    for title, key in (("user activity", "activity"), ("test-item popularity", "popularity")):
        part = report.breakdown[key]
        if not part:
            continue
        buckets = sorted(part, key=BUCKETS.index)  # report.json's keys come back sorted
        models = [r.model for r in report.rows if r.model in part[buckets[0]]]
        lines += [
            "",
            f"NDCG@10 by {title}:",
            "",
            "| model | " + " | ".join(buckets) + " |",
            "|---" * (len(buckets) + 1) + "|",
            "| users | " + " | ".join(str(part[b]["users"]) for b in buckets) + " |",
        ]
        for model in models:
            lines.append(
                f"| {model} | " + " | ".join(f"{part[b][model]:.4f}" for b in buckets) + " |"
            )
    if report.new_items:
        lines += new_items_markdown(report.new_items)
    if report.frontier:
        lines += frontier_markdown(report.frontier)
    if report.bars:
        lines += ["", "Quality bars:", ""]
        for name, bar in report.bars.items():
            lines.append(
                f"- {name}: {bar.target} — {bar.value} — {'holds' if bar.holds else 'NOT met'}"
            )
    if report.served.get("versus_champion"):
        lines += ["", champion_line(report.served["versus_champion"])]
    if publish:
        lines += ["", f"Publish (regression gate): {publish}"]
    for caption, src in images:
        lines += ["", f"![{caption}]({src})"]
    return "\n".join(lines) + "\n"


def frontier_markdown(section: dict) -> list[str]:
    """The lightweight students' frontier: quality and serving cost per shape and arm, and the
    paired test of distilled against plain per shape."""
    lines = [
        "",
        "Lightweight students (test NDCG@10, mean over seeds; latency of one history request "
        "through the serving path, one thread; int8 = int8 user tower + SQ8 index):",
        "",
        "| shape | teacher | valid NDCG@10 | test NDCG@10 | params | p50 ms | int8 test |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in section["rows"]:
        lines.append(
            f"| {r['dim']}x{r['n_layers']} | {'distilled' if r['distilled'] else 'none'} | "
            f"{r['valid_ndcg@10']:.4f} | {r['test_ndcg@10']:.4f} ± {r['test_ndcg@10_std']:.4f} | "
            f"{r['params']:,} | {r['p50_ms']:.2f} | {r['int8_test_ndcg@10']:.4f} |"
        )
    for t in section["tests"]:
        lines.append(
            f"- {t['dim']}x{t['n_layers']}: distilled vs the same shape without the teacher "
            + Comparison.from_json(t).line()
        )
    return lines


def champion_line(versus: dict) -> str:
    """Both models' validation NDCG@10 on this run's validation fold, and the paired test."""
    test = versus["test"]
    return (
        f"Validation vs the current model {versus['champion_version']}, both on this run's "
        f"validation fold ({versus['targets']} targets, {versus['unknown_targets']} of them "
        f"items the current model does not know): NDCG@10 {versus['challenger']['ndcg@10']:.4f} "
        f"vs {versus['champion']['ndcg@10']:.4f} ({Comparison.from_json(test).line()})"
    )


def new_items_markdown(section: dict) -> list[str]:
    """The new-items section: NDCG@10 and HR@10 of every row four ways (test half), the scale
    each content path was calibrated to on the validation half (by the section's rule), the
    baselines' tuning on validation and the paired comparisons."""
    targets = section["targets"]
    lines = [
        "",
        f"New items ({section['items']} items held out with all their interactions, share "
        f"{section['share']:g}, seed {section['seed']}; test half: {targets['test']} targets of "
        f"{section['users']['test']} users; full ranking; scales chosen on the validation half "
        f"by {RULES.get(section.get('rule', 'warm_budget'), section.get('rule'))}):",
    ]
    for metric, title in (("ndcg@10", "NDCG@10"), ("hr@10", "HR@10")):
        lines += [
            "",
            f"| model | warm {title} | new among new | new among all | mixed | scale |",
            "|---|---|---|---|---|---|",
        ]
        for row in section["rows"]:
            cells = [
                f"{row[v][metric]['mean']:.4f}" if v in row else "-"
                for v in ("warm", "new_among_new", "new_among_all", "mixed")
            ]
            scale, unmet = row.get("scale") or [], set(row.get("floor_unmet", []))
            shown = "/".join(
                f"{x:g}" + (" (floor unmet)" * (i in unmet)) for i, x in enumerate(scale)
            )
            shown = shown or "-"
            lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {shown} |")
    for name, tuned in section.get("tuning", {}).items():
        grid = ", ".join(f"{m}: {v:.4f}" for m, v in tuned["valid_mixed_ndcg@10"].items())
        lines += [
            "",
            f"Tuned on validation ({name}, mixed NDCG@10): {grid}; chosen: {tuned['chosen']}",
        ]
    for key, test in section.get("tests", {}).items():
        lines += [
            "",
            f"{test['treated']} vs {test['control']} ({key}; {test['view']}, per-user "
            f"{test['metric']}): {Comparison.from_json(test).line()}",
        ]
    return lines


RULES = {
    "mixed": "the best mixed NDCG@10",
    "warm_budget": "the best new-among-all NDCG@10 within the warm budget (content.max_warm_loss)",
}


def save_report(report: Report, run: RunDir, rows: list[ModelRow]) -> None:
    """report.json (written once per run: the bundle carries the same bytes), the per-user
    results (per_user.parquet) and the plots;
    report.md is written once the gate has decided (`write_markdown`)."""
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.report_json, report.as_json())
    write_per_user(run.per_user, rows)
    write_plots(report, run.path, rows)


def write_markdown(report: Report, run: RunDir, publish: str | None = None) -> None:
    """report.md, the one writer: the report with the run's plots and the gate's decision."""
    atomic_write_text(run.report_md, markdown(report, relative_images(run.path), publish=publish))
