"""The evaluation report: one table for every model (same harness), breakdowns, a paired test.

Written as report.json (a stable contract that scripts read), report.md and PNG plots.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.evaluation.harness import EvalResult
from distill.evaluation.stats import paired
from storage.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from storage.rundir import RunDir
from storage.split import Split

REPORT_METRICS = ("hr@10", "ndcg@10", "mrr", "recall@20")


@dataclass
class ModelRow:
    """One model's results over one or more seeds."""

    model: str
    role: str  # baseline | teacher | student
    distilled: bool
    results: list[EvalResult]
    params: int
    train_seconds: list[float]
    users_per_second: float
    history: list[list[dict]] = field(default_factory=list)  # per seed: per-epoch training log
    valid: list[float] = field(default_factory=list)  # per seed: validation NDCG@10 (students)

    def metric(self, name: str) -> dict[str, float]:
        values = np.array([r.metrics[name] for r in self.results])
        return {"mean": float(values.mean()), "std": float(values.std())}

    def as_json(self) -> dict:
        return {
            "model": self.model,
            "role": self.role,
            "distilled": self.distilled,
            "metrics": {m: self.metric(m) for m in REPORT_METRICS},
            "params": int(self.params),
            "train_seconds": float(np.mean(self.train_seconds)),
            "users_per_second": float(self.users_per_second),
            **(
                {
                    "valid_ndcg@10": {
                        "mean": float(np.mean(self.valid)),
                        "std": float(np.std(self.valid)),
                        "seeds": [float(v) for v in self.valid],
                    }
                }
                if self.valid
                else {}
            ),
        }


def paired_test(treated: ModelRow, control: ModelRow, metric: str = "ndcg@10") -> dict:
    """Paired t-test of two report rows (`paired`)."""
    return paired(
        treated.results, control.results, names=(treated.model, control.model), metric=metric
    )


def activity_buckets(split: Split, users: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """cold / medium / heavy by train-history length terciles; returns labels and thresholds."""
    lengths = np.diff(split.train.indptr)[users]
    lo, hi = np.quantile(lengths, [1 / 3, 2 / 3])
    labels = np.where(lengths <= lo, "cold", np.where(lengths <= hi, "medium", "heavy"))
    return labels, {
        "cold": f"<= {lo:.0f} train items",
        "medium": f"<= {hi:.0f}",
        "heavy": f"> {hi:.0f}",
    }


RARE_MAX = 5  # an item with at most this many train interactions is rare


def popularity_buckets(split: Split, users: np.ndarray, fold: str = "test") -> np.ndarray:
    """head (top 20% items by train count) / torso (next 30%) / tail, by each user's test item."""
    counts = np.asarray(split.train.sum(axis=0)).ravel()
    rank = np.empty(len(counts), dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(counts))
    frac = rank[_first_targets(split, users, fold)] / len(counts)
    return np.where(frac < 0.2, "head", np.where(frac < 0.5, "torso", "tail"))


def rare_items(split: Split, users: np.ndarray, fold: str = "test") -> np.ndarray:
    """(U,) bool: the user's test item has at most RARE_MAX train interactions."""
    counts = np.asarray(split.train.sum(axis=0)).ravel()
    return counts[_first_targets(split, users, fold)] <= RARE_MAX


def _first_targets(split: Split, users: np.ndarray, fold: str) -> np.ndarray:
    target = split.matrix(fold)[users]
    return np.array([target.indices[target.indptr[i]] for i in range(len(users))], dtype=np.int64)


BUCKETS = ("cold", "medium", "heavy", "head", "torso", "tail", "rare")


def breakdown(
    rows: list[ModelRow], buckets: dict[str, np.ndarray], metric: str = "ndcg@10"
) -> dict:
    """Each row's mean `metric` over the users of each bucket (a bool mask over the users; buckets
    may overlap: rare items are tail items too)."""
    out: dict[str, dict] = {}
    for bucket, keep in buckets.items():
        if keep.any():
            out[bucket] = {
                "users": int(keep.sum()),
                **{
                    row.model: float(
                        np.mean([r.per_user[metric][keep].mean() for r in row.results])
                    )
                    for row in rows
                },
            }
    return out


SETTINGS = ("teacher_fingerprint", "student", "sasrec", "distill", "content", "loop")
TESTS = ("kd_vs_no_kd", "kd_vs_best_plain")
SERVED = ("previous_model", "delta_vs_previous", "versus_champion")


@dataclass
class Report:
    """One run's comparison of every model on the test fold (standard protocol).

    Built by `build_report` (the student stage's `quality`), finished once by `finish` (serving
    cost, the comparison with the served model, the product's bars), written once by
    `save_report` (report.json, which the bundle carries byte for byte, and the plots) and, after
    the gate, `write_markdown` (report.md); rendered by one function, `markdown`, for report.md,
    the Prefect artifact and the terminal.
    `as_json()` is report.json's contract (flat keys, which scripts read)."""

    dataset: str
    split: str
    seeds: list[int]
    rows: list[dict]  # ModelRow.as_json() per model
    breakdown: dict
    settings: dict = field(default_factory=dict)  # SETTINGS: what the students were trained with
    tests: dict = field(default_factory=dict)  # TESTS: paired tests of the distilled student
    protocol: str = "standard"  # at test a model reads everything before the test item
    cost: dict | None = None  # serving cost per user (distill.student.stage.serving_cost)
    served: dict = field(default_factory=dict)  # SERVED: vs the model being served
    bars: dict = field(default_factory=dict)  # the product's quality bars (`bars`)
    # the item-cold-start protocol's section (evaluation/new_item_rows.py), with split.new_items
    new_items: dict | None = None
    # the lightweight students' frontier (evaluation/frontier.py), with `kdrec quality --frontier`
    frontier: dict | None = None

    def finish(
        self,
        cost: dict | None,
        served: dict,
        new_items: dict | None = None,
        frontier: dict | None = None,
    ) -> Report:
        """Add what is known once every model is trained; evaluates the bars. Once."""
        if self.bars:
            raise ValueError("report already finished")
        self.cost, self.served, self.new_items = cost, dict(served), new_items
        self.frontier = frontier
        self.bars = bars(self.as_json())
        return self

    def as_json(self) -> dict:
        out = {
            "dataset": self.dataset,
            "split": self.split,
            "protocol": self.protocol,
            "seeds": self.seeds,
            "rows": self.rows,
            "breakdown": self.breakdown,
            **self.settings,
            **self.tests,
            **self.served,
        }
        if self.cost is not None:
            out["cost"] = self.cost
        if self.new_items is not None:
            out["new_items"] = self.new_items
        if self.frontier is not None:
            out["frontier"] = self.frontier
        if self.bars:
            out["bars"] = self.bars
        return out

    @classmethod
    def from_json(cls, data: dict) -> Report:
        """A report read back from report.json (unknown keys are kept, under settings)."""
        core = (
            "dataset",
            "split",
            "protocol",
            "seeds",
            "rows",
            "breakdown",
            "cost",
            "bars",
            "new_items",
            "frontier",
        )
        return cls(
            dataset=data["dataset"],
            split=data["split"],
            seeds=data["seeds"],
            rows=data["rows"],
            breakdown=data["breakdown"],
            settings={k: v for k, v in data.items() if k not in core + TESTS + SERVED},
            tests={k: data[k] for k in TESTS if k in data},
            protocol=data.get("protocol", "standard"),
            cost=data.get("cost"),
            served={k: data[k] for k in SERVED if k in data},
            bars=data.get("bars", {}),
            new_items=data.get("new_items"),
            frontier=data.get("frontier"),
        )

    def summary_rows(self) -> list[dict]:
        """One flat row per model (mean test metrics, params): the Prefect table artifact."""
        return [
            {
                "model": r["model"],
                "role": r["role"],
                **{m: round(v["mean"], 4) for m, v in r["metrics"].items()},
                "params": r["params"],
            }
            for r in self.rows
        ]


def build_report(
    *,
    dataset: str,
    split: Split,
    seeds: list[int],
    rows: list[ModelRow],
    settings: dict | None = None,
    tests: dict | None = None,
) -> Report:
    users = rows[0].results[0].users
    activity, thresholds = activity_buckets(split, users)
    popularity = popularity_buckets(split, users)
    return Report(
        dataset=dataset,
        split="leave-one-out" if split.name == "loo" else split.name,
        seeds=seeds,
        rows=[r.as_json() for r in rows],
        breakdown={
            "activity": breakdown(rows, {b: activity == b for b in BUCKETS[:3]}),
            "activity_thresholds": thresholds,
            "popularity": breakdown(
                rows,
                {b: popularity == b for b in BUCKETS[3:6]} | {"rare": rare_items(split, users)},
            ),
        },
        settings=dict(settings or {}),
        tests=dict(tests or {}),
    )


def bars(report: dict) -> dict[str, dict]:
    """The quality bars of the product, evaluated on a report."""
    teacher = next((r for r in report["rows"] if r["role"] == "teacher"), None)
    sasrec = next((r for r in report["rows"] if r["model"].startswith("SASRec")), None)
    out: dict[str, dict] = {}

    def ndcg(row: dict) -> float:
        return row["metrics"]["ndcg@10"]["mean"]

    gain = report.get("kd_vs_best_plain")
    if gain:
        out["beats_best_plain"] = {
            "target": ">= +5% NDCG@10 over the best undistilled model, p < 0.05",
            "value": f"{gain['relative_gain']:+.1%} vs {gain['control']}, p={gain['p_value']:.3g}",
            "holds": gain["relative_gain"] >= 0.05 and gain["p_value"] < 0.05,
        }
    if teacher and sasrec:
        out["teacher_vs_sasrec"] = {
            "target": "teacher >= 1.10x the plain SASRec's NDCG@10",
            "value": f"{ndcg(teacher) / ndcg(sasrec):.3f}x "
            f"({ndcg(teacher):.4f} vs {ndcg(sasrec):.4f})",
            "holds": ndcg(teacher) >= 1.10 * ndcg(sasrec),
        }
    cost = report.get("cost")
    if cost and cost.get("student_vs_sasrec") is not None:
        ratio = cost["student_vs_sasrec"]
        kd_row = next((r for r in report["rows"] if r["distilled"]), None)
        fewer = kd_row is None or sasrec is None or kd_row["params"] <= sasrec["params"]
        out["serving_cost"] = {
            "target": "student serves at most at the plain SASRec's cost: same path (user vector + "
            "one FAISS search), no more parameters, measured time <= 1.10x (timing noise)",
            "value": f"{ratio:.2f}x the SASRec's time per user",
            "holds": ratio <= 1.10 and fewer,
        }
    if report.get("new_items"):
        out.update(new_item_bars(report["new_items"]))
    return out


def new_item_bars(section: dict) -> dict[str, dict]:
    """The item-cold-start bars, on the test half (distilled = the distilled student's row)."""
    kd = next((r for r in section["rows"] if r["distilled"] and r["role"] == "student"), None)
    if kd is None:
        return {}

    def mean(row: dict, view: str, metric: str) -> float:
        return row[view][metric]["mean"]

    out: dict[str, dict] = {}
    share = mean(kd, "new_among_all", "hr@10") / max(mean(kd, "warm", "hr@10"), 1e-12)
    out["new_items_visible"] = {
        "target": "new among all: HR@10 on new-item targets >= 10% of the student's warm HR@10",
        "value": f"{share:.1%} ({mean(kd, 'new_among_all', 'hr@10'):.4f} vs "
        f"{mean(kd, 'warm', 'hr@10'):.4f})",
        "holds": share >= 0.10,
    }
    test = section["tests"].get("vs_dropoutnet")
    if test:
        out["new_items_vs_dropoutnet"] = {
            "target": "new among all: NDCG@10 >= 1.10x the DropoutNet-style student, p < 0.05",
            "value": f"{1 + test['relative_gain']:.2f}x, p={test['p_value']:.3g}",
            "holds": test["relative_gain"] >= 0.10 and test["p_value"] < 0.05,
        }
    among_new = mean(kd, "new_among_new", "ndcg@10")
    out["new_among_new"] = {
        "target": "new among new: NDCG@10 >= 0.30",
        "value": f"{among_new:.4f}",
        "holds": among_new >= 0.30,
    }
    sasrec = next((r for r in section["rows"] if r["model"].startswith("SASRec (")), None)
    if sasrec is not None:
        ratio = mean(kd, "warm", "ndcg@10") / max(mean(sasrec, "warm", "ndcg@10"), 1e-12)
        out["new_items_warm"] = {
            "target": "warm: NDCG@10 >= 0.99x the plain SASRec's (the content path costs no more)",
            "value": f"{ratio:.3f}x",
            "holds": ratio >= 0.99,
        }
    return out


TRAIN_SECONDS_NOTE = (
    "† train s: each model's total training time, mean over seeds, including earlier runs whose "
    "checkpoints (or cached teacher heads) this run resumed or reused; this run's own stage "
    "times are in the log line `stage timings (s)`."
)


PLOTS = (  # file name in the run folder, caption
    ("val_ndcg.png", "Validation NDCG@10 by epoch, students, seed 0"),
    ("activity.png", "Test NDCG@10 by user activity"),
    ("frontier.png", "Lightweight students: test NDCG@10 against p50 latency per request"),
)


def plots(folder: Path) -> list[tuple[str, Path]]:
    """The report's plots that exist in `folder`, as (caption, path)."""
    return [(caption, folder / name) for name, caption in PLOTS if (folder / name).exists()]


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
    report: Report | dict, images: Sequence[tuple[str, str]] = (), publish: str | None = None
) -> str:
    """The report as markdown; `images` are (caption, src) pairs shown at the end; `publish` is
    the regression gate's decision once known (it is not part of report.json, which the bundle
    carries and which is written before publishing).

    Tables stay narrow (at most 7 columns) so that they fit a browser window without scrolling:
    quality and cost are separate tables, and breakdowns have one row per model."""
    if isinstance(report, Report):
        report = report.as_json()
    lines = [
        f"# kdrec report — {report['dataset']}",
        "",
        f"split: {report['split']}, seeds: {report['seeds']}, test fold, full ranking, "
        f"{report.get('protocol', 'standard')} protocol (test input = train + validation items)",
        "",
        f"teacher fingerprint: {report.get('teacher_fingerprint', '-')}; student: "
        f"{report.get('student', {}).get('kind', '-')}; distillation: "
        f"{report.get('distill', {}).get('loss', '-')}, alpha "
        f"{report.get('distill', {}).get('alpha', '-')}",
        "",
        "| model | role | HR@10 | NDCG@10 | MRR | Recall@20 |",
        "|---|---|---|---|---|---|",
    ]

    def cell(metrics: dict, key: str) -> str:
        value = metrics[key]
        return f"{value['mean']:.4f}" + (f" ± {value['std']:.4f}" if value["std"] else "")

    for r in report["rows"]:
        m = r["metrics"]
        lines.append(
            f"| {r['model']} | {r['role']} | {cell(m, 'hr@10')} | {cell(m, 'ndcg@10')} | "
            f"{cell(m, 'mrr')} | {cell(m, 'recall@20')} |"
        )
    lines += ["", "Cost:", "", "| model | params | train s† | users/s |", "|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['train_seconds']:.1f} | "
            f"{r['users_per_second']:,.0f} |"
        )
    lines += ["", TRAIN_SECONDS_NOTE]
    for key, title in (
        ("kd_vs_no_kd", "Distilled vs the same model without the teacher"),
        ("kd_vs_best_plain", "Distilled vs the best undistilled model"),
    ):
        if key in report:
            k = report[key]
            lines += [
                "",
                f"{title} ({k['control']}; paired t-test on per-user {k['metric']}, "
                f"{k['n_pairs']} pairs): {k['relative_gain']:+.1%}, p = {k['p_value']:.3g}",
            ]
    for title, key in (("user activity", "activity"), ("test-item popularity", "popularity")):
        part = report["breakdown"][key]
        if not part:
            continue
        buckets = sorted(part, key=BUCKETS.index)  # report.json's keys come back sorted
        models = [r["model"] for r in report["rows"] if r["model"] in part[buckets[0]]]
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
    if report.get("new_items"):
        lines += new_items_markdown(report["new_items"])
    if report.get("frontier"):
        lines += frontier_markdown(report["frontier"])
    if report.get("bars"):
        lines += ["", "Quality bars:", ""]
        for name, bar in report["bars"].items():
            lines.append(
                f"- {name}: {bar['target']} — {bar['value']} — "
                f"{'holds' if bar['holds'] else 'NOT met'}"
            )
    if report.get("versus_champion"):
        lines += ["", champion_line(report["versus_champion"])]
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
            f"{t['relative_gain']:+.1%}, p = {t['p_value']:.3g} ({t['n_pairs']} pairs)"
        )
    return lines


def champion_line(versus: dict) -> str:
    """Both models' validation NDCG@10 on this run's validation fold, and the paired test."""
    test = versus["test"]
    return (
        f"Validation vs the current model {versus['champion_version']}, both on this run's "
        f"validation fold ({versus['targets']} targets, {versus['unknown_targets']} of them "
        f"items the current model does not know): NDCG@10 {versus['challenger']['ndcg@10']:.4f} "
        f"vs {versus['champion']['ndcg@10']:.4f} ({test['relative_gain']:+.1%}, paired t-test "
        f"p = {test['p_value']:.3g})"
    )


def new_items_markdown(section: dict) -> list[str]:
    """The new-items section: NDCG@10 and HR@10 of every row three ways (test half), the scale
    each content path was calibrated to on the validation half, and the paired tests."""
    targets = section["targets"]
    lines = [
        "",
        f"New items ({section['items']} items held out with all their interactions, share "
        f"{section['share']:g}, seed {section['seed']}; test half: {targets['test']} targets of "
        f"{section['users']['test']} users; full ranking):",
    ]
    for metric, title in (("ndcg@10", "NDCG@10"), ("hr@10", "HR@10")):
        lines += [
            "",
            f"| model | warm {title} | new among new | new among all | scale |",
            "|---|---|---|---|---|",
        ]
        for row in section["rows"]:
            cells = [
                f"{row[v][metric]['mean']:.4f}" for v in ("warm", "new_among_new", "new_among_all")
            ]
            scale = row.get("scale")
            shown = "-" if not scale else "/".join(f"{x:g}" for x in scale)
            lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {shown} |")
    for key, test in section.get("tests", {}).items():
        lines += [
            "",
            f"{test['treated']} vs {test['control']} ({key}; {test['view']}, paired t-test on "
            f"per-user {test['metric']}, {test['n_pairs']} pairs): {test['relative_gain']:+.1%}, "
            f"p = {test['p_value']:.3g}",
        ]
    return lines


def versus_current(versus: dict | None) -> dict:
    """The report's comparison with the served model, both on this run's validation fold
    (`distill.evaluation.champion.HeadToHead.as_json`); empty when nothing is served yet."""
    if versus is None:
        return {}
    champion, challenger = versus["champion"], versus["challenger"]
    return {
        "previous_model": {"version": versus["champion_version"], "validation": champion},
        "delta_vs_previous": {
            k: challenger[k] - champion[k] for k in sorted(challenger) if k in champion
        },
        "versus_champion": versus,
    }


def save_report(report: Report, run: RunDir, rows: list[ModelRow]) -> None:
    """report.json (written once per run: the bundle carries the same bytes) and the plots;
    report.md is written once the gate has decided (`write_markdown`)."""
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.report_json, report.as_json())
    _plots(report, run.path, rows)


def write_markdown(report: Report, run: RunDir, publish: str | None = None) -> None:
    """report.md, the one writer: the report with the run's plots and the gate's decision."""
    atomic_write_text(run.report_md, markdown(report, relative_images(run.path), publish=publish))


def _plots(report: Report, folder: Path, rows: list[ModelRow]) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        if row.role == "student" and row.history:
            ax.plot(
                [h["epoch"] for h in row.history[0]],
                [h["val"] for h in row.history[0]],
                label=row.model,
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title("Students, seed 0")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(folder / "val_ndcg.png", buf.getvalue())

    part = report.breakdown["activity"]
    if part:
        models = [c for c in next(iter(part.values())) if c != "users"]
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(models)
        for j, model in enumerate(models):
            ax.bar(
                np.arange(len(part)) + j * width,
                [v[model] for v in part.values()],
                width,
                label=model,
            )
        ax.set_xticks(np.arange(len(part)) + 0.4 - width / 2, list(part))
        ax.set_ylabel("test NDCG@10")
        ax.set_title("NDCG@10 by user activity")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the bars
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        atomic_write_bytes(folder / "activity.png", buf.getvalue())
    if report.frontier:
        atomic_write_bytes(folder / "frontier.png", frontier_plot(report.frontier["rows"]))


def frontier_plot(rows: list[dict], title: str = "SASRec students: width x blocks") -> bytes:
    """Test NDCG@10 against p50 latency, distilled and without the teacher (PNG bytes)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for distilled, marker, label in ((False, "o", "no teacher"), (True, "s", "distilled")):
        mine = [r for r in rows if r["distilled"] == distilled]
        ax.scatter(
            [r["p50_ms"] for r in mine],
            [r["test_ndcg@10"] for r in mine],
            marker=marker,
            label=label,
        )
        for r in mine:
            ax.annotate(
                f"{r['dim']}x{r['n_layers']}",
                (r["p50_ms"], r["test_ndcg@10"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("p50 latency per history request (ms, one thread)")
    ax.set_ylabel("test NDCG@10 (mean over seeds)")
    ax.set_title(title)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
