"""The quality report as a committed result: `kdrec quality` (every report arm x seeds, paired
tests, publishes nothing), its report.json kept under bench/results.

    python -m bench.quality [--seeds 5] [--config configs/new_items.yaml] [--name quality]

Trainings are checkpointed in the work dir ($KDREC_BENCH_WORK, else $KDREC_WORK_DIR, else ./work)
and reused, so a re-run after a change that does not touch training costs the evaluation only.
Results: bench/results/<name>.json: the report (rows, breakdowns, paired tests, bars, and with
`split.new_items` the new-items section) with the commit and command line that made it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import flow_settings

flow_settings()  # before Prefect loads: its home in the study's work dir, offline

from bench.common import save, work_dir  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.distill_flow import distill  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--name", default="quality")
    args = parser.parse_args()
    work = work_dir()
    config = load_config(args.config, work_dir=work)
    config = config.model_copy(update={"seeds": list(range(args.seeds)), "publish": False})
    t0 = time.perf_counter()
    run = distill(config)
    save(
        args.name,
        {
            "config": args.config and str(args.config),
            "seconds": time.perf_counter() - t0,
            "timings": run.timings,
            "report": run.report.as_json(),
        },
    )


if __name__ == "__main__":
    main()
