"""The faster training loss is the same function: packed output layer, fused cross-entropy, shrinking attention.

``loss`` runs the output projection and the cross-entropy on real words only
(:func:`nic.decoders.base.packed_nll`, :func:`~nic.decoders.base.linear_cross_entropy`) and the
attention decoder's teacher forcing slices its state only when the batch shrinks. These tests
check the loss and every parameter's gradient against independent references: the padded
``F.cross_entropy`` of ``forward``'s logits (same dropout masks), and step-by-step decoding
through the step API.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from nic.decoders import build_decoder
from nic.decoders.base import linear_cross_entropy, packed_nll, sequence_nll
from nic.decoders.show_tell import ShowAndTellDecoder
from tests.test_attention import VARIANTS as ATTENTION_VARIANTS

V, FEAT, P = 11, 6, 4
START, END, PAD = 1, 2, 0
CAPTIONS = torch.tensor([  # 3, 5, 1, 4 predicted tokens, <end> included, padded with 0
    [START, 5, 6, END, PAD, PAD],
    [START, 7, 8, 9, 10, END],
    [START, END, PAD, PAD, PAD, PAD],
    [START, 4, 4, 4, END, PAD],
])


class _Cfg:
    def __init__(self, type_: str, **options) -> None:
        self.type, self.embed_dim, self.hidden_dim, self.num_layers, self.dropout = type_, 8, 12, 1, 0.3
        self.options = {type_: {"attention_dim": 10, **options}} if type_ == "attention" else {}


def make(type_: str, **options):
    torch.manual_seed(0)
    return build_decoder(_Cfg(type_, **options), vocab_size=V, feature_dim=FEAT, pad_id=PAD)


def inputs(b: int = 4):
    g = torch.Generator().manual_seed(3)
    return torch.randn(b, FEAT, generator=g), torch.randn(b, P, FEAT, generator=g)


def grads(module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None}


def assert_same_grads(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_linear_cross_entropy_equals_cross_entropy_of_the_linear_layer():
    g = torch.Generator().manual_seed(0)
    for bias in (True, False):
        lin = torch.nn.Linear(7, 9, bias=bias)
        x = torch.randn(5, 7, generator=g, requires_grad=True)
        targets = torch.tensor([0, 8, 3, 3, 1])
        ours = linear_cross_entropy(x, lin, targets) * 0.7
        ours.backward()
        ours_grads = [x.grad.clone(), *(p.grad.clone() for p in lin.parameters())]
        x.grad = None
        lin.zero_grad()
        ref = F.cross_entropy(lin(x), targets, reduction="sum") * 0.7
        ref.backward()
        torch.testing.assert_close(ours, ref)
        for o, r in zip(ours_grads, [x.grad, *(p.grad for p in lin.parameters())], strict=True):
            torch.testing.assert_close(o, r)


def test_linear_cross_entropy_refuses_a_second_backward():
    lin = torch.nn.Linear(3, 4)
    loss = linear_cross_entropy(torch.randn(2, 3), lin, torch.tensor([1, 2]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward twice"):
        loss.backward()


@pytest.mark.parametrize("train", [False, True])
def test_show_and_tell_loss_is_the_padded_cross_entropy_of_forward(train):
    """Same value and gradients as the base class's loss; in training mode, the same dropout masks."""
    d = make("nic").train(train)
    ref = copy.deepcopy(d)
    pooled, _ = inputs()
    torch.manual_seed(5)
    loss, parts = d.loss(pooled, None, CAPTIONS)
    loss.backward()
    torch.manual_seed(5)
    ref_loss = sequence_nll(ref(pooled, None, CAPTIONS), CAPTIONS, PAD)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss)
    assert parts["nll"] == pytest.approx(float(ref_loss.detach()), rel=1e-6)
    assert_same_grads(grads(d), grads(ref))


def test_packed_nll_ignores_whatever_the_padded_positions_hold():
    d = make("nic").eval()
    feats = torch.randn(4, CAPTIONS.shape[1] - 1, 12)
    noisy = feats.clone()
    noisy[CAPTIONS[:, 1:] == PAD] = 1e6  # padded positions: never reach the output layer
    torch.testing.assert_close(packed_nll(noisy, d.out, CAPTIONS, PAD), packed_nll(feats, d.out, CAPTIONS, PAD))
    torch.testing.assert_close(packed_nll(feats, d.out, CAPTIONS, PAD), sequence_nll(d.out(feats), CAPTIONS, PAD))


def stepwise_nll(d, pooled, grid, captions):
    """The per-word NLL (and the attention regulariser's alphas) by decoding one step at a time through ``step``."""
    state = d.init_state(pooled, grid)
    total, count, alphas = 0.0, 0, []
    for t in range(captions.shape[1] - 1):
        lp, state = d.step(captions[:, t], state)
        target, real = captions[:, t + 1], captions[:, t + 1] != PAD
        total = total - (lp.gather(1, target.unsqueeze(1)).squeeze(1) * real).sum()
        count += int(real.sum())
        if "alpha" in state:
            alphas.append(state["alpha"] * real.unsqueeze(1))
    return total / count, (torch.stack(alphas, dim=1) if alphas else None)


@pytest.mark.parametrize("kind", ["nic", *range(len(ATTENTION_VARIANTS))])
def test_teacher_forced_loss_and_gradients_equal_step_by_step_decoding(kind):
    """Packing, sorting and the shrinking batch change nothing: loss and every gradient as one step at a time."""
    options = {} if kind == "nic" else {k: v for k, v in ATTENTION_VARIANTS[kind].items()}
    d = make("nic" if kind == "nic" else "attention", alpha_c=0.7, **options).eval()
    ref = copy.deepcopy(d)
    pooled, grid = inputs()
    grid = None if isinstance(d, ShowAndTellDecoder) else grid
    loss, parts = d.loss(pooled, grid, CAPTIONS)
    loss.backward()
    nll, alphas = stepwise_nll(ref, pooled, grid, CAPTIONS)
    ref_loss = nll if alphas is None else nll + 0.7 * ((1.0 - alphas.sum(dim=1)) ** 2).sum(dim=1).mean()
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert parts["nll"] == pytest.approx(float(nll.detach()), rel=1e-5)
    assert_same_grads(grads(d), grads(ref))
