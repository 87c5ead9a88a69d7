"""Train a student on ground truth plus the teacher's cached soft labels: L = L_c + alpha * L_k.

Examples are shuffled all together when the decoded soft labels fit in their memory budget
(`SoftLabels.whole`, MovieLens scale); above it, batches are drawn shard by shard (shards in a
seeded random order, examples shuffled inside each), so only one shard needs to be in memory. An
example is a user for the two-tower student (KD to the teacher's label after the whole train
history) and a training window for the sequential student (KD to the teacher's top-K after every
prefix). A distilled sequential student may start as one of the teacher's heads (`init: teacher`),
its LM projection folded into its item table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from distill.evaluation.harness import EVAL_FOLDS, Scorer, evaluate, vector_scorer
from distill.nn.layers import left_padded
from distill.nn.sampled import SampledSoftmax
from distill.nn.sasrec import window_targets, windows
from distill.student.build import StudentNet, build_student
from distill.student.config import StudentConfig
from distill.student.content import cold_items
from distill.student.sequential import SequentialStudent
from distill.student.two_tower import TwoTower
from distill.teacher.soft_labels import SoftLabels
from distill.training import losses
from distill.training.loop import LoopConfig, TrainResult, fit
from storage.split import Split


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.5, ge=0)  # weight of the distillation term; 0 = no distillation
    loss: Literal["kl", "mse", "rank"] = "kl"
    temperature: float = Field(1.0, gt=0)  # kl: softmax temperature T (loss scaled by T^2)
    rank_k: int = Field(20, ge=1)  # rank: teacher top-K items distilled
    rank_lambda: float = Field(5.0, gt=0)  # rank: weight decay over teacher rank
    mask_seen: bool = True  # drop the user's train items from both distributions
    # "teacher": the student starts as one of the teacher's heads (head = seed mod heads, its LM
    # projection folded into the item table); needs a sequential student shaped like the head.
    # "random": SASRec's N(0, 0.02) initialisation.
    # "previous": the published model's student, items mapped by id (distill/student/warm_start.py);
    # with no compatible published model, as "teacher"
    init: Literal["teacher", "random", "previous"] = "teacher"
    # the distilled student's learning rate (None = train.lr); a student that starts as a teacher
    # head is fine-tuned, for which a smaller rate keeps what the head knows
    lr: float | None = Field(None, gt=0)
    # the distilled student's early-stopping patience (None = train.patience): one that starts as
    # a teacher head peaks within a few epochs, so most of a long patience is spent waiting
    # (10: half the epochs of 20 for -0.6 % validation NDCG@10, 5 seeds; docs/results.md)
    patience: int | None = Field(10, ge=1)

    def loop_for(self, loop: LoopConfig) -> LoopConfig:
        """The training loop of a student with these settings: `lr` and `patience` replace
        the loop's when set and the student uses the teacher (the undistilled arms keep it)."""
        if not self.uses_teacher:
            return loop
        own = {"lr": self.lr, "patience": self.patience}
        return loop.model_copy(update={k: v for k, v in own.items() if v is not None})

    @property
    def uses_teacher(self) -> bool:
        return self.alpha > 0 or self.init in ("teacher", "previous")


class UserData:
    """Per-user tensors every student batch needs, built once from the split: the right-aligned
    history each fold reads (standard protocol), train positives and, for sequential students,
    the next-item training windows with the (user, position) of every slot."""

    def __init__(self, split: Split, history_len: int) -> None:
        seqs = split.train_sequences()
        self.n_items = split.n_items
        self.hist = {
            fold: torch.as_tensor(
                left_padded(split.input_sequences(fold), history_len, self.n_items)
            )
            for fold in EVAL_FOLDS
        }
        self.train = split.train
        # items no one has touched: unknown, not disliked; a student that reads text leaves them
        # out of its softmax (they would teach its text path that their texts are never chosen)
        self.cold = torch.as_tensor(cold_items(np.asarray(self.train.sum(axis=0)).ravel()))
        self.active = np.flatnonzero(np.diff(self.train.indptr) > 0)
        inputs, targets = windows(seqs, history_len, split.n_items)
        self.inputs, self.targets = torch.as_tensor(inputs), torch.as_tensor(targets)
        self.owner, self.position = window_targets(seqs, history_len)  # (W, L) each
        self.window_user = self.owner[:, 0]  # the first slot of a window is never padding

    def positives(self, users: np.ndarray) -> Tensor:
        return torch.from_numpy(self.train[users].toarray())


def student_scorer(model: StudentNet, data: UserData, item_vecs: Tensor | None = None) -> Scorer:
    """(users, fold) -> (B, I) scores from the fold's input history; `item_vecs`: the vectors
    it is served with (`distill.student.content.Placement.served`), default as trained."""
    model.eval()
    if item_vecs is None:
        with torch.no_grad():
            item_vecs = model.item_vectors()

    def user_vectors(users: np.ndarray, fold: str) -> Tensor:
        u = torch.as_tensor(users)
        return model.user_vectors(u, data.hist[fold][u], item_vecs)

    return vector_scorer(user_vectors, item_vecs)


class Batch(NamedTuple):
    """One training step's examples, all from one soft-label shard."""

    key: str  # the shard
    start: int  # the shard's first user (labels are indexed from it)
    rows: np.ndarray  # users (two-tower) or training windows (sequential)


def _batches(examples_of: Callable[[int, int], np.ndarray], shards, batch_size: int):
    """Shards in a random order, the shard's examples shuffled inside it (per-epoch seed)."""

    def batches(epoch: int) -> Iterator[Batch]:
        for s in torch.randperm(len(shards)).tolist():
            key, start, end = shards[s]
            examples = examples_of(start, end)
            examples = examples[torch.randperm(len(examples)).numpy()]
            for i in range(0, len(examples), batch_size):
                yield Batch(key, start, examples[i : i + batch_size])

    return batches


def kd_term(config: DistillConfig, student: Tensor, teacher: Tensor, seen: Tensor) -> Tensor:
    mask = torch.isnan(teacher)
    if config.mask_seen:
        mask = mask | (seen > 0)
    teacher = torch.nan_to_num(teacher, nan=0.0)
    if config.loss == "kl":
        return losses.kd_kl(student, teacher, config.temperature, mask)
    if config.loss == "mse":
        return losses.kd_mse(student, teacher, mask)
    return losses.kd_rank(student, teacher, config.rank_k, config.rank_lambda, mask)


def user_loss(
    m: TwoTower, data: UserData, kd: DistillConfig, soft_labels: SoftLabels | None, batch: Batch
) -> tuple[Tensor, dict[str, float]]:
    """Two-tower: CE over each user's train items (+ KD to the whole-history label).

    With `sampled_negatives` (large catalogs) nothing is (batch x catalog): each user's softmax
    runs over its own train items plus negatives shared by the batch, and the KD term over the
    user's teacher-scored items (the candidates), both as ragged per-user lists
    (`sampled_user_loss`). Without, both terms run over every item."""
    if m.n_negatives:
        return sampled_user_loss(m, data, kd, soft_labels, batch)
    key, start, users = batch
    u = torch.as_tensor(users)
    item_vecs = m.item_vectors()
    user_vecs = m.user_vectors(u, data.hist["valid"][u], item_vecs)
    positives = data.positives(users)
    unknown = data.cold if m.reads_text else None
    l_c = m.ce_loss(positives, item_vecs, user_vecs, unknown)
    if soft_labels is None:
        return l_c, {"l_c": l_c.item()}
    teacher = soft_labels.users(key).dense(users - start, None, data.n_items)
    if unknown is not None:
        teacher = teacher.masked_fill(unknown, float("nan"))  # NaN: out of both distributions
    l_k = kd_term(kd, user_vecs @ item_vecs.T, teacher, positives)
    return l_c + kd.alpha * l_k, {"l_c": l_c.item(), "l_k": l_k.item()}


def sampled_user_loss(
    m: TwoTower, data: UserData, kd: DistillConfig, soft_labels: SoftLabels | None, batch: Batch
) -> tuple[Tensor, dict[str, float]]:
    """The two-tower loss over ragged per-user item lists: the cost of a step is its users'
    histories, train items and candidates plus the shared negatives, whatever the catalog's
    size. Only the item rows the step uses are looked up (sparse gradients, SparseAdam). KD at a
    user covers its scored items (minus its train items when `mask_seen`), which is what the
    dense term leaves unmasked, so the two agree on the KD term."""
    key, start, users = batch
    n = len(users)
    u = torch.as_tensor(users)
    hist = data.hist["valid"][u]  # (B, L), padded with n_items
    train = data.train[users]
    owner = torch.as_tensor(np.repeat(np.arange(n), np.diff(train.indptr)))
    pos_items = torch.as_tensor(train.indices, dtype=torch.long)
    negatives = torch.randint(data.n_items, (m.n_negatives,))
    rows = items = scores = None
    if soft_labels is not None:
        rows, items, scores = soft_labels.users(key).gather(users - start)
        if kd.mask_seen:  # drop (user, train item) pairs: keys row * I + item, looked up sorted
            seen = owner.numpy() * data.n_items + pos_items.numpy()
            keep = ~np.isin(rows.numpy() * data.n_items + items.numpy(), seen)
            rows, items, scores = rows[keep], items[keep], scores[keep]
    needed = [hist[hist < data.n_items], pos_items, negatives]
    ids = torch.unique(torch.cat(needed if items is None else [*needed, items]))  # sorted
    vecs = m.item_vectors_at(ids)  # (K, D): the rows this step uses

    def local(item_idx: Tensor) -> Tensor:
        return torch.searchsorted(ids, item_idx)

    user_vecs = m.user_vectors(u, torch.where(hist < data.n_items, local(hist), hist), vecs)
    shared = user_vecs @ vecs[local(negatives)].T  # (B, N)
    # a negative that is one of the user's positives leaves that user's partition
    hits = torch.from_numpy(train[:, negatives.numpy()].toarray() > 0)
    pos_logits = (user_vecs[owner] * vecs[local(pos_items)]).sum(-1)
    l_c = losses.sampled_multi_positive_ce(pos_logits, owner, shared.masked_fill(hits, -torch.inf))
    if rows is None or items is None or scores is None:
        return l_c, {"l_c": l_c.item()}
    student = (user_vecs[rows] * vecs[local(items)]).sum(-1)
    if kd.loss == "kl":
        l_k = losses.ragged_kd_kl(student, scores, rows, n, kd.temperature)
    elif kd.loss == "mse":
        l_k = losses.ragged_kd_mse(student, scores)
    else:
        raise ValueError("the two-tower with sampled_negatives distils with loss kl or mse")
    return l_c + kd.alpha * l_k, {"l_c": l_c.item(), "l_k": l_k.item()}


def window_loss(
    m: SequentialStudent,
    data: UserData,
    kd: DistillConfig,
    soft_labels: SoftLabels | None,
    sampler: SampledSoftmax | None,
    batch: Batch,
) -> tuple[Tensor, dict[str, float]]:
    """Sequential: CE of every next train item (+ KD to the teacher's top-K at every labelled
    position: every prefix, or the last `teacher.position_last`).

    With `sampler` (`student.sampled_negatives`) the softmax runs over the batch's targets, the
    teacher's items and that many uniform negatives, log-Q corrected, instead of every item."""
    key, start, rows = batch
    targets = data.targets[rows]
    keep = targets != -100
    item_vecs = m.item_vectors()
    states = m.position_states(data.inputs[rows], targets, item_vecs)  # (N, D)
    targets = targets[keep]
    t_items = t_scores = None
    labelled: slice | Tensor = slice(None)  # slots with a teacher label: all, or the last few
    if soft_labels is not None:
        labels = soft_labels.positions(key)
        slots = keep.numpy()
        users, positions = data.owner[rows][slots] - start, data.position[rows][slots]
        has = labels.labelled(users, positions)
        if not has.all():
            labelled = torch.as_tensor(has)
        t_items, t_scores = labels.gather(users[has], positions[has])
    unknown = data.cold if m.reads_text else None
    if t_items is not None and t_scores is not None and unknown is not None:
        t_scores = t_scores.masked_fill(unknown[t_items], losses.NEG)
    if sampler is not None:
        logits, targets, cols = sampler.logits(states, item_vecs, targets, t_items)
        if t_items is not None:
            t_items = torch.searchsorted(cols, t_items)
        if unknown is not None:
            logits = logits.masked_fill(unknown[cols], losses.NEG)
    else:
        logits = states @ item_vecs.T  # (N, I)
        if unknown is not None:
            logits = logits.masked_fill(unknown, losses.NEG)
    log_q = F.log_softmax(logits, dim=-1)  # one (N, I) softmax for L_c and, at T = 1, L_k
    l_c = F.nll_loss(log_q, targets)
    if t_items is None or t_scores is None or not len(t_items):
        return l_c, {"l_c": l_c.item()}
    logits, log_q = logits[labelled], log_q[labelled]
    if kd.loss == "kl":
        at_t = log_q if kd.temperature == 1 else None
        l_k = losses.kd_topk_kl(logits, t_items, t_scores, kd.temperature, log_q=at_t)
    elif kd.loss == "mse":
        raise ValueError("the sequential student distils top-K labels: use loss kl or rank")
    else:
        l_k = losses.kd_topk_rank(logits, t_items[:, : kd.rank_k], kd.rank_lambda, log_q=log_q)
    return l_c + kd.alpha * l_k, {"l_c": l_c.item(), "l_k": l_k.item()}


def start_from(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load a teacher head's SASRec weights into a sequential student of the same shape."""
    net = getattr(model, "net", None)
    if net is None:
        raise ValueError("distill.init: teacher needs student.kind: sequential (or init: random)")
    mine = net.state_dict()
    wrong = sorted(
        f"{name} {tuple(mine[name].shape) if name in mine else 'missing'} vs head {tuple(v.shape)}"
        for name, v in state.items()
        if name not in mine or mine[name].shape != v.shape
    ) + [f"{name} not in the head" for name in mine.keys() - state.keys()]
    if wrong:
        raise ValueError(
            "distill.init: teacher needs the student shaped like the teacher head (dim, "
            f"n_layers, n_heads, history_len equal to teacher.adapt's); {len(wrong)} "
            f"mismatches, e.g. {wrong[0]}"
        )
    net.load_state_dict(state)


def train_student(
    split: Split,
    config: StudentConfig,
    kd: DistillConfig,
    loop: LoopConfig,
    *,
    soft_labels: SoftLabels | None,
    text_emb: np.ndarray | None,
    init_state: dict[str, Tensor] | None = None,
    checkpoint_dir: Path | None = None,
) -> tuple[StudentNet, TrainResult]:
    """Fit one student; early stopping on validation NDCG@10. kd.alpha == 0: no soft labels used.
    `init_state`: starting weights of a sequential student's SASRec (`distill.init: teacher`)."""
    torch.manual_seed(loop.seed)
    loop = kd.loop_for(loop)
    model = build_student(config, split.n_users, split.n_items, text_emb)
    if init_state is not None:
        start_from(model, init_state)
    data = UserData(split, config.history_len)
    use_kd = kd.alpha > 0 and soft_labels is not None
    labels = soft_labels if use_kd else None
    if labels is not None and labels.fits_in_memory():
        labels = labels.whole()  # every example in one shuffle, as without labels
    # batches shuffle every example together, or shard by shard when the labels are too large
    shards = labels.shards if labels is not None else [("all", 0, split.n_users)]
    loss_fn: Callable[..., tuple[Tensor, dict[str, float]]]  # called with batch=
    if isinstance(model, SequentialStudent):
        examples_of = lambda start, end: np.flatnonzero(  # noqa: E731
            (data.window_user >= start) & (data.window_user < end)
        )
        sampler = None
        if config.sampled_negatives:
            sampler = SampledSoftmax.of_targets(
                data.targets, split.n_items, config.sampled_negatives
            )
        loss_fn = partial(window_loss, model, data=data, kd=kd, soft_labels=labels, sampler=sampler)
    else:
        examples_of = lambda start, end: data.active[  # noqa: E731
            (data.active >= start) & (data.active < end)
        ]
        loss_fn = partial(user_loss, model, data=data, kd=kd, soft_labels=labels)

    def validate(m: nn.Module) -> float:  # m is model
        return evaluate(student_scorer(model, data), split, fold="valid").primary

    uses_teacher = use_kd or init_state is not None
    whole = labels is not None and labels.is_whole
    run_key = (
        f"{config.model_dump_json()}{kd.model_dump_json()}{use_kd}"
        + ("|labels:whole" if whole else "")
        + (soft_labels.fingerprint if uses_teacher and soft_labels is not None else "")
    )
    result = fit(
        model,
        batches=_batches(examples_of, shards, loop.batch_size),
        loss_fn=lambda m, batch: loss_fn(batch=batch),  # m is model
        validate=validate,
        config=loop,
        checkpoint_dir=checkpoint_dir,
        desc=f"student {config.kind} {'kd' if use_kd else 'no-kd'} seed {loop.seed}",
        run_key=run_key,
    )
    return model, result
