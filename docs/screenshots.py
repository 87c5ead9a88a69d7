"""Screenshots of kdrec's artifacts in the Prefect UI, taken with headless Chromium.

Against a running `make ui` server, after a `distill` (or `nightly`) run and a `monitor` run:

    .venv/bin/python docs/screenshots.py --url http://127.0.0.1:4200 --out docs/img

It finds the newest `kdrec-report` and `kdrec-monitor` artifacts (and the newest Failed monitor
run, if any) through the API and writes one PNG per page. Needs Chromium (Debian:
`apt-get install chromium-headless-shell`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

BROWSERS = ("chromium-headless-shell", "chromium", "google-chrome")


def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    sys.exit(
        f"no headless Chromium on PATH (tried {', '.join(BROWSERS)}); on Debian: "
        "apt-get install chromium-headless-shell"
    )


def newest_artifact(api: str, key: str) -> str | None:
    body = {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1}
    found = httpx.post(f"{api}/artifacts/filter", json=body, timeout=30).raise_for_status().json()
    return found[0]["id"] if found else None


def newest_failed_run(api: str, flow: str) -> str | None:
    body = {
        "flows": {"name": {"any_": [flow]}},
        "flow_runs": {"state": {"type": {"any_": ["FAILED"]}}},
        "sort": "START_TIME_DESC",
        "limit": 1,
    }
    found = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30).raise_for_status().json()
    return found[0]["id"] if found else None


def shoot(chromium: str, url: str, out: Path, height: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    subprocess.run(
        [
            chromium,
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size=1400,{height}",
            "--virtual-time-budget=20000",  # let the UI's API calls finish before the shot
            f"--screenshot={tmp}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    tmp.replace(out)
    print(f"{out}  <- {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:4200", help="the `make ui` server")
    parser.add_argument("--out", type=Path, default=Path("docs/img"), help="output folder")
    args = parser.parse_args()
    api, chromium = f"{args.url}/api", browser()
    pages = [
        ("ui-report.png", "kdrec-report", 3400),
        ("ui-bundle.png", "kdrec-bundle", 900),
        ("ui-monitor.png", "kdrec-monitor", 1100),
    ]
    for name, key, height in pages:
        artifact = newest_artifact(api, key)
        if artifact is None:
            sys.exit(f"no {key} artifact on {args.url}: run the matching deployment first")
        shoot(chromium, f"{args.url}/artifacts/artifact/{artifact}", args.out / name, height)
    if failed := newest_failed_run(api, "monitor"):
        url = f"{args.url}/runs/flow-run/{failed}"
        shoot(chromium, url, args.out / "ui-monitor-failed.png", 1500)


if __name__ == "__main__":
    main()
