"""Reading a teacher cache's vectors: Parquet as pyarrow writes it by default (one row group,
dictionary encoding tried on the floats) against `storage.embeddings.vector_layout` (row groups of
VECTOR_ROW_GROUP rows, byte-stream-split floats, no dictionary), which kdrec writes.

    python -m bench.vector_parquet --cache /tmp/kdrec-scale-*/x100/work/cache/teacher/<fingerprint>

Writes the cache's users.parquet and items.parquet both ways into a scratch folder (atomically,
as kdrec does), then reads the `vector` column into a float32 matrix (what `TeacherCache.vectors`
does), ROUNDS times, the two layouts taking turns. Results: bench/results/vector_parquet.json
(seconds per write and per read, file sizes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from bench.common import save
from storage.atomic import write_parquet
from storage.embeddings import VECTOR_ROW_GROUP, embedding_matrix, vector_layout

ROUNDS = 5


def read_seconds(path: Path) -> float:
    t0 = time.perf_counter()
    embedding_matrix(pq.read_table(path, columns=["vector"]).column("vector"))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True, help="a teacher cache folder")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kdrec-vector-parquet-") as scratch:
        for which in ("users", "items"):
            table = pq.read_table(args.cache / f"{which}.parquet")
            layouts = {"pyarrow default": {}, "vector_layout": vector_layout(table)}
            paths = {name: Path(scratch) / f"{which}-{k}.parquet" for k, name in enumerate(layouts)}
            seconds: dict[str, list[float]] = {name: [] for name in layouts}
            writes: dict[str, list[float]] = {name: [] for name in layouts}
            for _ in range(ROUNDS):
                for name, path in paths.items():
                    t0 = time.perf_counter()
                    write_parquet(path, table, **layouts[name])
                    writes[name].append(time.perf_counter() - t0)
                    seconds[name].append(read_seconds(path))
            for name, path in paths.items():
                row = {
                    "table": which,
                    "rows": table.num_rows,
                    "layout": name,
                    "megabytes": round(path.stat().st_size / 2**20, 1),
                    "read_seconds": [round(s, 3) for s in seconds[name]],
                    "median_seconds": round(statistics.median(seconds[name]), 3),
                    "write_seconds": [round(s, 3) for s in writes[name]],
                    "median_write_seconds": round(statistics.median(writes[name]), 3),
                }
                rows.append(row)
                print(row, flush=True)
    save(
        "vector_parquet",
        {"cache": str(args.cache), "rounds": ROUNDS, "row_group": VECTOR_ROW_GROUP, "rows": rows},
    )


if __name__ == "__main__":
    main()
