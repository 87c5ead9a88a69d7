"""The canonical dataset schema, written down once. Every source adapter produces these tables.

interactions: who interacted with what, when (implicit feedback: every row is a positive)
items:        the catalog, with the text columns that item templates read
users:        optional user attributes, used in user text

After ingest each table also carries contiguous integer indices (`user_idx`, `item_idx`), which
every later stage uses; `users.parquet` and `items.parquet` are the index <-> id mapping tables.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

# Required source columns (before indexing). Ids are strings so that any source id type fits.
INTERACTION_REQUIRED = {"user_id": pa.string(), "item_id": pa.string(), "timestamp": pa.int64()}
INTERACTION_OPTIONAL = {"rating": pa.float32(), "weight": pa.float32()}
ITEM_REQUIRED = {"item_id": pa.string(), "title": pa.string()}
ITEM_OPTIONAL = {
    "year": pa.int32(),
    "genres": pa.list_(pa.string()),
    "description": pa.string(),
}
USER_REQUIRED = {"user_id": pa.string()}

INTERACTIONS = pa.schema(
    [
        ("user_idx", pa.int32()),
        ("item_idx", pa.int32()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("timestamp", pa.int64()),
        ("rating", pa.float32()),
        ("weight", pa.float32()),
    ]
)
"""interactions.parquet, sorted by (user_idx, timestamp, item_idx). rating/weight may be null."""

ITEMS_BASE = pa.schema(
    [
        ("item_idx", pa.int32()),
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("year", pa.int32()),
        ("genres", pa.list_(pa.string())),
        ("description", pa.string()),
    ]
)
"""items.parquet leading columns; extra string columns follow (usable in item text templates)."""

USERS_BASE = pa.schema([("user_idx", pa.int32()), ("user_id", pa.string())])
"""users.parquet leading columns; attribute columns (strings) follow."""

SPLIT = pa.schema(
    [
        ("user_idx", pa.int32()),
        ("item_idx", pa.int32()),
        ("timestamp", pa.int64()),
        ("fold", pa.string()),  # "train" | "valid" | "test"
    ]
)
"""A split: every interaction assigned to exactly one fold."""

FOLDS = ("train", "valid", "test")
