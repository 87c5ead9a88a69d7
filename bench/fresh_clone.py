"""The two commands on a fresh clone: how long `make test` and `make run` take, install included.

    python -m bench.fresh_clone [--only test|run] [--dest /tmp/kdrec-fresh]

Clones this repository's HEAD once per target into `--dest/<target>` (emptied first) and runs the
target there as a new user would (its own .venv and work dir, no environment from this shell but
PATH, HOME and LANG), so each time includes the install; records the wall time, the exit status
and the last lines of the output.
Results: bench/results/fresh_clone.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import save

ROOT = Path(__file__).resolve().parents[1]


def timed(target: str, clone: Path) -> dict:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    t0 = time.perf_counter()
    done = subprocess.run(
        ["make", target], cwd=clone, env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - t0
    tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
    print(target, round(seconds), done.returncode, *tail, sep="\n", flush=True)
    return {"seconds": seconds, "returncode": done.returncode, "tail": tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["test", "run"], default=None)
    parser.add_argument("--dest", type=Path, default=Path("/tmp/kdrec-fresh"))
    args = parser.parse_args()
    results = {}
    for target in ("test", "run"):
        if args.only in (None, target):
            clone = args.dest / target
            shutil.rmtree(clone, ignore_errors=True)
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            head = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True
            ).stdout.strip()  # what ran: the committed HEAD, whatever this tree holds
            results[f"make_{target}"] = {"cloned_commit": head, **timed(target, clone)}
    save("fresh_clone", {"clone": str(args.dest), "cpu_cores": os.cpu_count(), **results})


if __name__ == "__main__":
    main()
