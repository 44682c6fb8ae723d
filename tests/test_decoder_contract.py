"""The decoder contract: what search, training and the captioner rely on, checked on every registered decoder.

Each ``check_*`` function takes a decoder (in eval mode) and checks one promise of the step
API (nic/decoders/base.py); the tests run every check on every decoder in ``DECODERS`` (and
the attention variants of tests/test_attention.py). tests/test_decoder_plugin.py runs the
same checks on a decoder registered only inside a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from nic.captioner import Captioner
from nic.config import Config, DecoderConfig
from nic.decoders import DECODERS, StepDecoderBase, build_decoder
from nic.search import beam_search, greedy_search
from nic.vocab import SPECIALS, Vocabulary
from tests.test_attention import VARIANTS as ATTENTION_VARIANTS
from tests.test_features import tiny_encoder

F, P, E, H = 6, 4, 8, 12  # F and P (a 2x2 grid) as tests.test_features.tiny_encoder gives them
VOCAB = Vocabulary([*SPECIALS, *(f"w{i}" for i in range(9))])
V, PAD, START, END = len(VOCAB), VOCAB.pad_id, VOCAB.start_id, VOCAB.end_id
IDS = dict(start_id=START, end_id=END, pad_id=PAD, max_len=6)

# 4 captions of different lengths (3, 5, 1, 4 predicted tokens, <end> included), padded
CAPTIONS = torch.tensor([
    [START, 5, 6, END, PAD, PAD],
    [START, 7, 8, 9, 10, END],
    [START, END, PAD, PAD, PAD, PAD],
    [START, 4, 4, 4, END, PAD],
])
STEPS = [3, 5, 1, 4]


@dataclass(frozen=True)
class Case:
    """A decoder to check: its registered type, common config fields and options (its section)."""

    type: str
    common: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return "-".join([self.type, *(f"{k}={v}" for k, v in {**self.common, **self.options}.items())])

    def build(self) -> StepDecoderBase:
        torch.manual_seed(0)
        cfg = DecoderConfig(type=self.type, embed_dim=E, hidden_dim=H, dropout=0.5, **self.common,
                            options={self.type: dict(self.options)} if self.options else {})
        return build_decoder(cfg, vocab_size=V, feature_dim=F, grid_dim=F, pad_id=PAD).eval()


def features(decoder: StepDecoderBase, b: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """pooled (b, F) and, for decoders that use it, grid (b, P, F); None otherwise (as the captioner)."""
    g = torch.Generator().manual_seed(seed)
    pooled, grid = torch.randn(b, F, generator=g), torch.randn(b, P, F, generator=g)
    return pooled, grid if decoder.uses_grid else None


def rows_of(grid: torch.Tensor | None, index: Any) -> torch.Tensor | None:
    return None if grid is None else grid[index]


# ---------------------------------------------------------------------------- the checks
def check_forward_equals_step(d: StepDecoderBase) -> None:
    """Teacher forcing (``forward``) gives the log-probs of stepwise ``step`` decoding, in a batch of mixed
    lengths (positions inside each caption), and each caption alone gets the same as in the batch."""
    pooled, grid = features(d, 4)
    full = d(pooled, grid, CAPTIONS).log_softmax(-1)  # (B, T-1, V)
    assert full.shape == (4, CAPTIONS.shape[1] - 1, V)
    state = d.init_state(pooled, grid)
    for t in range(CAPTIONS.shape[1] - 1):
        lp, state = d.step(CAPTIONS[:, t], state)
        rows = [b for b in range(4) if STEPS[b] > t]
        torch.testing.assert_close(lp[rows], full[rows, t], rtol=1e-5, atol=1e-5)
    for b in range(4):
        alone = d(pooled[b:b + 1], rows_of(grid, slice(b, b + 1)), CAPTIONS[b:b + 1, :STEPS[b] + 1]).log_softmax(-1)
        torch.testing.assert_close(alone[0], full[b, :STEPS[b]], rtol=1e-5, atol=1e-5)


def check_reorder_state_follows_rows(d: StepDecoderBase) -> None:
    """After ``reorder_state`` (expanding, permuting within images, duplicating and dropping rows), each row
    decodes exactly as a fresh decode of its image through its own token history."""
    pooled, grid = features(d, 3)
    g = torch.Generator().manual_seed(2)
    state, images, history = d.init_state(pooled, grid), torch.arange(3), torch.zeros(3, 0, dtype=torch.long)
    for index in (torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([1, 0, 3, 3, 5, 4]), torch.tensor([4, 4, 0])):
        state = d.reorder_state(state, index)
        images, history = images[index], history[index]
        assert all(v.shape[0] == len(index) for v in state.values())
        tokens = torch.randint(4, V, (len(index),), generator=g) if history.shape[1] else torch.full_like(index, START)
        lp, state = d.step(tokens, state)
        fresh = d.init_state(pooled[images], rows_of(grid, images))
        for past in history.T:
            _, fresh = d.step(past, fresh)
        torch.testing.assert_close(lp, d.step(tokens, fresh)[0], rtol=1e-5, atol=1e-5)
        history = torch.cat([history, tokens[:, None]], dim=1)


def check_beam_1_equals_greedy(d: StepDecoderBase) -> None:
    pooled, grid = features(d, 3, seed=4)
    greedy = greedy_search(d, pooled, grid, **IDS)
    beam = beam_search(d, pooled, grid, beam_size=1, **IDS)
    assert [h[0].tokens for h in beam] == [h.tokens for h in greedy]
    for (b,), g in zip(beam, greedy):
        assert b.finished == g.finished and b.logprob == pytest.approx(g.logprob, abs=1e-4)


def check_score_equals_search_logprob(d: StepDecoderBase) -> None:
    """``Captioner.score`` of the search's best caption is the log-prob the search reported for it."""
    captioner = Captioner(tiny_encoder(), d, VOCAB, config=Config())
    pooled, grid = features(d, 3, seed=5)
    best = [c[0] for c in captioner.decode(pooled, grid, method="beam", beam_size=4, max_len=6)]
    assert all(c.finished for c in best)  # the last step closes every caption with its real p(<end>)
    scores = captioner.score(pooled, grid, [c.words for c in best])
    assert scores.tolist() == pytest.approx([c.logprob for c in best], abs=1e-4)


CHECKS = [check_forward_equals_step, check_reorder_state_follows_rows, check_beam_1_equals_greedy,
          check_score_equals_search_logprob]

# every registered decoder with its defaults, plus variants: Show and Tell with 2 layers, the attention options
CASES = ([Case(name) for name in sorted(DECODERS)] + [Case("nic", common={"num_layers": 2})]
         + [Case("attention", options={"attention_dim": 10, **o}) for o in ATTENTION_VARIANTS])


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_decoder_contract(case: Case, check) -> None:
    check(case.build())
