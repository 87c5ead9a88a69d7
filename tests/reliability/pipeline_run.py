"""The pipeline on tiny data without Prefect (same stage functions as the flows), for fault tests.

python tests/reliability/pipeline_run.py WORK SRC_DIR MODEL_DIR   (KDREC_CRASH_AT picks a crash)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from distill.serving import bundle as bundle_io  # noqa: E402
from distill.serving.bundle import bundle_files  # noqa: E402
from distill.student import stage as student_stage  # noqa: E402
from distill.student.config import StudentConfig  # noqa: E402
from distill.student.content import ContentConfig  # noqa: E402
from distill.student.fit import DistillConfig  # noqa: E402
from distill.teacher.base import AdaptConfig, TeacherConfig  # noqa: E402
from distill.teacher.cache import TeacherCache  # noqa: E402
from distill.teacher.stage import run_teacher  # noqa: E402
from distill.training.loop import LoopConfig  # noqa: E402
from storage.datasets import DatasetConfig, ingest, load_dataset  # noqa: E402
from storage.registry import Provenance, Registry  # noqa: E402
from storage.split import make_split  # noqa: E402
from storage.workdir import WorkDir  # noqa: E402


def main(work: Path, src: Path, model: Path) -> None:
    paths = {k: src / f"{k}.csv" for k in ("interactions", "items", "users")}
    result = ingest(DatasetConfig(name="syn", source="files", **paths), work_dir=work)
    dataset = load_dataset(work, "syn", result.version)
    split = make_split(dataset)
    teacher = TeacherConfig(
        model_path=model,
        users_per_shard=8,
        # one head (in a one-thread worker process: a crash point there kills the whole run)
        adapt=AdaptConfig(dim=8, n_heads=2, history_len=6, heads=1, loop=LoopConfig(max_epochs=2)),
    )
    cache = Path(run_teacher(teacher, dataset, split, work_dir=work, progress=False).plan.cache_dir)
    tiny = StudentConfig(dim=8, history_len=6)
    plan = student_stage.QualityPlan(
        student=tiny,
        sasrec=tiny,
        kd=DistillConfig(),
        loop=LoopConfig(max_epochs=3, patience=3, batch_size=8),
        seeds=[0],
        content=ContentConfig(epochs=1),
        checkpoint_root=WorkDir(work).students,
    )
    result = student_stage.quality(dataset, split, plan, teacher=TeacherCache(cache))
    best = result.best
    registry = Registry(WorkDir(work).registry, "kdrec")
    if registry.current_version() is None:  # publish once; a re-run after success is a no-op
        files = bundle_files(best, dataset, result.report)
        registry.publish(  # as the distill flow does: the report's timings are volatile
            files,
            Provenance(dataset=dataset.ref),
            validation=best.valid,
            volatile=(bundle_io.REPORT,),
        )


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:4]))
