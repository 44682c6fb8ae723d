"""Show, Attend and Tell: attention weights, the regulariser, its options, search with alphas, attention maps.

forward == step, reorder_state, beam 1 == greedy and score == search are checked for every
decoder in tests/test_decoder_contract.py (over the VARIANTS below too).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from nic.attention_maps import PAD, TITLE, caption_words, draw_attention
from nic.config import DecoderConfig
from nic.decoders import DECODERS, build_decoder
from nic.decoders.attention import ShowAttendTellDecoder, attention_regularizer
from nic.search import beam_search, greedy_search, sample
from tests.conftest import DATA

V, F, E, H, A, P = 13, 16, 8, 12, 10, 9
START, END = 1, 2


def make(**kwargs) -> ShowAttendTellDecoder:
    torch.manual_seed(0)
    args = dict(vocab_size=V, feature_dim=F, embed_dim=E, hidden_dim=H, attention_dim=A, dropout=0.5)
    return ShowAttendTellDecoder(**{**args, **kwargs}).eval()


def features(b: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, F, generator=g), torch.randn(b, P, F, generator=g)


# 4 captions of different lengths (3, 5, 1, 4 predicted tokens, <end> included), padded with 0
CAPTIONS = torch.tensor([
    [START, 5, 6, END, 0, 0],
    [START, 7, 8, 9, 10, END],
    [START, END, 0, 0, 0, 0],
    [START, 4, 4, 4, END, 0],
])
STEPS = [3, 5, 1, 4]


def test_attention_weights_sum_to_one_in_step_and_forward():
    d = make()
    pooled, grid = features()
    state = d.init_state(pooled, grid)
    assert state["grid"].shape == (4, P, F) and state["grid_proj"].shape == (4, P, A)
    for t in range(3):
        _, state = d.step(CAPTIONS[:, t], state)
        assert state["alpha"].shape == (4, P)
        assert (state["alpha"] >= 0).all()
        torch.testing.assert_close(state["alpha"].sum(1), torch.ones(4))
    logits, alphas = d(pooled, grid, CAPTIONS, return_alphas=True)
    assert logits.shape == (4, 5, V) and alphas.shape == (4, 5, P)
    real = CAPTIONS[:, 1:] != 0  # (B, T-1)
    torch.testing.assert_close(alphas.sum(2)[real], torch.ones(int(real.sum())))
    assert (alphas[~real] == 0).all() and (logits[~real] == 0).all()  # padding is never computed


VARIANTS = [dict(grid_coords=False), dict(grid_coords=True), dict(deep_output=True),
            dict(grid_coords=True, attention_query="current", deep_output=True),
            dict(grid_coords=True, attention_query="current", deep_output=True, grid_coords_scale=6.0,
                 grid_coords_gated=False)]  # configs/attention_shapes.yaml


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_forward_alphas_equal_stepwise_alphas_with_mixed_lengths(options):
    d = make(**options)
    pooled, grid = features()
    _, alphas = d(pooled, grid, CAPTIONS, return_alphas=True)
    state = d.init_state(pooled, grid)
    for t in range(CAPTIONS.shape[1] - 1):
        _, state = d.step(CAPTIONS[:, t], state)
        rows = [b for b in range(4) if STEPS[b] > t]  # steps inside each caption
        torch.testing.assert_close(state["alpha"][rows], alphas[rows, t], rtol=1e-5, atol=1e-6)


def test_parameters_and_state_dict_keys_are_stable():
    """Checkpoints load with load_state_dict(strict=True): the keys (and their creation order) never change."""
    keys = ["image_embed.weight", "image_embed.bias", "word_embed.weight", "init_h.weight", "init_h.bias",
            "init_c.weight", "init_c.bias", "att_feature.weight", "att_feature.bias", "att_hidden.weight",
            "att_score.weight", "att_score.bias", "gate.weight", "gate.bias", "cell.weight_ih", "cell.weight_hh",
            "cell.bias_ih", "cell.bias_hh"]
    assert list(make().state_dict()) == [*keys, "out.weight", "out.bias"]
    assert list(make(deep_output=True).state_dict()) == [*keys, "deep_h.weight", "deep_h.bias", "deep_z.weight",
                                                         "out.weight", "out.bias"]


def test_image_enters_through_mean_grid_init_and_the_t_minus_1_step():
    d = make()
    pooled, grid = features(2)
    state = d.init_state(pooled, grid)
    mean = grid.mean(1)
    h0, c0 = torch.tanh(d.init_h(mean)), torch.tanh(d.init_c(mean))
    x = torch.cat([d.image_embed(pooled), torch.zeros(2, F)], dim=1)  # pooled image, zero context
    h, c = d.cell(x, (h0, c0))
    torch.testing.assert_close(state["h"], h)
    torch.testing.assert_close(state["c"], c)


@pytest.mark.parametrize("coords", [False, True])
def test_grid_with_its_own_channels(coords):
    """A grid from lower in the CNN (encoder.grid_below_top) has C != F channels: init and context use C."""
    C = 5
    cfg = DecoderConfig(type="attention", embed_dim=E, hidden_dim=H,
                        options={"attention": {"attention_dim": A, "grid_coords": coords}})
    d = build_decoder(cfg, vocab_size=V, feature_dim=F, grid_dim=C).eval()
    assert d.image_embed.in_features == F and d.init_h.in_features == C
    assert d.cell.input_size == E + C + 2 * coords
    g = torch.Generator().manual_seed(3)
    pooled, grid = torch.randn(4, F, generator=g), torch.randn(4, P, C, generator=g)
    state = d.init_state(pooled, grid)
    h0 = torch.tanh(d.init_h(grid.mean(1)))  # from the grid's own channels, coordinates left out
    x = torch.cat([d.image_embed(pooled), torch.zeros(4, C + 2 * coords)], dim=1)
    torch.testing.assert_close(state["h"], d.cell(x, (h0, torch.tanh(d.init_c(grid.mean(1)))))[0])
    logits = d(pooled, grid, CAPTIONS)
    lp, state = d.step(CAPTIONS[:, 0], state)
    torch.testing.assert_close(lp, logits[:, 0].log_softmax(-1), rtol=1e-5, atol=1e-5)


def test_regulariser_on_a_hand_made_case():
    # 2 captions, 2 steps, 3 locations; caption 1 has only 1 step (its 2nd row is padding: zeros)
    alphas = torch.tensor([
        [[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]],  # sum over t: [1, .5, .5] -> 0 + .25 + .25 = 0.5
        [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # sum over t: [1, 0, 0]   -> 0 + 1 + 1     = 2.0
    ])
    assert attention_regularizer(alphas).item() == pytest.approx(1.25)  # mean over the batch: 2.5 / 2

    # loss = NLL + alpha_c * regulariser: uniform logits give NLL = log V exactly
    d = make(alpha_c=0.5)
    captions = torch.tensor([[START, 5, END], [START, END, 0]])
    d.forward = lambda pooled, grid, caps, return_alphas=False: (torch.zeros(2, 2, V), alphas)
    loss, parts = d.loss(torch.zeros(2, F), torch.zeros(2, 3, F), captions)
    assert parts["nll"] == pytest.approx(math.log(V), rel=1e-6)
    assert parts["attention_reg"] == pytest.approx(0.5 * 1.25)
    assert loss.item() == pytest.approx(math.log(V) + 0.625, rel=1e-6)


def test_loss_masks_padding_and_trains():
    d = make(alpha_c=2.0)
    pooled, grid = features()
    # the regulariser by hand from step-by-step decoding: steps past each caption's end do not count
    state, per_step = d.init_state(pooled, grid), []
    for t in range(CAPTIONS.shape[1] - 1):
        _, state = d.step(CAPTIONS[:, t], state)
        per_step.append(state["alpha"])
    alphas = torch.stack(per_step, 1)  # (B, T-1, P), padding steps included
    expected = np.mean([((1 - alphas[b, :s].sum(0)) ** 2).sum().item() for b, s in enumerate(STEPS)])
    unmasked = ((1 - alphas.sum(1)) ** 2).sum(1).mean().item()
    assert abs(expected - unmasked) > 0.1  # the mask matters here
    loss, parts = d.loss(pooled, grid, CAPTIONS)
    assert set(parts) == {"nll", "attention_reg"}
    assert parts["attention_reg"] == pytest.approx(2.0 * expected, rel=1e-5)
    assert loss.item() == pytest.approx(parts["nll"] + parts["attention_reg"], rel=1e-6)
    d.train()
    loss, _ = d.loss(pooled, grid, CAPTIONS)
    loss.backward()
    assert all(p.grad is not None for p in d.parameters()), "every parameter gets a gradient"


def test_reorder_state_shares_the_grid_within_images_and_moves_it_across():
    d = make()
    pooled, grid = features(3)
    state = d.init_state(pooled, grid)
    expanded = d.reorder_state(state, torch.tensor([0, 0, 1, 1, 2, 2]))
    same = d.reorder_state(expanded, torch.tensor([1, 0, 3, 3, 4, 5]))  # beams stay within their image
    assert same["grid"] is expanded["grid"]  # not copied
    moved = d.reorder_state(expanded, torch.tensor([4, 0, 2, 3, 4, 5]))  # row 0 now holds image 2
    torch.testing.assert_close(moved["grid"][0], grid[2])
    torch.testing.assert_close(moved["grid_proj"][0], state["grid_proj"][2])
    torch.testing.assert_close(moved["h"][0], state["h"][2])


def test_missing_grid_is_a_clear_error():
    with pytest.raises(ValueError, match="needs grid features"):
        make().init_state(torch.zeros(2, F), None)


def test_build_decoder_registry():
    cfg = DecoderConfig(type="attention", embed_dim=E, hidden_dim=H, dropout=0.1,
                        options={"attention": {"attention_dim": A, "alpha_c": 0.3}})
    d = build_decoder(cfg, vocab_size=V, feature_dim=F, pad_id=0)
    assert isinstance(d, ShowAttendTellDecoder) and d.uses_grid and d.alpha_c == 0.3
    assert d.att_feature.out_features == A and DECODERS["attention"] is ShowAttendTellDecoder
    # every option reaches the decoder; the defaults are the Options dataclass's
    options = dict(attention_dim=A, alpha_c=0.5, grid_coords=True, grid_coords_scale=6.0, grid_coords_gated=False,
                   attention_query="current", deep_output=True)
    d = build_decoder(DecoderConfig(type="attention", options={"attention": options}), vocab_size=V, feature_dim=F)
    rest = {k: v for k, v in options.items() if k != "attention_dim"}  # kept as attributes of the same name
    assert d.att_feature.out_features == A and {k: getattr(d, k) for k in rest} == rest
    d = build_decoder(DecoderConfig(type="attention"), vocab_size=V, feature_dim=F)
    assert (d.att_feature.out_features, d.alpha_c, d.grid_coords, d.attention_query) == (512, 1.0, False, "previous")
    with pytest.raises(ValueError, match="num_layers"):
        build_decoder(DecoderConfig(type="attention", num_layers=2), vocab_size=V, feature_dim=F)


# ---------------------------------------------------------------------------- search
@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_batched_beam_search_equals_per_image_and_returns_alphas(options):
    d = make(**options)
    pooled, grid = features(3, seed=3)
    ids = dict(start_id=START, end_id=END, pad_id=0, max_len=6)
    batched = beam_search(d, pooled, grid, beam_size=20, n_best=3, **ids)
    for b in range(3):
        alone = beam_search(d, pooled[b:b + 1], grid[b:b + 1], beam_size=20, n_best=3, **ids)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[b]]
        for x, y in zip(alone, batched[b]):
            assert x.logprob == pytest.approx(y.logprob, abs=1e-4)
            torch.testing.assert_close(x.alphas, y.alphas, rtol=1e-4, atol=1e-5)
    for per_image in batched:
        for h in per_image:
            assert h.alphas.shape == (len(h.tokens) + h.finished, P)
            torch.testing.assert_close(h.alphas.sum(1), torch.ones(len(h.alphas)))


def test_search_alphas_match_teacher_forcing_in_beam_greedy_and_sampling():
    d = make()
    pooled, grid = features(2, seed=4)
    ids = dict(start_id=START, end_id=END, pad_id=0, max_len=6)
    for h_list, b in zip(beam_search(d, pooled, grid, beam_size=5, **ids), range(2)):
        h = h_list[0]
        caps = torch.tensor([[START, *h.tokens, *([END] if h.finished else [])]])
        _, alphas = d(pooled[b:b + 1], grid[b:b + 1], caps, return_alphas=True)
        torch.testing.assert_close(alphas[0], h.alphas, rtol=1e-4, atol=1e-5)
    greedy = greedy_search(d, pooled, grid, **ids)
    sampled = sample(d, pooled, grid, generator=torch.Generator().manual_seed(0), **ids)
    assert all(h.alphas.shape == (len(h.tokens) + h.finished, P) for h in greedy + sampled)


# ---------------------------------------------------------------------------- attention maps
def test_attention_map_png_has_one_panel_per_word(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (3, 60, 90), dtype=np.uint8)  # (3, H, W), landscape
    words = ["a", "red", "circle", "left", "of", "a", "square"]
    alphas = torch.softmax(torch.randn(len(words) + 1, 16), dim=1)  # (steps, P), one more step (<end>)
    out = draw_attention(image, words, alphas, 4, tmp_path / "att.png", cols=3, panel_size=120)
    w, h = 120, 80  # longer side -> 120, aspect kept
    n = 1 + len(words)  # plain image + one panel per word
    rows = math.ceil(n / 3)
    assert Image.open(out).size == (3 * (w + PAD) + PAD, rows * (TITLE + h + PAD) + PAD)
    sheet = np.asarray(Image.open(out).convert("RGB")).astype(int)
    first = sheet[PAD + TITLE:PAD + TITLE + h, PAD:PAD + w]  # panel 0: the plain (resized) image
    plain = np.asarray(Image.fromarray(image.transpose(1, 2, 0)).resize((w, h), Image.BICUBIC)).astype(int)
    assert np.abs(first - plain).max() <= 1
    second = sheet[PAD + TITLE:PAD + TITLE + h, 2 * PAD + w:2 * PAD + 2 * w]  # panel 1: overlaid
    assert np.abs(second - plain).mean() > 10
    # fewer panels than columns: the sheet is only as wide as needed; photos from a path work too
    out2 = draw_attention(DATA / "cat.jpg", ["a"], alphas[:1], 4, tmp_path / "one.png", cols=5, panel_size=100)
    assert Image.open(out2).size[0] == 2 * (100 + PAD) + PAD


def test_attention_map_input_errors(tmp_path):
    image = np.zeros((3, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="alphas must be"):
        draw_attention(image, ["a"], torch.ones(1, 10), 3, tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 words but attention weights for only 1"):
        draw_attention(image, ["a", "b"], torch.ones(1, 9), 3, tmp_path / "x.png")
    assert caption_words(["a", "dog"], 3, True) == ["a", "dog", "<end>"]
    assert caption_words(["a", "dog"], 2, False) == ["a", "dog"]


def test_overfits_a_tiny_batch_and_decodes_it_back():
    torch.manual_seed(0)
    d = ShowAttendTellDecoder(vocab_size=V, feature_dim=F, embed_dim=16, hidden_dim=32, attention_dim=16,
                              dropout=0.0, alpha_c=0.1)
    pooled, grid = features()
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss, parts = d.loss(pooled, grid, CAPTIONS)
        first = parts["nll"] if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first == pytest.approx(math.log(V), rel=0.15)
    assert parts["nll"] < 0.05
    hyps = greedy_search(d.eval(), pooled, grid, start_id=START, end_id=END, pad_id=0, max_len=8)
    assert [h.tokens for h in hyps] == [CAPTIONS[b, 1:STEPS[b]].tolist() for b in range(4)]


def test_grid_coords_tell_the_lstm_where_attention_looked():
    d = make(grid_coords=True)
    grid = torch.zeros(1, 4, F)  # a 2x2 grid, row-major
    with_xy = d._with_coords(grid)
    assert with_xy.shape == (1, 4, F + 2) and torch.equal(with_xy[..., :F], grid)
    torch.testing.assert_close(with_xy[0, :, F:], torch.tensor([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]))
    # the context's last two entries are beta * the attention-weighted mean position
    _, state = d.step(torch.tensor([START]), d.init_state(torch.zeros(1, F), grid))
    context, alpha = d._attend(state["grid"], state["grid_proj"], state["h"])
    beta = torch.sigmoid(d.gate(state["h"]))
    torch.testing.assert_close(context[0, F:], beta[0] * (alpha[0, :, None] * with_xy[0, :, F:]).sum(0))
    assert make(grid_coords=False).cell.input_size == E + F and d.cell.input_size == E + F + 2
    with pytest.raises(ValueError, match="square grid"):
        d.init_state(torch.zeros(1, F), torch.zeros(1, 3, F))


def test_current_query_looks_after_reading_the_word_and_feeds_the_output():
    """attention_query='current': the LSTM reads [word ; previous context], then h_t asks where to look,
    and the context reaches the word logits through the deep output (L_o(E y + L_h h + L_z z))."""
    d = make(attention_query="current", deep_output=True)
    pooled, grid = features(2)
    state = d.init_state(pooled, grid)
    assert (state["context"] == 0).all()  # no context before the first word
    tokens = torch.tensor([START, START])
    lp, new = d.step(tokens, state)
    e = d.word_embed(tokens)
    h, c = d.cell(torch.cat([e, state["context"]], 1), (state["h"], state["c"]))
    torch.testing.assert_close(new["h"], h)
    scores = d.att_score(torch.tanh(state["grid_proj"] + d.att_hidden(h).unsqueeze(1))).squeeze(2)
    torch.testing.assert_close(new["alpha"], scores.softmax(1))  # from h_t, not h_{t-1}
    z = torch.sigmoid(d.gate(h)) * torch.bmm(new["alpha"].unsqueeze(1), grid).squeeze(1)
    torch.testing.assert_close(new["context"], z)
    torch.testing.assert_close(lp, d.out(e + d.deep_h(h) + d.deep_z(z)).log_softmax(-1))
    # the next step reads this context with its word
    _, nxt = d.step(torch.tensor([5, 6]), new)
    h2, _ = d.cell(torch.cat([d.word_embed(torch.tensor([5, 6])), z], 1), (new["h"], new["c"]))
    torch.testing.assert_close(nxt["h"], h2)


def test_attention_query_options_are_checked():
    with pytest.raises(ValueError, match="attention_query"):
        make(attention_query="next")
    with pytest.raises(ValueError, match="deep_output: true"):
        make(attention_query="current")  # its context would never reach a word prediction


def test_scaled_ungated_coordinates_reach_the_context_at_full_strength():
    """grid_coords_scale multiplies each location's (x, y); grid_coords_gated=False keeps beta off them."""
    d = make(grid_coords=True, grid_coords_scale=6.0, grid_coords_gated=False)
    pooled, grid = features(2)
    state = d.init_state(pooled, grid)
    xy = state["grid"][0, :, -2:]  # (P, 2), row-major over the 3x3 grid
    torch.testing.assert_close(xy[0], torch.tensor([-4.0, -4.0]))  # centre of the top-left cell: (-2/3, -2/3) * 6
    torch.testing.assert_close(xy[5], torch.tensor([4.0, 0.0]))  # middle row, right column
    _, new = d.step(torch.tensor([START, START]), state)
    beta = torch.sigmoid(d.gate(state["h"]))  # the paper's order: the query (and beta) from h_{t-1}
    weighted = torch.bmm(new["alpha"].unsqueeze(1), state["grid"]).squeeze(1)  # (B, F + 2)
    torch.testing.assert_close(new["context"][:, :F], beta * weighted[:, :F])
    torch.testing.assert_close(new["context"][:, F:], weighted[:, F:])  # the attended position, not gated
    assert (beta < 1).all()  # so the two differ
    gated = make(grid_coords=True, grid_coords_scale=6.0)
    _, g = gated.step(torch.tensor([START, START]), gated.init_state(pooled, grid))
    torch.testing.assert_close(g["context"][:, F:], torch.sigmoid(gated.gate(gated.init_state(pooled, grid)["h"]))
                               * torch.bmm(g["alpha"].unsqueeze(1), g["grid"]).squeeze(1)[:, F:])
