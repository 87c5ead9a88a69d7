"""`make bench`: every stage benchmark, then one table with the ratios -> bench/results/latest.json.

Stages: teacher (encoder vs sentence-transformers, prefix sharing vs naive, the whole stage and a
zero-change re-run), student (training, serving latency/throughput, cost vs the teacher), the
end-to-end `kdrec run` wall time and the nightly no-op time (both through Prefect).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import RESULTS, save, work_dir

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, cwd=ROOT, check=True)
    return time.perf_counter() - t0


def main() -> None:
    py = sys.executable
    kdrec = str(Path(py).parent / "kdrec")
    timings = {
        "kdrec_run_seconds": _run([kdrec, "run", "--work-dir", str(work_dir())]),
        "kdrec_run_rerun_seconds": _run([kdrec, "run", "--work-dir", str(work_dir())]),
    }
    t0 = time.perf_counter()
    subprocess.run(
        [
            py,
            "-c",
            "from pipelines.nightly_flow import nightly; "
            "from pipelines.config import RunConfig; "
            f"print(nightly(RunConfig(work_dir={str(work_dir())!r})).status)",
        ],
        cwd=ROOT,
        check=True,
    )
    timings["nightly_noop_seconds_with_prefect_startup"] = time.perf_counter() - t0
    _run([py, "-m", "bench.teacher_bench"])
    _run([py, "-m", "bench.student_bench"])
    teacher = json.loads((RESULTS / "teacher.json").read_text())
    student = json.loads((RESULTS / "student.json").read_text())
    table = {
        "encoder item texts/s (ours / sentence-transformers)": (
            teacher["encoder"]["item_texts_per_s"],
            teacher["encoder"]["item_ratio_vs_sentence_transformers"],
        ),
        "encoder user texts/s (ours / sentence-transformers)": (
            teacher["encoder"]["user_texts_per_s"],
            teacher["encoder"]["user_ratio_vs_sentence_transformers"],
        ),
        "causal pairs/s shared prefix (speed-up vs naive)": (
            teacher.get("causal", {}).get("pairs_per_s_shared"),
            teacher.get("causal", {}).get("speedup"),
        ),
        "teacher stage cold, no adaptation (s)": (
            teacher["stage"]["seconds_cold_no_adaptation"],
            None,
        ),
        "teacher zero-change re-run (s)": (teacher["stage"]["seconds_zero_change_rerun"], None),
        "student training to early stop (s; None = reused checkpoint)": (
            student["train_seconds_to_early_stop"],
            None,
        ),
        "serving p50 / p99 one user (ms)": (
            student["serving_single_user_ms_p50"],
            student["serving_single_user_ms_p99"],
        ),
        "serving users/s, batch of 943": (student["users_per_s_batch_943"], None),
        "student vs teacher per-user cost (x cheaper)": (student["cost"]["ratio"], None),
        "kdrec run / re-run (s)": (
            timings["kdrec_run_seconds"],
            timings["kdrec_run_rerun_seconds"],
        ),
        "nightly no-op incl. Prefect start-up (s)": (
            timings["nightly_noop_seconds_with_prefect_startup"],
            None,
        ),
    }
    for name, (value, ratio) in table.items():
        extra = "" if ratio is None else f"   ({ratio:.2f})"
        print(f"{name:55s} {value if value is None else round(value, 3)}{extra}")
    save("latest", {"timings": timings, "table": table, "teacher": teacher, "student": student})


if __name__ == "__main__":
    main()
