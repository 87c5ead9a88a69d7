"""Text-embedding cache keyed by (model, text hash): each text is encoded once, ever.

`<root>/<model_key>/part-<sha8>.parquet` files hold (text_hash, embedding); every new batch of
encodes is one more part, written atomically. A changed catalog or history only adds the new texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.atomic import sha256_bytes, validate_name, write_parquet


def embedding_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def embedding_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(N, D) float32 from a fixed-size-list column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    dim = column.type.list_size
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)


class EmbeddingCache:
    def __init__(self, root: Path, model_key: str) -> None:
        self.dir = Path(root) / validate_name(model_key, what="model key")

    def load(self) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for part in sorted(self.dir.glob("part-*.parquet")):
            table = pq.read_table(part)
            matrix = embedding_matrix(table.column("embedding"))
            for h, row in zip(table.column("text_hash").to_pylist(), matrix, strict=True):
                found[h] = row
        return found

    def add(self, hashes: Sequence[str], matrix: np.ndarray) -> None:
        if not len(hashes):
            return
        table = pa.table(
            {
                "text_hash": pa.array(list(hashes), pa.string()),
                "embedding": embedding_column(matrix),
            }
        )
        digest = sha256_bytes("".join(hashes).encode())[:8]
        write_parquet(self.dir / f"part-{digest}.parquet", table)

    def get_or_encode(
        self,
        hashes: Sequence[str],
        texts: Sequence[str],
        encode,
    ) -> tuple[np.ndarray, int]:
        """Embeddings for `texts` in order, encoding only unseen hashes -> (matrix, n_encoded)."""
        known = self.load()
        missing: dict[str, str] = {}
        for h, t in zip(hashes, texts, strict=True):
            if h not in known and h not in missing:
                missing[h] = t
        if missing:
            new = encode(list(missing.values()))
            self.add(list(missing), new)
            known.update(zip(missing, new, strict=True))
        return np.stack([known[h] for h in hashes]).astype(np.float32), len(missing)
