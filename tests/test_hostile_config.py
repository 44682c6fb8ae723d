"""Hostile and careless configuration: impossible numbers, duplicate YAML keys, beams too wide for the machine.

Every impossible setting fails when the config is loaded, before any work, with a
:class:`ConfigError` naming the key (and the file or override it came from), the value and
what is legal; decoding settings are range-checked the same way, and a beam search that
would need more memory than the machine has is refused before the decoder runs.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch

import nic.decoding
from nic.checkpoint import load_checkpoint
from nic.config import Config, ConfigError, EncoderConfig, config_from_dict, load_config
from nic.decoding import CANDIDATE_BYTES, DecodeSettings, available_memory_bytes, search_memory_bytes
from nic.features import DTYPES
from nic.search import beam_search
from nic.typed import declared_ranges, load_yaml, value_problem
from preprocess import __main__ as preprocess_cli
from tests.test_search import IDS, TinyLSTMDecoder, features

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- 1. ranges at load time
@pytest.mark.parametrize("override, named", [
    ("--train.batch_size=0", "train.batch_size=0: must be 1 or more"),
    ("--train.batch_size=-3", "train.batch_size=-3: must be 1 or more"),
    ("--train.epochs=0", "train.epochs=0: must be 1 or more"),
    ("--eval.beam_sizes=[0]", "eval.beam_sizes=[0]: element 0 (0) must be 1 or more"),
    ("--eval.beam_sizes=[3, 0]", "eval.beam_sizes=[3, 0]: element 1 (0) must be 1 or more"),
    ("--eval.beam_sizes=0", "eval.beam_sizes=[0]: element 0 (0) must be 1 or more"),
    ("--eval.beam_sizes=[]", "eval.beam_sizes=[]: give at least one beam size"),
    ("--train.val_beam=0", "train.val_beam=0: must be 1 or more"),
    ("--train.lr=nan", "train.lr=nan: must be a finite number"),
    ("--train.lr=.inf", "train.lr=inf: must be a finite number"),
    ("--train.lr=-1", "train.lr=-1.0: must be greater than 0"),
    ("--train.lr=0", "train.lr=0.0: must be greater than 0"),
    ("--data.image_size=0", "data.image_size=0: must be 1 or more"),
    ("--data.max_len=0", "data.max_len=0: must be 1 or more"),
    ("--data.max_pixels=-1", "data.max_pixels=-1: must be 0 or more (0: no limit)"),
    ("--data.val_fraction=1", "data.val_fraction=1.0: must be in [0, 1)"),
    ("--eval.max_len=0", "eval.max_len=0: must be 1 or more"),
    ("--eval.length_penalty=nan", "eval.length_penalty=nan: must be a finite number"),
    ("--eval.batch_size=0", "eval.batch_size=0: must be 1 or more"),
    ("--decoder.hidden_dim=0", "decoder.hidden_dim=0: must be 1 or more"),
    ("--decoder.dropout=1", "decoder.dropout=1.0: must be in [0, 1)"),
    ("--decoder.attention.alpha_c=nan", "decoder.attention.alpha_c=nan: must be a finite number"),
    ("--encoder.finetune_blocks=-2", "encoder.finetune_blocks=-2: must be -1 or more"),
    ("--encoder.feature_dtype=float64", "encoder.feature_dtype='float64': invalid choice; valid: float16, float32"),
    ("--train.lr_schedule=linear", "train.lr_schedule='linear': invalid choice; valid: constant, step, cosine"),
    ("--train.ss_max_prob=1.5", "train.ss_max_prob=1.5: must be in [0, 1]"),
    ("--train.seed=-1", "train.seed=-1: must be in [0, 4294967295]"),
])
def test_impossible_settings_fail_at_load_naming_the_override_key_and_range(override, named):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs" / "default.yaml", [override])
    assert named in str(e.value)
    assert str(e.value).startswith(f"override {override}: ")  # the override, not the file it overrode


def test_cross_field_impossibilities_fail_at_load():
    with pytest.raises(ConfigError, match=r"data.test_fraction=0.5: with data.val_fraction=0.6 no image is left"):
        load_config(None, ["--data.val_fraction=0.6", "--data.test_fraction=0.5"])
    with pytest.raises(ConfigError, match=r"^config: eval.beam_sizes=\[\]: give at least one beam size"):
        config_from_dict({"eval": {"beam_sizes": []}})  # a checkpoint's config is checked the same way


def test_an_impossible_value_in_a_file_names_the_file_and_a_later_override_fixes_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: train.batch_size=0: must be 1 or more$"):
        load_config(path)
    assert load_config(path, ["--train.batch_size=8"]).train.batch_size == 8
    # an override replaced by a later override of its section no longer takes the blame
    with pytest.raises(ConfigError, match=r"^override --decoder.attention=\{alpha_c: .nan\}: decoder.attention"):
        load_config(None, ["--decoder.attention.alpha_c=1", "--decoder.attention={alpha_c: .nan}"])


def test_every_numeric_and_choice_field_declares_its_legal_values():
    """The rule is mechanical: a new int/float field without a range fails here, not in a user's run."""
    sections = [typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)]
    assert [c.__name__ for c in sections] == ["DataConfig", "EncoderConfig", "DecoderConfig", "TrainConfig",
                                              "EvalConfig", "ScstConfig"]
    for cls in sections:
        hints, ranges, defaults = typing.get_type_hints(cls), declared_ranges(cls), cls()
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if hint in (int, float) or hint == list[int]:
                assert f.name in ranges, f"{cls.__name__}.{f.name} declares no range in RANGES"
            if f.name in ranges:  # and the defaults are legal
                values, item = getattr(defaults, f.name), int if hint == list[int] else hint
                for v in values if isinstance(values, list) else [values]:
                    assert value_problem(v, item, ranges[f.name]) is None, f"{cls.__name__}.{f.name}={v!r}"
    # the choices the config declares are the ones the code acts on
    assert set(declared_ranges(EncoderConfig)["feature_dtype"].choices) == set(DTYPES)


def test_shipped_configs_and_the_shipped_model_still_load():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)
    checkpoint = load_checkpoint(ROOT / "models" / "nic_flickr8k" / "model.pt")
    assert config_from_dict(checkpoint["config"]).eval.beam_sizes == [1, 3, 20]


@pytest.mark.parametrize("override", ["--train.batch_size=0", "--train.epochs=0"])
def test_train_py_refuses_before_any_work(tmp_path, override):
    """Before: training at batch 1 (batch_size=0), or all the set-up, then 'best.pt not found' (epochs=0)."""
    child = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "default.yaml"),
         f"--data.root={tmp_path / 'data'}", override, f"--train.out_dir={tmp_path / 'runs'}", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert child.returncode != 0
    assert f"{override[2:]}: must be 1 or more" in child.stderr
    assert list(tmp_path.iterdir()) == []  # no data generated, no run directory: it stopped before any work


def test_preprocess_refuses_image_size_zero_before_any_work(tmp_path, capsys):
    """Before: an HDF5 traceback after the images were read."""
    with pytest.raises(SystemExit) as e:
        preprocess_cli.main(["--dataset", "coco", "--root", str(tmp_path), "--image-size", "0", "--quiet"])
    assert e.value.code == 2
    assert "data.image_size=0: must be 1 or more" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- 2. decoding settings
@pytest.mark.parametrize("kwargs, named", [
    ({"beam_size": 0}, r"beam size 0: must be 1 or more \(beam_size\)"),
    ({"beam_size": 2.5}, r"beam size 2.5: must be an integer .*\(beam_size\)"),
    ({"beam_size": True}, r"beam size True: must be an integer .*\(beam_size\)"),
    ({"max_len": -1}, r"max length -1: must be 0 or more \(max_len\)"),
    ({"max_len": 2.0}, r"max length 2.0: must be an integer .*\(max_len\)"),
    ({"length_penalty": float("nan")}, r"length penalty nan: must be a finite number .*\(length_penalty\)"),
    ({"length_penalty": -1.0}, r"length penalty -1.0: must be 0 or more \(length_penalty\)"),
    ({"temperature": float("inf")}, r"temperature inf: must be a finite number .*\(temperature\)"),
    ({"top_k": 1.5}, r"top-k 1.5: must be an integer .*\(top_k\)"),
    ({"method": "beams"}, r"decoding method 'beams': invalid choice; valid: beam, greedy, sample \(method\)"),
])
def test_decode_settings_are_range_checked_naming_the_field(kwargs, named):
    with pytest.raises(ValueError, match=named):
        DecodeSettings(**kwargs)
    with pytest.raises(ValueError, match=named):  # replace() goes through the same check
        DecodeSettings().replace(**kwargs)


def test_from_eval_never_silently_replaces_a_beam_size_and_max_len_zero_stays_zero():
    @dataclasses.dataclass
    class Eval:
        beam_sizes: list
        max_len: int = 20
        length_penalty: float = 0.0

    with pytest.raises(ValueError, match="eval.beam_sizes is empty"):
        DecodeSettings.from_eval(Eval([]))  # was: silently beam 20
    with pytest.raises(ValueError, match=r"eval.beam_sizes=\[0, 20\]: every beam size must be"):
        DecodeSettings.from_eval(Eval([0, 20]))  # was: beam 20, then beam 0 failed after training
    assert DecodeSettings.from_eval(Eval([3], max_len=0)).max_len == 0  # 0 (the empty caption) is honoured
    assert DecodeSettings().replace(max_len=0).max_len == 0


# ---------------------------------------------------------------------------- 3. the beam's memory
def test_search_memory_estimate():
    # the case: beam 100,000 on a 10k vocabulary, one image: about 20 GB (24 bytes per candidate)
    assert search_memory_bytes(1, 100_000, 10_000, max_len=20) == 100_000 * 10_000 * CANDIDATE_BYTES + \
        2 * 100_000 * 21 * 8
    assert search_memory_bytes(1, 100_000, 10_000) > 20e9
    # linear in images x beam for the scores; the state and the attention history count too
    base = search_memory_bytes(2, 5, 100, max_len=0)
    assert search_memory_bytes(4, 5, 100, max_len=0) == 2 * base
    assert search_memory_bytes(2, 5, 100, max_len=0, state_bytes_per_row=1000) == base + 2 * 10 * 1000
    assert search_memory_bytes(2, 5, 100, max_len=0, attention_locations=49) == base + 2 * 10 * 4 * 49


class Untouchable(torch.nn.Module):
    """A decoder that must not run: the memory check comes first."""

    vocab_size = 10_000

    def init_state(self, pooled, grid=None):
        raise AssertionError("init_state ran: the search allocated before checking its memory")

    step = reorder_state = init_state


def test_a_beam_too_wide_for_the_machine_is_refused_before_the_decoder_runs(monkeypatch):
    monkeypatch.setattr(nic.decoding, "available_memory_bytes", lambda device: 1 << 30)  # 1 GiB
    with pytest.raises(ValueError) as e:
        beam_search(Untouchable(), torch.zeros(1, 6), beam_size=100_000, **IDS)
    message = str(e.value)
    for part in ("beam size 100000", "vocabulary of 10000 words", "22.4 GiB", f"({1 << 30} bytes) available",
                 "use a smaller --beam"):
        assert part in message


def test_the_decoder_state_counts_before_it_is_expanded(monkeypatch):
    """An attention-like state (a 49 x 1280 grid per image) is copied to every beam: refused before that."""
    calls = []

    class BigState(TinyLSTMDecoder):
        def init_state(self, pooled, grid=None):
            calls.append("init")
            return {**super().init_state(pooled), "grid": torch.zeros(pooled.size(0), 49, 1280)}

        def reorder_state(self, state, index):
            raise AssertionError("the state was expanded to K beams")

    monkeypatch.setattr(nic.decoding, "available_memory_bytes", lambda device: 1 << 30)
    with pytest.raises(ValueError, match="beam size 500 over a vocabulary of 8 words"):
        beam_search(BigState(5).eval(), features(4, 0), beam_size=500, **IDS)  # scores: 0.4 MB; state: 1 GB
    assert calls == ["init"]


def test_a_decoder_without_vocab_size_is_checked_after_its_first_step(monkeypatch):
    steps = []

    class NoVocab(TinyLSTMDecoder):
        def step(self, tokens, state):
            steps.append(tokens.shape[0])
            return super().step(tokens, state)

    monkeypatch.setattr(nic.decoding, "available_memory_bytes", lambda device: 1000)
    d = NoVocab(5).eval()
    del d.vocab_size
    with pytest.raises(ValueError, match="beam size 3 over a vocabulary of 8 words"):
        beam_search(d, features(2, 0), beam_size=3, **IDS)
    assert steps == [6]
    monkeypatch.setattr(nic.decoding, "available_memory_bytes", lambda device: None)  # unknown: no bound
    assert len(beam_search(d, features(2, 0), beam_size=3, **IDS)) == 2


def test_available_memory_is_read_from_the_machine():
    if not Path("/proc/meminfo").exists():
        pytest.skip("no /proc/meminfo: the CPU bound is unknown here")
    total = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:")).split()[1]) * 1024
    assert 0 < available_memory_bytes("cpu") <= total
    assert available_memory_bytes(torch.device("cpu")) > 0
    assert available_memory_bytes("mps") is None


def test_available_memory_on_cuda_is_the_free_memory_plus_the_allocator_cache(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 << 30, 141 << 30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 5 << 30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 4 << 30)
    assert available_memory_bytes("cuda:0") == available_memory_bytes(torch.device("cuda", 0)) == 4 << 30


# ---------------------------------------------------------------------------- 4. duplicate YAML keys
@pytest.mark.parametrize("text, key, lines", [
    ("train:\n  epochs: 3\n  lr: 0.1\n  epochs: 5\n", "train.epochs", (2, 4)),
    ("train:\n  epochs: 3\neval:\n  max_len: 5\ntrain:\n  lr: 0.1\n", "train", (1, 5)),
    ("decoder:\n  type: attention\n  attention: {alpha_c: 1.0, alpha_c: 0.0}\n", "decoder.attention.alpha_c", (3, 3)),
    ("eval:\n  beam_sizes: [1]\n  0x1: a\n  1: b\n", "eval.1", (3, 4)),  # one key to YAML: 0x1 == 1
])
def test_a_duplicate_yaml_key_is_an_error_naming_the_file_key_and_lines(tmp_path, text, key, lines):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: duplicate key {key} "
                                          rf"\(line {lines[0]} and line {lines[1]}\)"):
        load_config(path)


def test_yaml_stays_safe_and_merge_keys_are_not_duplicates(tmp_path):
    merged = "base: &b {epochs: 2, lr: 0.5}\ntrain:\n  <<: *b\n  epochs: 3\n"  # a key after a merge overrides it
    assert load_yaml(merged, "m.yaml") == {"base": {"epochs": 2, "lr": 0.5}, "train": {"epochs": 3, "lr": 0.5}}
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"train: !!python/object/apply:os.system ['touch {tmp_path / 'ran'}']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(evil)
    assert not (tmp_path / "ran").exists()
    with pytest.raises(ConfigError, match=r"override --decoder.attention=\{alpha_c: 1, alpha_c: 2\}: duplicate key "
                                          r"alpha_c"):
        load_config(None, ["--decoder.attention={alpha_c: 1, alpha_c: 2}"])
    with pytest.raises(ConfigError, match="invalid YAML value"):  # was: a raw yaml traceback
        load_config(None, ["--train.epochs=[1"])
    with pytest.raises(ConfigError, match="cannot read the config file"):  # was: IsADirectoryError
        load_config(tmp_path)
