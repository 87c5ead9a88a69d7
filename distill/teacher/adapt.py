"""Teacher adaptation: a recommendation head trained on train interactions on top of the LM.

Default (`frozen`): the LM's item embeddings are computed once and cached; the head is SASRec
(`distill.nn.sasrec`) whose item vectors are learned ID embeddings plus a linear projection of those
LM embeddings; score = inner product; loss = full-softmax cross-entropy on every next train item
(the standard SASRec recipe, so the teacher differs from the plain SASRec only by the LM; with
`adapt.sampled_negatives`, a log-Q corrected sampled softmax for large catalogs).
`top_layers` and `lora` train part of the LM too, through the same code: only the source of the
item text embeddings changes (re-encoded with gradients at every step).

User-profile text embeddings are deliberately not fed to the head: the profile names the user's
recent train titles, so at train time it would reveal the very items the head learns to predict.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from distill.evaluation.harness import EVAL_FOLDS, Scorer, evaluate, vector_scorer
from distill.nn.layers import left_padded
from distill.nn.sampled import SampledSoftmax
from distill.nn.sasrec import SASRec, windows
from distill.teacher.base import AdaptConfig
from distill.training.loop import TrainResult, fit, shuffled
from distill.training.parallel import map_in_processes
from storage.split import Split

EmbedFn = Callable[[Sequence[str], nn.Module, bool], Tensor]  # (texts, lm, grad) -> (N, T)


class FrozenText(nn.Module):
    """Cached LM item embeddings: a constant (I, T) tensor."""

    emb: Tensor

    def __init__(self, emb: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("emb", torch.as_tensor(emb, dtype=torch.float32), persistent=False)

    def forward(self) -> Tensor:
        return self.emb


class TrainableText(nn.Module):
    """Item embeddings re-encoded by a partly trainable LM (top layers or LoRA)."""

    def __init__(
        self, lm: nn.Module, texts: Sequence[str], embed: EmbedFn, chunk: int = 64
    ) -> None:
        super().__init__()
        self.lm, self.texts, self.embed, self.chunk = lm, list(texts), embed, chunk

    def forward(self) -> Tensor:
        grad = self.training and torch.is_grad_enabled()
        parts = [
            self.embed(self.texts[i : i + self.chunk], self.lm, grad)
            for i in range(0, len(self.texts), self.chunk)
        ]
        return torch.cat(parts)


def _largest_module_list(model: nn.Module) -> nn.ModuleList:
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ValueError("cannot find the LM's layer list to unfreeze")
    return max(lists, key=len)


def make_trainable_lm(lm: nn.Module, config: AdaptConfig) -> nn.Module:
    """A copy of `lm` with only the top layers (or LoRA adapters) trainable."""
    lm = copy.deepcopy(lm)
    for p in lm.parameters():
        p.requires_grad_(False)
    if config.mode == "top_layers":
        for layer in list(_largest_module_list(lm))[-config.unfreeze_layers :]:
            for p in layer.parameters():
                p.requires_grad_(True)
        return lm
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        lm, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, bias="none")
    )


class AdaptedTeacher(nn.Module):
    """Text source (frozen or trainable LM) + one or more SASRec heads that each add a projection
    of the text to learned item IDs. Several heads form an ensemble whose score is the mean of the
    heads' scores, kept an inner product by concatenating vectors: item = [i_1 .. i_H],
    user = [u_1 .. u_H] / H."""

    def __init__(self, text: nn.Module, heads: Sequence[SASRec]) -> None:
        super().__init__()
        self.text, self.heads = text, nn.ModuleList(heads)

    def head_nets(self) -> list[SASRec]:
        """The heads, typed (`heads` is the ModuleList their state-dict keys come from)."""
        return [cast(SASRec, h) for h in self.heads]

    def head(self, k: int) -> AdaptedTeacher:
        """Head k alone on the same text source (shares its modules: training it trains this)."""
        return AdaptedTeacher(self.text, [self.head_nets()[k]])

    def item_vectors(self) -> Tensor:
        text = self.text()
        return torch.cat([h.item_vectors(text) for h in self.head_nets()], dim=1)  # (I, H * D)

    def _chunks(self, item_vecs: Tensor) -> tuple[Tensor, ...]:
        return item_vecs.split(item_vecs.shape[1] // len(self.heads), dim=1)

    def history_vectors(self, hist: Tensor, item_vecs: Tensor | None = None) -> Tensor:
        """hist (B, L) right-aligned histories -> (B, H * D)."""
        item_vecs = self.item_vectors() if item_vecs is None else item_vecs
        parts = zip(self.head_nets(), self._chunks(item_vecs), strict=True)
        return torch.cat([h.history_vectors(hist, v) for h, v in parts], dim=1) / len(self.heads)

    def states(self, seq: Tensor, item_vecs: Tensor) -> Tensor:
        """seq (B, L) left-aligned windows -> (B, L, H * D) user states after every prefix."""
        parts = zip(self.head_nets(), self._chunks(item_vecs), strict=True)
        return torch.cat([h.states(seq, v) for h, v in parts], dim=-1) / len(self.heads)

    def trainable_state(self) -> dict[str, Tensor]:
        """What adaptation learned: the heads and any trainable LM parameters."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k.startswith("heads.") or k in names}


def build_teacher_model(
    n_items: int, text_dim: int, config: AdaptConfig, text: nn.Module
) -> AdaptedTeacher:
    heads = []
    for k in range(config.heads):
        torch.manual_seed(config.loop.seed + k)
        heads.append(
            SASRec.from_config(
                n_items, config, text_dim=text_dim, id_embeddings=config.id_embeddings
            )
        )
    return AdaptedTeacher(text, heads)


def history_matrix(split: Split, length: int, fold: str = "valid") -> np.ndarray:
    """(U, length) the last items each user's model input holds for `fold`, left-padded."""
    return left_padded(split.input_sequences(fold), length, split.n_items)


def scorer(model: AdaptedTeacher, split: Split, length: int) -> Scorer:
    """A scorer for `distill.evaluation.harness`: (users, fold) -> (B, I) logits from the fold's
    input."""
    model.eval()
    with torch.no_grad():
        item_vecs = model.item_vectors()
    hist = {fold: torch.as_tensor(history_matrix(split, length, fold)) for fold in EVAL_FOLDS}
    return vector_scorer(
        lambda users, fold: model.history_vectors(hist[fold][users], item_vecs), item_vecs
    )


def train_heads(
    model: AdaptedTeacher,
    split: Split,
    config: AdaptConfig,
    *,
    checkpoint_dir: Path | None = None,
    workers: int = 1,
) -> list[TrainResult]:
    """Fit every head (seed config.loop.seed + k); with a frozen LM and `workers` > 1, heads
    train in that many spawned processes of one torch thread each — a single head too: the
    distill flow trains the plain SASRec beside the teacher, and a head on this process's
    threads would take the core that one runs on."""
    ckpt = [
        None if checkpoint_dir is None else Path(checkpoint_dir) / str(k)
        for k in range(config.heads)
    ]
    configs = [config.seeded(config.loop.seed + k) for k in range(config.heads)]
    if not isinstance(model.text, FrozenText):  # a trainable LM trains in this process
        workers = 1
    outcomes = map_in_processes(
        _train_one_head,
        [(model.head(k), split, configs[k], ckpt[k]) for k in range(config.heads)],
        workers=workers,
        one_in_process=False,
    )
    for head, (state, _) in zip(model.heads, outcomes, strict=True):
        head.load_state_dict(state)
    return [result for _, result in outcomes]


def _train_one_head(
    model: AdaptedTeacher, split: Split, config: AdaptConfig, checkpoint_dir: Path | None
) -> tuple[dict[str, Tensor], TrainResult]:
    result = train_head(model, split, config, checkpoint_dir=checkpoint_dir)
    return model.head_nets()[0].state_dict(), result


def train_head(
    model: AdaptedTeacher, split: Split, config: AdaptConfig, *, checkpoint_dir=None
) -> TrainResult:
    """Fit a one-head model on every next-item target of the train histories (SASRec's recipe);
    early stopping on validation NDCG@10."""
    inputs, targets = (
        torch.as_tensor(a)
        for a in windows(split.train_sequences(), config.history_len, split.n_items)
    )
    sampler = None
    if config.sampled_negatives:
        sampler = SampledSoftmax.of_targets(targets, split.n_items, config.sampled_negatives)

    def loss_fn(m: nn.Module, idx: Tensor) -> tuple[Tensor, dict[str, float]]:  # m is model
        head = model.head_nets()[0]
        loss = head.loss(inputs[idx], targets[idx], model.item_vectors(), sampler)
        return loss, {"loss": loss.item()}

    def validate(m: nn.Module) -> float:
        return evaluate(scorer(model, split, config.history_len), split, fold="valid").primary

    return fit(
        model,
        batches=shuffled(len(inputs), config.loop.batch_size),
        loss_fn=loss_fn,
        validate=validate,
        config=config.loop,
        checkpoint_dir=checkpoint_dir,
        desc=f"teacher head (seed {config.loop.seed})",
    )
