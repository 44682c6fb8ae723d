"""Self-critical sequence training: the CIDEr-D reward, the policy-gradient step, resume and torchrun."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nic.checkpoint import load_checkpoint
from nic.cider import CiderD, corpus_cider_d
from nic.config import ConfigError, ScstConfig, load_config
from nic.decoders.base import StepDecoderBase
from nic.rundir import ResumeMismatch
from nic.scst import ScstObjective, image_uniforms
from nic.vocab import Vocabulary, bad_ending
from tests.test_training import needs_torchrun, read_jsonl, tiny_config, torchrun_train, train

REFS = [
    [["a", "dog", "runs", "on", "the", "grass"], ["a", "brown", "dog", "running"], ["dog", "on", "grass"]],
    [["two", "children", "play", "in", "the", "water"], ["kids", "splash", "in", "a", "pool"]],
    [["a", "man", "rides", "a", "bike"], ["a", "cyclist", "on", "a", "road"], ["man", "on", "a", "bike", "bike"]],
    [["a", "cat", "sleeps"], ["a", "cat", "sleeping", "on", "a", "bed"]],
]
HYPS = [["a", "dog", "runs", "on", "grass"], [], ["a", "man", "in", "a"], ["cat"]]


# ------------------------------------------------------------------ the reward
def toolkit_cider(hyps, refs):
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    mean, per_image = cider.Cider().compute_score(gts, res)
    return float(mean), [float(s) for s in per_image]


def test_reward_equals_the_evaluation_suites_cider_d_per_image():
    hyps = [*HYPS, ["a", "dog", "dog", "dog"], ["two", "kids", "in", "the", "water", "in", "the", "water"]]
    refs = [*REFS, REFS[0], REFS[1]]
    mean, per_image = toolkit_cider(hyps, refs)
    assert max(per_image) > 1.0 and min(per_image) == 0.0  # the fixture spans good, bad and empty captions
    scorer = CiderD(refs)  # the suite's frequencies: the scored images' references
    ours = [scorer.score(h, r, key=i) for i, (h, r) in enumerate(zip(hyps, refs, strict=True))]
    assert ours == pytest.approx(per_image, abs=1e-6)
    assert [scorer.score(h, r, key=i) for i, (h, r) in enumerate(zip(hyps, refs))] == ours  # cached refs: same
    assert corpus_cider_d(hyps, refs)[0] == pytest.approx(mean, abs=1e-6)


def test_reward_frequencies_come_from_the_corpus_it_is_given():
    # the same caption scores differently under training frequencies than under the scored set's
    train_refs = [*REFS, [["a", "dog", "runs"]], [["a", "dog", "sits"]]]  # "dog" is common here
    with_train, with_own = CiderD(train_refs).score(HYPS[0], REFS[0]), CiderD(REFS).score(HYPS[0], REFS[0])
    assert with_train != pytest.approx(with_own)
    assert CiderD(REFS).score(["zebra"], REFS[0]) == 0.0  # an n-gram no reference has scores nothing


def test_bad_endings_are_recognised():
    assert bad_ending(["a", "man", "in", "a"]) and bad_ending(["dogs", "play", "with"])
    assert not bad_ending(["a", "man", "in", "a", "park"]) and not bad_ending([])


def test_image_uniforms_depend_on_the_image_not_the_batch():
    both = image_uniforms(0, 1, [5, 9], samples=3, steps=4)
    alone = image_uniforms(0, 1, [9], samples=3, steps=4)
    assert torch.equal(both[3:], alone) and not torch.equal(both[:3], alone)
    assert not torch.equal(alone, image_uniforms(0, 2, [9], samples=3, steps=4))  # a new epoch, new samples
    assert float(both.min()) >= 0 and float(both.max()) < 1


# ------------------------------------------------------- one step, by hand
WORDS = ["<pad>", "<start>", "<end>", "<unk>", "cat", "dog"]


class BigramDecoder(StepDecoderBase):
    """log p(next | previous) = log_softmax(table[previous]): a decoder whose probabilities are written by hand."""

    uses_grid = False

    def __init__(self, table: torch.Tensor) -> None:
        nn.Module.__init__(self)
        self.table = nn.Parameter(table.clone())
        self.vocab_size, self.pad_id = table.size(1), 0

    def init_state(self, pooled, grid=None):
        return {"rows": pooled[:, :1]}  # nothing but the batch size

    def step(self, tokens, state):
        return F.log_softmax(self.table[tokens], dim=-1), state

    def forward(self, pooled, grid, captions):
        return self.table[captions[:, :-1]]  # (B, T-1, V)


def caption_logprob(decoder: BigramDecoder, word: str) -> float:
    ids = [1, WORDS.index(word), 2]
    lp = F.log_softmax(decoder.table.detach(), dim=-1)
    return float(lp[ids[0], ids[1]] + lp[ids[1], ids[2]])


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_one_step_raises_the_better_caption_and_lowers_the_worse(baseline):
    table = torch.full((6, 6), -20.0)
    table[1, 4] = table[1, 5] = 0.0  # after <start>: "cat" or "dog", even odds (greedy takes "cat")
    table[4, 2] = table[5, 2] = 0.0  # then <end>
    if baseline == "greedy":
        table[1, 5] = -0.2  # greedy says "cat": a baseline between the two samples' rewards needs them apart
        table[1, 4] = 0.2
    decoder = BigramDecoder(table)
    # image 0 shows a cat; image 1 only supplies document frequencies in which "cat" is informative
    refs = [[["cat"]], [["dog"]], [["dog"]]]
    settings = ScstConfig(samples=8, baseline=baseline)  # CIDEr-D only, temperature 1, dropout off
    objective = ScstObjective(refs, Vocabulary(WORDS), settings, max_len=3, seed=0)
    hyps = objective.sample(decoder, torch.zeros(1, 2), None, [0], epoch=0)
    sampled = {tuple(h.tokens) for h in hyps}
    assert sampled == {(4,), (5,)}  # both captions among the samples, so the step compares them
    assert objective.reward(["cat"], 0) > objective.reward(["dog"], 0)
    before = {w: caption_logprob(decoder, w) for w in ("cat", "dog")}
    optimizer = torch.optim.SGD(decoder.parameters(), lr=0.5)
    loss, n_words, stats = objective(decoder, torch.zeros(1, 2), None, [0], epoch=0)
    assert n_words == 16 and stats["samples"] == 8  # each sample: its word and its chosen <end>
    loss.backward()
    optimizer.step()
    after = {w: caption_logprob(decoder, w) for w in ("cat", "dog")}
    assert after["cat"] > before["cat"] + 1e-3 and after["dog"] < before["dog"] - 1e-3


def test_a_caption_cut_at_the_length_limit_is_scored_as_it_is():
    table = torch.full((6, 6), -20.0)
    table[1, 4] = table[4, 5] = table[5, 4] = 0.0  # cat dog cat dog ... never <end>
    decoder = BigramDecoder(table)
    settings = ScstConfig(samples=2)
    objective = ScstObjective([[["cat", "dog"]], [["dog"]]], Vocabulary(WORDS), settings, max_len=3, seed=0)
    hyps = objective.sample(decoder, torch.zeros(1, 2), None, [0], epoch=0)
    assert [h.tokens for h in hyps] == [[4, 5, 4]] * 2
    captions, mask = objective.captions(hyps, torch.device("cpu"))
    assert captions[0].tolist() == [1, 4, 5, 4, 2] and mask[0].tolist() == [True, True, True, False]  # forced <end>
    _, n_words, stats = objective(decoder, torch.zeros(1, 2), None, [0], epoch=0)
    assert n_words == 6 and stats["truncated"] == 2
    assert stats["reward"] == pytest.approx(2 * objective.cider.score(["cat", "dog", "cat"], [["cat", "dog"]]))


# ------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def xe_run(tmp_path_factory):
    from tests.conftest import write_karpathy_fixture

    root = tmp_path_factory.mktemp("scst")
    write_karpathy_fixture(root, n=16)
    return root, train(tiny_config(root, "xe", "--train.epochs=2"), progress=False)


def scst_config(root: Path, name: str, xe: Path, *overrides: str):
    return tiny_config(root, name, "--train.objective=scst", f"--train.init_from={xe}", "--train.lr=0.005",
                       "--train.batch_size=2", "--train.best=cider", "--scst.samples=3", *overrides)


@pytest.mark.parametrize("dropout", [False, True])  # with dropout, the masks' random numbers resume too
def test_scst_run_starts_from_the_checkpoint_logs_and_resumes_bitwise(xe_run, dropout):
    root, xe = xe_run
    name = f"scst_dropout_{dropout}"
    full = train(scst_config(root, f"{name}_full", xe / "best.pt", f"--scst.dropout={dropout}"), progress=False)
    records = read_jsonl(full / "metrics.jsonl")
    assert len(records) == 3 and all(math.isfinite(r["val_CIDEr-D"]) for r in records)
    assert {"scst_reward", "scst_baseline", "scst_entropy", "scst_truncated", "scst_bad_endings"} <= set(records[0])
    assert records[0]["scst_entropy"] > 0 and records[0]["scst_reward"] >= 0
    # 8 training images / 2 per step = 4 steps per epoch; killed in epoch 2 at step 6
    killed = train(scst_config(root, f"{name}_killed", xe / "best.pt", f"--scst.dropout={dropout}",
                               "--train.max_steps=6"), progress=False)
    resumed = train(load_config(killed / "config.yaml", ["--train.max_steps=0"]), resume=killed, progress=False)
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(resumed / "last.pt")
    for key in a["decoder"]:
        assert torch.equal(a["decoder"][key], b["decoder"][key]), key
    assert read_jsonl(full / "metrics.jsonl") == read_jsonl(resumed / "metrics.jsonl")
    assert read_jsonl(full / "steps.jsonl") == read_jsonl(resumed / "steps.jsonl")
    start = load_checkpoint(xe / "best.pt")["decoder"]
    assert any(not torch.equal(start[k], a["decoder"][k]) for k in start)  # it trained from there


def test_scst_settings_are_checked_before_any_work(xe_run, tmp_path):
    root, xe = xe_run
    with pytest.raises(ConfigError, match=r"scst.samples=1: the mean-of-others baseline needs at least 2"):
        scst_config(root, "bad", xe, "--scst.samples=1")
    with pytest.raises(ConfigError, match=r"scst.cider_weight.*both 0"):
        scst_config(root, "bad", xe, "--scst.cider_weight=0")
    with pytest.raises(FileNotFoundError, match=r"train.init_from=.*no such checkpoint"):
        train(scst_config(root, "missing", tmp_path / "nothing.pt"), progress=False)
    other = load_checkpoint(xe / "best.pt")
    other["vocab"]["itos"] = [*other["vocab"]["itos"][:4], *reversed(other["vocab"]["itos"][4:])]
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(ResumeMismatch, match=r"cannot start from it: its vocabulary"):
        train(scst_config(root, "other", tmp_path / "other.pt"), progress=False)


@needs_torchrun
def test_scst_under_torchrun_matches_one_process(xe_run, tmp_path):
    root, xe = xe_run
    overrides = ["--train.batch_size=4", "--train.epochs=1"]  # 2 steps of 4 images; 2 per process
    single = train(scst_config(root, "scst_single", xe / "best.pt", *overrides), progress=False)
    torchrun_train(scst_config(root, "scst_ddp", xe / "best.pt", *overrides), tmp_path / "ddp.yaml")
    a, b = read_jsonl(single / "steps.jsonl"), read_jsonl(root / "runs" / "scst_ddp" / "steps.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4, abs=1e-6)
    pa, pb = load_checkpoint(single / "last.pt")["decoder"], load_checkpoint(root / "runs" / "scst_ddp" / "last.pt")
    for key in pa:
        torch.testing.assert_close(pa[key], pb["decoder"][key], rtol=1e-4, atol=1e-5)


def test_scst_trains_the_attention_decoder_too(xe_run):
    root, _ = xe_run
    attention = ["--decoder.type=attention", "--decoder.attention.attention_dim=8"]
    xe = train(tiny_config(root, "xe_att", "--train.epochs=1", *attention), progress=False)
    run = train(scst_config(root, "scst_att", xe / "best.pt", "--train.epochs=1", *attention), progress=False)
    record = read_jsonl(run / "metrics.jsonl")[0]
    assert record["scst_entropy"] > 0 and math.isfinite(record["val_CIDEr-D"])
    start, end = load_checkpoint(xe / "best.pt")["decoder"], load_checkpoint(run / "last.pt")["decoder"]
    assert any(not torch.equal(start[k], end[k]) for k in start)


class ModeRecordingDecoder(BigramDecoder):
    """A :class:`BigramDecoder` that notes whether it ran in train mode, per call of step / forward."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__(table)
        self.modes: dict[str, set[bool]] = {"step": set(), "forward": set()}

    def step(self, tokens, state):
        self.modes["step"].add(self.training)
        return super().step(tokens, state)

    def forward(self, pooled, grid, captions):
        self.modes["forward"].add(self.training)
        return super().forward(pooled, grid, captions)


@pytest.mark.parametrize("dropout", [False, True])
def test_dropout_setting_decides_the_mode_of_sampling_and_gradient(dropout):
    table = torch.zeros(6, 6)
    settings = ScstConfig(samples=2, dropout=dropout)
    objective = ScstObjective([[["cat"]], [["dog"]]], Vocabulary(WORDS), settings, max_len=3, seed=0)
    decoder = ModeRecordingDecoder(table)
    decoder.eval() if dropout else decoder.train()  # the setting decides, not the mode it comes in
    objective(decoder, torch.zeros(1, 2), None, [0], epoch=0)
    assert decoder.modes == {"step": {dropout}, "forward": {dropout}}
    greedy = ModeRecordingDecoder(table)
    settings.baseline = "greedy"
    objective(greedy, torch.zeros(1, 2), None, [0], epoch=0)
    assert greedy.modes["step"] == {False, dropout}  # the greedy baseline is the deployed policy's caption
