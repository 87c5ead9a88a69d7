from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage import embeddings
from storage.atomic import write_parquet
from storage.embeddings import embedding_column, embedding_matrix, vector_layout


def test_vector_layout_round_trips_over_row_groups(tmp_path, monkeypatch):
    """A vector table written in row groups (one chunk each when read) comes back row for row,
    its floats byte-stream-split and never dictionary-encoded."""
    monkeypatch.setattr(embeddings, "VECTOR_ROW_GROUP", 4)
    vectors = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    table = pa.table(
        {"text_hash": [f"h{i}" for i in range(10)], "vector": embedding_column(vectors)}
    )
    write_parquet(tmp_path / "v.parquet", table, **vector_layout(table))
    meta = pq.ParquetFile(tmp_path / "v.parquet").metadata
    assert meta.num_row_groups == 3
    column = meta.row_group(0).column(1)
    assert "BYTE_STREAM_SPLIT" in column.encodings and not column.has_dictionary_page
    read = pq.read_table(tmp_path / "v.parquet", columns=["vector"]).column("vector")
    assert read.num_chunks == 3
    np.testing.assert_array_equal(embedding_matrix(read), vectors)
    np.testing.assert_array_equal(
        embedding_matrix(embedding_column(vectors).slice(3, 5)), vectors[3:8]
    )
