"""Typed configuration: dataclasses, loaded from YAML, overridden from the command line.

A run's configuration is one :class:`Config` made of one dataclass per component. YAML
files and ``--section.key=value`` overrides are checked against the dataclasses: an
unknown section or key, or a value of the wrong type, is an error that names it and lists
the valid choices. The resolved configuration is saved in every run directory and inside
every checkpoint, so any script can rebuild the model from a checkpoint alone.

Example::

    cfg = load_config("configs/nic_coco.yaml", ["--train.lr=2e-4", "--decoder.dropout=0.3"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class DataConfig:
    # Which dataset: "shapes" (built in, generated on first use), "coco", "flickr8k",
    # "flickr30k" (Karpathy-split JSON) or "custom".
    dataset: str = "shapes"
    # Folder with the dataset; for shapes it is generated here when missing.
    root: str = "data/shapes"
    # Karpathy-split JSON (relative to root unless absolute). None: dataset_<name>.json.
    karpathy_json: str | None = None
    # Folder the JSON's filepath/filename are relative to (relative to root). None: root.
    image_dir: str | None = None
    # Where the HDF5 stores, vocabulary and feature caches go. None: <root>/stores.
    store_dir: str | None = None
    # Stored images are resized to image_size x image_size (uint8).
    image_size: int = 224
    # Vocabulary: words seen fewer than min_count times in train map to <unk>.
    min_count: int = 5
    # Captions longer than max_len words are truncated (counted in the vocab stats).
    max_len: int = 20
    # DataLoader worker processes (HDF5 is opened lazily in each worker).
    num_workers: int = 0
    # --- preprocessing (python -m preprocess; see docs/datasets.md) ---
    # dataset "custom": CSV/JSONL of image,caption[,split] rows (relative to root unless absolute).
    captions_file: str | None = None
    # Custom datasets without a split column: fractions of the images sent to val and test
    # (a permutation seeded with split_seed; the rest is train).
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    split_seed: int = 0
    # COCO's "restval" images: "train" (merged into train, the usual 113k) or "drop".
    restval: str = "train"
    # Train captions longer than max_len: "truncate" (kept, cut) or "drop" (counted either way).
    long_captions: str = "truncate"
    # Train captions kept per image (the first N); 0: all of them.
    captions_per_image: int = 0
    # Image-decoding threads when building stores (0: one per CPU core, at most 8).
    preprocess_workers: int = 0
    # Images declaring more pixels are skipped as possible decompression bombs (0: no limit).
    max_pixels: int = 89_478_485
    # Make any bad input item (missing/corrupt image, empty caption, ...) fatal instead of
    # skipping and reporting it.
    strict: bool = False

    def resolved_store_dir(self) -> Path:
        return Path(self.store_dir) if self.store_dir else Path(self.root) / "stores"


@dataclass
class EncoderConfig:
    # Registry name, see nic.encoders.ENCODERS.
    name: str = "efficientnet_lite0"
    # Optional path to a weights file; None: the encoder's packaged/cached weights.
    weights: str | None = None
    # Keep the CNN frozen (features are then computed once and cached in HDF5).
    freeze: bool = True
    # Precision of cached features: "float16" halves the disk and memory footprint.
    feature_dtype: str = "float16"
    # Adaptively average-pool the spatial grid to grid_size x grid_size (0: the CNN's own grid).
    grid_size: int = 0
    # Attend over a lower feature map: the one entering the top k stages (0: the final map).
    # Lower maps are finer and more local (EfficientNet-Lite0 k = 3: blocks.4, 14x14x112;
    # ResNet k = 1: layer3, 14x14x1024); Xu et al. used VGG's 14x14 conv5_4. Pooled stays final.
    grid_below_top: int = 0
    # Fine-tuning (as in Show and Tell): after `finetune_after` epochs of training the
    # decoder on the frozen CNN, unfreeze its top `finetune_blocks` blocks (-1: all) and
    # train them with learning rate `finetune_lr`. 0 epochs / 0 blocks: never.
    finetune_after: int = 0
    finetune_blocks: int = 0
    finetune_lr: float = 1e-5
    # With freeze: true and 0 < finetune_blocks < all: also cache the output of the frozen
    # trunk below the top blocks; until finetune_after, training reads the final features,
    # from then on the trunk, and only the top blocks run each step (see train.group_captions).
    # false: cache final features, then run the whole CNN on images once fine-tuning.
    cache_trunk: bool = True


@dataclass
class DecoderConfig:
    # "nic" (Show and Tell: image fed once at t = -1) or "attention" (Show, Attend and
    # Tell: soft attention over the encoder grid at every step; one LSTM layer).
    type: str = "nic"
    # Word (and image) embedding size; the paper uses 512.
    embed_dim: int = 512
    # LSTM hidden size; the paper uses 512.
    hidden_dim: int = 512
    num_layers: int = 1
    # Dropout on the embeddings and on the LSTM output.
    dropout: float = 0.5
    # Attention decoder only: size of the additive attention's hidden layer (the paper: 512),
    # and the weight lambda of the doubly stochastic regulariser sum_i (1 - sum_t alpha_ti)^2.
    attention_dim: int = 512
    alpha_c: float = 1.0
    # Attention decoder only, an extension (not in the paper): append each grid location's
    # (x, y) to its feature, so the context says where the model looked (spatial relations).
    grid_coords: bool = False
    # With grid_coords: multiply the coordinates (CNN map features are far larger than [-1, 1]),
    # and whether the gating scalar beta scales them with the features (the paper gates the
    # whole context; false lets the position through at full strength).
    grid_coords_scale: float = 1.0
    grid_coords_gated: bool = True
    # Attention decoder only: which LSTM state queries the attention. "previous" (the paper):
    # h_{t-1}, before the step reads its word. "current" (an extension, as in Lu et al. 2017):
    # h_t, after it, so the model looks for what it has just named; needs deep_output.
    attention_query: str = "previous"
    # Attention decoder only: the paper's deep output layer (its eq. 7),
    # p(word) = softmax(L_o(E y + L_h h + L_z z)), instead of softmax(L_o h).
    deep_output: bool = False


@dataclass
class TrainConfig:
    epochs: int = 20
    # The GLOBAL batch size: with torchrun each of the N processes takes batch_size / N.
    batch_size: int = 128
    lr: float = 4e-4
    weight_decay: float = 0.0
    # Clip the global gradient norm to this value (0 disables).
    grad_clip: float = 5.0
    # Beam size used for validation BLEU-4 each epoch (real decoding, never teacher forcing).
    val_beam: int = 3
    # Stop when validation BLEU-4 has not improved for this many epochs (0 disables).
    patience: int = 0
    # Which epoch best.pt (and the final test report) keeps: "bleu", the highest validation
    # BLEU-4 at val_beam; or "last", the latest epoch (when BLEU misses what training still
    # improves, e.g. shapes relations, which few reference captions state).
    best: str = "bleu"
    # Learning-rate schedule: "constant", "step" (x lr_gamma every lr_step_epochs epochs,
    # as the tutorial peers do) or "cosine" (per step, to 0 at the last epoch); all after
    # a linear warm-up of warmup_steps optimizer steps.
    lr_schedule: str = "constant"
    lr_step_epochs: int = 8
    lr_gamma: float = 0.5
    warmup_steps: int = 0
    # Scheduled sampling (Bengio et al. 2015): the probability of feeding the model's own
    # sampled word instead of the ground truth rises linearly from 0 at epoch
    # ss_start_epoch to ss_max_prob over ss_ramp_epochs epochs (0 disables).
    ss_max_prob: float = 0.0
    ss_start_epoch: int = 0
    ss_ramp_epochs: int = 5
    # Automatic mixed precision on CUDA (bf16 where supported, else fp16 + GradScaler).
    amp: bool = True
    # Also save last.pt every N optimizer steps (0: at the end of each epoch only).
    save_every: int = 0
    # Stop after this many optimizer steps in total (0: no limit); for smoke tests.
    max_steps: int = 0
    # Append the global training loss to steps.jsonl every N optimizer steps (0: never).
    log_every: int = 10
    # Log to TensorBoard too when the tensorboard package is installed.
    tensorboard: bool = True
    # Batch whole images with all their captions (about batch_size captions per batch), so
    # that CNN layers running each step (encoder.cache_trunk) see each image once per epoch,
    # not once per caption. Cheaper, but fewer distinct images per step: on shapes it
    # converged more slowly (docs/benchmarks.md). false: one item per caption.
    group_captions: bool = False
    # Validate on at most this many images (0: the whole split).
    val_images: int = 0
    seed: int = 0
    # "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    # The run directory is <out_dir>/<name>.
    out_dir: str = "runs"
    name: str = "default"


@dataclass
class EvalConfig:
    # Beam sizes for the final test report (k = 20 is the paper's setting).
    beam_sizes: list[int] = field(default_factory=lambda: [20])
    max_len: int = 20
    # Hypothesis score = logprob / length ** length_penalty (0: plain log-probability).
    length_penalty: float = 0.0
    batch_size: int = 50


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """A configuration file or override names an unknown key or has a wrong type."""


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> Config:
    """Build a :class:`Config` from nested dicts, rejecting unknown keys and wrong types."""
    return _build(Config, data or {}, source)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``path`` (YAML; None for the defaults) and apply ``--section.key=value`` overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (data, encoder, ...) at the top level")
    for item in overrides or []:
        _apply_override(data, item)
    return config_from_dict(data, source=source)


def save_config(cfg: Config, path: str | Path) -> None:
    from nic.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _apply_override(data: dict[str, Any], item: str) -> None:
    text = item[2:] if item.startswith("--") else item
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {item!r}: expected --section.key=value, e.g. --train.lr=1e-3")
    key, value = text.split("=", 1)
    section, name = key.split(".", 1)
    target = data.setdefault(section, {})
    if not isinstance(target, dict):
        raise ConfigError(f"override {item!r}: section {section!r} is not a mapping")
    target[name] = yaml.safe_load(value) if value != "" else None


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} in {cls.__name__}; valid keys: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{where}: {name}")
        else:
            kwargs[name] = _coerce(value, hint, f"{where}: {cls.__name__.removesuffix('Config').lower()}.{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, where) for v in value]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint in (int, float, str) and (not isinstance(value, hint) or isinstance(value, bool) and hint is not bool):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value
