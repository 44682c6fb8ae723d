"""The fast captioning path changes nothing a user sees: loading, the decoding pipeline, int8 only when asked.

No timings here (they live in bench/latency.py and docs/benchmarks.md): these tests check that the
fast path gives the same captions as the plain one and keeps timm out of caption.py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nic.captioner import Captioner, UnreadableImage, decoded_images
from nic.checkpoint import load_checkpoint, load_weights, save_checkpoint
from nic.config import config_from_dict, load_config
from nic.images import load_image
from nic.model import build_model
from nic.vocab import SPECIALS, Vocabulary
from tests.conftest import DATA, ROOT

SHIPPED = ROOT / "models" / "nic_flickr8k" / "model.pt"
PHOTOS = [DATA / "cat.jpg", DATA / "espresso.jpg"]


def plain_captioner(path) -> Captioner:
    """The model built and loaded the ordinary way (random init, then weights copied in): the reference."""
    ckpt = load_checkpoint(path)
    cfg, vocab = config_from_dict(ckpt["config"]), Vocabulary.from_dict(ckpt["vocab"])
    model = build_model(cfg, len(vocab), pad_id=vocab.pad_id, encoder_name=ckpt["encoder_name"],
                        pretrained=ckpt["encoder"] is None)
    if ckpt["encoder"] is not None:
        load_weights(model.encoder, ckpt["encoder"], source=path, part="encoder")
    if ckpt.get("encoder_changes") is not None:  # an exported fine-tuned model: the package's weights + these
        load_weights(model.encoder, ckpt["encoder_changes"], source=path, part="encoder", partial=True)
    load_weights(model.decoder, ckpt["decoder"], source=path, part="decoder")
    return Captioner(model.encoder, model.decoder, vocab, config=cfg)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """An untrained attention model over the real Lite0, with a fine-tuned (here: perturbed) CNN and a
    training section, as a run's best.pt has."""
    cfg = load_config(None, ["--data.image_size=64", "--decoder.type=attention", "--decoder.embed_dim=16",
                             "--decoder.hidden_dim=16", "--decoder.attention.attention_dim=16",
                             "--eval.max_len=5", "--eval.beam_sizes=[3]"])
    vocab = Vocabulary([*SPECIALS, "a", "dog", "cat", "red", "ball", "on", "grass"])
    torch.manual_seed(0)
    model = build_model(cfg, len(vocab), pad_id=vocab.pad_id)
    with torch.no_grad():
        model.encoder.backbone.conv_head.weight.mul_(1.5)
    path = tmp_path_factory.mktemp("speed") / "best.pt"
    save_checkpoint(path, {"config": cfg.to_dict(), "vocab": vocab.to_dict(), "encoder_name": cfg.encoder.name,
                           "decoder": model.decoder.state_dict(), "encoder": model.encoder.state_dict(),
                           "training": {"optimizer": {"state": {0: {"exp_avg": torch.randn(1000)}}}}})
    return path


def photos(tmp_path, n: int) -> list:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        out.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (40 + 3 * i, 50, 3), dtype=np.uint8)).save(out[-1])
    return out


def test_the_fast_load_equals_the_plain_one_on_a_finetuned_checkpoint(tiny_checkpoint, tmp_path):
    fast, plain = Captioner.from_checkpoint(tiny_checkpoint), plain_captioner(tiny_checkpoint)
    for (name, a), (_, b) in zip([*fast.encoder.state_dict().items(), *fast.decoder.state_dict().items()],
                                 [*plain.encoder.state_dict().items(), *plain.decoder.state_dict().items()]):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    files = photos(tmp_path, 3)
    assert ([[c.text for c in caps] for _, caps in fast.caption_files(files)]
            == [[c.text for c in caps] for _, caps in plain.caption_files(files)])


def test_the_shipped_model_captions_as_when_loaded_the_plain_way():
    fast, plain = Captioner.from_checkpoint(SHIPPED), plain_captioner(SHIPPED)
    images = torch.stack([torch.from_numpy(load_image(p, 224)) for p in PHOTOS])
    for a, b in zip(fast.features(images), plain.features(images)):
        assert torch.equal(a, b)
    ours = [(c.text, c.logprob) for caps in fast.caption_images(images) for c in caps]
    assert ours == [(c.text, c.logprob) for caps in plain.caption_images(images) for c in caps]


def test_captions_do_not_depend_on_the_batch_or_the_bad_files_between(tiny_checkpoint, tmp_path):
    captioner = Captioner.from_checkpoint(tiny_checkpoint)
    files = photos(tmp_path, 7)
    (tmp_path / "bad.jpg").write_text("not an image")
    alone = {p: caps[0].text for f in files for p, caps in captioner.caption_files([f], batch_size=1)}
    mixed = [*files[:3], tmp_path / "bad.jpg", tmp_path / "missing.png", *files[3:]]
    errors = []
    got = list(captioner.caption_files(mixed, batch_size=3, workers=3, on_error=lambda p, e: errors.append(p)))
    assert [p for p, _ in got] == files  # in order, every good file
    assert {p: caps[0].text for p, caps in got} == alone
    assert errors == [tmp_path / "bad.jpg", tmp_path / "missing.png"]
    with pytest.raises(UnreadableImage, match="missing.png"):
        list(captioner.caption_files(mixed[4:5] + files[:1]))


def test_decoded_images_keeps_the_order_and_hands_back_errors(tmp_path):
    files = photos(tmp_path, 5)
    out = list(decoded_images([files[0], tmp_path / "none.png", *files[1:]], 32, workers=2, ahead=2))
    assert [p for p, _ in out] == [files[0], tmp_path / "none.png", *files[1:]]
    assert isinstance(out[1][1], FileNotFoundError)
    for (path, image) in [out[0], *out[2:]]:
        assert torch.equal(image, torch.from_numpy(load_image(path, 32)))


def test_int8_only_when_asked(tiny_checkpoint, tmp_path):
    captioner = Captioner.from_checkpoint(tiny_checkpoint)
    assert not any("quantized" in type(m).__module__ for m in captioner.decoder.modules())
    files = photos(tmp_path, 2)
    float_captions = [caps[0].text for _, caps in captioner.caption_files(files)]
    captioner.quantize_int8()
    kinds = {type(m) for m in captioner.decoder.modules()}
    assert not {nn.Linear, nn.LSTMCell} & kinds, "every Linear/LSTM layer is quantized"
    captions = [caps[0] for _, caps in captioner.caption_files(files)]
    assert len(captions) == len(float_captions) and all(np.isfinite(c.logprob) for c in captions)


def test_caption_py_imports_neither_timm_nor_torchvision():
    code = ("import sys, caption; caption.main(['--img', sys.argv[1]]); "
            "print(sorted(m for m in ('timm', 'torchvision', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(PHOTOS[0])], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].startswith(f"{PHOTOS[0]}: ") and out[-1] == "[]"
