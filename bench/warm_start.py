"""Warm start on a simulated night: train as of day D, then add day D+1 and train again, from
scratch and from D's published student (`distill.init: previous`, items mapped by id).

    python -m bench.warm_start [--day 1998-03-31]

The student is the default SASRec trained without the teacher (α 0): the warm start is a property
of the weights it starts from, and a distilled night would also need two teacher runs. D's model
trains first; the cold and warm D+1 models then train side by side, one thread each, with the
same recipe, early stopping and seed. Results: bench/results/warm_start.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.common import movielens, save, work_dir
from distill.serving.bundle import StudentBundle, bundle_files
from distill.serving.warm_start import previous_student
from distill.student.fit import DistillConfig
from distill.student.run import fit_and_evaluate
from distill.student.warm_start import WarmStart, previous_state
from distill.training.parallel import map_in_processes
from pipelines.config import RunConfig
from storage.registry import Registry
from storage.split import make_split


def fit(split, student, kd, loop, init_state) -> dict:
    run = fit_and_evaluate(
        split, student, kd, loop, soft_labels=None, text_emb=None, init_state=init_state
    )
    epochs = len(run.train.history)
    return {
        "best_epoch": run.train.best_epoch,
        "epochs_run": epochs,
        "train_seconds": round(run.train.seconds, 1),
        "seconds_to_best": round(run.train.seconds * run.train.best_epoch / max(epochs, 1), 1),
        "valid_ndcg@10": round(run.valid["ndcg@10"], 4),
        "test_ndcg@10": round(run.test.primary, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--day", default="1998-03-31", help="day D (UTC); D+1 is added")
    args = parser.parse_args()
    work = work_dir()
    cfg = RunConfig(work_dir=work)
    dataset, _ = movielens(work)
    day = int(datetime.fromisoformat(args.day).replace(tzinfo=UTC).timestamp())
    split_d = make_split(dataset, cutoff=day)
    split_d1 = make_split(dataset, cutoff=day + 86_400)
    added = split_d1.frame.height - split_d.frame.height
    print(f"as of D: {split_d.frame.height} interactions; D+1 adds {added}", flush=True)
    kd = DistillConfig(alpha=0.0, init="random")
    loop = cfg.train
    run_d = fit_and_evaluate(split_d, cfg.student, kd, loop, soft_labels=None, text_emb=None)
    print(f"D: best epoch {run_d.train.best_epoch}, {run_d.train.seconds:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp), "kdrec")
        published = registry.publish(bundle_files(run_d, dataset), validation=run_d.valid)
        item_ids = tuple(dataset.items().get_column("item_id").to_list())
        assert published.path is not None and published.version is not None
        previous = previous_student(StudentBundle(published.path), published.version)
        warm = WarmStart(previous, item_ids)
        init = previous_state(warm, cfg.student, loop.seed)
        warm_kd = kd.model_copy(update={"init": "previous"})
        cold, hot = map_in_processes(
            fit,
            [(split_d1, cfg.student, kd, loop, None), (split_d1, cfg.student, warm_kd, loop, init)],
            workers=2,
        )
    rows = [{"start": "cold (SASRec init)", **cold}, {"start": "warm (D's student)", **hot}]
    for row in rows:
        print(row, flush=True)
    save(
        "warm_start",
        {
            "command": "python -m bench.warm_start " + " ".join(sys.argv[1:]),
            "day": args.day,
            "interactions_as_of_d": split_d.frame.height,
            "added_on_d_plus_1": added,
            "d_model": {"best_epoch": run_d.train.best_epoch, "seconds": run_d.train.seconds},
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
