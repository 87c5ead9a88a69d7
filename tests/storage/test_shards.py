from __future__ import annotations

import pyarrow as pa
import pytest

from storage.errors import IntegrityError
from storage.shards import ShardStore


def _table(start: int, n: int) -> pa.Table:
    return pa.table(
        {
            "user_idx": pa.array(range(start, start + n), pa.int32()),
            "score": pa.array([float(i) / 10 for i in range(n)], pa.float32()),
        }
    )


def test_write_commit_read(tmp_path):
    store = ShardStore(tmp_path / "s")
    infos = [store.write_shard("00000", _table(0, 3)), store.write_shard("00001", _table(3, 2))]
    manifest = store.commit(infos, meta={"what": "test"})
    assert manifest["total_rows"] == 5 and [s["rows"] for s in manifest["shards"]] == [3, 2]
    assert store.scan().collect().get_column("user_idx").to_list() == [0, 1, 2, 3, 4]
    assert store.read_shard("00001").height == 2


def test_shard_files_are_content_addressed_and_deterministic(tmp_path):
    a = ShardStore(tmp_path / "a").write_shard("00000", _table(0, 3))
    b = ShardStore(tmp_path / "b").write_shard("00000", _table(0, 3))
    assert a.sha256 == b.sha256 and a.file == f"shard-00000-{a.sha256[:8]}.parquet"


def test_crash_between_shard_write_and_manifest_keeps_old_state(tmp_path):
    store = ShardStore(tmp_path / "s")
    store.commit([store.write_shard("00000", _table(0, 3))])
    # a new run rewrites the shard with other content and "crashes" before commit()
    new = store.write_shard("00000", _table(10, 4))
    assert store.scan().collect().get_column("user_idx").to_list() == [0, 1, 2]
    # the pending shard is found again for resumption, then committing switches readers over
    assert store.pending()["00000"] == new
    store.commit([new])
    assert store.scan().collect().height == 4
    assert len(list(store.root.glob("shard-*.parquet"))) == 1  # old file pruned after commit


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "delete"])
def test_damaged_shard_is_detected_and_named(tmp_path, damage):
    store = ShardStore(tmp_path / "s")
    info = store.write_shard("00007", _table(0, 50))
    store.commit([info])
    path = store.root / info.file
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-20])
    elif damage == "bitflip":
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        path.write_bytes(bytes(raw))
    else:
        path.unlink()
    with pytest.raises(IntegrityError, match=f"shard .*{info.file}"):
        store.scan()
    assert "00007" not in store.pending()  # a damaged shard does not count as done


def test_reading_without_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json missing"):
        ShardStore(tmp_path / "none").scan()
