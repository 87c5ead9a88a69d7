from __future__ import annotations

import pytest

from storage.errors import IntegrityError
from storage.registry import Registry


def _publish(reg: Registry, ndcg: float, payload: bytes = b"w", **kw):
    return reg.publish(
        {"student.safetensors": payload, "report.json": b"{}"},
        {"dataset": "d"},
        validation={"ndcg@10": ndcg},
        **kw,
    )


def test_publish_switches_current_and_lists(tmp_path):
    reg = Registry(tmp_path, "m")
    first = _publish(reg, 0.05)
    assert first.published and reg.current_version() == first.version
    second = _publish(reg, 0.051, payload=b"w2")
    assert reg.versions() == [first.version, second.version]
    assert reg.current_version() == second.version
    bundle = reg.bundle()
    bundle.verify()
    assert bundle.manifest["validation"]["ndcg@10"] == 0.051
    assert set(bundle.manifest["files"]) == {"student.safetensors", "report.json"}


def test_regression_gate_refuses_unless_forced(tmp_path):
    reg = Registry(tmp_path, "m")
    good = _publish(reg, 0.050)
    assert _publish(reg, 0.0495, payload=b"w2").published  # within 2%
    refused = _publish(reg, 0.040, payload=b"w3")
    assert not refused.published and "more than 2% below" in refused.reason
    assert reg.current_version() != refused.version and len(reg.versions()) == 2
    forced = _publish(reg, 0.040, payload=b"w3", force=True)
    assert forced.published and forced.reason.startswith("forced")
    reg.rollback(good.version)
    assert reg.current_version() == good.version


def test_tampered_bundle_is_refused(tmp_path):
    reg = Registry(tmp_path, "m")
    result = _publish(reg, 0.05)
    (result.path / "student.safetensors").write_bytes(b"evil")
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        reg.bundle().verify()
    with pytest.raises(IntegrityError):
        reg.rollback(result.version)


def test_unknown_version_and_bad_names(tmp_path):
    reg = Registry(tmp_path, "m")
    with pytest.raises(FileNotFoundError, match="no published model"):
        reg.bundle()
    with pytest.raises(ValueError, match="invalid version"):
        reg.bundle("../etc")
    with pytest.raises(ValueError, match="invalid model name"):
        Registry(tmp_path, "a/b")


def test_publishing_identical_content_is_idempotent(tmp_path):
    reg = Registry(tmp_path, "m")
    first = reg.publish({"w": b"1", "report.json": b"t=1"}, {}, validation={"ndcg@10": 0.05})
    other = reg.publish({"w": b"2", "report.json": b"t=2"}, {}, validation={"ndcg@10": 0.05})
    again = reg.publish({"w": b"1", "report.json": b"t=3"}, {}, validation={"ndcg@10": 0.05})
    assert again.version == first.version and reg.current_version() == first.version
    assert reg.versions() == [first.version, other.version]  # nothing duplicated
