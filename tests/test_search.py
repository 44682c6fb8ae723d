"""Search: exact answers on hand-written probability tables, and properties on a random LSTM.

Two test doubles implement the step API of :mod:`nic.search`:

* :class:`TableDecoder`: the next-token distribution is a hand-written function of the
  prefix (per image), so greedy/beam answers and log-probs can be computed by hand. It can
  emit a fake attention ``"alpha"`` that is a deterministic function of (image, prefix).
* :class:`TinyLSTMDecoder`: a random NIC-style LSTM (image fed at t = -1) for property
  tests (k = 1 == greedy, wide beam == brute force, batched == one image at a time).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nic.search import Hypothesis, StepDecoder, beam_search, greedy_search, sample

PAD, START, END = 0, 1, 2
SPECIALS = ["<pad>", "<start>", "<end>"]
IDS = {"start_id": START, "end_id": END, "pad_id": PAD}


# ---------------------------------------------------------------------------- test doubles
class TableDecoder(nn.Module):
    """Next-token probabilities looked up from ``tables[image][prefix words]``.

    ``tables``: one dict per image, prefix tuple of word names (without <start>) -> {token: prob};
    tokens missing from a row have probability 0. Unseen prefixes use ``default`` (one row, or
    one per image). The image index is ``pooled[:, 0]``. With ``alpha_locations = P > 0`` every
    step also returns ``"alpha"`` (B, P) = :meth:`alpha_of` (image, prefix consumed so far).
    """

    def __init__(self, words: list[str], tables: list[dict], default: dict | list[dict] | None = None,
                 alpha_locations: int = 0) -> None:
        super().__init__()
        self.itos = SPECIALS + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.vocab_size = len(self.itos)
        self.tables = tables
        defaults = default if isinstance(default, list) else [default or {"<end>": 1.0}] * len(tables)
        self.defaults = defaults
        self.P = alpha_locations

    def ids(self, *words: str) -> list[int]:
        return [self.stoi[w] for w in words]

    def features(self, images: list[int]) -> Tensor:
        return torch.tensor(images, dtype=torch.float32).unsqueeze(1)  # (B, 1): the image index

    def _row(self, img: int, prefix: tuple[int, ...]) -> Tensor:
        key = tuple(self.itos[i] for i in prefix)
        probs = self.tables[img].get(key, self.defaults[img])
        row = torch.full((self.vocab_size,), -math.inf)
        for w, p in probs.items():
            row[self.stoi[w]] = math.log(p) if p > 0 else -math.inf
        return row

    def alpha_of(self, img: int, prefix: tuple[int, ...] | list[int]) -> Tensor:
        raw = [1 + (img * 7 + len(prefix) * 3 + sum((i + 2) * w for i, w in enumerate(prefix)) + p * 5) % 13
               for p in range(self.P)]
        a = torch.tensor(raw, dtype=torch.float32)
        return a / a.sum()

    def init_state(self, pooled: Tensor, grid: Tensor | None = None) -> dict[str, Tensor]:
        img = pooled[:, 0].long()  # (B,)
        return {"img": img, "prefix": torch.empty((len(img), 0), dtype=torch.long)}

    def step(self, tokens: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        prefix = torch.cat([state["prefix"], tokens.unsqueeze(1)], dim=1)  # (B, T+1), col 0 = <start>
        imgs, words = state["img"].tolist(), prefix[:, 1:].tolist()
        log_probs = torch.stack([self._row(i, tuple(w)) for i, w in zip(imgs, words, strict=True)])  # (B, V)
        new = {"img": state["img"], "prefix": prefix}
        if self.P:
            new["alpha"] = torch.stack([self.alpha_of(i, w) for i, w in zip(imgs, words, strict=True)])  # (B, P)
        return log_probs, new

    def reorder_state(self, state: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
        return {k: v.index_select(0, index) for k, v in state.items()}


class TinyLSTMDecoder(nn.Module):
    """A random Show-and-Tell decoder: the image embedding is the LSTMCell input at t = -1."""

    def __init__(self, n_words: int, *, feature_dim: int = 6, hidden: int = 16, seed: int = 0,
                 sharpness: float = 2.0, end_bias: float = 0.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.vocab_size = V = len(SPECIALS) + n_words
        self.image_embed = nn.Linear(feature_dim, hidden)
        self.embed = nn.Embedding(V, hidden)
        self.cell = nn.LSTMCell(hidden, hidden)
        self.out = nn.Linear(hidden, V)
        for p in self.parameters():  # deterministic, and peaked enough that near-ties are vanishingly rare
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.7)
        self.out.weight.data.mul_(sharpness)
        self.out.bias.data[END] += end_bias

    def init_state(self, pooled: Tensor, grid: Tensor | None = None) -> dict[str, Tensor]:
        h, c = self.cell(self.image_embed(pooled))  # (B, H) each, from a zero state
        return {"h": h, "c": c}

    def step(self, tokens: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        h, c = self.cell(self.embed(tokens), (state["h"], state["c"]))  # (B, H)
        return F.log_softmax(self.out(h), dim=-1), {"h": h, "c": c}  # (B, V)

    def reorder_state(self, state: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
        return {k: v.index_select(0, index) for k, v in state.items()}


def features(b: int, seed: int, dim: int = 6) -> Tensor:
    return torch.randn(b, dim, generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def seq_logprob(decoder, pooled1: Tensor, tokens: list[int], *, finished: bool) -> float:
    """Model log-prob of one caption for one image (pooled1: (1, F)), step by step."""
    state = decoder.init_state(pooled1, None)
    prev, total = START, 0.0
    for tok in tokens + ([END] if finished else []):
        lp, state = decoder.step(torch.tensor([prev]), state)
        total += lp[0, tok].item()
        prev = tok
    return total


@torch.inference_mode()
def brute_force(decoder, pooled1: Tensor, max_len: int):
    """Every caption of <= max_len words (+<end>), and every unfinished max_len-word prefix."""
    words = list(range(len(SPECIALS), decoder.vocab_size))
    finished: list[tuple[list[int], float]] = []
    unfinished: list[tuple[list[int], float]] = []

    def rec(prefix: list[int], state, lp: float, prev: int) -> None:
        log_probs, state = decoder.step(torch.tensor([prev]), state)
        row = log_probs[0].tolist()
        finished.append((prefix, lp + row[END]))
        if len(prefix) == max_len:
            unfinished.append((prefix, lp))
            return
        for w in words:
            rec(prefix + [w], state, lp + row[w], w)

    rec([], decoder.init_state(pooled1, None), 0.0, START)
    finished.sort(key=lambda x: x[1], reverse=True)
    unfinished.sort(key=lambda x: x[1], reverse=True)
    return finished, unfinished


def approx(x: float, tol: float = 1e-6):
    return pytest.approx(x, rel=tol, abs=tol)


def test_test_doubles_satisfy_the_protocol():
    assert isinstance(TableDecoder(["A"], [{}]), StepDecoder)
    assert isinstance(TinyLSTMDecoder(3), StepDecoder)

    class NoReorder(nn.Module):  # the check is real: a decoder missing part of the API fails it
        def init_state(self, pooled, grid=None):
            return {}

        def step(self, tokens, state):
            return tokens, state

    assert not isinstance(NoReorder(), StepDecoder)


# ---------------------------------------------------------------------------- 1. greedy is suboptimal
GREEDY_TRAP = {
    (): {"A": 0.6, "B": 0.4},
    ("A",): {"C": 0.3, "D": 0.26, "E": 0.24, "<end>": 0.2},
    ("B",): {"<end>": 0.9, "C": 0.1},
}  # default row: <end> 1.0


def test_greedy_is_suboptimal_and_beam_finds_the_better_caption():
    d = TableDecoder(list("ABCDE"), [GREEDY_TRAP])
    pooled = d.features([0])
    g = greedy_search(d, pooled, max_len=5, **IDS)[0]
    assert g.tokens == d.ids("A", "C") and g.finished
    assert g.logprob == approx(math.log(0.6 * 0.3 * 1.0))
    assert g.score == g.logprob
    [b] = beam_search(d, pooled, beam_size=2, max_len=5, **IDS)[0]
    assert b.tokens == d.ids("B") and b.finished
    assert b.logprob == approx(math.log(0.4 * 0.9))
    assert b.logprob > g.logprob
    assert b.alphas is None and g.alphas is None


# ---------------------------------------------------------------------------- 2. nothing ends
def test_nothing_ends_returns_best_unfinished():
    never_end = {(): {"A": 0.5, "B": 0.3, "C": 0.2}, ("A",): {"B": 0.6, "A": 0.4}}
    d = TableDecoder(list("ABC"), [never_end], default={"A": 0.5, "B": 0.3, "C": 0.2})
    pooled = d.features([0])
    for hyp in (greedy_search(d, pooled, max_len=3, **IDS)[0], beam_search(d, pooled, beam_size=4, max_len=3,
                                                                            **IDS)[0][0]):
        assert not hyp.finished
        assert hyp.tokens == d.ids("A", "B", "A") and len(hyp.tokens) == 3
        assert hyp.logprob == approx(math.log(0.5 * 0.6 * 0.5))
        assert hyp.score == hyp.logprob


def test_fewer_finished_than_n_best_are_filled_with_unfinished_after_every_finished():
    table = {(): {"A": 0.7, "B": 0.3}, ("B",): {"<end>": 1.0}}
    d = TableDecoder(list("AB"), [table], default={"A": 1.0})  # A... never ends
    hyps = beam_search(d, d.features([0]), beam_size=2, max_len=3, n_best=2, **IDS)[0]
    assert [h.tokens for h in hyps] == [d.ids("B"), d.ids("A", "A", "A")]
    assert [h.finished for h in hyps] == [True, False]
    assert [h.logprob for h in hyps] == [approx(math.log(0.3)), approx(math.log(0.7))]  # unfinished is not ranked first


def test_max_len_caption_is_closed_by_end_at_the_last_step():
    d = TableDecoder(list("AB"), [{}], default={"A": 0.5, "B": 0.3, "<end>": 0.2})
    pooled = d.features([0])
    g = greedy_search(d, pooled, max_len=3, **IDS)[0]
    assert g.finished and g.tokens == d.ids("A", "A", "A")
    assert g.logprob == approx(3 * math.log(0.5) + math.log(0.2))
    # the beam's best is the empty caption (0.2 > every longer one); the max_len ones are closed too
    hyps = beam_search(d, pooled, beam_size=40, max_len=3, n_best=40, **IDS)[0]
    assert hyps[0].tokens == [] and hyps[0].logprob == approx(math.log(0.2))
    assert all(h.finished for h in hyps) and len(hyps) == 1 + 2 + 4 + 8
    assert hyps[-1].tokens == d.ids("B", "B", "B") and hyps[-1].logprob == approx(3 * math.log(0.3) + math.log(0.2))


def test_max_len_zero():
    d = TableDecoder(list("AB"), [{(): {"A": 0.9, "<end>": 0.1}}])
    pooled = d.features([0])
    for h in (greedy_search(d, pooled, max_len=0, **IDS)[0], beam_search(d, pooled, beam_size=3, max_len=0,
                                                                         **IDS)[0][0]):
        assert h.tokens == [] and h.finished and h.logprob == approx(math.log(0.1))


# ---------------------------------------------------------------------------- 3. length penalty
LENGTH_TABLE = {
    (): {"A": 0.6, "B": 0.4},
    ("A",): {"<end>": 0.9, "C": 0.1},  # A C -> default <end> 1.0
    ("B",): {"C": 1.0},
    ("B", "C"): {"D": 1.0},
    ("B", "C", "D"): {"<end>": 1.0},
}


def test_length_penalty_changes_the_winner():
    d = TableDecoder(list("ABCD"), [LENGTH_TABLE])
    pooled = d.features([0])
    [short] = beam_search(d, pooled, beam_size=3, max_len=6, **IDS)[0]
    assert short.tokens == d.ids("A")
    assert short.logprob == approx(math.log(0.54)) and short.score == short.logprob

    hyps = beam_search(d, pooled, beam_size=3, max_len=6, length_penalty=1.0, n_best=3, **IDS)[0]
    assert [h.tokens for h in hyps] == [d.ids("B", "C", "D"), d.ids("A"), d.ids("A", "C")]
    assert [h.logprob for h in hyps] == [approx(math.log(0.4)), approx(math.log(0.54)), approx(math.log(0.06))]
    assert [h.score for h in hyps] == [approx(math.log(0.4) / 4), approx(math.log(0.54) / 2),
                                       approx(math.log(0.06) / 3)]
    # another exponent: score = logprob / length ** alpha
    [h] = beam_search(d, pooled, beam_size=3, max_len=6, length_penalty=0.7, **IDS)[0]
    assert h.tokens == d.ids("B", "C", "D") and h.score == approx(math.log(0.4) / 4 ** 0.7)


# ---------------------------------------------------------------------------- 4. n_best
NBEST_TABLE = {
    (): {"A": 0.5, "B": 0.3, "C": 0.2},
    ("A",): {"<end>": 0.45, "B": 0.55},
    ("A", "B"): {"<end>": 0.9, "C": 0.1},
    ("B",): {"<end>": 0.9, "A": 0.1},
}  # default <end> 1.0


def test_n_best_exact_ordered_list():
    d = TableDecoder(list("ABC"), [NBEST_TABLE])
    pooled = d.features([0])
    expected = [(d.ids("B"), 0.3 * 0.9), (d.ids("A", "B"), 0.5 * 0.55 * 0.9), (d.ids("A"), 0.5 * 0.45)]
    for k in (3, 5, 10):
        hyps = beam_search(d, pooled, beam_size=k, max_len=5, n_best=3, **IDS)[0]
        assert [h.tokens for h in hyps] == [t for t, _ in expected]
        assert [h.logprob for h in hyps] == [approx(math.log(p)) for _, p in expected]
        assert all(h.finished for h in hyps)
    with pytest.raises(ValueError):
        beam_search(d, pooled, beam_size=2, n_best=3, **IDS)


def test_stopping_waits_for_live_beams_that_can_still_win():
    """With length_penalty 0 an image stops only when its n_best-th finished score beats every live
    beam: having K finished hypotheses is not enough (the common heuristic would return [] here)."""
    table = {(): {"A": 0.6, "<end>": 0.4}, ("A",): {"B": 0.9, "<end>": 0.1}, ("A", "B"): {"<end>": 1.0}}
    d = TableDecoder(list("AB"), [table])
    hyps = beam_search(d, d.features([0]), beam_size=2, max_len=5, n_best=2, **IDS)[0]
    assert [h.tokens for h in hyps] == [d.ids("A", "B"), []]
    assert [h.logprob for h in hyps] == [approx(math.log(0.54)), approx(math.log(0.4))]


# ---------------------------------------------------------------------------- 5. k = 1 == greedy
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beam_one_equals_greedy(seed):
    d = TinyLSTMDecoder(20, seed=seed, end_bias=1.0).eval()
    pooled = features(16, seed + 100)
    greedy = greedy_search(d, pooled, max_len=12, **IDS)
    beam = beam_search(d, pooled, beam_size=1, max_len=12, **IDS)
    assert any(len(g.tokens) > 2 for g in greedy)
    for g, [b] in zip(greedy, beam, strict=True):
        assert b.tokens == g.tokens and b.finished == g.finished
        assert b.logprob == approx(g.logprob, 1e-6)


# ---------------------------------------------------------------------------- 6. wide beam == brute force
@pytest.mark.parametrize(("n_words", "max_len", "k"), [(3, 4, 108), (2, 4, 64), (3, 3, 64), (3, 4, 64)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_equals_brute_force(n_words, max_len, k, seed):
    """k >= (W + 1) * W ** (max_len - 1), the most finite candidates any step can have: nothing
    is ever pruned, so the beam is exact, also for n_best > 1, and its stopping rule (n_best-th
    finished >= best live log-prob) never ends early. Unfinished max_len-word prefixes can have
    a higher log-prob than every finished caption (they lack the <end> factor) but are never
    returned while finished ones exist: the LSTM never gives <end> probability 0, so the last
    step closes every max_len-word beam. (3, 4, 64) is the narrower beam of the brief: it may prune
    (up to 108 candidates at the 4th word), which only drops low-probability prefixes here, so it is
    exact for these seeds though not guaranteed in general."""
    d = TinyLSTMDecoder(n_words, seed=seed, sharpness=1.0).eval()
    pooled = features(3, seed)
    hyps = beam_search(d, pooled, beam_size=k, max_len=max_len, n_best=5, **IDS)
    for b in range(3):
        finished, unfinished = brute_force(d, pooled[b:b + 1], max_len)
        assert len(finished) == sum(n_words ** n for n in range(max_len + 1))
        assert hyps[b][0].finished and hyps[b][0].tokens == finished[0][0]
        assert hyps[b][0].logprob == approx(finished[0][1], 1e-5)
        assert [h.tokens for h in hyps[b]] == [t for t, _ in finished[:5]]
        assert [h.logprob for h in hyps[b]] == [approx(lp, 1e-5) for _, lp in finished[:5]]
        assert all(h.finished for h in hyps[b])
        assert unfinished[0][1] > finished[-1][1]  # the enumeration is complete, unfinished included


# ---------------------------------------------------------------------------- 7. batched == one at a time
@pytest.mark.parametrize("k", [5, 20])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_batched_beam_equals_one_image_runs(k, length_penalty):
    d = TinyLSTMDecoder(15, seed=7, end_bias=0.5).eval()
    pooled = features(8, 11)
    kw = dict(beam_size=k, max_len=10, n_best=3, length_penalty=length_penalty, **IDS)
    batched = beam_search(d, pooled, **kw)
    assert len(batched) == 8
    for b in range(8):
        single = beam_search(d, pooled[b:b + 1], **kw)[0]
        assert [h.tokens for h in batched[b]] == [h.tokens for h in single]
        assert [h.score for h in batched[b]] == [approx(h.score, 1e-5) for h in single]
        assert [h.finished for h in batched[b]] == [h.finished for h in single]
        for h in batched[b]:  # reported log-probs are the model's
            assert h.logprob == approx(seq_logprob(d, pooled[b:b + 1], h.tokens, finished=h.finished), 1e-5)
            length = len(h.tokens) + h.finished
            assert h.score == approx(h.logprob / length ** length_penalty, 1e-6)


def test_done_images_leave_the_batch():
    """Rows of an image whose search is over are dropped, and the others' results do not change."""
    d = TinyLSTMDecoder(15, seed=7, end_bias=0.5).eval()
    pooled = features(8, 11)
    rows: list[int] = []
    step = d.step

    def recording_step(tokens, state):
        rows.append(tokens.shape[0])
        return step(tokens, state)

    d.step = recording_step
    batched = beam_search(d, pooled, beam_size=5, max_len=10, **IDS)
    shrinks = [(a, b) for a, b in zip(rows, rows[1:]) if b != a]
    assert rows[0] == 8 * 5 and shrinks and all(b < a and b % 5 == 0 for a, b in shrinks)
    d.step = step
    singles = [beam_search(d, pooled[b:b + 1], beam_size=5, max_len=10, **IDS)[0] for b in range(8)]
    assert [h[0].tokens for h in batched] == [h[0].tokens for h in singles]


def test_batched_tables_differ_per_image():
    d = TableDecoder(list("ABCDE"), [GREEDY_TRAP, NBEST_TABLE, LENGTH_TABLE])
    out = beam_search(d, d.features([0, 1, 2, 1]), beam_size=3, max_len=6, **IDS)
    assert [o[0].tokens for o in out] == [d.ids("B"), d.ids("B"), d.ids("A"), d.ids("B")]


# ---------------------------------------------------------------------------- 8. pad/start never generated
def test_pad_and_start_are_never_generated():
    d = TableDecoder(list("AB"), [{}], default={"<pad>": 0.5, "<start>": 0.3, "A": 0.15, "<end>": 0.05})
    pooled = d.features([0])
    g = greedy_search(d, pooled, max_len=3, **IDS)[0]
    assert g.tokens == d.ids("A", "A", "A") and g.logprob == approx(3 * math.log(0.15) + math.log(0.05))
    hyps = beam_search(d, pooled, beam_size=10, max_len=3, n_best=4, **IDS)[0]
    assert hyps[0].tokens == [] and hyps[0].logprob == approx(math.log(0.05))
    assert [h.tokens for h in hyps] == [[], d.ids("A"), d.ids("A", "A"), d.ids("A", "A", "A")]
    samples = sample(d, d.features([0] * 200), max_len=3, generator=torch.Generator().manual_seed(0), **IDS)
    for h in [g, *hyps, *samples]:
        assert PAD not in h.tokens and START not in h.tokens


# ---------------------------------------------------------------------------- 9. edge sizes and alphas
def check_alphas(d: TableDecoder, img: int, h: Hypothesis) -> None:
    assert h.alphas is not None and h.alphas.shape == (len(h.tokens) + h.finished, d.P)
    for i in range(len(h.tokens) + h.finished):
        torch.testing.assert_close(h.alphas[i], d.alpha_of(img, h.tokens[:i]), rtol=0, atol=0)


def test_beam_larger_than_vocab_single_image_and_alphas():
    d = TableDecoder(list("ABCDE"), [NBEST_TABLE, GREEDY_TRAP], alpha_locations=4)
    assert d.vocab_size == 8
    for images in ([0], [1], [1, 0]):
        out = beam_search(d, d.features(images), beam_size=20, max_len=5, n_best=3, **IDS)
        assert len(out) == len(images)
        for img, hyps in zip(images, out, strict=True):
            assert len(hyps) == 3
            for h in hyps:
                check_alphas(d, img, h)
    out = beam_search(d, d.features([0]), beam_size=20, max_len=5, n_best=3, **IDS)[0]
    assert [h.tokens for h in out] == [d.ids("B"), d.ids("A", "B"), d.ids("A")]
    for img, h in zip([1, 0], greedy_search(d, d.features([1, 0]), max_len=5, **IDS), strict=True):
        check_alphas(d, img, h)
    for h in sample(d, d.features([0, 1] * 5), max_len=5, generator=torch.Generator().manual_seed(3), **IDS):
        assert h.alphas is not None and h.alphas.shape == (len(h.tokens) + h.finished, 4)


def test_unfinished_alphas_and_beam_larger_than_vocab():
    d = TableDecoder(list("AB"), [{}], default={"A": 0.6, "B": 0.4}, alpha_locations=3)
    hyps = beam_search(d, d.features([0]), beam_size=50, max_len=3, n_best=3, **IDS)[0]
    assert [h.tokens for h in hyps][0] == d.ids("A", "A", "A")
    assert [h.logprob for h in hyps] == [approx(math.log(0.6 ** 3))] + [approx(math.log(0.6 ** 2 * 0.4))] * 2
    for h in hyps:
        assert not h.finished
        check_alphas(d, 0, h)
    g = greedy_search(d, d.features([0]), max_len=3, **IDS)[0]
    assert not g.finished
    check_alphas(d, 0, g)


def test_tiny_lstm_beam_size_larger_than_vocab():
    d = TinyLSTMDecoder(2, seed=4).eval()  # V = 5, 2 generatable words
    pooled = features(2, 5)
    out = beam_search(d, pooled, beam_size=30, max_len=6, n_best=30, **IDS)
    for b, hyps in enumerate(out):
        assert len(hyps) == 30 and all(h.finished for h in hyps)
        assert len({tuple(h.tokens) for h in hyps}) == 30  # never duplicates
        assert all(math.isfinite(h.logprob) for h in hyps)
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        finished, _ = brute_force(d, pooled[b:b + 1], 6)
        assert hyps[0].tokens == finished[0][0]


# ---------------------------------------------------------------------------- 10. sampling
def test_sample_is_reproducible_and_scores_the_model_logprob():
    d = TinyLSTMDecoder(20, seed=1, sharpness=1.0).eval()
    pooled = features(16, 2)
    a = sample(d, pooled, max_len=10, generator=torch.Generator().manual_seed(5), **IDS)
    b = sample(d, pooled, max_len=10, generator=torch.Generator().manual_seed(5), **IDS)
    c = sample(d, pooled, max_len=10, generator=torch.Generator().manual_seed(6), **IDS)
    assert [h.tokens for h in a] == [h.tokens for h in b]
    assert [h.logprob for h in a] == [h.logprob for h in b]
    assert [h.tokens for h in a] != [h.tokens for h in c]
    for i, h in enumerate(a):
        assert h.logprob == approx(seq_logprob(d, pooled[i:i + 1], h.tokens, finished=h.finished), 1e-5)
        assert h.score == h.logprob and len(h.tokens) <= 10


def test_sample_low_temperature_and_top1_equal_greedy():
    d = TinyLSTMDecoder(20, seed=2, end_bias=1.0).eval()
    pooled = features(16, 3)
    greedy = greedy_search(d, pooled, max_len=12, **IDS)
    cold = sample(d, pooled, max_len=12, temperature=1e-4, generator=torch.Generator().manual_seed(0), **IDS)
    top1 = sample(d, pooled, max_len=12, top_k=1, generator=torch.Generator().manual_seed(0), **IDS)
    assert [h.tokens for h in cold] == [h.tokens for h in greedy]
    assert [h.tokens for h in top1] == [h.tokens for h in greedy]
    assert [h.logprob for h in top1] == [h.logprob for h in greedy]


def test_sample_frequencies_follow_the_table():
    d = TableDecoder(list("ABC"), [{(): {"A": 0.6, "B": 0.4}}])
    hyps = sample(d, d.features([0] * 4000), max_len=3, generator=torch.Generator().manual_seed(0), **IDS)
    freq_a = sum(h.tokens == d.ids("A") for h in hyps) / len(hyps)
    assert abs(freq_a - 0.6) < 0.03
    assert {tuple(h.tokens) for h in hyps} == {tuple(d.ids("A")), tuple(d.ids("B"))}
    # top_k=1 never samples B; a high temperature flattens towards 0.5
    assert all(h.tokens == d.ids("A") for h in sample(d, d.features([0] * 200), top_k=1, **IDS))
    hot = sample(d, d.features([0] * 4000), temperature=100.0, generator=torch.Generator().manual_seed(1), **IDS)
    assert abs(sum(h.tokens == d.ids("A") for h in hot) / 4000 - 0.5) < 0.03
    with pytest.raises(ValueError):
        sample(d, d.features([0]), temperature=0.0, **IDS)


def test_all_methods_exhaust_every_combination_small():
    """Every beam width 1..12 on every table: results sorted, never empty, exact log-probs."""
    d = TableDecoder(list("ABCDE"), [GREEDY_TRAP, NBEST_TABLE, LENGTH_TABLE])
    pooled = d.features([0, 1, 2])
    for k, lp in itertools.product(range(1, 13), (0.0, 0.5)):
        for img, hyps in enumerate(beam_search(d, pooled, beam_size=k, max_len=4, length_penalty=lp,
                                               n_best=min(k, 2), **IDS)):
            assert 1 <= len(hyps) <= min(k, 2)
            assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
            for h in hyps:
                assert h.logprob == approx(seq_logprob(d, pooled[img:img + 1], h.tokens, finished=h.finished))
