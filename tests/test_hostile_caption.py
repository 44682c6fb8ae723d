"""Hostile and careless input to caption.py: bad files among good ones, the pixel limit, impossible flags."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import caption
from eval import bleu_report
from nic import search
from nic.captioner import Captioner, UnreadableImage
from nic.checkpoint import load_checkpoint, save_checkpoint
from nic.config import load_config
from nic.model import build_model
from nic.vocab import SPECIALS, Vocabulary

WORDS = ["a", "dog", "cat", "red", "ball", "on", "the", "grass"]


def png_header(width: int, height: int) -> bytes:
    """The start of a PNG that declares ``width`` x ``height`` pixels (enough for Pillow to read its size)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def photo(path: Path, w: int, h: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained model (random decoder, the packaged CNN): what caption.py needs, without training."""
    cfg = load_config(None, ["--data.image_size=32", "--decoder.embed_dim=16", "--decoder.hidden_dim=16",
                             "--eval.max_len=4", "--eval.beam_sizes=[2]"])
    vocab = Vocabulary([*SPECIALS, *WORDS])
    torch.manual_seed(0)
    model = build_model(cfg, len(vocab), pad_id=vocab.pad_id)
    path = tmp_path_factory.mktemp("hostile_caption") / "tiny.pt"
    save_checkpoint(path, {"config": cfg.to_dict(), "vocab": vocab.to_dict(), "encoder_name": cfg.encoder.name,
                           "decoder": model.decoder.state_dict(), "encoder": None})
    return path


@pytest.fixture
def fast_encoder(monkeypatch):
    """The CNN's features replaced by zeros (these tests are about files and flags; the CNN is slow on a busy CPU)."""
    def features(self, images, trunk_top=0):
        return torch.zeros(len(images), self.encoder.feature_dim), None

    monkeypatch.setattr(Captioner, "features", features)


def test_bad_files_among_good_ones_are_named_and_the_good_ones_captioned(checkpoint, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    good = [photo(photos / "a.png", 50, 40), photo(photos / "c.jpg", 64, 48, seed=1), photo(tmp_path / "e.bmp", 30, 30)]
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (photos / "b_truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (photos / "d_notes.jpg").write_text("not a picture at all\n")
    (photos / "f_huge.png").write_bytes(png_header(12_000, 8_000))  # 96 megapixels
    with pytest.raises(SystemExit) as failed:
        caption.main(["--img", str(photos), str(tmp_path / "missing.jpg"), str(good[2]), "--checkpoint",
                      str(checkpoint)])
    message = str(failed.value.code)  # a message: the process exits with status 1
    assert "4 of 7 input(s) not captioned" in message and "\n" not in message
    out, err = capsys.readouterr()
    captioned = dict(line.split(": ", 1) for line in out.splitlines())
    assert sorted(captioned) == sorted(map(str, good))
    named = dict(line.split(": ", 1) for line in err.splitlines())
    assert named[str(tmp_path / "missing.jpg")] == "no such file or folder"
    assert "truncated" in named[str(photos / "b_truncated.jpg")]
    assert named[str(photos / "d_notes.jpg")].startswith("not an image")
    assert "too large" in named[str(photos / "f_huge.png")] and "--max-pixels" in named[str(photos / "f_huge.png")]
    # the library names the file too when no one collects the failures
    captioner = Captioner.from_checkpoint(checkpoint)
    with pytest.raises(UnreadableImage, match="b_truncated.jpg"):
        list(captioner.caption_files([good[0], photos / "b_truncated.jpg"]))


def test_max_pixels_raises_or_lifts_the_limit(checkpoint, tmp_path, capsys, fast_encoder):
    small, big = photo(tmp_path / "small.png", 20, 20), photo(tmp_path / "big.png", 50, 40)  # 400 and 2,000 pixels
    with pytest.raises(SystemExit, match="1 of 2 input"):
        caption.main(["--img", str(small), str(big), "--checkpoint", str(checkpoint), "--max-pixels", "1000"])
    out, err = capsys.readouterr()
    assert out.startswith(f"{small}: ") and str(big) not in out
    assert f"{big}: too large: 50x40 = 2,000 pixels" in err and "--max-pixels" in err
    for limit in ("2000", "0"):  # raised to fit, or no limit at all
        caption.main(["--img", str(small), str(big), "--checkpoint", str(checkpoint), "--max-pixels", limit])
        assert len(capsys.readouterr().out.splitlines()) == 2
    with pytest.raises(SystemExit, match="--max-pixels -1"):
        caption.main(["--img", str(small), "--checkpoint", str(checkpoint), "--max-pixels", "-1"])


@pytest.mark.parametrize("flags, named", [
    (["--beam", "0"], "--beam 0: "),
    (["--beam", "2", "--nbest", "3"], "--nbest 3: "),
    (["--max-len", "-1"], "--max-len -1: "),
    (["--method", "sample", "--temperature", "0"], "--temperature 0.0: "),
])
def test_impossible_flags_are_one_line_errors_naming_the_flag(checkpoint, tmp_path, flags, named):
    image = photo(tmp_path / "x.png", 20, 20)
    with pytest.raises(SystemExit) as refused:
        caption.main(["--img", str(image), "--checkpoint", str(checkpoint), *flags])
    message = str(refused.value.code)
    assert message.startswith(f"error: {named}") and "\n" not in message


def test_a_beam_the_machine_cannot_hold_is_a_one_line_error(checkpoint, tmp_path, monkeypatch, fast_encoder):
    def refuse(*args, beam_size, **kwargs):  # what nic.search says before allocating a beam too wide
        raise ValueError(f"beam size {beam_size}: would need 3.1 TB of memory, this machine has 128 GB")

    monkeypatch.setattr(search, "beam_search", refuse)
    with pytest.raises(SystemExit) as refused:
        caption.main(["--img", str(photo(tmp_path / "x.png", 20, 20)), "--checkpoint", str(checkpoint),
                      "--beam", "1000000"])
    assert str(refused.value.code).startswith("error: --beam 1000000: beam size 1000000: would need")


def test_a_checkpoint_whose_vocabulary_disagrees_with_its_weights_is_one_line(checkpoint, tmp_path):
    data = load_checkpoint(checkpoint)
    data["vocab"]["itos"] = data["vocab"]["itos"][:-1]  # one word fewer than the weights have rows
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, {k: v for k, v in data.items() if k not in ("format", "version")})
    n = len(SPECIALS) + len(WORDS)
    with pytest.raises(SystemExit) as refused:
        caption.main(["--img", str(photo(tmp_path / "x.png", 20, 20)), "--checkpoint", str(bad)])
    message = str(refused.value.code)
    assert message.startswith(f"error: {bad}: the decoder weights do not fit") and "\n" not in message
    assert f"decoder.word_embed.weight is {n}x16 in the weights but the vocabulary has {n - 1} words" in message
    with pytest.raises(SystemExit) as report_refused:  # the report says the same, in one line
        bleu_report.main(["--checkpoint", str(bad), "--quiet"])
    assert str(report_refused.value.code) == message
    del data["decoder"]
    save_checkpoint(bad, {k: v for k, v in data.items() if k not in ("format", "version")})
    with pytest.raises(SystemExit, match=f"{bad}: not a complete nic model: no 'decoder' entry"):
        caption.main(["--img", str(tmp_path / "x.png"), "--checkpoint", str(bad)])
