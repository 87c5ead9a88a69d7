"""Pseudonymised user ids: bundles can store HMAC-SHA256(key, user id) instead of raw ids.

The key never goes into a bundle. It is $KDREC_ID_KEY, or `<work>/keys/user-id.key` (32 random
bytes, created on first use, mode 0600). A bundle records only the key's id (a hash of it), so a
service holding the wrong key fails with a clear error instead of treating everyone as unknown.
A service on another host needs the same key: set KDREC_ID_KEY there.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from storage.atomic import atomic_write_bytes
from storage.errors import IntegrityError
from storage.workdir import WorkDir

KEY_ENV = "KDREC_ID_KEY"
SCHEME = "hmac-sha256"


def id_key(work_dir: Path | None, *, create: bool) -> bytes | None:
    """The user-id key: $KDREC_ID_KEY, else the work dir's key file (made when `create`);
    `work_dir` None: the environment's key only."""
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode()
    if work_dir is None:
        return None
    path = WorkDir(work_dir).id_key
    if path.exists():
        return path.read_bytes()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, secrets.token_bytes(32))
    path.chmod(0o600)
    return path.read_bytes()


def key_id(key: bytes) -> str:
    """A public name for a key (reveals nothing of it): which key pseudonymised a bundle."""
    return hashlib.sha256(b"kdrec-user-id-key:" + key).hexdigest()[:16]


def pseudonym(key: bytes, user_id: str) -> str:
    return hmac.new(key, str(user_id).encode(), hashlib.sha256).hexdigest()[:32]


class Pseudonymiser:
    """Maps incoming raw user ids to a bundle's stored ids (identity when the bundle has raw)."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key

    @classmethod
    def for_bundle(cls, scheme: str | None, expected_key_id: str | None, work_dir: Path | None):
        """The mapping a bundle needs: `scheme` None = raw ids; else the key whose id matches."""
        if scheme is None:
            return cls(None)
        key = id_key(work_dir, create=False)
        if key is None:
            where = f" (or provide {WorkDir(work_dir).id_key})" if work_dir else ""
            raise IntegrityError(
                f"this bundle stores pseudonymised user ids; set {KEY_ENV}{where} with the key "
                "it was published with"
            )
        if key_id(key) != expected_key_id:
            raise IntegrityError(
                f"this bundle's user ids were pseudonymised with key {expected_key_id}, but the "
                f"configured key is {key_id(key)}; set {KEY_ENV} to the publishing key"
            )
        return cls(key)

    def __call__(self, user_id: str) -> str:
        return str(user_id) if self.key is None else pseudonym(self.key, user_id)
