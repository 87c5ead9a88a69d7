"""What every teacher shares: the `Teacher` protocol, its config, errors, model-folder checks and
weight hashing."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from distill.texts import TextConfig
from distill.training.keyed import Keyed
from distill.training.loop import LoopConfig
from storage.errors import KdrecError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


class TeacherError(KdrecError, RuntimeError):
    """A teacher that cannot run: bad model path, unsupported architecture, non-finite outputs."""


@runtime_checkable
class Teacher(Protocol):
    """What the teacher stage asks of a language model (`EncoderTeacher`, `CausalLMTeacher`;
    `distill.teacher.prepare.load_teacher` returns one). Scoring candidate pairs by prompting is
    the causal teacher's own `score_shared`."""

    path: Path  # the model folder (its weights are hashed into the cache fingerprint)
    forward_passes: int  # model invocations so far (a re-run that changes nothing makes none)

    @property
    def model(self) -> torch.nn.Module: ...

    def count_tokens(self, text: str) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 L2-normalised text embeddings, in input order."""
        ...

    def embed(
        self, texts: Sequence[str], model: torch.nn.Module | None = None, *, grad: bool = False
    ) -> torch.Tensor:
        """One batch of pooled embeddings, optionally through a trainable copy of the LM."""
        ...


LOOP_FIELDS = tuple(LoopConfig.model_fields)  # lr, weight_decay, batch_size, ..., seed


class AdaptConfig(Keyed):
    """The recommendation head trained on train interactions on top of the language model."""

    model_config = ConfigDict(extra="forbid")
    added_fields = ("sampled_negatives",)  # left out of the fingerprint at the default

    mode: Literal["none", "frozen", "top_layers", "lora"] = "frozen"  # none = zero-shot cosine
    unfreeze_layers: int = Field(1, ge=1)  # top_layers: how many top LM layers are trained
    lora_r: int = Field(8, ge=1)  # lora: rank
    lora_alpha: int = Field(16, ge=1)
    dim: int = Field(64, ge=8)  # head width
    history_len: int = Field(50, ge=1)  # most recent train items the head attends over
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(2, ge=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)  # embeddings, attention and blocks (SASRec)
    id_embeddings: bool = True  # also learn item ID embeddings (added to the text projection)
    # independently seeded heads whose scores are averaged; one by default: on ML-100K a second
    # head bought nothing on validation and cost a core (docs/results.md, "Cheaper to train")
    heads: int = Field(1, ge=1)
    # the head's softmax: over every item (0), or over the step's targets + this many uniform
    # negatives, log-Q corrected (distill/nn/sampled.py): catalogs where (positions x items)
    # logits are the cost of a step
    sampled_negatives: int = Field(0, ge=0)
    # how each head trains: batch_size = training windows (of history_len targets) per step,
    # patience = epochs without validation NDCG@10 gain (15: the head's best comes early);
    # head k is seeded loop.seed + k
    loop: LoopConfig = Field(default_factory=lambda: LoopConfig(patience=15))

    @model_validator(mode="before")
    @classmethod
    def _loop_keys_at_top(cls, data: Any) -> Any:
        """Configs and cache plans written before `loop` was a section name the loop's fields
        (lr, batch_size, max_epochs, patience, ...) directly under adapt: read them into it."""
        if isinstance(data, dict) and any(k in data for k in LOOP_FIELDS):
            data = dict(data)
            loop = dict(data.get("loop") or {})
            for k in LOOP_FIELDS:
                if k in data:
                    loop[k] = data.pop(k)
            data["loop"] = loop
        return data

    def seeded(self, seed: int) -> AdaptConfig:
        """The same head config with its loop seeded `seed`."""
        return self.model_copy(update={"loop": self.loop.model_copy(update={"seed": seed})})

    def fingerprint(self) -> dict[str, Any]:
        """What the teacher's fingerprint hashes of this config: the loop's fields beside the
        head's, as before the loop was a section, so caches built then keep their fingerprint
        (`smoothing`, which heads did not have, only when it is set)."""
        loop = self.loop.model_dump(exclude={"smoothing"} if not self.loop.smoothing else set())
        return {**self.model_dump(exclude={"loop"}), **loop}

    @model_validator(mode="after")
    def _heads_divide(self) -> AdaptConfig:
        if self.dim % self.n_heads:
            raise ValueError(
                f"adapt.dim ({self.dim}) must be divisible by n_heads ({self.n_heads})"
            )
        return self


class TeacherConfig(Keyed):
    model_config = ConfigDict(extra="forbid")
    added_fields = ("position_last",)  # left out of dumps (cache plans) at the default

    kind: Literal["embedding", "causal"] = "embedding"
    model_path: Path | None = None  # HF folder; None = the packaged default for `kind`
    gguf_file: str | None = None  # causal: a .gguf inside model_path (converted once, cached)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    dtype: Literal["float32", "bfloat16"] = "float32"
    batch_size: int = Field(64, ge=1)  # texts (or candidate prompts) per forward pass
    max_length: int = Field(256, ge=8)  # tokens per text
    tau: float = Field(0.05, gt=0)  # zero-shot soft label = cos(u, i) / tau
    pairs: Literal["all", "candidates"] = "all"
    candidates_top_k: int = Field(50, ge=1)  # candidates: top-K by teacher embedding
    candidates_random: int = Field(20, ge=0)  # candidates: + K' random negatives
    users_per_shard: int = Field(128, ge=1)
    # adapted head: also cache its top-K next items after every prefix of each train history
    # (what a sequential student distils at every position); 0 = only the whole-history label
    position_top_k: int = Field(50, ge=0)
    # ... for the last this many prefixes of each history only (0 = every prefix): bounds the
    # per-prefix labels at users x position_last x position_top_k rows, whatever the histories
    position_last: int = Field(0, ge=0)
    texts: TextConfig = TextConfig()
    adapt: AdaptConfig = AdaptConfig()

    @model_validator(mode="after")
    def _check(self) -> TeacherConfig:
        if self.model_path is not None and str(self.model_path).strip() in ("", "."):
            raise ValueError("teacher.model_path is empty; omit it to use the packaged default")
        if self.kind == "causal" and self.pairs == "all" and self.model_path is None:
            # SmolLM2 on CPU scores ~10 prompts/s: 1.6M pairs would take days
            raise ValueError("the causal teacher needs pairs: candidates (all pairs is too slow)")
        return self


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TeacherError("teacher.device is 'cuda' but no CUDA device is available")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def packaged_path(module: str, *, install: str) -> Path:
    """Folder of a model package, located without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise TeacherError(
            f"the packaged model '{module}' is not installed; install it with "
            f"`{install}` (or run `make install`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def check_model_dir(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise TeacherError(f"teacher model path {path} does not exist")
    if path.is_dir() and not (path / "config.json").exists():
        raise TeacherError(f"teacher model path {path} has no config.json (not a HF model folder)")
    return path


CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def is_causal_architecture(model_config) -> bool:
    """True for decoder-only LMs, judged by the saved architectures (or is_decoder)."""
    archs = getattr(model_config, "architectures", None) or []
    return bool(getattr(model_config, "is_decoder", False)) or any(
        a.endswith(CAUSAL_SUFFIXES) for a in archs
    )


def weights_hash(path: Path) -> str:
    """sha256 over the model's weight files (names and contents), independent of folder location."""
    path = Path(path)
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    )
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def count_params(path: Path) -> int:
    """Parameters in the safetensors files at `path` (file or folder), from the headers only."""
    from safetensors import safe_open

    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.safetensors"))
    total = 0
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                total += int(np.prod(handle.get_slice(key).get_shape()))
    return total


def tokenize(tokenizer, texts: Sequence[str], max_length: int, device: torch.device) -> dict:
    """One dynamically padded, truncated batch of token tensors on `device`."""
    batch = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {k: v.to(device) for k, v in batch.items()}


def encode_bucketed(
    texts: Sequence[str],
    batch_size: int,
    dim: int,
    embed: Callable[[list[str]], torch.Tensor],
    lengths: Sequence[int] | None = None,
) -> np.ndarray:
    """(N, D) float32 in input order, embedding texts in batches of similar length (dynamic
    padding wastes little); `lengths` (token counts) sort better than characters.
    NaN/inf outputs are a TeacherError."""
    out = np.empty((len(texts), dim), dtype=np.float32)
    sizes = lengths if lengths is not None else [len(t) for t in texts]
    order = np.argsort([-n for n in sizes], kind="stable")
    with tqdm(total=len(texts), desc="LM encode", unit="text", leave=False, disable=None) as bar:
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = embed([texts[i] for i in idx]).cpu().numpy()
            bar.update(len(idx))
    return check_finite(out, what="texts")


def check_finite(values: np.ndarray, *, what: str) -> np.ndarray:
    if not np.isfinite(values).all():
        bad = (
            int((~np.isfinite(values)).any(axis=-1).sum())
            if values.ndim > 1
            else int((~np.isfinite(values)).sum())
        )
        raise TeacherError(f"teacher produced NaN/inf for {bad} {what}; nothing was written")
    return values
