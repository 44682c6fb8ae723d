"""Caption search: greedy decoding, ancestral sampling and batched beam search.

Everything here talks to a decoder only through the step API (:class:`StepDecoder`):
``init_state`` once, then ``step`` one token at a time, and ``reorder_state`` to move,
drop or duplicate batch rows. Nothing here knows about LSTMs or attention, so every nic
decoder gets all three search methods for free.

Shape alphabet used in the comments: B images, K beams, V vocabulary, P grid locations,
T time (words generated so far).

Common rules
------------
* ``max_len`` is the maximum number of *words*. The decoder runs at most ``max_len + 1``
  steps: step ``t`` (0-based) consumes ``<start>`` or word ``t`` and predicts word ``t + 1``.
* ``<pad>`` and ``<start>`` are never generated: their log-probs are set to ``-inf``
  before any choice is made (no renormalisation; the remaining log-probs are the model's).
* At the last step (``t == max_len``) the only legal continuation is ``<end>``: a
  ``max_len``-word caption is *closed* with its real ``log p(<end> | prefix)``. Words there
  would make a caption of ``max_len + 1`` words, which is not allowed. Hence a hypothesis
  is unfinished only if the decoder gives ``<end>`` probability 0 at that point (or gives
  probability 0 to everything legal earlier); it then has ``max_len`` words and its
  log-prob excludes ``<end>``.
* A hypothesis' ``logprob`` sums the model log-probs of its generated tokens (``<end>``
  included when finished); ``score`` is ``logprob / length ** length_penalty`` with
  ``length = len(tokens) + finished`` (at least 1), i.e. ``score == logprob`` with no penalty.

Beam search
-----------
The B images times K beams form *one* batch of ``B * K`` rows that goes through
``decoder.step`` at every step; row ``b * K + k`` is beam ``k`` of image ``b``. After
``init_state`` the state is expanded with ``reorder_state(arange(B).repeat_interleave(K))``.
All K beams of an image start identical, so the beam scores start as ``[0, -inf, ...,
-inf]``: only beam 0 can be extended at step 0 and no duplicate ever appears. Beams that
are ``-inf`` (e.g. ``beam_size`` larger than the number of legal continuations) just ride
along and are never reported.

Per step, per image:

1. ``cand = beam_logprob[:, :, None] + log_probs`` ((B, K, V)) is flattened to (B, K * V)
   and the best ``2K`` candidates (by cumulative log-prob) are taken with one ``topk``.
   Candidate index ``i`` decodes to source beam ``i // V`` and token ``i % V`` (integer
   arithmetic only).
2. A candidate ending in ``<end>`` that ranks within the first K is a finished hypothesis
   of that image (tokens of its source beam, log-prob, score, attention weights).
3. The first K candidates *not* ending in ``<end>`` become the new live beams. There are
   always at least K of them among the 2K, since at most one ``<end>`` per source beam
   exists, so the beam never shrinks.
4. One ``reorder_state`` call with the flat source rows of the new beams (of the images
   not done yet, see below) reorders the decoder state; the token history (B * K, T) and
   attention history (B * K, T, P) are reordered with the same index, then the new
   tokens/weights are appended.

Stopping, per image (an image that is *done* stops collecting and its K rows leave the
batch, through the same ``reorder_state``, so the others' steps get cheaper; the loop ends
when every image is done, or after the ``max_len + 1``-th step):

* ``length_penalty == 0``: log-probs only decrease along a caption, so no live beam can
  ever finish above its current cumulative log-prob. An image is done once it has at
  least ``n_best`` finished hypotheses and the ``n_best``-th best finished score is
  ``>=`` its best live log-prob. This bound is exact: a beam wide enough never to prune a
  candidate (``K >= (W + 1) * W ** (max_len - 1)`` for W generatable words, the most finite
  candidates a step can have) returns exactly the ``n_best`` most probable finished
  captions, and a narrower beam only loses what it pruned. Unfinished (``max_len``-word,
  never closed) sequences are not part of this comparison: their log-prob excludes the
  ``<end>`` they lack and they are only ever reported as a fallback after every finished one.
* ``length_penalty != 0``: scores are not monotone, so the usual heuristic: done once it
  has at least K finished hypotheses.
* An image whose live beams are all ``-inf`` is done (nothing more can finish).

Result per image: finished hypotheses sorted by score (best first, ties keep discovery
order); if fewer than ``n_best``, the best unfinished ones (the live beams left when the
last step could not close them) fill the list. The list is never empty. ``beam_size`` may
exceed the vocabulary: after the first step there are ``K * V`` candidates (an exact search).

Memory: a step's working set grows as ``B * K * V``. Before the decoder runs (and again with
the size of its state, before the K-fold expansion) a search that would need more than half
the memory available on the features' device is refused with a ``ValueError`` naming the beam
size, the vocabulary and both byte counts (:func:`nic.decoding.check_search_memory`; it needs
the decoder's ``vocab_size``, which every nic decoder has: without it, after the first step).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from nic.decoding import check_search_memory, search_memory_bytes

__all__ = ["Hypothesis", "StepDecoder", "beam_search", "greedy_search", "sample", "search_memory_bytes"]

State = dict[str, Tensor]


@runtime_checkable
class StepDecoder(Protocol):
    """The step API every nic decoder implements; the only thing search uses.

    Every tensor in a state dict is batch-first (dim 0 is the batch row).
    """

    def init_state(self, pooled: Tensor, grid: Tensor | None) -> State:
        """pooled (B, F), grid (B, P, F) or None -> the state after the image has been fed."""
        ...

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """tokens (B,) long -> (log-probs (B, V), already log_softmax'ed; new state).

        Attention decoders put ``"alpha"`` (B, P), the weights used at this step, in the new state.
        """
        ...

    def reorder_state(self, state: State, index: Tensor) -> State:
        """Select/duplicate rows: every value ``v -> v.index_select(0, index)``; index (B',)."""
        ...


@dataclass
class Hypothesis:
    """One decoded caption."""

    tokens: list[int]  # generated word ids, without <start> and without the final <end>
    logprob: float  # sum of the log-probs of every generated token, <end> included when finished
    score: float  # logprob / length ** length_penalty, length = len(tokens) + finished (>= 1)
    finished: bool  # True when it ended with <end>
    alphas: Tensor | None = None  # (len(tokens) + finished, P) attention weights per step, on CPU


# ---------------------------------------------------------------------------- helpers
def _check_ids(start_id: int, end_id: int, pad_id: int, max_len: int) -> None:
    if end_id in (start_id, pad_id):
        raise ValueError(f"end_id ({end_id}) must differ from start_id ({start_id}) and pad_id ({pad_id})")
    if max_len < 0:
        raise ValueError(f"max_len must be >= 0, got {max_len}")


def _legal_log_probs(log_probs: Tensor, *, start_id: int, end_id: int, pad_id: int, last: bool) -> Tensor:
    """Mask what may not be generated: <pad> and <start> always, every word at the last step.

    log_probs (N, V) -> (N, V) float32, a new tensor (the decoder's output is never modified).
    """
    log_probs = log_probs.float()
    if last:  # only <end> may follow a max_len-word prefix
        keep = torch.zeros(log_probs.size(1), dtype=torch.bool, device=log_probs.device)  # (V,)
        keep[end_id] = True
        return log_probs.masked_fill(~keep, -math.inf)  # (N, V)
    banned = torch.zeros(log_probs.size(1), dtype=torch.bool, device=log_probs.device)  # (V,)
    banned[[pad_id, start_id]] = True
    return log_probs.masked_fill(banned, -math.inf)  # (N, V)


def _score(logprob: float, length: int, length_penalty: float) -> float:
    if length_penalty == 0:
        return logprob
    return logprob / max(length, 1) ** length_penalty


# ---------------------------------------------------------------------------- greedy / sampling
def _single_path(
    decoder: StepDecoder,
    pooled: Tensor,
    grid: Tensor | None,
    choose: Callable[[Tensor], Tensor],
    *,
    start_id: int,
    end_id: int,
    pad_id: int,
    max_len: int,
) -> list[Hypothesis]:
    """Decode one caption per image, batched, picking each token with ``choose((B, V)) -> (B,)``.

    A row stops after <end>, or unfinished when the chosen token has log-prob -inf (nothing
    legal left: only possible at the last step when the decoder rules out <end>).
    """
    _check_ids(start_id, end_id, pad_id, max_len)
    B = pooled.size(0)
    device = pooled.device
    state = decoder.init_state(pooled, grid)
    tokens = torch.full((B,), start_id, dtype=torch.long, device=device)  # (B,)
    logprob = torch.zeros(B, device=device)  # (B,)
    alive = torch.ones(B, dtype=torch.bool, device=device)  # (B,) still generating
    finished = torch.zeros(B, dtype=torch.bool, device=device)  # (B,)
    n_words = torch.zeros(B, dtype=torch.long, device=device)  # (B,)
    words: list[Tensor] = []  # T x (B,)
    alphas: list[Tensor] = []  # T x (B, P)
    for t in range(max_len + 1):
        log_probs, state = decoder.step(tokens, state)  # (B, V)
        log_probs = _legal_log_probs(log_probs, start_id=start_id, end_id=end_id, pad_id=pad_id, last=t == max_len)
        choice = choose(log_probs)  # (B,)
        lp = log_probs.gather(1, choice.unsqueeze(1)).squeeze(1)  # (B, 1) -> (B,)
        ok = alive & torch.isfinite(lp)  # (B,)
        logprob = torch.where(ok, logprob + lp, logprob)  # (B,)
        is_end = ok & (choice == end_id)  # (B,)
        finished |= is_end
        alive = ok & ~is_end
        n_words += alive.long()
        words.append(choice)
        if "alpha" in state:
            alphas.append(state["alpha"].float())
        if not alive.any():
            break
        tokens = choice

    words_bt = torch.stack(words, dim=1).cpu()  # (B, T)
    alphas_btp = torch.stack(alphas, dim=1).cpu() if alphas else None  # (B, T, P)
    out = []
    for b, (n, fin, lp) in enumerate(zip(n_words.tolist(), finished.tolist(), logprob.tolist(), strict=True)):
        out.append(Hypothesis(tokens=words_bt[b, :n].tolist(), logprob=lp, score=lp, finished=fin,
                              alphas=alphas_btp[b, :n + fin].clone() if alphas_btp is not None else None))
    return out


@torch.inference_mode()
def greedy_search(
    decoder: StepDecoder,
    pooled: Tensor,
    grid: Tensor | None = None,
    *,
    start_id: int,
    end_id: int,
    pad_id: int,
    max_len: int = 20,
) -> list[Hypothesis]:
    """Arg-max decoding, batched over images; one :class:`Hypothesis` per image."""

    def choose(log_probs: Tensor) -> Tensor:
        return log_probs.argmax(dim=1)  # (B, V) -> (B,)

    return _single_path(decoder, pooled, grid, choose, start_id=start_id, end_id=end_id, pad_id=pad_id,
                        max_len=max_len)


@torch.inference_mode()
def sample(
    decoder: StepDecoder,
    pooled: Tensor,
    grid: Tensor | None = None,
    *,
    start_id: int,
    end_id: int,
    pad_id: int,
    max_len: int = 20,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    uniforms: Tensor | None = None,
) -> list[Hypothesis]:
    """Ancestral sampling from ``softmax(log_probs / temperature)``, optionally restricted to the top-k tokens.

    ``logprob``/``score`` are the *model's* log-probs of the sampled tokens (not the tempered
    ones). Pass a seeded ``torch.Generator`` (on the features' device) for reproducibility, or
    ``uniforms`` (B, max_len + 1) in [0, 1): step t of row b then takes the token at which the
    cumulative distribution first exceeds ``uniforms[b, t]`` (inverse-CDF sampling), so each
    row's caption depends on its own numbers only, not on the rest of the batch.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    steps = iter(uniforms.unbind(1)) if uniforms is not None else None  # max_len + 1 x (B,)

    def choose(log_probs: Tensor) -> Tensor:
        logits = log_probs / temperature  # (B, V)
        if top_k > 0:
            kth = logits.topk(min(top_k, logits.size(1)), dim=1).values[:, -1:]  # (B, 1)
            logits = logits.masked_fill(logits < kth, -math.inf)  # (B, V)
        # rows with nothing legal get a harmless uniform draw; the caller sees lp = -inf and stops them
        has_any = torch.isfinite(logits).any(dim=1, keepdim=True)  # (B, 1)
        logits = torch.where(has_any, logits, torch.zeros_like(logits))  # (B, V)
        probs = F.softmax(logits, dim=1)  # (B, V)
        if steps is None:
            return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B, 1) -> (B,)
        cdf = probs.cumsum(dim=1)  # (B, V)
        u = next(steps).to(cdf).unsqueeze(1) * cdf[:, -1:]  # (B, 1), below the total mass
        return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.size(1) - 1)  # (B,)

    return _single_path(decoder, pooled, grid, choose, start_id=start_id, end_id=end_id, pad_id=pad_id,
                        max_len=max_len)


# ---------------------------------------------------------------------------- beam search
@dataclass
class _Beams:
    """The live state of a batched beam search: Ba images not done yet, K beams each, flat rows.

    Local image i (rows i*K .. i*K+K-1) is image ``active[i]`` of the input; done images leave
    the batch, so Ba = len(active) shrinks.
    """

    K: int
    active: list[int]
    lp: Tensor  # (Ba, K) cumulative log-prob of each live beam
    tokens: Tensor  # (Ba*K,) last token of each beam
    history: Tensor  # (Ba*K, T) words of each beam
    finished: list[list[Hypothesis]]  # per input image
    unfinished: list[list[Hypothesis]]
    alpha_hist: Tensor | None = None  # (Ba*K, T, P) attention weights of each beam, when the decoder has them

    def with_alpha(self, t_alpha: Tensor | None) -> Tensor | None:
        """This step's attention (Ba*K, P) as float; starts the history on the first step that has one."""
        if t_alpha is None:
            return None
        t_alpha = t_alpha.float()
        if self.alpha_hist is None:
            self.alpha_hist = t_alpha.new_empty((self.history.size(0), 0, t_alpha.size(1)))
        return t_alpha

    def close_finished(self, fin_mask: Tensor, src_row: Tensor, top_lp: Tensor, alpha: Tensor | None, t: int,
                       length_penalty: float) -> set[int]:
        """<end> candidates (``fin_mask`` (Ba, K)) become finished hypotheses; returns their source rows."""
        closed: set[int] = set()
        if not fin_mask.any():
            return closed
        bs, rs = fin_mask.nonzero(as_tuple=True)  # (N,), (N,): local image, candidate
        rows = src_row[bs, rs]  # (N,) flat source rows
        fin_tokens = self.history.index_select(0, rows).tolist()  # N x T
        fin_alphas = None
        if self.alpha_hist is not None and alpha is not None:
            fin_alphas = torch.cat([self.alpha_hist.index_select(0, rows),  # (N, T, P)
                                    alpha.index_select(0, rows).unsqueeze(1)], dim=1).cpu()  # (N, T+1, P)
        for j, (i, lp, row) in enumerate(zip(bs.tolist(), top_lp[bs, rs].tolist(), rows.tolist(), strict=True)):
            closed.add(row)
            self.finished[self.active[i]].append(Hypothesis(
                tokens=fin_tokens[j], logprob=lp, score=_score(lp, t + 1, length_penalty), finished=True,
                alphas=fin_alphas[j].clone() if fin_alphas is not None else None))
        return closed

    def close_unfinished(self, closed: set[int], t: int, length_penalty: float) -> None:
        """At max_len: live beams whose <end> was impossible are reported as unfinished."""
        lp_list = self.lp.tolist()  # Ba x K
        hist_cpu = self.history.cpu()  # (Ba*K, T)
        alpha_cpu = self.alpha_hist.cpu() if self.alpha_hist is not None else None  # (Ba*K, T, P)
        for i, b in enumerate(self.active):
            for k, lp in enumerate(lp_list[i]):
                row = i * self.K + k
                if row in closed or not math.isfinite(lp):
                    continue
                self.unfinished[b].append(Hypothesis(
                    tokens=hist_cpu[row].tolist(), logprob=lp, score=_score(lp, t, length_penalty),
                    finished=False, alphas=alpha_cpu[row].clone() if alpha_cpu is not None else None))

    def still_searching(self, new_lp: Tensor, length_penalty: float, n_best: int) -> list[int]:
        """Local indices of the images not done: with no penalty, done once no live beam can beat
        the n-best finished; with one (scores can rise with length), once K have finished."""
        best_live = new_lp.max(dim=1).values.tolist()  # (Ba, K) -> Ba floats
        keep = []
        for i, b in enumerate(self.active):
            if best_live[i] == -math.inf:
                done = True
            elif length_penalty == 0:
                done = len(self.finished[b]) >= n_best and (
                    sorted((h.score for h in self.finished[b]), reverse=True)[n_best - 1] >= best_live[i])
            else:
                done = len(self.finished[b]) >= self.K
            if not done:
                keep.append(i)
        return keep

    def advance(self, decoder: StepDecoder, state: State, new_rows: Tensor, new_words: Tensor, new_lp: Tensor,
                alpha: Tensor | None) -> State:
        """One reorder for the decoder state (new beams, done images dropped); the histories follow."""
        state = decoder.reorder_state(state, new_rows)
        self.history = torch.cat([self.history.index_select(0, new_rows), new_words.unsqueeze(1)], dim=1)
        if self.alpha_hist is not None and alpha is not None:
            self.alpha_hist = torch.cat([self.alpha_hist.index_select(0, new_rows),  # (Ba'*K, T, P)
                                         alpha.index_select(0, new_rows).unsqueeze(1)], dim=1)  # (Ba'*K, T+1, P)
        self.lp, self.tokens = new_lp, new_words
        return state

    def results(self, n_best: int) -> list[list[Hypothesis]]:
        out = []
        for fin, unfin in zip(self.finished, self.unfinished, strict=True):
            hyps = sorted(fin, key=lambda h: h.score, reverse=True)[:n_best]
            if len(hyps) < n_best:
                hyps += sorted(unfin, key=lambda h: h.score, reverse=True)[:n_best - len(hyps)]
            if not hyps:  # degenerate decoder that rules out every token from the start
                hyps = [Hypothesis(tokens=[], logprob=-math.inf, score=-math.inf, finished=False, alphas=None)]
            out.append(hyps)
        return out


def _check_beam(beam_size: int, n_best: int) -> None:
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be in [1, beam_size={beam_size}], got {n_best}")


@torch.inference_mode()
def beam_search(decoder: StepDecoder, pooled: Tensor, grid: Tensor | None = None, *, start_id: int, end_id: int,
                pad_id: int, beam_size: int = 20, max_len: int = 20, length_penalty: float = 0.0,
                n_best: int = 1) -> list[list[Hypothesis]]:
    """Batched beam search (see the module docstring); per image, ``n_best`` hypotheses, best first."""
    _check_ids(start_id, end_id, pad_id, max_len)
    _check_beam(beam_size, n_best)
    B, K = pooled.size(0), beam_size
    device = pooled.device
    vocab = getattr(decoder, "vocab_size", None)  # the memory bound (module docstring), before the decoder runs
    check_search_memory(B, K, vocab, device, max_len=max_len)
    state = decoder.init_state(pooled, grid)
    check_search_memory(B, K, vocab, device, max_len=max_len, state=state)  # before the K-fold expansion
    state = decoder.reorder_state(state, torch.arange(B, device=device).repeat_interleave(K))  # row b*K+k <- b
    lp = torch.full((B, K), -math.inf, device=device)
    lp[:, 0] = 0.0  # the K beams are identical at first: extend only beam 0
    beams = _Beams(K=K, active=list(range(B)), lp=lp,
                   tokens=torch.full((B * K,), start_id, dtype=torch.long, device=device),
                   history=torch.empty((B * K, 0), dtype=torch.long, device=device),
                   finished=[[] for _ in range(B)], unfinished=[[] for _ in range(B)])
    for t in range(max_len + 1):
        last = t == max_len
        log_probs, state = decoder.step(beams.tokens, state)  # (Ba*K, V): K rows per image not done yet
        if t == 0 and vocab is None:
            check_search_memory(B, K, log_probs.size(1), device, max_len=max_len)
        log_probs = _legal_log_probs(log_probs, start_id=start_id, end_id=end_id, pad_id=pad_id, last=last)
        V, Ba = log_probs.size(1), len(beams.active)
        alpha = beams.with_alpha(state.get("alpha"))  # (Ba*K, P) or None
        cand = beams.lp.view(Ba * K, 1) + log_probs  # (Ba*K, 1) + (Ba*K, V) -> (Ba*K, V)
        top_lp, top_idx = cand.view(Ba, K * V).topk(min(2 * K, K * V), dim=1)  # (Ba, 2K), sorted desc
        src_beam = torch.div(top_idx, V, rounding_mode="floor")  # (Ba, 2K) integer: which beam it extends
        word = top_idx % V  # (Ba, 2K) integer: the token appended
        src_row = (torch.arange(Ba, device=device) * K).unsqueeze(1) + src_beam  # (Ba, 2K) flat row in the batch
        is_end = word == end_id  # (Ba, 2K)
        # 1) <end> candidates within the first K become finished hypotheses of their image
        closed = beams.close_finished(is_end[:, :K] & torch.isfinite(top_lp[:, :K]), src_row, top_lp, alpha, t,
                                      length_penalty)
        if last:
            beams.close_unfinished(closed, t, length_penalty)
            break
        # 2) the first K non-<end> candidates become the live beams (stable sort puts <end>s last)
        order = torch.sort(is_end.to(torch.uint8), dim=1, stable=True).indices[:, :K]  # (Ba, 2K) -> (Ba, K)
        new_lp = top_lp.gather(1, order).masked_fill(is_end.gather(1, order), -math.inf)  # (Ba, K) (-inf: V == 1)
        # 3) stopping, per image; the rows of images done now leave the batch in step 4
        keep = beams.still_searching(new_lp, length_penalty, n_best)
        if not keep:
            break
        if len(keep) < Ba:
            kept = torch.tensor(keep, device=device)  # (Ba',)
            order, new_lp = order.index_select(0, kept), new_lp.index_select(0, kept)  # (Ba', K)
            src_row, word = src_row.index_select(0, kept), word.index_select(0, kept)  # (Ba', 2K)
            beams.active = [beams.active[i] for i in keep]
        # 4) one reorder for the decoder state (new beams, done images dropped); the histories follow
        state = beams.advance(decoder, state, src_row.gather(1, order).view(-1), word.gather(1, order).view(-1),
                              new_lp, alpha)
    return beams.results(n_best)
