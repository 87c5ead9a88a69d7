"""The training loop every model here uses (teacher head, students): plain PyTorch.

AdamW at a constant or scheduled (warm-up + cosine) learning rate; per-epoch seeded shuffling
and dropout (so a resumed run equals an uninterrupted one); early stopping on a validation metric
(optionally EMA-smoothed) with patience; a progress bar with the loss parts; safetensors
checkpoints (last + best) written atomically; resume after a crash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field
from safetensors.torch import load, save
from torch import Tensor, nn
from tqdm.auto import tqdm

from distill.training.keyed import Keyed
from storage.atomic import atomic_write_bytes, atomic_write_json, exclusive
from storage.faults import crash_point

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], tuple[Tensor, dict[str, float]]]
EpochBatches = Callable[[int], Iterable[Any]]  # epoch -> batches (called after the epoch seed)
ValidateFn = Callable[[nn.Module], float]


class LoopConfig(Keyed):
    model_config = ConfigDict(extra="forbid")
    added_fields = ("schedule", "warmup_epochs")  # left out of checkpoint keys at their defaults

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, ge=1)  # examples per step: training windows, or users (two-tower)
    max_epochs: int = Field(200, ge=1)
    patience: int = Field(20, ge=1)  # epochs without improvement of the (smoothed) metric
    smoothing: float = Field(0.0, ge=0, lt=1)  # EMA weight of the past for the stopping metric
    seed: int = 0
    # the learning rate over epochs: constant, or a linear warm-up over `warmup_epochs` then a
    # cosine decay to 0 at `max_epochs` (a budgeted run: max_epochs is then its length)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: int = Field(0, ge=0)

    def lr_at(self, epoch: int) -> float:
        """The learning rate of `epoch` (0-based)."""
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / (self.warmup_epochs + 1)
        if self.schedule == "constant":
            return self.lr
        span = max(self.max_epochs - self.warmup_epochs, 1)
        done = (epoch - self.warmup_epochs) / span
        return self.lr * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))


@dataclass
class TrainResult:
    best_epoch: int
    best_score: float
    seconds: float
    history: list[dict] = field(default_factory=list)  # per epoch: loss parts, val metric
    resumed_from: int | None = None


class JointOptimizer:
    """Several optimizers stepped, zeroed, saved and restored as one (their parameter indices
    follow each other in `state_dict`, as in a single optimizer's)."""

    def __init__(self, parts: list[torch.optim.Optimizer]) -> None:
        self.parts = parts

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.parts:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.parts:
            o.step()

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.parts for g in o.param_groups]

    def _sizes(self) -> list[int]:
        return [sum(len(g["params"]) for g in o.param_groups) for o in self.parts]

    def state_dict(self) -> dict:
        state, offset = {}, 0
        for o, size in zip(self.parts, self._sizes(), strict=True):
            state.update({offset + i: v for i, v in o.state_dict()["state"].items()})
            offset += size
        return {"state": state, "param_groups": []}

    def load_state_dict(self, state_dict: dict) -> None:
        offset = 0
        for o, size in zip(self.parts, self._sizes(), strict=True):
            mine = o.state_dict()
            mine["state"] = {
                i - offset: v
                for i, v in state_dict["state"].items()
                if offset <= int(i) < offset + size
            }
            o.load_state_dict(mine)
            offset += size


Optimizer = torch.optim.Optimizer | JointOptimizer


def make_optimizer(model: nn.Module, config: LoopConfig) -> Optimizer:
    """AdamW; embedding tables built with `sparse=True` (the two-tower on a sampled softmax,
    whose steps touch a few rows of tables as large as the catalog) get SparseAdam instead, so
    a step costs the rows it used rather than the whole table."""
    sparse = [
        p
        for mod in model.modules()
        if isinstance(mod, nn.Embedding) and mod.sparse
        for p in mod.parameters()
    ]
    if not sparse:
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if config.weight_decay:
        raise ValueError(
            "sparse embedding tables (student.sampled_negatives) train with SparseAdam, which has "
            "no weight decay: set train.weight_decay to 0"
        )
    taken = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in taken]
    parts: list[torch.optim.Optimizer] = [torch.optim.SparseAdam(sparse, lr=config.lr)]
    if dense:
        parts.insert(0, torch.optim.AdamW(dense, lr=config.lr, weight_decay=config.weight_decay))
    return JointOptimizer(parts)


def _state_bytes(model: nn.Module, optimizer: Optimizer | None) -> bytes:
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if optimizer is not None:
        for idx, state in optimizer.state_dict()["state"].items():
            for name, value in state.items():
                tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).contiguous().cpu()
    return save(tensors)


def _restore(model: nn.Module, optimizer: Optimizer | None, blob: bytes) -> None:
    tensors = load(blob)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if optimizer is not None:
        state: dict[int, dict[str, Tensor | int]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                # a plain-int step counter (SparseAdam) stays an int
                plain = value.ndim == 0 and not value.is_floating_point()
                state.setdefault(int(idx), {})[name] = int(value) if plain else value
        sd = optimizer.state_dict()
        sd["state"] = state
        optimizer.load_state_dict(sd)


CHECKPOINT = "checkpoint.safetensors"
PROGRESS = "progress.json"  # beside the checkpoint, after every epoch: what a UI poller reads
LOG_EVERY_S = 30.0  # an epoch summary in the log at most this often


def _checkpoint_bytes(
    model: nn.Module, optimizer: Optimizer, best_blob: bytes, progress: dict
) -> bytes:
    tensors = load(_state_bytes(model, optimizer))
    tensors.update({f"best.{k}": v for k, v in load(best_blob).items()})
    return save(tensors, metadata={"progress": json.dumps(progress)})


def _best_blob(blob: bytes) -> bytes:
    return save({k[5:]: v for k, v in load(blob).items() if k.startswith("best.")})


def safe_open_metadata(blob: bytes) -> dict[str, str]:
    """The string metadata of a safetensors blob (its JSON header's __metadata__)."""
    size = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + size]).get("__metadata__", {})


def save_weights(model: nn.Module, path: Path, state: dict[str, Tensor] | None = None) -> None:
    """Save `state` (default: the whole state dict) as safetensors, atomically."""
    state = model.state_dict() if state is None else state
    atomic_write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in state.items()}))


def load_weights(model: nn.Module, path: Path, *, strict: bool = True) -> None:
    model.load_state_dict(load(Path(path).read_bytes()), strict=strict)


def fit(
    model: nn.Module,
    *,
    batches: EpochBatches,
    loss_fn: LossFn,
    validate: ValidateFn,
    config: LoopConfig,
    checkpoint_dir: Path | None = None,
    desc: str = "train",
    run_key: str = "",
) -> TrainResult:
    """Train until the validation metric stops improving; the model ends with the best weights.

    With `checkpoint_dir`, one process at a time trains it: another that asks for the same
    checkpoint waits, then resumes from it (a finished one returns at once)."""

    def run(folder: Path | None) -> TrainResult:
        return _fit(
            model,
            batches=batches,
            loss_fn=loss_fn,
            validate=validate,
            config=config,
            desc=desc,
            checkpoint_dir=folder,
            run_key=run_key,
        )

    if checkpoint_dir is None:
        return run(None)
    with exclusive(Path(checkpoint_dir) / ".lock", what=f"checkpoint of {desc}"):
        return run(Path(checkpoint_dir))


def _fit(
    model: nn.Module,
    *,
    batches: EpochBatches,
    loss_fn: LossFn,
    validate: ValidateFn,
    config: LoopConfig,
    checkpoint_dir: Path | None,
    desc: str,
    run_key: str,
) -> TrainResult:
    optimizer = make_optimizer(model, config)
    key = hashlib.sha256((config.model_dump_json() + run_key).encode()).hexdigest()[:16]
    history: list[dict] = []
    best_score, best_epoch, smoothed, start_epoch, resumed = -1.0, -1, None, 0, None
    best_blob = _state_bytes(model, None)
    earlier = 0.0
    ckpt_path = checkpoint_dir / CHECKPOINT if checkpoint_dir else None
    if ckpt_path is not None and ckpt_path.exists():
        blob = ckpt_path.read_bytes()
        progress = json.loads(safe_open_metadata(blob)["progress"])
        if progress.get("key") == key:
            _restore(model, optimizer, blob)
            best_blob = _best_blob(blob)
            history, best_score, best_epoch = (
                progress["history"],
                progress["best_score"],
                progress["best_epoch"],
            )
            smoothed, start_epoch = progress["smoothed"], progress["epoch"] + 1
            resumed = progress["epoch"]
            earlier = progress.get("seconds", 0.0)  # training time before the resume
            log.info("%s: resuming after epoch %d", desc, progress["epoch"])
    t0 = time.perf_counter() - earlier
    last_log = time.perf_counter()
    bar = tqdm(
        range(start_epoch, config.max_epochs),
        desc=desc,
        leave=False,
        initial=start_epoch,
        total=config.max_epochs,
        disable=None,
    )
    for epoch in bar:
        if best_epoch >= 0 and epoch - best_epoch > config.patience:
            break
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout and shuffling per epoch
        for group in optimizer.param_groups:  # a function of the epoch: resumes exactly
            group["lr"] = config.lr_at(epoch)
        model.train()
        sums: dict[str, float] = {}
        n_batches = 0
        for batch in batches(epoch):
            loss, parts = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value
            n_batches += 1
        model.eval()
        with torch.no_grad():
            score = float(validate(model))
        smoothed = (
            score
            if smoothed is None
            else config.smoothing * smoothed + (1 - config.smoothing) * score
        )
        row = {
            "epoch": epoch,
            "val": score,
            "val_smoothed": smoothed,
            **{k: v / max(n_batches, 1) for k, v in sums.items()},
        }
        history.append(row)
        if smoothed > best_score:
            best_score, best_epoch = smoothed, epoch
            best_blob = _state_bytes(model, None)
        bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k != "epoch"})
        if time.perf_counter() - last_log >= LOG_EVERY_S:  # the log, for runs without a TTY
            last_log = time.perf_counter()
            log.info(
                "%s: epoch %d, validation %.4f (best %.4f at epoch %d), %.0f s",
                desc,
                epoch,
                score,
                best_score,
                best_epoch,
                time.perf_counter() - t0,
            )
        if ckpt_path is not None:  # one file, one atomic write: state and progress agree
            progress = {
                "key": key,
                "epoch": epoch,
                "history": history,
                "best_score": best_score,
                "best_epoch": best_epoch,
                "smoothed": smoothed,
                "seconds": time.perf_counter() - t0,
            }
            atomic_write_bytes(ckpt_path, _checkpoint_bytes(model, optimizer, best_blob, progress))
            crash_point("train.after_checkpoint")
            _write_progress(ckpt_path.parent, desc, config, history, best_score, best_epoch, t0)
    bar.close()
    if checkpoint_dir is not None and history:
        _write_progress(checkpoint_dir, desc, config, history, best_score, best_epoch, t0, True)
    log.info("%s: best validation %.4f at epoch %d", desc, best_score, best_epoch)
    _restore(model, None, best_blob)
    model.eval()
    return TrainResult(
        best_epoch=best_epoch,
        best_score=best_score,
        seconds=time.perf_counter() - t0,
        history=history,
        resumed_from=resumed,
    )


def _write_progress(
    folder: Path,
    desc: str,
    config: LoopConfig,
    history: list[dict],
    best_score: float,
    best_epoch: int,
    t0: float,
    done: bool = False,
) -> None:
    atomic_write_json(
        folder / PROGRESS,
        {
            "desc": desc,
            "epoch": history[-1]["epoch"],
            "max_epochs": config.max_epochs,
            "patience": config.patience,
            "val": history[-1]["val"],
            "best": best_score,
            "best_epoch": best_epoch,
            "seconds": round(time.perf_counter() - t0, 1),
            "done": done,
        },
    )


def shuffled(n_examples: int, batch_size: int) -> EpochBatches:
    """Epoch batches of shuffled example indices (uses the epoch's torch seed)."""

    def batches(epoch: int) -> Iterator[Tensor]:
        order = torch.randperm(n_examples)
        for start in range(0, n_examples, batch_size):
            yield order[start : start + batch_size]

    return batches


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def apply_threads(threads: int | str) -> int:
    """Set the intra-op threads of torch and FAISS (and, for libraries that read them when they
    start, POLARS_MAX_THREADS and RAYON_NUM_THREADS) to `threads`; "auto" = the cores this
    process may use. Returns the number applied. OMP_WAIT_POLICY=PASSIVE must already be set
    (the CLI and the Makefile do it before torch loads): spinning threads are what collapse."""
    import faiss

    n = available_cores() if threads == "auto" else int(threads)
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    os.environ.setdefault("POLARS_MAX_THREADS", str(n))
    os.environ.setdefault("RAYON_NUM_THREADS", str(n))  # the HF tokenizers' thread pool
    return n


def config_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
