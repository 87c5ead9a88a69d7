"""Model registry: publish bundles atomically, switch `CURRENT`, list, show and roll back.

registry/<model>/<version>/   student.safetensors, config.json, items.faiss, items.parquet,
                              users.parquet, report.json, manifest.json (written last; it lists
                              every file's sha256, so a tampered bundle is refused on load),
                              manifest.sig when a signing key is configured
registry/<model>/CURRENT      the published version's name, replaced atomically
registry/<model>/.lock        serialises publishes and rollbacks across processes

A bundle is staged in a temp folder and renamed into place, then CURRENT is switched: a reader
never sees a half-written bundle, and a crash at any point leaves the previous CURRENT usable.

Hashes give integrity, not authenticity: whoever can rewrite a weight file can rewrite its hash.
With a signing key (KDREC_SIGNING_KEY, or a file named by KDREC_SIGNING_KEY_FILE) publishing
writes manifest.sig = HMAC-SHA256(key, manifest.json), and verifying refuses a bundle that is
unsigned or whose signature does not match. Manifest file names must be plain names (no path
separators, no ".."), so verifying never opens a path outside the bundle folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from storage.atomic import (
    TMP_PREFIX,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    exclusive,
    read_json,
    sha256_file,
    staging_dir,
    validate_name,
)
from storage.errors import IntegrityError, KdrecError, NotFound
from storage.faults import crash_point

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
KEY_ENV, KEY_FILE_ENV = "KDREC_SIGNING_KEY", "KDREC_SIGNING_KEY_FILE"
GATE_METRIC = "ndcg@10"  # validation metric the regression gate compares
GATE_TOLERANCE = 0.02  # refuse a model more than 2% below the current one


@dataclass(frozen=True)
class Provenance:
    """Where a bundle came from, as its manifest records it. `Registry.publish` adds what the
    registry knows (`manifest`): model, version, file hashes, content key, validation, the
    comparison with the served model, time, git sha and the gate's decision."""

    dataset: str | None = None  # the dataset version's ref
    split: str | None = None
    teacher_fingerprint: str | None = None
    metrics: dict | None = None  # test metrics per report row
    config: dict | None = None  # the run's config
    extra: dict[str, Any] = field(default_factory=dict)  # as_of_day, nightly_base, extended_from

    def fields(self) -> dict[str, Any]:
        known = {
            "dataset": self.dataset,
            "split": self.split,
            "teacher_fingerprint": self.teacher_fingerprint,
            "metrics": self.metrics,
            "config": self.config,
        }
        return {**{k: v for k, v in known.items() if v is not None}, **self.extra}


def manifest(
    provenance: Provenance,
    *,
    model: str,
    version: str,
    files: dict[str, str],
    content_key: str,
    validation: dict[str, float],
    versus: dict | None,
    gate: str,
) -> dict[str, Any]:
    """manifest.json: the bundle's provenance, then what the registry knows; the one builder."""
    return {
        **provenance.fields(),
        "model": model,
        "version": version,
        "files": files,
        "content_key": content_key,
        "validation": validation,
        **({"versus_champion": versus} if versus is not None else {}),
        "created_at": datetime.now(UTC).isoformat(),
        "git_sha": git_sha(),
        "gate": gate,
    }


class GateConfig(BaseModel):
    """The regression gate: the candidate against the served model on the same validation fold
    (`versus`, distill/studies/champion.py); without one, against the validation the served model
    recorded when it was published."""

    model_config = ConfigDict(extra="forbid")

    tolerance: float = Field(GATE_TOLERANCE, ge=0, lt=1)  # refuse more than this below (relative)
    # with a p-value: refuse only when the drop is also significant (per-user paired t-test)
    significance: float | None = Field(None, gt=0, lt=1)


class GateRefused(KdrecError, RuntimeError):
    """Publishing refused by the regression gate."""


def signing_key() -> bytes | None:
    """The configured HMAC key: $KDREC_SIGNING_KEY, or the contents of $KDREC_SIGNING_KEY_FILE."""
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode()
    if os.environ.get(KEY_FILE_ENV):
        path = Path(os.environ[KEY_FILE_ENV])
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise IntegrityError(f"{KEY_FILE_ENV}={path}: cannot read the key: {exc}") from None
        if not key:
            raise IntegrityError(f"{KEY_FILE_ENV}={path}: the key file is empty")
        return key
    return None


def signature(key: bytes, manifest_bytes: bytes) -> str:
    return "hmac-sha256:" + hmac.new(key, manifest_bytes, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Bundle:
    path: Path

    @cached_property
    def manifest(self) -> dict:
        return read_json(self.path / MANIFEST)

    @property
    def version(self) -> str:
        return self.path.name

    def verify(self, key: bytes | None = None) -> None:
        """Signed (when a key is configured), every file listed in the manifest a plain name that
        exists with the recorded sha256, nothing extra. `key` None: the configured key."""
        key = key if key is not None else signing_key()
        if key is not None:
            self._check_signature(key)
        files = self.manifest.get("files", {})
        if not isinstance(files, dict):
            raise IntegrityError(f"bundle {self.path}: manifest 'files' is not a mapping")
        for name in files:
            try:
                validate_name(name, what="file name")
            except ValueError as exc:
                raise IntegrityError(f"bundle {self.path}: manifest lists {exc}") from None
        for name, digest in files.items():
            target = self.path / name
            if not target.exists():
                raise IntegrityError(
                    f"bundle {self.path}: file {name} listed in manifest is missing"
                )
            if sha256_file(target) != digest:
                raise IntegrityError(
                    f"bundle {self.path}: {name} does not match its manifest "
                    "hash (tampered or corrupt); refusing to load"
                )
        extra = {p.name for p in self.path.iterdir()} - set(files) - {MANIFEST, SIGNATURE}
        if extra:
            raise IntegrityError(f"bundle {self.path}: files not in manifest: {sorted(extra)}")

    def _check_signature(self, key: bytes) -> None:
        sig_path = self.path / SIGNATURE
        if not sig_path.exists():
            raise IntegrityError(
                f"bundle {self.path} is not signed, and a signing key is configured "
                f"({KEY_ENV} / {KEY_FILE_ENV}); refusing to load it"
            )
        expected = signature(key, (self.path / MANIFEST).read_bytes())
        if not hmac.compare_digest(sig_path.read_text().strip().encode(), expected.encode()):
            raise IntegrityError(
                f"bundle {self.path}: manifest.sig does not match manifest.json under the "
                "configured key (altered bundle, or signed with another key); refusing to load it"
            )

    @property
    def signed(self) -> bool:
        return (self.path / SIGNATURE).exists()


@dataclass(frozen=True)
class PublishResult:
    """The regression gate's decision: published or not, why, and where."""

    published: bool
    version: str | None
    reason: str
    path: Path | None = None

    @classmethod
    def disabled(cls) -> PublishResult:
        return cls(False, None, "publishing disabled")

    @property
    def line(self) -> str:
        """The decision in one line, as report.md and the UI show it."""
        return self.reason + (f" ({self.version})" if self.version else "")

    def as_json(self) -> dict:
        return {
            "published": self.published,
            "version": self.version,
            "reason": self.reason,
            "path": str(self.path) if self.path else None,
        }


def git_sha() -> str | None:
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def _same_fold(versus: dict, config: GateConfig) -> tuple[bool, str]:
    """The gate's decision on the head-to-head of the candidate and the served model."""
    old, new = versus["champion"][GATE_METRIC], versus["challenger"][GATE_METRIC]
    p_value = versus["test"]["p_value"]
    where = (
        f"on tonight's validation fold, {versus['targets']} targets, "
        f"{versus['unknown_targets']} of them items the current model does not know"
    )
    worse = new < old * (1 - config.tolerance)
    significant = config.significance is None or p_value < config.significance
    if worse and significant:
        return False, (
            f"validation {GATE_METRIC} {new:.4f} is more than {config.tolerance:.0%} below the "
            f"current model's {old:.4f} ({versus['champion_version']}) {where}, p = {p_value:.3g}"
        )
    return True, (
        f"validation {GATE_METRIC} {new:.4f} vs current {old:.4f} "
        f"({versus['champion_version']}) {where}, p = {p_value:.3g}"
    )


class Registry:
    def __init__(self, root: Path, model: str = "kdrec") -> None:
        self.root = Path(root) / validate_name(model, what="model name")
        self.model = model

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return exclusive(self.root / ".lock", what=f"the {self.model} registry")

    def current_version(self) -> str | None:
        pointer = self.root / "CURRENT"
        return pointer.read_text().strip() if pointer.exists() else None

    def versions(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(  # skip the staging dirs that a killed publish leaves behind
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(TMP_PREFIX) and (p / MANIFEST).exists()
        )

    def bundle(self, version: str = "current") -> Bundle:
        if version == "current":
            current = self.current_version()
            if current is None:
                raise NotFound(f"no published model in {self.root}; run `make run`")
            version = current
        path = self.root / validate_name(version, what="version")
        if not (path / MANIFEST).exists():
            raise NotFound(
                f"no version {version!r} of model {self.model!r} in {self.root}"
                f"; known: {self.versions()[-5:]}"
            )
        return Bundle(path)

    def new_version(self, tag: str = "") -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        return validate_name(f"v{stamp}{'-' + tag if tag else ''}", what="version")

    def gate(
        self,
        metrics: dict[str, float],
        versus: dict | None = None,
        config: GateConfig | None = None,
    ) -> tuple[bool, str]:
        """(passes, reason) for a candidate's validation metrics against the current model:
        on the same fold when `versus` (distill.studies.champion.HeadToHead.as_json) is given."""
        config = config or GateConfig()
        current = self.current_version()
        if current is None:
            return True, "first publish"
        if versus is not None and versus.get("champion_version") == current:
            return _same_fold(versus, config)
        old = self.bundle(current).manifest.get("validation", {}).get(GATE_METRIC)
        new = metrics.get(GATE_METRIC)
        if old is None or new is None:
            return True, "no comparable validation metric"
        if new < old * (1 - config.tolerance):
            return False, (
                f"validation {GATE_METRIC} {new:.4f} is more than "
                f"{config.tolerance:.0%} below the current model's {old:.4f} ({current}, "
                "as recorded on its own night's split)"
            )
        return True, f"validation {GATE_METRIC} {new:.4f} vs current {old:.4f} (its own split)"

    def publish(
        self,
        files: dict[str, bytes],
        provenance: Provenance | None = None,
        *,
        validation: dict[str, float],
        force: bool = False,
        tag: str = "",
        set_current: bool = True,
        volatile: tuple[str, ...] = (),
        versus: dict | None = None,
        gate: GateConfig | None = None,
    ) -> PublishResult:
        """Stage, hash, rename into place, then switch CURRENT; all under the registry lock.

        `set_current=False` stores a version without serving it (backfills); no gate applies then.
        Publishing is idempotent: a version whose files (apart from `volatile` ones, such as a
        report with its timings; the bundle module names them) are identical is reused, never
        duplicated — so a run that crashed after the rename but before the CURRENT switch
        finishes on its re-run.
        """
        for name in files:
            validate_name(name, what="bundle file name")
        content_key = hashlib.sha256(
            "".join(
                f"{name}:{hashlib.sha256(data).hexdigest()};"
                for name, data in sorted(files.items())
                if name not in volatile
            ).encode()
        ).hexdigest()
        key = signing_key()
        with self.lock():
            ok, reason = (
                self.gate(validation, versus, gate) if set_current else (True, "not made current")
            )
            if not ok and not force:
                log.warning("publish refused by the regression gate: %s", reason)
                return PublishResult(False, None, f"refused: {reason}")
            same = self.find(content_key=content_key)  # an unsigned twin is not reused once signing
            existing = [v for v in same if key is None or self.bundle(v).signed]
            if existing:
                bundle = self.bundle(existing[-1])
                bundle.verify()
                if set_current:
                    atomic_write_text(self.root / "CURRENT", bundle.version + "\n")
                log.info("%s/%s already holds this model; reused", self.model, bundle.version)
                return PublishResult(
                    True, bundle.version, f"already published; {reason}", bundle.path
                )
            version = self.new_version(tag)
            final = self.root / version
            with staging_dir(final) as tmp:
                hashes = {}
                for name, data in sorted(files.items()):
                    atomic_write_bytes(tmp / name, data)
                    hashes[name] = sha256_file(tmp / name)
                atomic_write_json(
                    tmp / MANIFEST,
                    manifest(
                        provenance or Provenance(),
                        model=self.model,
                        version=version,
                        files=hashes,
                        content_key=content_key,
                        validation=validation,
                        versus=versus,
                        gate=reason if ok else f"forced: {reason}",
                    ),
                )
                if key is not None:
                    atomic_write_text(
                        tmp / SIGNATURE, signature(key, (tmp / MANIFEST).read_bytes()) + "\n"
                    )
                crash_point("publish.before_rename")
            crash_point("publish.before_current")
            if set_current:
                atomic_write_text(self.root / "CURRENT", version + "\n")
            log.info("published %s/%s (%s)", self.model, version, reason)
            return PublishResult(True, version, reason if ok else f"forced: {reason}", final)

    def find(self, **fields: object) -> list[str]:
        """Versions whose manifest has all of `fields` (e.g. as_of_day="2024-01-02")."""
        return [
            v
            for v in self.versions()
            if all(self.bundle(v).manifest.get(k) == val for k, val in fields.items())
        ]

    def rollback(self, version: str) -> Bundle:
        """Point CURRENT at an existing, intact version."""
        with self.lock():
            bundle = self.bundle(version)
            bundle.verify()
            atomic_write_text(self.root / "CURRENT", bundle.version + "\n")
            return bundle
