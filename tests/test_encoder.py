"""The default encoder really carries ImageNet weights, and returns the declared shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nic.encoders import ENCODERS, build_encoder
from nic.images import load_image
from tests.conftest import DATA

# ImageNet class indices
EGYPTIAN_CAT, TABBY, TIGER_CAT, ESPRESSO, CUP, COFFEE_MUG = 285, 281, 282, 967, 968, 504


@pytest.fixture(scope="module")
def lite0():
    return build_encoder("efficientnet_lite0").eval()


def classify(encoder, name):
    image = torch.from_numpy(load_image(DATA / name, 224))[None]  # (1, 3, 224, 224)
    with torch.inference_mode():
        return encoder.backbone.forward_head(encoder.feature_map(image)).softmax(-1)[0]


def test_pretrained_weights_classify_real_photos(lite0):
    cat = classify(lite0, "cat.jpg")
    assert int(cat.argmax()) == EGYPTIAN_CAT and cat[EGYPTIAN_CAT] > 0.4
    assert set(cat.topk(3).indices.tolist()) == {EGYPTIAN_CAT, TABBY, TIGER_CAT}
    coffee = classify(lite0, "espresso.jpg")
    assert int(coffee.argmax()) == ESPRESSO and coffee[ESPRESSO] > 0.8


def test_random_weights_do_not_classify(lite0):
    torch.manual_seed(0)
    random_net = build_encoder("efficientnet_lite0", pretrained=False).eval()
    cat = classify(random_net, "cat.jpg")
    assert int(cat.argmax()) not in (EGYPTIAN_CAT, TABBY, TIGER_CAT) or float(cat.max()) < 0.05


def test_feature_shapes_and_normalisation(lite0):
    images = torch.randint(0, 256, (2, 3, 160, 120), dtype=torch.uint8)
    pooled, grid = lite0(images)  # resized to 224 -> 7 x 7 grid
    assert pooled.shape == (2, 1280) and grid.shape == (2, 49, 1280)
    torch.testing.assert_close(pooled, grid.mean(1), rtol=1e-4, atol=1e-5)
    x = lite0.normalize(torch.full((1, 3, 224, 224), 255, dtype=torch.uint8))
    expected = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), expected, rtol=1e-5)
    # float input in [0, 1] is treated like uint8 / 255
    torch.testing.assert_close(lite0.normalize(images), lite0.normalize(images.float() / 255))


def test_registry_errors_list_valid_names(tmp_path):
    with pytest.raises(ValueError, match=r"unknown encoder 'vgg'; valid names: \['efficientnet_lite0'"):
        build_encoder("vgg")
    with pytest.raises(FileNotFoundError, match="nope.pth: encoder weight file not found"):
        build_encoder("efficientnet_lite0", weights=tmp_path / "nope.pth")
    assert "efficientnet_lite0" in ENCODERS


def test_weights_file_roundtrip(lite0, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(lite0.backbone.state_dict(), path)
    other = build_encoder("efficientnet_lite0", weights=path)
    for a, b in zip(lite0.backbone.state_dict().values(), other.backbone.state_dict().values()):
        torch.testing.assert_close(a, b)
    torch.save({"conv_stem.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="tensors, the network expects"):
        build_encoder("efficientnet_lite0", weights=path)
