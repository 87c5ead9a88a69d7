"""The product's quality bars, evaluated on a report, and the step that finishes a report."""

from __future__ import annotations

from distill.evaluation.report.model import Bar, Report, ServingCost


def finish(
    report: Report,
    cost: ServingCost | None,
    served: dict,
    new_items: dict | None = None,
    frontier: dict | None = None,
) -> Report:
    """Add what is known once every model is trained, then evaluate the bars. Once."""
    if report.bars:
        raise ValueError("report already finished")
    report.cost, report.served, report.new_items = cost, dict(served), new_items
    report.frontier = frontier
    report.bars = bars(report)
    return report


def bars(report: Report) -> dict[str, Bar]:
    """The quality bars of the product, evaluated on a report."""
    teacher, sasrec = report.row(role="teacher"), report.sasrec()
    out: dict[str, Bar] = {}
    gain = report.tests.get("kd_vs_best_plain")
    if gain:
        out["beats_best_plain"] = Bar(
            target=">= +5% NDCG@10 over the best undistilled model, 95% CI of the gain above 0",
            value=f"{gain.relative_gain:+.1%} vs {gain.control} (95% CI {gain.ci[0]:+.1%} … "
            f"{gain.ci[1]:+.1%}), p={gain.p_value:.3g}",
            holds=gain.relative_gain >= 0.05 and gain.ci[0] > 0,
        )
    if teacher and sasrec:
        out["teacher_vs_sasrec"] = Bar(
            target="teacher >= 1.10x the plain SASRec's NDCG@10",
            value=f"{teacher.ndcg() / sasrec.ndcg():.3f}x "
            f"({teacher.ndcg():.4f} vs {sasrec.ndcg():.4f})",
            holds=teacher.ndcg() >= 1.10 * sasrec.ndcg(),
        )
    cost = report.cost
    if cost and cost.student_vs_sasrec is not None:
        ratio = cost.student_vs_sasrec
        kd_row = report.row(distilled=True)
        fewer = kd_row is None or sasrec is None or kd_row.params <= sasrec.params
        out["serving_cost"] = Bar(
            target="student serves at most at the plain SASRec's cost: same path (user vector + "
            "one FAISS search), no more parameters, measured time <= 1.10x (timing noise)",
            value=f"{ratio:.2f}x the SASRec's time per user",
            holds=ratio <= 1.10 and fewer,
        )
    if report.new_items:
        out.update(new_item_bars(report.new_items))
    return out


def new_item_bars(section: dict) -> dict[str, Bar]:
    """The item-cold-start bars, on the test half (distilled = the distilled student's row)."""
    kd = next((r for r in section["rows"] if r["distilled"] and r["role"] == "student"), None)
    if kd is None:
        return {}

    def mean(row: dict, view: str, metric: str) -> float:
        return row[view][metric]["mean"]

    out: dict[str, Bar] = {}
    share = mean(kd, "new_among_all", "hr@10") / max(mean(kd, "warm", "hr@10"), 1e-12)
    out["new_items_visible"] = Bar(
        target="new among all: HR@10 on new-item targets >= 10% of the student's warm HR@10",
        value=f"{share:.1%} ({mean(kd, 'new_among_all', 'hr@10'):.4f} vs "
        f"{mean(kd, 'warm', 'hr@10'):.4f})",
        holds=share >= 0.10,
    )
    test = section["tests"].get("vs_dropoutnet")
    if test:
        out["new_items_vs_dropoutnet"] = Bar(
            target="new among all: NDCG@10 >= 1.10x the DropoutNet-style student, 95% CI of the "
            "gain above 0",
            value=f"{1 + test['relative_gain']:.2f}x (95% CI {1 + test['ci'][0]:.2f}x … "
            f"{1 + test['ci'][1]:.2f}x), p={test['p_value']:.3g}",
            holds=test["relative_gain"] >= 0.10 and test["ci"][0] > 0,
        )
    among_new = mean(kd, "new_among_new", "ndcg@10")
    out["new_among_new"] = Bar(
        target="new among new: NDCG@10 >= 0.30",
        value=f"{among_new:.4f}",
        holds=among_new >= 0.30,
    )
    sasrec = next((r for r in section["rows"] if r["model"].startswith("SASRec (")), None)
    if sasrec is not None:
        ratio = mean(kd, "warm", "ndcg@10") / max(mean(sasrec, "warm", "ndcg@10"), 1e-12)
        out["new_items_warm"] = Bar(
            target="warm: NDCG@10 >= 0.99x the plain SASRec's (the content path costs no more)",
            value=f"{ratio:.3f}x",
            holds=ratio >= 0.99,
        )
    return out
