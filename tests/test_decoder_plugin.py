"""A decoder is a plug-in: one class + its registration, nothing in nic/config.py or elsewhere.

A toy GRU decoder, registered as "toy" only inside these tests (the ``toy`` fixture puts the
registry back), passes the decoder contract (the same checks as every built-in decoder), is
built from a config with a ``decoder.toy`` section checked like every other key, and captions
an image through :class:`nic.captioner.Captioner`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nic.captioner import Captioner
from nic.config import ConfigError, config_from_dict, load_config, save_config
from nic.decoders import DECODERS, CommonSettings, State, StepDecoderBase, build_decoder, register_decoder
from tests.test_decoder_contract import CHECKS, VOCAB, Case
from tests.test_features import tiny_encoder


class ToyGRUDecoder(StepDecoderBase):
    """A GRU from h0 = tanh(W pooled), plus (option) a per-image bias on every word's logits."""

    @dataclass
    class Options:
        # Add a learned function of the image to the logits of every step.
        image_bias: bool = True
        # Divide the logits by this (> 0).
        temperature: float = 1.0

    def __init__(self, *, vocab_size: int, feature_dim: int, embed_dim: int, hidden_dim: int, dropout: float,
                 pad_id: int, image_bias: bool, temperature: float) -> None:
        super().__init__()
        self.vocab_size, self.pad_id, self.temperature = vocab_size, pad_id, temperature
        self.image_h = nn.Linear(feature_dim, hidden_dim)
        self.image_bias = nn.Linear(feature_dim, vocab_size) if image_bias else None
        self.word_embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.cell = nn.GRUCell(embed_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)

    @classmethod
    def from_config(cls, cfg: CommonSettings, options: ToyGRUDecoder.Options, *, vocab_size: int, feature_dim: int,
                    grid_dim: int | None = None, pad_id: int = 0) -> ToyGRUDecoder:
        if options.temperature <= 0:
            raise ValueError(f"decoder.toy.temperature={options.temperature}: must be > 0")
        if cfg.num_layers != 1:
            raise ValueError("the toy decoder has one GRU layer; set decoder.num_layers: 1")
        return cls(vocab_size=vocab_size, feature_dim=feature_dim, embed_dim=cfg.embed_dim, hidden_dim=cfg.hidden_dim,
                   dropout=cfg.dropout, pad_id=pad_id, image_bias=options.image_bias, temperature=options.temperature)

    def init_state(self, pooled: Tensor, grid: Tensor | None = None) -> State:
        bias = self.image_bias(pooled) if self.image_bias is not None else pooled.new_zeros(len(pooled),
                                                                                           self.vocab_size)
        return {"h": torch.tanh(self.image_h(pooled)), "bias": bias}

    def _logits(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        h = self.cell(self.dropout(self.word_embed(tokens)), state["h"])
        return (self.out(self.dropout(h)) + state["bias"]) / self.temperature, {**state, "h": h}

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        logits, state = self._logits(tokens, state)
        return F.log_softmax(logits, dim=-1), state

    def forward(self, pooled: Tensor, grid: Tensor | None, captions: Tensor) -> Tensor:
        state, out = self.init_state(pooled), []
        for t in range(captions.shape[1] - 1):
            logits, state = self._logits(captions[:, t], state)
            out.append(logits)
        return torch.stack(out, dim=1)  # (B, T-1, V)


@contextmanager
def registered(name: str, cls: type) -> Iterator[type]:
    """``cls`` registered as ``name`` inside the block; the registry as it was afterwards."""
    saved = dict(DECODERS)
    try:
        yield register_decoder(name)(cls)
    finally:
        DECODERS.clear()
        DECODERS.update(saved)


@pytest.fixture
def toy() -> Iterator[type]:
    with registered("toy", ToyGRUDecoder) as cls:
        yield cls


TOY_YAML = """\
decoder:
  type: toy
  embed_dim: 8
  hidden_dim: 12
  dropout: 0.0
  toy:
    temperature: 2        # an int in YAML, a float in the config
"""


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("options", [{}, {"image_bias": False, "temperature": 0.5}], ids=["defaults", "options"])
def test_the_toy_decoder_passes_the_decoder_contract(toy, check, options):
    check(Case("toy", options=options).build())


def test_a_toy_section_is_checked_round_trips_and_builds_the_decoder(toy, tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(TOY_YAML)
    cfg = load_config(path, ["--decoder.toy.image_bias=false"])
    assert cfg.decoder.options == {"toy": {"image_bias": False, "temperature": 2.0}}
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == cfg == config_from_dict(cfg.to_dict())
    d = build_decoder(cfg.decoder, vocab_size=len(VOCAB), feature_dim=6, pad_id=VOCAB.pad_id)
    assert isinstance(d, ToyGRUDecoder) and d.image_bias is None and d.temperature == 2.0
    assert d.cell.input_size == 8 and d.cell.hidden_size == 12
    # the section is checked like every other key
    with pytest.raises(ConfigError, match=r"decoder.toy: unknown key\(s\) \['temprature'\] in ToyGRUDecoder.Options"):
        load_config(path, ["--decoder.toy.temprature=1"])
    with pytest.raises(ConfigError, match="decoder.toy.image_bias: expected true/false"):
        load_config(path, ["--decoder.toy.image_bias=3"])
    # ... and the decoder checks what it needs when it is built
    with pytest.raises(ValueError, match="decoder.toy.temperature=0.0: must be > 0"):
        build_decoder(load_config(path, ["--decoder.toy.temperature=0"]).decoder, vocab_size=len(VOCAB), feature_dim=6)


def test_the_toy_decoder_captions_an_image_through_the_captioner(toy):
    cfg = load_config(None, ["--decoder.type=toy", "--decoder.embed_dim=8", "--decoder.hidden_dim=12",
                             "--eval.max_len=5"])
    assert cfg.decoder.options == {"toy": {"image_bias": True, "temperature": 1.0}}  # defaults filled in
    encoder = tiny_encoder()
    torch.manual_seed(0)
    decoder = build_decoder(cfg.decoder, vocab_size=len(VOCAB), feature_dim=encoder.feature_dim,
                            grid_dim=encoder.grid_dim, pad_id=VOCAB.pad_id)
    captioner = Captioner(encoder, decoder, VOCAB, config=cfg)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    beam = captioner.caption_images(images, method="beam", beam_size=3, n_best=2)
    greedy = captioner.caption_images(images, method="greedy")
    assert [len(c) for c in beam] == [2, 2] and [len(c) for c in greedy] == [1, 1]
    for caption in [c for per_image in beam + greedy for c in per_image]:
        assert caption.finished and 0 < len(caption.words) + 1 <= 6 and all(w in VOCAB for w in caption.words)
        assert caption.alphas is None  # no attention
    pooled, _ = captioner.features(images)
    scores = captioner.score(pooled, None, [c[0].words for c in beam])
    assert scores.tolist() == pytest.approx([c[0].logprob for c in beam], abs=1e-4)


def test_the_registry_is_restored_and_registration_is_checked():
    before = dict(DECODERS)
    with registered("toy", ToyGRUDecoder):
        assert DECODERS["toy"] is ToyGRUDecoder and set(DECODERS) == {*before, "toy"}
        register_decoder("toy")(ToyGRUDecoder)  # the same class again: fine
        with pytest.raises(ValueError, match="decoder type 'nic' is already registered"):
            register_decoder("nic")(ToyGRUDecoder)
    assert DECODERS == before and "toy" not in DECODERS
    with pytest.raises(ValueError, match="unknown decoder type 'toy'; valid types"):
        build_decoder(config_from_dict({"decoder": {"type": "toy"}}).decoder, vocab_size=5, feature_dim=6)
    with pytest.raises(TypeError, match="not a StepDecoderBase subclass"):
        register_decoder("bad")(nn.Linear)
    with pytest.raises(TypeError, match="does not define from_config"):
        register_decoder("bad")(type("NoFactory", (StepDecoderBase,), {}))
    with pytest.raises(ValueError, match="use an identifier"):
        register_decoder("my.decoder")
    assert DECODERS == before
