"""Show and Tell decoder: shapes, the t = -1 image feed, and forward == step-by-step."""

from __future__ import annotations

import torch

from nic.config import DecoderConfig
from nic.decoders import ShowAndTellDecoder, build_decoder

V, F, E, H = 11, 16, 8, 12


def make(num_layers=1):
    torch.manual_seed(0)
    return ShowAndTellDecoder(vocab_size=V, feature_dim=F, embed_dim=E, hidden_dim=H, num_layers=num_layers,
                              dropout=0.5).eval()


def captions(b=3, t=6):
    g = torch.Generator().manual_seed(1)
    c = torch.randint(4, V, (b, t), generator=g)
    c[:, 0] = 1  # <start>
    return c


def test_forward_shapes():
    d = make()
    out = d(torch.randn(3, F), None, captions())
    assert out.shape == (3, 5, V)


def test_image_is_fed_once_at_t_minus_1():
    d = make()
    pooled = torch.randn(2, F)
    state = d.init_state(pooled)
    # the state after init is exactly one LSTM step on W_I * pooled from a zero state
    x = d.image_embed(pooled).unsqueeze(1)
    _, (h, c) = d.lstm(x, (torch.zeros(1, 2, H), torch.zeros(1, 2, H)))
    torch.testing.assert_close(state["h"], h.transpose(0, 1))
    torch.testing.assert_close(state["c"], c.transpose(0, 1))
    # step() never looks at the image again: same state -> same output whatever the image
    tokens = torch.tensor([1, 1])
    lp1, _ = d.step(tokens, state)
    d.image_embed.weight.data.mul_(-3)  # changing the image path after init changes nothing
    lp2, _ = d.step(tokens, state)
    torch.testing.assert_close(lp1, lp2)
    # ... but the image does matter through init_state
    lp3, _ = d.step(tokens, d.init_state(torch.randn(2, F)))
    assert not torch.allclose(lp1, lp3)


def test_teacher_forcing_equals_stepwise_decoding():
    for layers in (1, 2):
        d = make(layers)
        pooled, caps = torch.randn(3, F), captions()
        full = torch.log_softmax(d(pooled, None, caps), -1)  # (B, T-1, V)
        state = d.init_state(pooled)
        for t in range(caps.shape[1] - 1):
            lp, state = d.step(caps[:, t], state)
            torch.testing.assert_close(lp, full[:, t], rtol=1e-5, atol=1e-5)


def test_reorder_state_selects_rows():
    d = make(2)
    state = d.init_state(torch.randn(3, F))
    idx = torch.tensor([2, 2, 0])
    new = d.reorder_state(state, idx)
    assert new["h"].shape == (3, 2, H)
    torch.testing.assert_close(new["h"][0], state["h"][2])
    torch.testing.assert_close(new["c"][2], state["c"][0])


def test_dropout_only_in_training_and_padding_embedding_is_zero():
    d = make()
    pooled, caps = torch.randn(3, F), captions()
    torch.testing.assert_close(d(pooled, None, caps), d(pooled, None, caps))
    d.train()
    assert not torch.allclose(d(pooled, None, caps), d(pooled, None, caps))
    assert d.word_embed.weight[0].abs().sum() == 0


def test_build_decoder_from_config():
    d = build_decoder(DecoderConfig(embed_dim=8, hidden_dim=8), vocab_size=V, feature_dim=F)
    assert isinstance(d, ShowAndTellDecoder)
    try:
        build_decoder(DecoderConfig(type="transformer"), vocab_size=V, feature_dim=F)
    except ValueError as e:
        assert "valid types" in str(e) and "nic" in str(e)
    else:
        raise AssertionError("unknown decoder type accepted")
