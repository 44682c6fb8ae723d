"""Typed configuration: dataclasses, loaded from YAML, overridden from the command line.

A run's configuration is one :class:`Config` made of one dataclass per component. YAML
files and ``--section.key=value`` overrides are checked against the dataclasses: an
unknown section or key, a value of the wrong type, or an impossible value
(``train.batch_size=0``, ``train.lr=nan``, a key given twice in a file) is an error at load
time, before any work, that names the key (and the override that set it) and what is legal.
Every numeric and choice field declares its legal values in its class's ``RANGES`` table
(:mod:`nic.typed`). The resolved configuration is saved in every run directory and inside
every checkpoint, so any script can rebuild the model from a checkpoint alone. Overrides
reach nested keys too (``--decoder.attention.alpha_c=0.5``); each decoder declares its own
section of options (:class:`DecoderConfig`), checked with the same rules (:mod:`nic.typed`).

Example::

    cfg = load_config("configs/nic_coco.yaml", ["--train.lr=2e-4", "--decoder.dropout=0.3"])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nic.typed import (
    ConfigError,
    Source,
    at_least,
    between,
    build_dataclass,
    greater_than,
    load_yaml,
    location,
    one_of,
    to_plain,
)

# The values of the choice settings (nic.schedules and nic.training act on them; nic.features owns the dtypes).
LR_SCHEDULES = ("constant", "step", "cosine")
BEST_EPOCH = ("bleu", "cider", "last")
OBJECTIVES = ("xe", "scst")
SCST_BASELINES = ("mean", "greedy")
FEATURE_DTYPES = ("float16", "float32")
FRACTION = between(0.0, 1.0, high_open=True)


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

    # Legal values (nic.typed); dataset, restval and long_captions are checked by preprocess, which owns them.
    RANGES = {
        "image_size": at_least(1), "min_count": at_least(1), "max_len": at_least(1), "num_workers": at_least(0),
        "val_fraction": FRACTION, "test_fraction": FRACTION, "split_seed": at_least(0),
        "captions_per_image": at_least(0, note="0: all"), "preprocess_workers": at_least(0, note="0: one per core"),
        "max_pixels": at_least(0, note="0: no limit"),
    }

    def field_problems(self) -> list[tuple[str, str]]:
        if self.val_fraction + self.test_fraction >= 1:
            return [("test_fraction", f"with data.val_fraction={self.val_fraction!r} no image is left to train on; "
                                      "val_fraction + test_fraction must be below 1")]
        return []

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

    RANGES = {
        "feature_dtype": one_of(*FEATURE_DTYPES), "grid_size": at_least(0, note="0: the CNN's own grid"),
        "grid_below_top": at_least(0, note="0: the final map"), "finetune_after": at_least(0, note="0: never"),
        "finetune_blocks": at_least(-1, note="-1: all, 0: none"), "finetune_lr": greater_than(0.0),
    }


@dataclass
class DecoderConfig:
    # Registry name, see nic.decoders.DECODERS: "nic" (Show and Tell: image fed once at
    # t = -1) or "attention" (Show, Attend and Tell: soft attention over the encoder grid at
    # every step; one LSTM layer).
    type: str = "nic"
    # Word (and image) embedding size; the paper uses 512.
    embed_dim: int = 512
    # LSTM hidden size; the paper uses 512.
    hidden_dim: int = 512
    num_layers: int = 1
    # Dropout on the embeddings and on the LSTM output.
    dropout: float = 0.5
    # Per-decoder sections: in YAML a mapping named after a registered decoder type holds
    # that decoder's options (its `Options` dataclass), e.g.
    #   decoder: {type: attention, attention: {attention_dim: 256, alpha_c: 0.0}}
    # Checked at load time when the type is registered; the section of the chosen type is
    # filled with its defaults, so checkpoints record every option they were trained with.
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    RANGES = {"embed_dim": at_least(1), "hidden_dim": at_least(1), "num_layers": at_least(1), "dropout": FRACTION}

    @classmethod
    def from_mapping(cls, data: Any, source: str, path: str = "decoder") -> DecoderConfig:
        """Build from the YAML form: common keys plus one section per decoder (legacy flat keys migrated)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{location(source, path)}: expected a mapping for DecoderConfig, "
                              f"got {type(data).__name__}")
        data = _migrate_legacy_decoder_keys(data, source, path)
        common = {f.name for f in dataclasses.fields(cls)} - {"options"}
        cfg = build_dataclass(cls, {k: v for k, v in data.items() if k in common}, source, path)
        cfg.options = _decoder_sections({k: v for k, v in data.items() if k not in common}, cfg.type,
                                        source, path)
        return cfg

    def to_mapping(self) -> dict[str, Any]:
        """The YAML form: the common keys, then each decoder's section under its name."""
        common = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        return {**common, **self.options}


# The attention decoder's options were flat keys of `decoder` before the per-decoder sections
# (and every such config/checkpoint has them all, whatever its type): they move to `attention`.
LEGACY_ATTENTION_KEYS = ("attention_dim", "alpha_c", "grid_coords", "grid_coords_scale", "grid_coords_gated",
                         "attention_query", "deep_output")


def _migrate_legacy_decoder_keys(data: dict[str, Any], source: str, path: str) -> dict[str, Any]:
    """Move legacy flat ``decoder.<key>`` into ``decoder.attention.<key>``; a key given both ways is an error."""
    flat = [k for k in LEGACY_ATTENTION_KEYS if k in data]
    if not flat:
        return data
    section = data.get("attention", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{location(source, f'{path}.attention')}: expected a mapping of the attention "
                          f"decoder's options, got {type(section).__name__}")
    both = [k for k in flat if k in section]
    if both:
        raise ConfigError(f"{source}: {path}.{both[0]} and {path}.attention.{both[0]} are both given; keep only "
                          f"{path}.attention.{both[0]} ({path}.{both[0]} is the old, flat spelling)")
    rest = {k: v for k, v in data.items() if k not in flat}
    return {**rest, "attention": {**section, **{k: data[k] for k in flat}}}


def _decoder_sections(sections: dict[str, Any], decoder_type: str, source: str, path: str) -> dict[str, dict]:
    """Check each decoder section against its decoder's options (all with defaults filled in).

    A section must be named after a registered decoder with options, or after the chosen
    type when that is not registered (yet): it is then kept as given and checked by
    ``build_decoder``.
    """
    from nic.decoders import DECODERS, decoder_options  # the registry; nic.decoders never imports this module

    out = {}
    for name, raw in sections.items():
        if name in DECODERS:
            out[name] = dataclasses.asdict(decoder_options(name, raw, source=source, path=f"{path}.{name}"))
        elif name == decoder_type:
            if not isinstance(raw, dict):
                raise ConfigError(f"{source}: {path}.{name}: expected a mapping of the decoder's options, "
                                  f"got {type(raw).__name__}")
            out[name] = dict(raw)
        else:
            valid = sorted({f.name for f in dataclasses.fields(DecoderConfig)} - {"options"})
            sectioned = sorted(n for n, c in DECODERS.items() if c.Options is not None)
            raise ConfigError(f"{location(source, path)}: unknown key(s) [{name!r}] in DecoderConfig; valid keys: "
                              f"{valid}, or a section of a registered decoder's options: {sectioned}")
    if decoder_type in DECODERS and DECODERS[decoder_type].Options is not None and decoder_type not in out:
        out[decoder_type] = dataclasses.asdict(decoder_options(decoder_type, {}, source=source,
                                                               path=f"{path}.{decoder_type}"))
    return out


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
    # BLEU-4 at val_beam; "cider", the highest validation CIDEr-D; or "last", the latest epoch
    # (when BLEU misses what training still improves, e.g. shapes relations, which few
    # reference captions state).
    best: str = "bleu"
    # What each step minimises: "xe", the per-word negative log-likelihood of the references;
    # "scst", self-critical sequence training on sampled captions (the scst section).
    objective: str = "xe"
    # Start from this checkpoint's weights (decoder, and encoder when it holds one), e.g. an
    # SCST run from the best cross-entropy model; its vocabulary must be the stores'. None: fresh.
    init_from: str | None = None
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

    RANGES = {
        "epochs": at_least(1), "batch_size": at_least(1), "lr": greater_than(0.0), "weight_decay": at_least(0.0),
        "grad_clip": at_least(0.0, note="0: no clipping"), "val_beam": at_least(1),
        "patience": at_least(0, note="0: no early stopping"), "best": one_of(*BEST_EPOCH),
        "objective": one_of(*OBJECTIVES),
        "lr_schedule": one_of(*LR_SCHEDULES), "lr_step_epochs": at_least(1), "lr_gamma": greater_than(0.0),
        "warmup_steps": at_least(0), "ss_max_prob": between(0.0, 1.0), "ss_start_epoch": at_least(0),
        "ss_ramp_epochs": at_least(0), "save_every": at_least(0, note="0: at the end of each epoch only"),
        "max_steps": at_least(0, note="0: no limit"), "log_every": at_least(0, note="0: never"),
        "val_images": at_least(0, note="0: the whole split"), "seed": between(0, 2**32 - 1),
    }


@dataclass
class ScstConfig:
    """Self-critical sequence training (train.objective: scst; :mod:`nic.scst`)."""

    # Captions sampled per image and step; train.batch_size counts images under SCST.
    samples: int = 5
    # Each sample's baseline: "mean", the mean reward of the image's other samples (Luo 2020);
    # "greedy", the reward of the image's greedy caption (Rennie et al. 2017).
    baseline: str = "mean"
    # Reward = cider_weight * CIDEr-D + bleu_weight * BLEU-4, both against the image's references.
    cider_weight: float = 1.0
    bleu_weight: float = 0.0
    # Sampling temperature (1: the model's own distribution).
    temperature: float = 1.0
    # Keep the decoder's dropout on while sampling and in the gradient pass (as self-critical.pytorch
    # does): a regulariser; without it, SCST on a cross-entropy model that has memorised its training
    # captions mostly re-learns them (docs/benchmarks.md). Off: the deployed policy, dropout off.
    dropout: bool = False

    RANGES = {"samples": at_least(1), "baseline": one_of(*SCST_BASELINES), "cider_weight": at_least(0.0),
              "bleu_weight": at_least(0.0), "temperature": greater_than(0.0)}

    def field_problems(self) -> list[tuple[str, str]]:
        if self.cider_weight == 0 and self.bleu_weight == 0:
            return [("cider_weight", "cider_weight and bleu_weight are both 0: every caption would get reward 0")]
        if self.baseline == "mean" and self.samples < 2:
            return [("samples", "the mean-of-others baseline needs at least 2 samples (or baseline: greedy)")]
        return []


@dataclass
class EvalConfig:
    # Beam sizes for the final test report (k = 20 is the paper's setting).
    beam_sizes: list[int] = field(default_factory=lambda: [20])
    max_len: int = 20
    # Hypothesis score = logprob / length ** length_penalty (0: plain log-probability).
    length_penalty: float = 0.0
    batch_size: int = 50

    RANGES = {"beam_sizes": at_least(1), "max_len": at_least(1),
              "length_penalty": at_least(0.0, note="0: plain log-probability"), "batch_size": at_least(1)}

    def field_problems(self) -> list[tuple[str, str]]:
        return [] if self.beam_sizes else [("beam_sizes", "give at least one beam size, e.g. [20]")]


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scst: ScstConfig = field(default_factory=ScstConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> Config:
    """Build a :class:`Config` from nested dicts, rejecting unknown keys, wrong types and impossible values."""
    return build_dataclass(Config, data or {}, source)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load ``path`` (YAML; None for the defaults) and apply ``--section.key=value`` overrides.

    Everything is checked here, before any work: an error names the file or the override.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            data = load_yaml(path.read_text(encoding="utf-8"), source) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the config file: {e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (data, encoder, ...) at the top level")
    overridden: dict[str, str] = {}  # dotted key -> the override that set it last
    for item in overrides or []:
        key = _apply_override(data, item)
        overridden = {k: v for k, v in overridden.items() if not k.startswith(key + ".")}
        overridden[key] = item
    return config_from_dict(data, source=Source(source, overridden))


def save_config(cfg: Config, path: str | Path) -> None:
    from nic.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _apply_override(data: dict[str, Any], item: str) -> str:
    """Apply ``--section.key=value`` (or ``--section.sub.key=value``, any depth) to the raw mapping ``data``;
    return the dotted key it set."""
    text = item[2:] if item.startswith("--") else item
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {item!r}: expected --section.key=value, e.g. --train.lr=1e-3")
    key, value = text.split("=", 1)
    keys = _legacy_override_keys(data, key.split("."))
    target = data
    for depth, name in enumerate(keys[:-1], 1):
        target = target.setdefault(name, {})
        if not isinstance(target, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(keys[:depth])!r} is not a mapping")
    try:
        target[keys[-1]] = load_yaml(value, f"override {item}") if value != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: invalid YAML value: {e}") from None
    return ".".join(keys)


def _legacy_override_keys(data: dict[str, Any], keys: list[str]) -> list[str]:
    """``decoder.<legacy key>`` overrides go to ``decoder.attention.<key>``, and either spelling
    replaces a flat value of that key in ``data`` (an old-style file), so an override always wins."""
    if keys[0] != "decoder" or keys[-1] not in LEGACY_ATTENTION_KEYS or keys[1:-1] not in ([], ["attention"]):
        return keys
    if isinstance(data.get("decoder"), dict):
        data["decoder"].pop(keys[-1], None)
    return ["decoder", "attention", keys[-1]]
