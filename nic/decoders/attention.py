"""Show, Attend and Tell (Xu et al. 2015): an LSTM decoder with soft attention over the CNN grid.

``decoder.type: attention``; its options are the ``decoder.attention`` section of a config
(:class:`ShowAttendTellDecoder.Options`). The decoder implements the step API of
:mod:`nic.decoders.base`, so greedy, sampling and beam search (:mod:`nic.search`) drive it
unchanged; its state also carries the attention weights of the last step
(``state["alpha"]`` (B, P)), which search records per hypothesis.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nic.decoders.base import CommonSettings, State, StepDecoderBase, register_decoder, sequence_nll
from nic.typed import at_least, one_of

# decoder.attention.attention_query: which LSTM state asks where to look (see ShowAttendTellDecoder)
ATTENTION_QUERIES = ("previous", "current")


@register_decoder("attention")
class ShowAttendTellDecoder(StepDecoderBase):
    """Soft-attention LSTM decoder (Xu et al. 2015) that also sees the image once at t = -1, as NIC.

    How the image enters, in order:

    1. **Initial state from the grid.** ``h0 = tanh(W_h mean_i a_i)``, ``c0 = tanh(W_c mean_i a_i)``
       (the paper's f_init,h / f_init,c), with ``a_i`` (F) the grid features, i = 1..P.
    2. **t = -1, the NIC image step.** One LSTM step from (h0, c0) whose input is
       ``[W_I pooled ; 0]``: the projected pooled feature (in the word-embedding space, as
       Show and Tell feeds it) and a zero context vector (no attention at t = -1, no output).
    3. **t = 0, 1, ...: words with attention.** The input at step t is ``[E y_t ; z_t]``: the
       embedding of ``<start>`` (t = 0) or of the previous word, and the gated context
       ``z_t = beta_t * sum_i alpha_ti a_i`` where
       ``alpha_t = softmax_i(w^T tanh(U a_i + W h_{t-1}))`` (additive / Bahdanau attention;
       ``U a_i`` is computed once per image) and ``beta_t = sigmoid(f_beta(h_{t-1}))`` is the
       paper's gating *scalar*. Then ``p(y_{t+1}) = softmax(L_o dropout(h_t))``, or with
       ``deep_output`` the paper's eq. 7, ``softmax(L_o dropout(E y_t + L_h h_t + L_z z_t))``.

    ``attention_query`` says which state asks where to look:

    * ``"previous"`` (the paper): ``h_{t-1}``, as above. The query has not yet read the word
      ``y_t``, so when the model has just said "red", it cannot look for the red thing
      before it predicts the next word ("circle"); it only can one step later.
    * ``"current"`` (an extension, the order of Lu et al. 2017's spatial attention): the
      LSTM first reads ``[E y_t ; z_{t-1}]`` (the previous step's context), then
      ``alpha_t``, ``beta_t`` and ``z_t`` come from ``h_t``, and ``z_t`` reaches the word
      prediction through the deep output (and the LSTM at the next step). The model
      looks for what it has just named. On shapes this is what made attention bind colours
      to shapes and land on objects (README, Results); it needs ``deep_output``.

    Training minimises the per-word NLL plus the doubly stochastic regulariser
    ``alpha_c * sum_i (1 - sum_t alpha_ti)^2`` (averaged over the batch; steps past each
    caption's end do not count), which pushes the model to look at every location over
    the course of a caption (:meth:`loss`).

    ``grid_coords`` (an extension, off by default as in the paper): append each location's
    (x, y) centre in [-1, 1] to its feature, so the context vector also says *where* the
    model looked (its attention-weighted mean position). CNN features carry little absolute
    position, so without this the LSTM has no direct way to tell "left of" from "right of".
    ``grid_coords_scale`` multiplies them (the features of a CNN map are far larger than
    [-1, 1]: ``blocks.4`` of EfficientNet-Lite0 has a standard deviation of ~6), and with
    ``grid_coords_gated`` false the gating scalar beta leaves them alone, so the position of
    what the model looks at always reaches the LSTM and the deep output at full strength.

    Shapes: B batch, T time, P grid locations, F pooled feature channels, C grid channels
    (``grid_dim``; F unless the grid comes from lower in the CNN; C + 2 with coordinates),
    E embedding, H hidden, A attention, V vocabulary.
    """

    uses_grid = True

    @dataclass
    class Options:
        """The ``decoder.attention`` section of a config."""

        # Size of the additive attention's hidden layer (the paper: 512), and the weight
        # lambda of the doubly stochastic regulariser sum_i (1 - sum_t alpha_ti)^2.
        attention_dim: int = 512
        alpha_c: float = 1.0
        # An extension (not in the paper): append each grid location's (x, y) to its
        # feature, so the context says where the model looked (spatial relations).
        grid_coords: bool = False
        # With grid_coords: multiply the coordinates (CNN map features are far larger than [-1, 1]),
        # and whether the gating scalar beta scales them with the features (the paper gates the
        # whole context; false lets the position through at full strength).
        grid_coords_scale: float = 1.0
        grid_coords_gated: bool = True
        # Which LSTM state queries the attention. "previous" (the paper): h_{t-1}, before the
        # step reads its word. "current" (an extension, as in Lu et al. 2017): h_t, after it,
        # so the model looks for what it has just named; needs deep_output.
        attention_query: str = "previous"
        # The paper's deep output layer (its eq. 7),
        # p(word) = softmax(L_o(E y + L_h h + L_z z)), instead of softmax(L_o h).
        deep_output: bool = False

        # Legal values, checked when the config is loaded (nic.typed); floats must also be finite.
        RANGES = {"attention_dim": at_least(1), "alpha_c": at_least(0.0),
                  "attention_query": one_of(*ATTENTION_QUERIES)}

        def field_problems(self) -> list[tuple[str, str]]:
            if self.attention_query == "current" and not self.deep_output:
                return [("attention_query", "attends after the LSTM step, so its context reaches the word only "
                                            "through the deep output: set decoder.attention.deep_output: true")]
            return []

    @classmethod
    def from_config(cls, cfg: CommonSettings, options: ShowAttendTellDecoder.Options, *, vocab_size: int,
                    feature_dim: int, grid_dim: int | None = None, pad_id: int = 0) -> ShowAttendTellDecoder:
        if cfg.num_layers != 1:
            raise ValueError(f"decoder.num_layers={cfg.num_layers}: the attention decoder has one LSTM layer; "
                             "set decoder.num_layers: 1")
        return cls(vocab_size=vocab_size, feature_dim=feature_dim, embed_dim=cfg.embed_dim, hidden_dim=cfg.hidden_dim,
                   dropout=cfg.dropout, pad_id=pad_id, grid_dim=grid_dim, **dataclasses.asdict(options))

    def __init__(
        self,
        *,
        vocab_size: int,
        feature_dim: int,
        grid_dim: int | None = None,
        embed_dim: int = 512,
        hidden_dim: int = 512,
        attention_dim: int = 512,
        dropout: float = 0.5,
        pad_id: int = 0,
        alpha_c: float = 1.0,
        grid_coords: bool = False,
        attention_query: str = "previous",
        deep_output: bool = False,
        grid_coords_scale: float = 1.0,
        grid_coords_gated: bool = True,
    ) -> None:
        super().__init__()
        if attention_query not in ATTENTION_QUERIES:
            raise ValueError(f"decoder.attention.attention_query={attention_query!r}: use one of {ATTENTION_QUERIES}")
        if attention_query == "current" and not deep_output:
            raise ValueError("decoder.attention.attention_query='current' attends after the LSTM step, so its context "
                             "reaches the word prediction only through the deep output: set "
                             "decoder.attention.deep_output: true")
        self.attention_query, self.deep_output = attention_query, deep_output
        self.vocab_size, self.pad_id, self.alpha_c = vocab_size, pad_id, alpha_c
        self.grid_dim = feature_dim if grid_dim is None else grid_dim
        self.feature_dim, self.grid_coords = feature_dim, grid_coords
        self.grid_coords_scale, self.grid_coords_gated = grid_coords_scale, grid_coords_gated
        context_dim = self.grid_dim + 2 * grid_coords  # what attention reads and the LSTM receives
        self.image_embed = nn.Linear(feature_dim, embed_dim)  # W_I: pooled feature -> x_{-1}
        self.word_embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)  # E
        self.init_h = nn.Linear(self.grid_dim, hidden_dim)  # f_init,h on the mean grid feature
        self.init_c = nn.Linear(self.grid_dim, hidden_dim)  # f_init,c
        self.att_feature = nn.Linear(context_dim, attention_dim)  # U (precomputed per image)
        self.att_hidden = nn.Linear(hidden_dim, attention_dim, bias=False)  # W
        self.att_score = nn.Linear(attention_dim, 1)  # w
        self.gate = nn.Linear(hidden_dim, 1)  # f_beta: the gating scalar
        self.cell = nn.LSTMCell(embed_dim + context_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        if deep_output:  # the paper's eq. 7: L_o(E y + L_h h + L_z z)
            self.deep_h = nn.Linear(hidden_dim, embed_dim)  # L_h
            self.deep_z = nn.Linear(context_dim, embed_dim, bias=False)  # L_z
            self.out = nn.Linear(embed_dim, vocab_size)  # L_o
        else:
            self.out = nn.Linear(hidden_dim, vocab_size)  # L_o

    # ------------------------------------------------------------------ pieces
    def _with_coords(self, grid: Tensor) -> Tensor:
        """grid (B, P, C) -> (B, P, C + 2) with each location's (x, y) in [-1, 1] times grid_coords_scale
        (when grid_coords)."""
        _check_grid(grid)
        if not self.grid_coords:
            return grid
        side = math.isqrt(grid.shape[1])
        if side * side != grid.shape[1]:
            raise ValueError(f"decoder.attention.grid_coords needs a square grid, got {grid.shape[1]} locations")
        centres = ((torch.arange(side, device=grid.device, dtype=grid.dtype) + 0.5) / side * 2 - 1
                   ) * self.grid_coords_scale  # (s,)
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")  # row-major, as the grid is flattened
        coords = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)  # (P, 2)
        return torch.cat([grid, coords.expand(grid.shape[0], -1, -1)], dim=2)

    def _initial(self, pooled: Tensor, grid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """grid (B, P, C [+2]) -> (grid projection U a (B, P, A), h (B, H), c (B, H)) after t = -1."""
        mean = grid[..., : self.grid_dim].mean(dim=1)  # (B, C): the coordinates left out
        h, c = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))  # (B, H) each
        x_image = self.dropout(self.image_embed(pooled))  # (B, E)
        x = torch.cat([x_image, x_image.new_zeros(x_image.shape[0], grid.shape[2])], dim=1)  # (B, E+F): zero ctx
        h, c = self.cell(x, (h, c))  # t = -1
        return self.att_feature(grid), h, c

    def _attend(self, grid: Tensor, grid_proj: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """grid (B, P, C), grid_proj (B, P, A), h (B, H) -> (gated context z (B, C), alpha (B, P))."""
        scores = self.att_score(torch.tanh(grid_proj + self.att_hidden(h).unsqueeze(1))).squeeze(2)  # (B, P)
        alpha = scores.softmax(dim=1)  # (B, P)
        context = torch.bmm(alpha.unsqueeze(1), grid).squeeze(1)  # (B, C)
        beta = torch.sigmoid(self.gate(h))  # (B, 1)
        if self.grid_coords and not self.grid_coords_gated:  # the position passes at full strength
            return torch.cat([beta * context[:, :-2], context[:, -2:]], dim=1), alpha
        return beta * context, alpha

    # ------------------------------------------------------------------ step API
    def init_state(self, pooled: Tensor, grid: Tensor | None = None) -> State:
        """pooled (B, F), grid (B, P, C) -> state after the t = -1 image step.

        State (all batch-first): grid (B, P, C), grid_proj (B, P, A), image (B,) (the index
        of each row's image, see :meth:`reorder_state`), h (B, H), c (B, H), context (B, C)
        and alpha (B, P) of the last step (zeros until the first word step).
        """
        grid = self._with_coords(grid)  # (B, P, C [+2])
        grid_proj, h, c = self._initial(pooled, grid)
        image = torch.arange(grid.shape[0], device=grid.device)  # (B,) which image each row's grid is
        return {"grid": grid, "grid_proj": grid_proj, "image": image, "h": h, "c": c,
                "context": grid.new_zeros(grid.shape[0], grid.shape[2]),
                "alpha": grid.new_zeros(grid.shape[0], grid.shape[1])}

    def reorder_state(self, state: State, index: Tensor) -> State:
        """Select rows; the (large) grid tensors are not copied when every row keeps its image.

        That is the case at every step of beam search after the first expansion (beams only
        move within their image), where copying grid (B*K, P, F) would cost as much as the step.
        """
        image = state["image"].index_select(0, index)  # (B',)
        keep = image.shape == state["image"].shape and torch.equal(image, state["image"])
        return {k: v if keep and k in ("grid", "grid_proj") else v.index_select(0, index)
                for k, v in state.items()}

    def _output(self, e: Tensor, h: Tensor, z: Tensor) -> Tensor:
        """Word logits (n, V) from the input word's (dropped-out) embedding e, h_t and the context z_t."""
        if self.deep_output:
            return self.out(self.dropout(e + self.deep_h(h) + self.deep_z(z)))
        return self.out(self.dropout(h))

    def _word_step(self, e: Tensor, h: Tensor, c: Tensor, z: Tensor, grid: Tensor,
                   grid_proj: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One word step on n rows: e (n, E), h/c (n, H), z = the previous step's context (n, C),
        grid (n, P, C), grid_proj (n, P, A) -> (h, c, this step's context z (n, C), alpha (n, P))."""
        if self.attention_query == "current":  # read the word, then look
            h, c = self.cell(torch.cat([e, z], dim=1), (h, c))
            z, alpha = self._attend(grid, grid_proj, h)
        else:  # look, then read the word with what was seen (the paper)
            z, alpha = self._attend(grid, grid_proj, h)
            h, c = self.cell(torch.cat([e, z], dim=1), (h, c))
        return h, c, z, alpha

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """tokens (B,) -> (log_probs (B, V), state with this step's attention ``alpha`` (B, P))."""
        e = self.dropout(self.word_embed(tokens))  # (B, E)
        h, c, z, alpha = self._word_step(e, state["h"], state["c"], state["context"], state["grid"],
                                         state["grid_proj"])
        log_probs = F.log_softmax(self._output(e, h, z), dim=-1)  # (B, V)
        return log_probs, {**state, "h": h, "c": c, "context": z, "alpha": alpha}

    # ------------------------------------------------------------------ teacher forcing
    def forward(self, pooled: Tensor, grid: Tensor, captions: Tensor, *,
                return_alphas: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher forcing: pooled (B, F), grid (B, P, C), captions (B, T) -> logits (B, T-1, V).

        With ``return_alphas`` also the attention weights (B, T-1, P). Positions past a
        caption's ``<end>`` (its padding) get zero logits and zero alphas; they are never
        computed: the batch is sorted by caption length, and step t runs the LSTM only on
        the prefix of rows still inside their caption (the effective batch shrinks).
        """
        grid = self._with_coords(grid)  # (B, P, C [+2])
        b, t_max = captions.shape[0], captions.shape[1] - 1
        steps = (captions[:, 1:] != self.pad_id).sum(dim=1)  # (B,) words to predict, <end> included
        order = steps.argsort(descending=True, stable=True)  # (B,) longest first
        steps_sorted = steps[order].tolist()
        grid_s = grid[order]  # (B, P, C)
        grid_proj, h, c = self._initial(pooled[order], grid_s)  # (B, P, A), (B, H), (B, H)
        x_words = self.dropout(self.word_embed(captions[order, :-1]))  # (B, T-1, E)
        x_steps = x_words.unbind(1)  # T-1 x (B, E): one backward (a stack), not one per step
        z = grid.new_zeros(b, grid.shape[2])  # (B, C): the previous step's context
        es, hs, zs, alphas, active = [], [], [], [], []  # per step: e (n, E), h (n, H), z (n, C), alpha (n, P), n
        for t in range(t_max):
            n = sum(s > t for s in steps_sorted)  # rows still inside their caption (a prefix)
            if n == 0:
                break
            # a slice's backward fills a zero tensor the size of its base: slice only when n drops, and
            # the previous step's prefix, not the whole batch's
            grid_s, grid_proj, h, c, z = (_prefix(v, n) for v in (grid_s, grid_proj, h, c, z))
            e = _prefix(x_steps[t], n)  # (n, E)
            h, c, z, alpha = self._word_step(e, h, c, z, grid_s, grid_proj)
            es.append(e)
            hs.append(h)
            zs.append(z)
            alphas.append(alpha)
            active.append(n)
        # one output layer over all N real positions, scattered back to (B, T-1) in input order
        rows = torch.cat([order[:n] for n in active]) if active else order[:0]  # (N,) original row
        cols = torch.cat([torch.full((n,), t, dtype=torch.long, device=order.device)
                          for t, n in enumerate(active)]) if active else order[:0]  # (N,) its step
        logits = (self._output(torch.cat(es), torch.cat(hs), torch.cat(zs)) if active
                  else self.out.weight.new_zeros(0, self.vocab_size))  # (N, V)
        out = logits.new_zeros(b, t_max, self.vocab_size).index_put((rows, cols), logits)  # (B, T-1, V)
        if not return_alphas:
            return out
        alphas_cat = torch.cat(alphas) if alphas else grid.new_zeros(0, grid.shape[1])  # (N, P)
        att = alphas_cat.new_zeros(b, t_max, grid.shape[1]).index_put((rows, cols), alphas_cat)  # (B, T-1, P)
        return out, att

    def loss(self, pooled: Tensor, grid: Tensor | None, captions: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Per-word NLL + ``alpha_c`` * the doubly stochastic attention regulariser."""
        logits, alphas = self(pooled, grid, captions, return_alphas=True)
        nll = sequence_nll(logits, captions, self.pad_id)
        reg = self.alpha_c * attention_regularizer(alphas)
        return nll + reg, {"nll": float(nll.detach()), "attention_reg": float(reg.detach())}


def _prefix(x: Tensor, n: int) -> Tensor:
    """The first n rows of x; x itself when it has n (no slice, so no slice backward)."""
    return x if x.shape[0] == n else x[:n]


def _check_grid(grid: Tensor | None) -> None:
    if grid is None or grid.dim() != 3:
        got = "None" if grid is None else f"shape {tuple(grid.shape)}"
        raise ValueError(f"the attention decoder needs grid features (B, P, C), got {got}; "
                         "cache/compute features with grid=True (decoder.uses_grid)")


def attention_regularizer(alphas: Tensor) -> Tensor:
    """Doubly stochastic regulariser: mean over the batch of sum_i (1 - sum_t alpha_ti)^2.

    alphas (B, T, P), zero at steps past each caption's end (as ``forward`` returns them,
    so those steps are masked out) -> scalar.
    """
    return ((1.0 - alphas.sum(dim=1)) ** 2).sum(dim=1).mean()
