"""Image encoders: a registry of ImageNet-pretrained CNNs behind one interface.

Every encoder maps a batch of images to pooled and spatial ("grid") features::

    images (B, 3, H, W) uint8 in [0, 255] or float in [0, 1]
      -> resize to the network's input size, the network's mean/std normalisation
      -> CNN feature map (B, F, h, w)
      -> pooled (B, F)      global average pool (the vector Show and Tell feeds at t = -1)
         grid   (B, P, F)   P = h * w locations (what soft attention attends over), or
                            P = g * g after adaptive average pooling to ``grid_size`` = g;
                            with ``grid_below_top`` = k, from the map entering the top k
                            stages instead (B, P, C) (see :class:`Encoder`)

The modules:

* :mod:`nic.encoders.base`: the :class:`Encoder` module itself (preprocessing, pooling,
  fine-tuning stages, the trunk/head split and :class:`TrunkView`), for any backbone
  described by an :class:`EncoderSpec`;
* :mod:`nic.encoders.zoo`: the registry (:data:`ENCODERS`, :func:`build_encoder`): which
  networks, their specs, and where their weights come from (never the network);
  :func:`load_pretrained` gives a network built on the meta device its weights;
* :mod:`nic.encoders.efficientnet_lite`: EfficientNet-Lite0/1/2, timm's architecture
  (same state-dict keys, outputs and initialisation) without importing timm.
"""

from nic.encoders.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    EncoderSpec,
    FeatureBackbone,
    TrunkView,
    unflatten_trunk,
)
from nic.encoders.zoo import ENCODERS, build_encoder, load_pretrained, torchvision_weight_file

__all__ = [
    "ENCODERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Encoder",
    "EncoderSpec",
    "FeatureBackbone",
    "TrunkView",
    "build_encoder",
    "load_pretrained",
    "torchvision_weight_file",
    "unflatten_trunk",
]
