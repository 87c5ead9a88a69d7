"""SASRec building blocks: the CPU dropout and the attention path it needs."""

import pytest
import torch
from torch import nn

from distill.nn.sasrec import Block, Dropout, SASRec


def test_dropout_zeroes_p_of_the_entries_and_keeps_the_mean():
    torch.manual_seed(0)
    drop = Dropout(0.3).train()
    out = drop(torch.ones(200_000))
    assert (out == 0).float().mean().item() == pytest.approx(0.3, abs=0.01)
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)
    assert torch.allclose(out[out != 0], torch.tensor(1 / 0.7))


def test_dropout_is_the_identity_in_eval_mode_and_at_zero():
    x = torch.randn(4, 5)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    with pytest.raises(ValueError):
        Dropout(1.0)


def test_dropout_gradient_flows_only_through_kept_entries():
    torch.manual_seed(1)
    x = torch.randn(1000, requires_grad=True)
    out = Dropout(0.5).train()(x)
    out.sum().backward()
    kept = out.detach() != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 2.0))
    assert torch.all(x.grad[~kept] == 0)


def test_training_attention_path_equals_the_fused_one_without_dropout():
    """With attention dropout on, training takes an explicit softmax path; with the dropout made
    the identity it must compute exactly what scaled_dot_product_attention does."""
    torch.manual_seed(2)
    block = Block(dim=16, n_heads=2, inner=32, dropout=0.0, attn_dropout=0.5)
    x = torch.randn(3, 7, 16)
    mask = torch.ones(7, 7, dtype=torch.bool).tril().expand(3, 1, 7, 7)
    block.eval()
    fused = block(x, mask)
    block.train()
    block.attn_drop.forward = nn.Identity().forward  # keep p > 0 (the explicit path), no dropout
    assert torch.allclose(block(x, mask), fused, atol=1e-6)


def test_training_is_reproducible_under_a_seed():
    def one_step() -> torch.Tensor:
        torch.manual_seed(3)
        model = SASRec(20, dim=8, max_len=5, n_layers=1).train()
        seq = torch.randint(0, 20, (4, 5))
        return model.loss(seq, seq, model.item_vectors()).detach()

    assert torch.equal(one_step(), one_step())
