"""Nightly replay: the last days of MovieLens-100K arrive one night at a time through the inbox.

    python -m bench.nightly_replay [--nights 7]

1. The first full run (`distill` flow, every report row) on what was known before the first
   replayed day: the interactions before it, the items and users seen by then.
2. Every replayed day becomes one night: its interactions as `inbox/<dataset>/interactions-<day>`
   and the items first seen that day as `items-<day>`; the `nightly` flow runs (teacher heads and
   student warm-started from the served model, only the distilled student trained, the gate on
   the same validation fold). Per night: new interactions, items and users, seconds per stage,
   the gate's decision with both models' validation NDCG@10 on that night's split and the paired
   test, and the served model's NDCG@10 on the next day's interactions (each user's items of that
   day ranked from the history known the night before; items first seen that day are skipped).
3. A cold rebuild on the last night's data (teacher heads and students from scratch, seeds
   0..2): the seed-to-seed spread the warm night's validation NDCG@10 is compared with.
Results: bench/results/nightly_replay.json and docs/img/nightly_replay.png. Work dir:
$KDREC_BENCH_WORK/nightly_replay (emptied first).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from bench.common import flow_settings, work_dir

flow_settings()  # before Prefect loads: offline, analytics off
REPLAY = (work_dir() / "nightly_replay").resolve()
os.environ["PREFECT_HOME"] = str(REPLAY / ".prefect")  # emptied with the replay's work dir

from bench.common import RESULTS, save  # noqa: E402
from distill.serving.bundle import StudentBundle  # noqa: E402
from distill.serving.recommend import HistoryEncoder  # noqa: E402
from pipelines.config import RunConfig  # noqa: E402
from pipelines.distill_flow import distill  # noqa: E402
from pipelines.nightly_flow import nightly  # noqa: E402
from storage.atomic import read_json  # noqa: E402
from storage.datasets import Dataset, DatasetConfig, ingest, load_dataset  # noqa: E402
from storage.inbox import inbox_dir  # noqa: E402
from storage.registry import Registry  # noqa: E402
from storage.workdir import WorkDir  # noqa: E402

DAY = 86_400


def items_file(items: pl.DataFrame) -> pl.DataFrame:
    """Items as a files source reads them (genres one '|'-joined string)."""
    return items.drop("item_idx").with_columns(pl.col("genres").list.join("|"))


def next_day_ndcg(bundle_path: Path, dataset: Dataset, day: pl.DataFrame) -> tuple[float, int]:
    """The served model on the next day's interactions: per user, that day's items (known to the
    model) ranked among every item but the user's history, NDCG@10; and the users scored."""
    bundle = StudentBundle(bundle_path)
    ids = bundle.items(["item_id"]).get_column("item_id").to_list()
    row = {item: r for r, item in enumerate(ids)}
    encoder = HistoryEncoder.from_bundle(bundle, bundle.item_vectors())
    users = dataset.users().get_column("user_id").to_list()
    item_ids = dataset.items().get_column("item_id").to_list()
    history = {  # the served model may not know tonight's new items (a night it was refused)
        u: [row[item_ids[i]] for i in seq if item_ids[i] in row]
        for u, seq in zip(users, dataset.sequences(), strict=True)
    }
    discounts = 1 / np.log2(np.arange(2, 12))
    scores = []
    for user, group in day.group_by("user_id"):
        targets = {row[i] for i in group.get_column("item_id").to_list() if i in row}
        seen = history.get(user[0], [])
        if not targets or not seen:
            continue
        vec = torch.as_tensor(encoder([seen]))[0]
        s = (encoder.item_vecs @ vec).clone()
        s[torch.as_tensor(seen)] = -torch.inf
        top = torch.topk(s, 10).indices.tolist()
        dcg = sum(d for i, d in zip(top, discounts, strict=True) if i in targets)
        scores.append(dcg / discounts[: min(len(targets), 10)].sum())
    return (float(np.mean(scores)) if scores else float("nan")), len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=7)
    args = parser.parse_args()
    work = REPLAY
    shutil.rmtree(work, ignore_errors=True)
    (work / ".prefect").mkdir(parents=True)
    full = load_dataset(work, *_ingested(work))
    inter = full.interactions().with_columns((pl.col("timestamp") // DAY).alias("day"))
    replay = sorted(inter.get_column("day").unique().to_list())[-args.nights :]
    base = inter.filter(pl.col("day") < replay[0])
    src = work / "source"
    src.mkdir()
    items = full.items()
    users = full.users()
    base.drop("day", "user_idx", "item_idx").write_parquet(src / "interactions.parquet")
    known = base.get_column("item_id").unique()
    items_file(items.filter(pl.col("item_id").is_in(known.implode()))).write_parquet(
        src / "items.parquet"
    )
    users.drop("user_idx").filter(
        pl.col("user_id").is_in(base.get_column("user_id").unique().implode())
    ).write_parquet(src / "users.parquet")
    cfg = RunConfig(
        work_dir=work,
        dataset=DatasetConfig(
            name="ml100k-replay",
            source="files",
            interactions=src / "interactions.parquet",
            items=src / "items.parquet",
            users=src / "users.parquet",
        ),
    )
    t0 = time.perf_counter()
    first = distill(cfg)
    full_run_seconds = time.perf_counter() - t0
    print("first full run", round(full_run_seconds), first.timings, flush=True)
    nights = []
    for k, day in enumerate(replay):
        today = inter.filter(pl.col("day") == day)
        folder = inbox_dir(work, cfg.dataset.name)
        folder.mkdir(parents=True, exist_ok=True)
        today.drop("day", "user_idx", "item_idx").write_parquet(
            folder / f"interactions-{day}.parquet"
        )
        current = load_dataset(work, cfg.dataset.name)
        old_items = set(current.items().get_column("item_id").to_list())
        old_users = set(current.users().get_column("user_id").to_list())
        new_items = sorted(set(today.get_column("item_id").to_list()) - old_items)
        if new_items:
            items_file(items.filter(pl.col("item_id").is_in(new_items))).write_parquet(
                folder / f"items-{day}.parquet"
            )
        t1 = time.perf_counter()
        result = nightly(cfg).run
        assert result is not None, f"night {day}: the inbox was not read"
        seconds = time.perf_counter() - t1
        report = read_json(result.run_dir.report_json)
        versus = report.get("versus_champion") or {}
        dataset = load_dataset(work, cfg.dataset.name)
        served = Registry(WorkDir(work).registry, cfg.model_name).bundle()
        ndcg, scored = float("nan"), 0
        if k + 1 < len(replay):
            ndcg, scored = next_day_ndcg(
                served.path, dataset, inter.filter(pl.col("day") == replay[k + 1])
            )
        night = {
            "day": str(np.datetime64(int(day) * DAY, "s").astype("datetime64[D]")),
            "interactions": today.height,
            "new_items": len(new_items),
            "new_users": len(set(today.get_column("user_id").to_list()) - old_users),
            "seconds": seconds,
            "teacher_seconds": result.timings["teacher"],
            "student_seconds": result.timings["student"],
            "teacher_warm_start": result.teacher.warm_start,
            "published": result.publish.published,
            "gate": result.publish.reason,
            "champion_valid": versus.get("champion", {}).get("ndcg@10"),
            "challenger_valid": versus.get("challenger", {}).get("ndcg@10"),
            "p_value": versus.get("test", {}).get("p_value"),
            "unknown_targets": versus.get("unknown_targets"),
            "served_next_day_ndcg@10": ndcg,
            "next_day_users": scored,
        }
        nights.append(night)
        print(night, flush=True)
    last = load_dataset(work, cfg.dataset.name)
    cold_cfg = cfg.model_copy(
        update={"publish": False, "nightly_warm_start": False, "seeds": [0, 1, 2]}
    )
    t2 = time.perf_counter()
    cold = distill(cold_cfg, dataset_path=str(last.path), nightly=True)
    cold_seconds = time.perf_counter() - t2
    cold_rows = {r.model: r.as_json() for r in cold.report.rows}
    warm_valid = nights[-1]["challenger_valid"]
    cold_valid = cold_rows["Student sequential (KD kl)"]["valid_ndcg@10"]
    train = [n["teacher_seconds"] + n["student_seconds"] for n in nights]
    first_train = first.timings["teacher"] + first.timings["student"]
    _plot(nights)
    save(
        "nightly_replay",
        {
            "nights_replayed": len(nights),
            "full_run_seconds": full_run_seconds,
            "full_run_timings": first.timings,
            "full_run_training_seconds": first_train,
            "mean_night_training_seconds": float(np.mean(train)),
            "night_vs_full_training": float(np.mean(train)) / first_train,
            "nights": nights,
            "cold_rebuild": {
                "dataset": last.ref,
                "seconds": cold_seconds,
                "timings": cold.timings,
                "seeds": [0, 1, 2],
                "valid_ndcg@10": cold_valid,
                "warm_within_spread": bool(
                    warm_valid is not None
                    and min(cold_valid["seeds"]) - cold_valid["std"]
                    <= warm_valid
                    <= max(cold_valid["seeds"]) + cold_valid["std"]
                ),
                "test_ndcg@10": cold_rows["Student sequential (KD kl)"]["metrics"]["ndcg@10"],
            },
            "warm_last_night_valid_ndcg@10": warm_valid,
        },
    )


def _ingested(work: Path) -> tuple[str, str]:
    result = ingest(DatasetConfig(), work_dir=work)
    return result.name, result.version


def _plot(nights: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    x = np.arange(len(nights))
    teacher = [n["teacher_seconds"] for n in nights]
    student = [n["student_seconds"] for n in nights]
    top.bar(x, teacher, label="teacher stage")
    top.bar(x, student, bottom=teacher, label="student stage")
    top.set_ylabel("seconds")
    top.legend(fontsize=8)
    top.set_title("Nightly replay: each night's stages and its gate (same validation fold)")
    bottom.plot(x, [n["champion_valid"] for n in nights], "o-", label="served model (champion)")
    bottom.plot(x, [n["challenger_valid"] for n in nights], "s-", label="tonight's candidate")
    for i, n in enumerate(nights):
        label = "published" if n["published"] else "refused"
        at = (i, n["challenger_valid"] or 0)
        bottom.annotate(label, at, fontsize=7, xytext=(0, 6), textcoords="offset points")
    bottom.set_ylabel("validation NDCG@10 (tonight's split)")
    bottom.set_xticks(x, [n["day"] for n in nights], rotation=30, fontsize=8)
    bottom.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    (RESULTS.parents[1] / "docs" / "img" / "nightly_replay.png").write_bytes(buf.getvalue())


if __name__ == "__main__":
    main()
