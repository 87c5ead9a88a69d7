"""Pseudonymised user ids: no raw id anywhere in a bundle; lookups hash with the same key."""

from __future__ import annotations

import polars as pl
import pytest

from distill.serving.bundle import bundle_files
from distill.serving.recommend import Recommender, UnknownUser
from distill.student.config import StudentConfig
from distill.student.fit import DistillConfig
from distill.student.run import fit_and_evaluate
from distill.training.loop import LoopConfig
from pipelines.config import RunConfig
from pipelines.serve import ModelHolder, ServeSettings
from storage.datasets import DatasetConfig, ingest, load_dataset
from storage.errors import IntegrityError
from storage.pseudonyms import id_key, key_id, pseudonym
from storage.registry import Provenance, Registry
from storage.split import make_split
from storage.workdir import WorkDir
from tests.conftest import synthetic_tables, write_tables


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    """A published bundle of users with distinctive raw ids, pseudonymised with the work dir key."""
    monkeypatch.delenv("KDREC_ID_KEY", raising=False)
    tables = synthetic_tables()
    rename = pl.col("user_id").str.replace("u", "customer-", literal=True)
    tables["interactions"] = tables["interactions"].with_columns(rename)
    tables["users"] = tables["users"].with_columns(rename)
    work = tmp_path / "work"
    paths = write_tables(tmp_path / "src", tables)
    result = ingest(DatasetConfig(name="byo", source="files", **paths), work_dir=work)
    dataset = load_dataset(work, "byo", result.version)
    run = fit_and_evaluate(
        make_split(dataset),
        StudentConfig(dim=8, history_len=6),
        DistillConfig(alpha=0.0, init="random"),
        LoopConfig(max_epochs=1, batch_size=8),
        soft_labels=None,
        text_emb=None,
    )
    key = id_key(work, create=True)
    files = bundle_files(run, dataset, user_key=key)
    Registry(WorkDir(work).registry).publish(
        files, Provenance(dataset=dataset.ref), validation=run.valid
    )
    raw = dataset.users().get_column("user_id").to_list()
    return work, raw, key


def test_no_raw_user_id_is_in_any_bundle_file(bundle):
    work, raw, key = bundle
    assert raw[0].startswith("customer-")
    path = Registry(WorkDir(work).registry).bundle().path
    files = sorted(path.iterdir())
    assert {"users.parquet", "manifest.json", "report.json"} <= {f.name for f in files}
    for file in files:
        data = file.read_bytes()
        assert not [u for u in raw if u.encode() in data], file.name
        assert key not in data and key.hex().encode() not in data, file.name
    stored = pl.read_parquet(path / "users.parquet").get_column("user_id").to_list()
    assert stored == [pseudonym(key, u) for u in raw]
    source_users = next((WorkDir(work).data / "byo").rglob("users.parquet")).read_bytes()
    assert any(u.encode() in source_users for u in raw)  # the scan sees raw ids where they are


def test_lookups_hash_the_raw_id_with_the_same_key(bundle, monkeypatch):
    work, raw, key = bundle
    rec = Recommender.in_work_dir(work)
    assert len(rec.recommend(raw[3], k=3)) == 3
    assert rec.explain(raw[3], rec.recommend(raw[3], k=1)[0].item_id).contributions
    with pytest.raises(UnknownUser):
        rec.recommend(pseudonym(key, raw[3]))  # a stored pseudonym is not an id
    served = ModelHolder(ServeSettings(registry=WorkDir(work).registry, work_dir=work)).model
    assert served.recommend(raw[3], k=3) == rec.recommend(raw[3], k=3)
    with pytest.raises(IntegrityError, match="set KDREC_ID_KEY with"):
        Recommender.load(WorkDir(work).registry)  # the key file is the named work dir's only
    monkeypatch.setenv("KDREC_ID_KEY", "another key")
    with pytest.raises(IntegrityError, match=f"pseudonymised with key {key_id(key)}"):
        Recommender.in_work_dir(work)
    monkeypatch.delenv("KDREC_ID_KEY")
    WorkDir(work).id_key.unlink()
    with pytest.raises(IntegrityError, match="set KDREC_ID_KEY"):
        Recommender.in_work_dir(work)


def test_on_by_default_for_files_data_only(tmp_path):
    files = DatasetConfig(
        name="x", source="files", interactions=tmp_path / "i.csv", items=tmp_path / "t.csv"
    )
    assert RunConfig(dataset=files).pseudonymized
    assert not RunConfig().pseudonymized  # the embedded, public MovieLens-100K
    assert not RunConfig(dataset=files, pseudonymize_users="off").pseudonymized
    assert RunConfig(pseudonymize_users="on").pseudonymized
