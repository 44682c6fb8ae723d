"""The Encoder module: a CNN backbone behind one interface, with its preprocessing.

``Encoder(images) -> (pooled (B, F), grid (B, P, C))`` for any backbone whose
``forward_features(x)`` returns the final feature map, described by an :class:`EncoderSpec`
(the registry of ready-made ones is :mod:`nic.encoders.zoo`).

Fine-tuning: each network is split into ``num_blocks`` stages, bottom to top;
:meth:`Encoder.set_trainable` unfreezes the top ones. BatchNorm layers always stay in
eval mode (frozen running statistics), see :meth:`Encoder.train`.

Trunk and head: ``forward_features`` is the network's ``sequence`` of submodules applied
in order, so it splits anywhere into a frozen *trunk* and a *head* of the top ``k``
stages: ``forward(x) == forward_head(forward_trunk(x, k), k)``. Fine-tuning the top stages
then needs the trunk's output only once per image: :class:`TrunkView` is the trunk as an
encoder of its own, whose output the feature cache stores (see :mod:`nic.features`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    # Fine-tuning stages, bottom to top: each is the names of backbone submodules that form
    # it (for nn.Module.get_submodule). Empty: the whole backbone is one stage.
    stages: tuple[tuple[str, ...], ...] = ()
    # The submodules whose composition, in this order, IS forward_features (every stage's
    # modules among them); it lets a trunk/head split run the two halves separately.
    # Empty: the network cannot be split.
    sequence: tuple[str, ...] = ()


class FeatureBackbone(nn.Sequential):
    """Adapter for torchvision classifiers: their feature layers in order, head removed.

    Children keep torchvision's names, so the state-dict keys are torchvision's (minus the
    classifier's), and ``forward_features(x) -> (B, F, h, w)`` is what :class:`Encoder` calls.
    """

    def forward_features(self, x: Tensor) -> Tensor:
        return self(x)


class Encoder(nn.Module):
    """A CNN ``backbone`` (``forward_features(x) -> (B, F, h, w)``) with its preprocessing.

    ``grid_size`` > 0 adaptively average-pools the grid to ``grid_size x grid_size``
    locations (0: the network's own grid); the pooled vector is always the mean of the
    full final feature map.

    ``grid_below_top`` = k > 0 takes the grid from lower in the network: the feature map
    entering the top k stages (e.g. EfficientNet-Lite0 k = 3: ``blocks.4``'s output,
    14x14x112; ResNet k = 1: ``layer3``'s, 14x14x1024), as Xu et al. attended over VGG's
    14x14 conv5_4 map rather than the final pooled one. Lower maps see smaller parts of
    the image, so a location's feature is about what is *there*. The grid then has
    :attr:`grid_dim` channels, which may differ from :attr:`feature_dim` (the pooled vector's).
    """

    def __init__(self, spec: EncoderSpec, backbone: nn.Module, *, grid_size: int = 0,
                 grid_below_top: int = 0) -> None:
        super().__init__()
        if grid_size < 0:
            raise ValueError(f"grid_size must be >= 0 (0: the network's own {spec.grid_side}x{spec.grid_side}), "
                             f"got {grid_size}")
        self.spec = spec
        self.grid_size = grid_size
        self.grid_below_top = grid_below_top
        self.backbone = backbone
        self.to_channels_last()
        # on the CPU even when the network is built on the meta device: these are never loaded from a file
        self.register_buffer("mean", torch.tensor(spec.mean, device="cpu").view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std, device="cpu").view(1, 3, 1, 1), persistent=False)
        for names in spec.stages:  # fail at construction, not at fine-tuning time, on a wrong name
            for n in names:
                backbone.get_submodule(n)
                if spec.sequence and n not in spec.sequence:
                    raise ValueError(f"{spec.name}: stage module {n!r} is not in the spec's sequence")
        self._grid_shape = (spec.feature_dim, spec.grid_side)  # (channels, side) of the map the grid comes from
        if grid_below_top:
            if not 0 < grid_below_top < self.num_blocks or not spec.sequence:
                raise ValueError(f"encoder.grid_below_top={grid_below_top}: {spec.name} has {self.num_blocks} "
                                 f"stages; use 1..{self.num_blocks - 1} (the map entering the top k stages) or 0 "
                                 "(the final map)")
            self._grid_shape = _probe_shape(self, grid_below_top)

    @property
    def name(self) -> str:
        return self.spec.name

    def to_channels_last(self) -> Encoder:
        """The backbone's weights in channels_last layout (again after weights were assigned): ~1.5-2x faster
        depthwise convolutions on CPU (see docs/benchmarks.md)."""
        self.backbone.to(memory_format=torch.channels_last)
        return self

    @property
    def cache_name(self) -> str:
        """Name of this encoder's feature cache: the registry name plus any grid setting."""
        return (self.name + (f".below{self.grid_below_top}" if self.grid_below_top else "")
                + (f".grid{self.grid_size}" if self.grid_size else ""))

    @property
    def feature_dim(self) -> int:
        """F of the pooled vector."""
        return self.spec.feature_dim

    @property
    def grid_dim(self) -> int:
        """Channels of each grid location (F unless ``grid_below_top``)."""
        return self._grid_shape[0]

    @property
    def grid_side(self) -> int:
        """Side of the grid ``forward`` returns (P = grid_side ** 2)."""
        return self.grid_size or self._grid_shape[1]

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
        """images -> (pooled (B, F), grid (B, P, grid_dim))."""
        if not self.grid_below_top:
            return self.pool(self.feature_map(images))
        # split where the grid's map is: the head's input is the grid, its output the final map
        return self.forward_head(self.forward_trunk(images, self.grid_below_top), self.grid_below_top)

    def pool(self, fmap: Tensor, grid_map: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Final map (B, F, h, w) [, the map the grid comes from] -> (pooled (B, F), grid (B, P, C))."""
        pooled = fmap.mean(dim=(2, 3))  # (B, F)
        gmap = fmap if grid_map is None else grid_map  # (B, C, h', w')
        if self.grid_size and gmap.shape[-2:] != (self.grid_size, self.grid_size):
            gmap = F.adaptive_avg_pool2d(gmap, self.grid_size)  # (B, C, g, g)
        grid = gmap.flatten(2).transpose(1, 2)  # (B, P, C)
        return pooled, grid

    # ------------------------------------------------------------------ trunk / head
    def _split(self, top: int) -> tuple[list[nn.Module], list[nn.Module]]:
        """The ``sequence`` modules below the top ``top`` stages, and those of the top stages."""
        if not self.spec.sequence:
            raise ValueError(f"{self.name}: this encoder does not declare a module sequence, so it cannot be "
                             "split into a cached trunk and a trainable head")
        if not 1 <= top < self.num_blocks:
            raise ValueError(f"{self.name}: a trunk/head split needs 1 <= top stages < {self.num_blocks}, got {top}")
        cut = self.spec.sequence.index(self.spec.stages[self.num_blocks - top][0])
        modules = [self.backbone.get_submodule(n) for n in self.spec.sequence]
        return modules[:cut], modules[cut:]

    def forward_trunk(self, images: Tensor, top: int) -> Tensor:
        """Images -> the feature map entering the top ``top`` stages, (B, C, h', w')."""
        x = self.normalize(images)
        for module in self._split(top)[0]:
            x = module(x)
        return x

    def forward_head(self, trunk: Tensor, top: int) -> tuple[Tensor, Tensor]:
        """A :meth:`forward_trunk` output -> (pooled, grid), exactly as :meth:`forward` returns them.

        With ``grid_below_top`` = g, the grid's map must lie in the head (g <= top).
        """
        head = self._split(top)[1]
        g = self.grid_below_top
        if g > top:
            raise ValueError(f"{self.name}: the grid (below the top {g} stages) lies inside the trunk below the top "
                             f"{top}; a trunk/head split needs grid_below_top <= top")
        grab = len(head) - len(self._split(g)[1]) if g else -1  # head index whose input is the grid's map
        x = trunk.contiguous(memory_format=torch.channels_last)
        lower = None
        for i, module in enumerate(head):
            if i == grab:
                lower = x
            x = module(x)
        return self.pool(x, lower)

    def forward_cached_trunk(self, grid: Tensor, top: int) -> tuple[Tensor, Tensor]:
        """A trunk cache's grid (B, P', C) (:class:`TrunkView` output) -> (pooled, grid)."""
        return self.forward_head(unflatten_trunk(grid), top)

    # ------------------------------------------------------------------ fine-tuning
    @property
    def num_blocks(self) -> int:
        """Number of stages :meth:`set_trainable` counts (from the top)."""
        return len(self.spec.stages) or 1

    def stage_modules(self) -> list[list[nn.Module]]:
        """The stages, bottom to top, each as its list of modules."""
        if not self.spec.stages:
            return [[self.backbone]]
        return [[self.backbone.get_submodule(n) for n in names] for names in self.spec.stages]

    def set_trainable(self, blocks: int) -> Encoder:
        """Freeze every parameter, then unfreeze the top ``blocks`` stages (-1: all; 0: none).

        Parameters outside the stages (a classifier head that ``forward`` never uses)
        stay frozen. BatchNorm statistics stay frozen whatever this says (see :meth:`train`).
        """
        if not -1 <= blocks <= self.num_blocks:
            raise ValueError(f"{self.name}: blocks must be -1 (all), 0 (none) or up to {self.num_blocks}, "
                             f"got {blocks}")
        self.requires_grad_(False)
        stages = self.stage_modules()
        for stage in stages[len(stages) - blocks:] if blocks >= 0 else stages:
            for module in stage:
                module.requires_grad_(True)
        return self

    @property
    def trainable_blocks(self) -> int:
        """How many top stages train: -1 when all do, 0 when none (read from ``requires_grad``)."""
        count = 0
        for stage in reversed(self.stage_modules()):
            params = [p for m in stage for p in m.parameters()]
            if not params or not all(p.requires_grad for p in params):
                break
            count += 1
        return -1 if count == self.num_blocks else count

    def train(self, mode: bool = True) -> Encoder:
        """Set training mode, but keep every BatchNorm layer in eval mode.

        Caption batches hold few distinct images (often the same image several times, one
        per caption), far from the ImageNet batches the running statistics were estimated
        on; updating them, or normalising with batch statistics, would shift every feature
        the decoder has learned to read. So fine-tuning trains the weights (the BN affine
        parameters included, when their stage is trainable) with frozen BN statistics.
        """
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


class TrunkView(nn.Module):
    """An encoder's frozen trunk below its top ``top`` stages, as an encoder of its own.

    ``forward(images) -> (pooled (B, C), grid (B, P', C))`` is the trunk's feature map in
    the shape the feature cache stores (``grid`` is the map, flattened; ``pooled`` its
    mean). Only the trunk's modules are registered, so its ``state_dict`` (and the cache's
    weight digest) does not change while the head above it is fine-tuned.
    ``Encoder.forward_head(unflatten(grid), top)`` completes the forward pass.
    """

    def __init__(self, encoder: Encoder, top: int) -> None:
        super().__init__()
        self.trunk = nn.ModuleList(encoder._split(top)[0])
        self.name = f"{encoder.name}.trunk{top}"
        object.__setattr__(self, "_encoder", encoder)  # not a submodule: kept out of state_dict()
        self.top = top
        self.cache_attrs = {"trunk_top": top}  # recorded in the feature cache
        self.feature_dim, self.grid_side = _probe_shape(encoder, top)  # BatchNorm statistics untouched

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        fmap = self._encoder.forward_trunk(images, self.top)  # (B, C, h, w)
        return fmap.mean(dim=(2, 3)), fmap.flatten(2).transpose(1, 2)

    def train(self, mode: bool = True) -> TrunkView:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def _probe_shape(encoder: Encoder, top: int) -> tuple[int, int]:
    """(channels, side) of the map entering the top ``top`` stages, from one zero image in eval mode
    (on the meta device when the network is there: shapes only)."""
    modes = [m.training for m in encoder.modules()]
    encoder.eval()
    device = next(encoder.backbone.parameters()).device
    with torch.no_grad():
        side = encoder.spec.input_size
        x = torch.zeros(1, 3, side, side, device=device)  # normalisation keeps the shape: the trunk alone
        for module in encoder._split(top)[0]:
            x = module(x)
        c, h = x.shape[1:3]
    for m, mode in zip(encoder.modules(), modes):
        m.training = mode
    return c, h


def unflatten_trunk(grid: Tensor) -> Tensor:
    """A cached trunk grid (B, P, C) of a square map -> the feature map (B, C, h, h), h * h = P."""
    side = math.isqrt(grid.shape[1])
    if side * side != grid.shape[1]:
        raise ValueError(f"trunk grid of {grid.shape[1]} locations is not a square map")
    return grid.transpose(1, 2).reshape(grid.shape[0], grid.shape[2], side, side)
