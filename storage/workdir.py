"""The work dir's layout, in one place. Every other module asks this object for a path.

<root>/
  data/<dataset>/<version>/          ingested datasets (storage/datasets.py)
  cache/embeddings/<model key>/      LM text embeddings by text hash (storage/embeddings.py)
  cache/models/                      converted LM folders (the GGUF teacher)
  cache/teacher/<fingerprint>/       teacher caches: plan, vectors, soft-label shards
  cache/teacher/adapters/<key>/      adapted heads' checkpoints
  cache/students/<key>/              student checkpoints (content-keyed, reused across runs)
  registry/<model>/<version>/        published bundles + CURRENT
  runs/<timestamp>/                  one folder per pipeline run (storage/rundir.py)
  inbox/<dataset>/                   files the nightly flow picks up (storage/inbox.py)
  keys/user-id.key                   the key of pseudonymised user ids (never in a bundle)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage.paths import absolute
from storage.rundir import RunDir


@dataclass(frozen=True)
class WorkDir:
    """A work dir; `root` is made absolute (from the current directory) when the object is
    built, so every path it hands out can be stored and read from anywhere."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", absolute(self.root))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def embeddings(self) -> Path:
        return self.cache / "embeddings"

    @property
    def models(self) -> Path:
        return self.cache / "models"

    @property
    def teachers(self) -> Path:
        return self.cache / "teacher"

    @property
    def adapters(self) -> Path:
        return self.teachers / "adapters"

    @property
    def students(self) -> Path:
        return self.cache / "students"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def inbox(self, dataset: str) -> Path:
        """Where the nightly flow picks up `dataset`'s new files."""
        return self.root / "inbox" / dataset

    @property
    def id_key(self) -> Path:
        return self.root / "keys" / "user-id.key"

    def new_run(self) -> RunDir:
        """A fresh run folder (not created); its files are `RunDir`'s."""
        return RunDir.new(self.runs)
