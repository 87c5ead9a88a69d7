from __future__ import annotations

import pytest

from storage.errors import IntegrityError
from storage.registry import Provenance, Registry


def _publish(reg: Registry, ndcg: float, payload: bytes = b"w", **kw):
    return reg.publish(
        {"student.safetensors": payload, "report.json": b"{}"},
        Provenance(dataset="d"),
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
    kw = {"validation": {"ndcg@10": 0.05}, "volatile": ("report.json",)}
    first = reg.publish({"w": b"1", "report.json": b"t=1"}, **kw)
    other = reg.publish({"w": b"2", "report.json": b"t=2"}, **kw)
    again = reg.publish({"w": b"1", "report.json": b"t=3"}, **kw)
    assert again.version == first.version and reg.current_version() == first.version
    assert reg.versions() == [first.version, other.version]  # nothing duplicated


def _rewrite_consistently(bundle, name: str, data: bytes) -> None:
    """What an attacker with write access does: change a file and its manifest hash to match."""
    import json

    from storage.atomic import sha256_bytes

    (bundle.path / name).write_bytes(data)
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    manifest["files"][name] = sha256_bytes(data)
    (bundle.path / "manifest.json").write_text(json.dumps(manifest))


def test_hashes_alone_miss_a_consistent_rewrite_a_signature_does_not(tmp_path, monkeypatch):
    unsigned = Registry(tmp_path / "a", "m")
    _rewrite_consistently(unsigned.bundle(_publish(unsigned, 0.05).version), "report.json", b"x")
    unsigned.bundle().verify()  # integrity only: the rewrite passes (the finding)

    monkeypatch.setenv("KDREC_SIGNING_KEY", "k1")
    signed = Registry(tmp_path / "b", "m")
    version = _publish(signed, 0.05).version
    assert signed.bundle().signed
    signed.bundle().verify()
    _rewrite_consistently(signed.bundle(version), "student.safetensors", b"evil weights")
    with pytest.raises(IntegrityError, match="manifest.sig does not match"):
        Registry(tmp_path / "b", "m").bundle().verify()
    with pytest.raises(IntegrityError, match="does not match"):
        signed.rollback(version)


def test_with_a_key_unsigned_and_other_key_bundles_are_refused(tmp_path, monkeypatch):
    reg = Registry(tmp_path, "m")
    _publish(reg, 0.05)  # published before any key
    monkeypatch.setenv("KDREC_SIGNING_KEY", "k1")
    with pytest.raises(IntegrityError, match="is not signed"):
        reg.bundle().verify()
    signed = _publish(reg, 0.05)  # same content: a signed version, not the unsigned twin
    assert signed.published and reg.bundle().signed and len(reg.versions()) == 2
    reg.bundle().verify()
    key_file = tmp_path / "other.key"
    key_file.write_text("k2\n")
    monkeypatch.delenv("KDREC_SIGNING_KEY")
    monkeypatch.setenv("KDREC_SIGNING_KEY_FILE", str(key_file))
    with pytest.raises(IntegrityError, match="signed with another key"):
        reg.bundle().verify()
    key_file.write_text("k1\n")  # the same key from a file
    reg.bundle().verify()


@pytest.mark.parametrize("name", ["../outside.bin", "sub/x.bin", "..", "/etc/passwd", ".hidden"])
def test_manifest_names_never_leave_the_bundle(tmp_path, name):
    import json

    from storage.atomic import sha256_bytes

    reg = Registry(tmp_path / "reg", "m")
    bundle = reg.bundle(_publish(reg, 0.05).version)
    (bundle.path.parent / "outside.bin").write_bytes(b"secret")  # hashes match if followed
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    manifest["files"] = {name: sha256_bytes(b"secret")}
    for listed in ("student.safetensors", "report.json"):
        (bundle.path / listed).unlink()
    (bundle.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="manifest lists invalid file name"):
        reg.bundle().verify()
