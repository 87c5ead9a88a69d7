"""The published student as tonight's warm start: read from its bundle, handed to the student
stage as a `distill.student.warm_start.WarmStart` (the stage maps it onto tonight's catalog)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from distill.serving.bundle import StudentBundle
from distill.student.warm_start import PreviousStudent, WarmStart
from storage.registry import Registry


def previous_student(bundle: StudentBundle, version: str) -> PreviousStudent:
    """The parts of a published bundle a warm start reads."""
    net = {k.removeprefix("net."): v for k, v in bundle.state().items() if k.startswith("net.")}
    ids = bundle.items(["item_id"])["item_id"].to_list()
    return PreviousStudent(version, bundle.config["student"], net, tuple(str(i) for i in ids))


def warm_start_from(registry_root: Path, model: str, item_ids: Sequence[str]) -> WarmStart | None:
    """The current published version of `model` as a warm start, or None if there is none."""
    registry = Registry(registry_root, model)
    if registry.current_version() is None:
        return None
    bundle = registry.bundle()
    previous = previous_student(StudentBundle(bundle.path), bundle.version)
    return WarmStart(previous, tuple(str(i) for i in item_ids))
