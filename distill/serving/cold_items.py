"""Cold items: items that reach the catalog after training get a vector from their text alone.

The teacher LM encodes the new texts and the bundle's content path maps them into the student's
item space, nothing is retrained: the content tower (`distill/student/content.py`, which the
default distilled student carries) at the scale it is served with, or, for a student trained with
`text_projection: true`, that projection alone (its ID row zero). `extend_bundle` returns the
files of a new bundle with those items appended to the item table, the ID table and both FAISS
indexes. Users and their vectors are unchanged; the new items start with popularity 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from distill.serving import bundle as bundle_io
from distill.serving.bundle import StudentBundle
from distill.serving.recommend import HistoryEncoder
from distill.student.content import ContentTower
from distill.teacher.base import TeacherConfig
from distill.teacher.prepare import load_teacher
from distill.texts import item_texts
from storage.embeddings import embedding_matrix
from storage.errors import ConfigError, DataError, KdrecError
from storage.registry import Bundle, Provenance, PublishResult, Registry

log = logging.getLogger(__name__)
ID_TABLES = ("net.item_emb.weight", "items.ids.weight")  # sequential, two-tower


NO_PROJECTION = (
    "this model's student has no content path (no content tower, student.text_projection: "
    "false), so items it never saw cannot be placed without retraining; they enter the catalog "
    "at the next run"
)


class NoTextProjection(KdrecError, ValueError):
    """The bundle's student has no content path, so it cannot place an unseen item."""


@dataclass(frozen=True)
class NewItems:
    """Items to add: ids, titles, the row dicts their texts were rendered from, and the
    teacher LM's embeddings of those texts (N, T)."""

    frame: pl.DataFrame  # item_id, title, ... (the item text template's fields)
    text_emb: np.ndarray


def cold_vectors(
    encoder: HistoryEncoder,
    text_emb: np.ndarray,
    content: tuple[ContentTower, float] | None = None,
) -> np.ndarray:
    """(N, D) float32 item vectors from LM text embeddings (N, T): `content` (a content tower and
    its scale), else the student's text projection; NoTextProjection when it has neither."""
    emb = torch.as_tensor(text_emb, dtype=torch.float32)
    with torch.no_grad():
        if content is not None:
            tower, scale = content
            return (scale * tower(emb)).numpy()
        vecs = encoder.model.text_vectors(emb)
    if vecs is None:
        raise NoTextProjection(NO_PROJECTION)
    return vecs.numpy()


def text_width(encoder: HistoryEncoder, content: tuple[ContentTower, float] | None) -> int:
    """The LM embedding width the bundle's content path reads."""
    width = content[0].text_dim if content is not None else encoder.text_dim
    if width is None:
        raise NoTextProjection(NO_PROJECTION)
    return width


def extend_bundle(bundle: Bundle, new: NewItems) -> tuple[dict[str, bytes], int]:
    """(files of the extended bundle, number of items added). Items already in the catalog
    are skipped (logged); none left is an error."""
    contents = StudentBundle(bundle.path)
    items = contents.items()
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
    encoder = HistoryEncoder.from_bundle(contents, item_vecs)
    content = contents.content_tower()
    text_dim = text_width(encoder, content)
    if new.text_emb.shape[1] != text_dim:
        raise ConfigError(
            f"text embeddings are {new.text_emb.shape[1]}-d but the student projects "
            f"{text_dim}-d ones: encode with the teacher LM it was trained with"
        )
    added = cold_vectors(encoder, new.text_emb[fresh], content)
    all_vecs = np.concatenate([item_vecs, added]).astype(np.float32)
    n_old, n_new = len(item_vecs), len(added)
    state = {
        k: torch.cat([v, v.new_zeros(n_new, v.shape[1])]) if k in ID_TABLES else v
        for k, v in encoder.model.state_dict().items()
    }
    indexes, index_config = bundle_io.index_files(
        all_vecs, contents.user_vectors(), quantized=contents.has_index("sq8")
    )
    config = {
        **contents.config,
        **index_config,
        "n_items": n_old + n_new,
        "extended_from": bundle.version,
        "cold_items": n_new,
    }
    files = {
        **indexes,
        bundle_io.STUDENT: bundle_io.state_bytes(state),
        bundle_io.CONFIG: bundle_io.config_bytes(config),
        bundle_io.ITEMS: bundle_io.items_bytes(
            items.get_column("item_id").to_list() + frame.get_column("item_id").to_list(),
            items.get_column("title").to_list() + frame.get_column("title").to_list(),
            np.concatenate([items.get_column("popularity").to_numpy(), np.zeros(n_new)]),
            all_vecs,
        ),
        bundle_io.USERS: contents.raw(bundle_io.USERS),
        bundle_io.REPORT: contents.raw(bundle_io.REPORT),
        **({bundle_io.CONTENT: contents.raw(bundle_io.CONTENT)} if content is not None else {}),
    }
    return files, n_new


@dataclass(frozen=True)
class Extension:
    """What `extend_published` did: how many items it appended, and the publish decision."""

    added: int
    publish: PublishResult


def extend_published(
    registry: Registry,
    items: pl.DataFrame,
    teacher: TeacherConfig,
    work_dir: Path,
    *,
    force: bool = False,
) -> Extension:
    """`kdrec models extend`: the teacher LM encodes the new items' texts, `extend_bundle`
    appends them to the current bundle, and the result is published through the regression gate
    (the current bundle's validation stands: warm users and items are unchanged)."""
    current = registry.bundle()
    texts = item_texts(items.with_row_index("item_idx"), teacher.texts)
    emb = load_teacher(teacher, work_dir).encode(texts.get_column("text").to_list())
    files, added = extend_bundle(current, NewItems(items, emb))
    publish = registry.publish(
        files,
        Provenance(
            dataset=current.manifest.get("dataset"),
            teacher_fingerprint=current.manifest.get("teacher_fingerprint"),
            extra={"extended_from": current.version, "cold_items": added},
        ),
        validation=current.manifest.get("validation", {}),
        volatile=(bundle_io.REPORT,),
        force=force,
        tag="extended",
    )
    return Extension(added, publish)
