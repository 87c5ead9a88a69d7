"""Cold items: items that reach the catalog after training get a vector from their text alone.

A student trained with `text_projection: true` scores an item by <user, ID embedding + W·LM(text)>.
An item it never saw has no trained ID embedding, so its vector is the projection of its text
embedding alone (ID row zero): the teacher LM encodes the new texts, the student's own projection
maps them, nothing is retrained. `extend_bundle` returns the files of a new bundle with those
items appended to the item table, the ID table and both FAISS indexes. Users and their vectors
are unchanged; the new items start with popularity 0.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import torch
from safetensors.torch import save

from distill import index as faiss_index
from distill.recommend import INDEX_FILES, HistoryEncoder
from storage.atomic import parquet_bytes
from storage.embeddings import embedding_column, embedding_matrix
from storage.errors import ConfigError, DataError, KdrecError
from storage.registry import Bundle

log = logging.getLogger(__name__)
ID_TABLES = ("net.item_emb.weight", "items.ids.weight")  # sequential, two-tower


NO_PROJECTION = (
    "this model's student has no text projection (student.text_projection: false), so items it "
    "never saw cannot be placed without retraining; they enter the catalog at the next run"
)


class NoTextProjection(KdrecError, ValueError):
    """The bundle's student has no text projection, so it cannot place an unseen item."""


@dataclass(frozen=True)
class NewItems:
    """Items to add: ids, titles, the row dicts their texts were rendered from, and the
    teacher LM's embeddings of those texts (N, T)."""

    frame: pl.DataFrame  # item_id, title, ... (the item text template's fields)
    text_emb: np.ndarray


def cold_vectors(encoder: HistoryEncoder, text_emb: np.ndarray) -> np.ndarray:
    """(N, D) float32 item vectors from LM text embeddings (N, T), through the student's text
    projection; NoTextProjection when it has none."""
    with torch.no_grad():
        vecs = encoder.model.text_vectors(torch.as_tensor(text_emb, dtype=torch.float32))
    if vecs is None:
        raise NoTextProjection(NO_PROJECTION)
    return vecs.numpy()


def extend_bundle(bundle: Bundle, new: NewItems) -> tuple[dict[str, bytes], int]:
    """(files of the extended bundle, number of items added). Items already in the catalog
    are skipped (logged); none left is an error."""
    path = bundle.path
    items = pl.read_parquet(path / "items.parquet")
    known = set(items.get_column("item_id").to_list())
    fresh = [
        i for i, item in enumerate(new.frame.get_column("item_id").to_list()) if item not in known
    ]
    if len(fresh) < new.frame.height:
        log.info(
            "%d of %d items are already in the catalog",
            new.frame.height - len(fresh),
            new.frame.height,
        )
    if not fresh:
        raise DataError(f"none of the {new.frame.height} items is new to {bundle.version}")
    frame = new.frame[fresh]
    item_vecs = embedding_matrix(items.get_column("vector").to_arrow())
    config = json.loads((path / "config.json").read_text())
    encoder = HistoryEncoder.from_bundle(path, config, item_vecs)
    text_dim = encoder.text_dim
    if text_dim is None:
        raise NoTextProjection(NO_PROJECTION)
    if new.text_emb.shape[1] != text_dim:
        raise ConfigError(
            f"text embeddings are {new.text_emb.shape[1]}-d but the student projects "
            f"{text_dim}-d ones: encode with the teacher LM it was trained with"
        )
    added = cold_vectors(encoder, new.text_emb[fresh])
    all_vecs = np.concatenate([item_vecs, added]).astype(np.float32)
    n_old, n_new = len(item_vecs), len(added)
    table = pa.table(
        {
            "item_idx": pa.array(np.arange(n_old + n_new, dtype=np.int32)),
            "item_id": pa.array(
                items.get_column("item_id").to_list() + frame.get_column("item_id").to_list(),
                pa.string(),
            ),
            "title": pa.array(
                items.get_column("title").to_list() + frame.get_column("title").to_list(),
                pa.string(),
            ),
            "popularity": pa.array(
                np.concatenate([items.get_column("popularity").to_numpy(), np.zeros(n_new)]).astype(
                    np.int64
                )
            ),
            "vector": embedding_column(all_vecs),
        }
    )
    state = {
        k: torch.cat([v, v.new_zeros(n_new, v.shape[1])]) if k in ID_TABLES else v
        for k, v in encoder.model.state_dict().items()
    }
    config.update(n_items=n_old + n_new, extended_from=bundle.version, cold_items=n_new)
    exact, recall = faiss_index.build_index(all_vecs)
    config.update(index=type(exact).__name__, **{"index_recall@10": recall})
    files = {
        "student.safetensors": save({k: v.contiguous() for k, v in state.items()}),
        "items.parquet": parquet_bytes(table),
        "items.faiss": faiss_index.to_bytes(exact),
        "users.parquet": (path / "users.parquet").read_bytes(),
        "report.json": (path / "report.json").read_bytes(),
    }
    if (path / INDEX_FILES["sq8"]).exists():
        users = pl.read_parquet(path / "users.parquet", columns=["vector"])
        queries = embedding_matrix(users.get_column("vector").to_arrow())
        files[INDEX_FILES["sq8"]], config["sq8"] = faiss_index.sq8_with_stats(
            all_vecs, queries, len(files["items.faiss"])
        )
    files["config.json"] = json.dumps(config, indent=2, sort_keys=True).encode()
    return files, n_new
