"""Teacher adaptation: a recommendation head trained on train interactions on top of the LM.

Default (`frozen`): the LM's item embeddings are computed once and cached; the head is an MLP
adapter on them plus learned item ID embeddings, and a causal self-attention layer stack over the
user's history of adapted item vectors; score = inner product; loss = full-softmax cross-entropy
on the next train item. `top_layers` and `lora` train part of the LM too, through the same code:
only the source of the item text embeddings changes (re-encoded with gradients at every step).

User-profile text embeddings are deliberately not fed to the head: the profile names the user's
recent train titles, so at train time it would reveal the very items the head learns to predict.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from distill.evaluate import evaluate
from distill.layers import SequentialRecommender, left_padded
from distill.teacher.base import AdaptConfig
from distill.train import LoopConfig, TrainResult, fit, shuffled
from storage.split import Split

EmbedFn = Callable[[Sequence[str], nn.Module, bool], Tensor]  # (texts, lm, grad) -> (N, T)


class FrozenText(nn.Module):
    """Cached LM item embeddings: a constant (I, T) tensor."""

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
    """Text source (frozen or trainable LM) + sequential head."""

    def __init__(self, text: nn.Module, head: SequentialRecommender) -> None:
        super().__init__()
        self.text, self.head = text, head

    def item_vectors(self) -> Tensor:
        return self.head.item_vectors(self.text())  # (I, D)

    def user_vectors(self, hist: Tensor, item_vecs: Tensor | None = None) -> Tensor:
        item_vecs = self.item_vectors() if item_vecs is None else item_vecs
        return self.head.user_vectors(hist, item_vecs)  # (B, D)

    def trainable_state(self) -> dict[str, Tensor]:
        """What adaptation learned: the head and any trainable LM parameters."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k.startswith("head.") or k in names}


def build_teacher_model(
    n_items: int, text_dim: int, config: AdaptConfig, text: nn.Module
) -> AdaptedTeacher:
    torch.manual_seed(config.seed)
    head = SequentialRecommender(
        n_items,
        config.dim,
        config.history_len,
        config.n_layers,
        config.n_heads,
        config.dropout,
        text_dim=text_dim,
        id_embeddings=config.id_embeddings,
    )
    return AdaptedTeacher(text, head)


def history_matrix(split: Split, length: int) -> np.ndarray:
    """(U, length) last train items per user, left-padded with n_items."""
    return left_padded(split.train_sequences(), length, split.n_items)


def scorer(model: AdaptedTeacher, hist: np.ndarray, batch: int = 1024):
    """A scorer for `distill.evaluate`: user indices -> (B, I) head logits."""
    model.eval()
    with torch.no_grad():
        item_vecs = model.item_vectors()

    def scores(users: np.ndarray) -> Tensor:
        with torch.no_grad():
            return model.user_vectors(torch.as_tensor(hist[users]), item_vecs) @ item_vecs.T

    return scores


def train_head(
    model: AdaptedTeacher, split: Split, config: AdaptConfig, *, checkpoint_dir=None
) -> TrainResult:
    """Fit the head on train interactions; early stopping on validation NDCG@10."""
    pad = split.n_items
    seqs = torch.as_tensor(left_padded(split.train_sequences(), config.history_len + 1, pad))
    hist = history_matrix(split, config.history_len)
    users = np.flatnonzero((seqs != pad).sum(1).numpy() >= 2)  # users with a next-item target
    users_t = torch.as_tensor(users)

    def loss_fn(m: nn.Module, idx: Tensor) -> tuple[Tensor, dict[str, float]]:
        loss = m.head.next_item_loss(seqs[users_t[idx]], m.item_vectors())
        return loss, {"loss": loss.item()}

    def validate(m: nn.Module) -> float:
        return evaluate(scorer(m, hist), split, fold="valid").primary

    loop = LoopConfig(
        lr=config.lr,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        max_epochs=config.max_epochs,
        patience=config.patience,
        seed=config.seed,
    )
    return fit(
        model,
        batches=shuffled(len(users), config.batch_size),
        loss_fn=loss_fn,
        validate=validate,
        config=loop,
        checkpoint_dir=checkpoint_dir,
        desc="teacher head",
    )
