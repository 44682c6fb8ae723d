"""nic's own EfficientNet-Lite (nic/encoders/efficientnet_lite.py) against timm's, the reference it replaces."""

from __future__ import annotations

import pytest
import torch

from nic.encoders import build_encoder, load_pretrained
from nic.encoders.efficientnet_lite import EfficientNetLite
from nic.encoders.zoo import _load_state, _packaged_lite_weights

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("k", [0, 1, 2])
def test_state_dict_keys_order_shapes_and_initialisation_are_timms(k):
    torch.manual_seed(0)
    reference = timm.create_model(f"efficientnet_lite{k}", pretrained=False)
    after_reference = torch.rand(4)
    torch.manual_seed(0)
    ours = EfficientNetLite(k)
    after_ours = torch.rand(4)
    theirs, mine = reference.state_dict(), ours.state_dict()
    assert list(mine) == list(theirs)
    for key in theirs:
        assert mine[key].shape == theirs[key].shape, key
        assert torch.equal(mine[key], theirs[key]), f"{key}: another random initialisation"
    # the same random draws: whatever is built after the network (the decoder) gets the same weights as before
    assert torch.equal(after_ours, after_reference)


def test_lite0_outputs_equal_timms_with_the_imagenet_weights():
    state = _packaged_lite_weights(0)
    reference = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    ours = EfficientNetLite(0).eval()
    _load_state(reference, state, source="lite0")
    _load_state(ours, state, source="lite0")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = (ours.forward_features(x) - reference.forward_features(x)).abs().max().item()
        logits = (ours(x) - reference(x)).abs().max().item()
        pooled = (ours.forward_head(ours.forward_features(x), pre_logits=True)
                  - reference.forward_head(reference.forward_features(x), pre_logits=True)).abs().max().item()
    assert features < 1e-5 and logits < 1e-5 and pooled < 1e-5


def test_the_encoder_built_on_meta_and_assigned_equals_the_one_built_and_loaded():
    """The captioning path (meta device, weights assigned) gives bit-identical features to the training path."""
    built = build_encoder("efficientnet_lite0").eval()
    with torch.device("meta"):
        shapes = build_encoder("efficientnet_lite0", pretrained=False, grid_below_top=3)
        plain = build_encoder("efficientnet_lite0", pretrained=False)
    assert all(p.is_meta for p in plain.parameters())
    assert (shapes.grid_dim, shapes.grid_side) == (112, 14)  # the grid's shape is probed on the meta device
    load_pretrained(plain).eval()
    assert not any(t.is_meta for t in [*plain.parameters(), *plain.buffers()])
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in plain.parameters() if p.dim() == 4)
    images = torch.randint(0, 256, (2, 3, 90, 120), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for a, b in zip(built(images), plain(images)):
            assert torch.equal(a, b)


def test_an_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="Lite0, Lite1, Lite2"):
        EfficientNetLite(3)
