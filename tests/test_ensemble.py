"""Ensembles (nic/ensemble.py): one batched search over the mean of several decoders' word distributions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nic.captioner import Captioner
from nic.config import Config, DecoderConfig
from nic.decoders import build_decoder
from nic.ensemble import EnsembleDecoder
from nic.search import beam_search
from nic.vocab import SPECIALS, Vocabulary
from tests.test_decoder_contract import CHECKS, IDS, VOCAB, Case, features
from tests.test_features import tiny_encoder


def members() -> list:
    """A Show and Tell and an attention decoder (Case.build seeds each with 0; the attention one is then
    perturbed so that its distributions are far from uniform and from the other's)."""
    show_tell = Case("nic").build()
    attention = Case("attention", options={"attention_dim": 10}).build()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in attention.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return [show_tell, attention]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_an_ensemble_keeps_the_decoder_contract(check):
    """Show and Tell + attention members: the ensemble is a decoder like any other for search and scoring."""
    check(EnsembleDecoder(members()).eval())


def test_each_step_is_the_mean_of_the_members_distributions():
    a, b = members()
    ensemble = EnsembleDecoder([a, b]).eval()
    pooled, grid = features(ensemble, 3)
    states = [a.init_state(pooled, None), b.init_state(pooled, grid)]
    state = ensemble.init_state(pooled, grid)
    tokens = torch.full((3,), IDS["start_id"])
    for _ in range(3):
        mixed, state = ensemble.step(tokens, state)
        outs = [m.step(tokens, s) for m, s in zip((a, b), states)]
        states = [s for _, s in outs]
        mean = (outs[0][0].exp() + outs[1][0].exp()) / 2
        torch.testing.assert_close(mixed.exp(), mean, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(outs[0][0], outs[1][0])  # the members really differ
        torch.testing.assert_close(state["alpha"], outs[1][1]["alpha"])  # the one attending member's weights
        tokens = mixed.argmax(1)


def test_an_ensemble_of_one_model_twice_decodes_as_the_model():
    d = members()[1]
    pooled, grid = features(d, 4, seed=3)
    alone = beam_search(d, pooled, grid, beam_size=5, **IDS)
    twice = beam_search(EnsembleDecoder([d, d]).eval(), pooled, grid, beam_size=5, **IDS)
    assert [h[0].tokens for h in twice] == [h[0].tokens for h in alone]
    assert [h[0].logprob for h in twice] == pytest.approx([h[0].logprob for h in alone], abs=1e-4)


def test_members_with_different_vocabularies_are_refused():
    small = Case("nic").build()
    other = Vocabulary([*SPECIALS, "w0"])
    different = build_decoder(DecoderConfig(type="nic", embed_dim=8, hidden_dim=12), vocab_size=len(other),
                              feature_dim=6, pad_id=other.pad_id)
    with pytest.raises(ValueError, match="one vocabulary"):
        EnsembleDecoder([small, different])


def test_from_checkpoints_names_the_checkpoint_that_does_not_fit(monkeypatch):
    """Vocabulary, encoder input and a fine-tuned CNN are checked, and the error names the file."""
    def captioner(vocab=VOCAB, image_size=224, trained=False):
        cfg = Config()
        cfg.data.image_size = image_size
        return Captioner(tiny_encoder(), Case("nic").build(), vocab, config=cfg, encoder_trained=trained)

    made = {"a.pt": captioner(), "b.pt": captioner(), "vocab.pt": captioner(Vocabulary([*SPECIALS, "x"])),
            "size.pt": captioner(image_size=64), "tuned.pt": captioner(trained=True)}
    monkeypatch.setattr(Captioner, "from_checkpoint", classmethod(lambda cls, p, **_: made[Path(p).name]))
    both = Captioner.from_checkpoints(["a.pt", "b.pt"])
    assert isinstance(both.decoder, EnsembleDecoder) and len(both.decoder.members) == 2
    assert Captioner.from_checkpoints("a.pt") is made["a.pt"]  # one checkpoint: no ensemble
    for name, message in (("vocab.pt", "vocabulary differs"), ("size.pt", "image_size"), ("tuned.pt", "fine-tuned")):
        with pytest.raises(ValueError, match=message) as refused:
            Captioner.from_checkpoints(["a.pt", name])
        assert str(refused.value).startswith(name)


def test_mixture_is_normalised():
    d = EnsembleDecoder(members()).eval()
    pooled, grid = features(d, 2)
    lp, _ = d.step(torch.full((2,), IDS["start_id"]), d.init_state(pooled, grid))
    assert lp.exp().sum(1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert math.isfinite(lp.max().item())
