"""Show and Tell decoder: shapes, the t = -1 image feed, dropout, building it from a config.

forward == step, reorder_state, beam 1 == greedy and score == search are checked for every
decoder in tests/test_decoder_contract.py.
"""

from __future__ import annotations

import pytest
import torch

from nic.config import ConfigError, DecoderConfig
from nic.decoders import DECODERS, ShowAndTellDecoder, build_decoder

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


def test_state_is_batch_first_per_layer():
    state = make(2).init_state(torch.randn(3, F))
    assert state["h"].shape == state["c"].shape == (3, 2, H)


def test_parameters_and_state_dict_keys_are_stable():
    """Checkpoints load with load_state_dict(strict=True): the keys (and their creation order) never change."""
    assert list(make(2).state_dict()) == [
        "image_embed.weight", "image_embed.bias", "word_embed.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0",
        "lstm.bias_ih_l0", "lstm.bias_hh_l0", "lstm.weight_ih_l1", "lstm.weight_hh_l1", "lstm.bias_ih_l1",
        "lstm.bias_hh_l1", "out.weight", "out.bias"]


def test_dropout_only_in_training_and_padding_embedding_is_zero():
    d = make()
    pooled, caps = torch.randn(3, F), captions()
    torch.testing.assert_close(d(pooled, None, caps), d(pooled, None, caps))
    d.train()
    assert not torch.allclose(d(pooled, None, caps), d(pooled, None, caps))
    assert d.word_embed.weight[0].abs().sum() == 0


def test_build_decoder_from_config():
    d = build_decoder(DecoderConfig(embed_dim=8, hidden_dim=8, num_layers=2, dropout=0.1), vocab_size=V, feature_dim=F)
    assert isinstance(d, ShowAndTellDecoder) and DECODERS["nic"] is ShowAndTellDecoder
    assert ShowAndTellDecoder.Options is None  # no decoder.nic section
    assert (d.lstm.input_size, d.lstm.hidden_size, d.lstm.num_layers, d.lstm.dropout) == (8, 8, 2, 0.1)
    with pytest.raises(ValueError, match=r"unknown decoder type 'transformer'; valid types: \[.*'attention'.*'nic'"):
        build_decoder(DecoderConfig(type="transformer"), vocab_size=V, feature_dim=F)
    with pytest.raises(ConfigError, match="decoder.nic: the 'nic' decoder takes no options"):
        build_decoder(DecoderConfig(options={"nic": {"x": 1}}), vocab_size=V, feature_dim=F)
