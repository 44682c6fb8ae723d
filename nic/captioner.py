"""A trained captioner: encoder + decoder + vocabulary, and the ONE decoding function.

``caption.py``, the BLEU report and validation during training all decode through
:meth:`Captioner.decode`, so the numbers reported during training are the numbers a user
gets (never teacher-forced outputs).
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from nic import search
from nic.checkpoint import checkpoint_file, feature_input, load_checkpoint, load_weights, require_entries
from nic.config import Config, config_from_dict
from nic.decoders import StepDecoderBase, build_decoder
from nic.decoding import METHODS, DecodeSettings
from nic.encoders import Encoder, load_pretrained
from nic.ensemble import EnsembleDecoder
from nic.images import DEFAULT_MAX_PIXELS, load_image
from nic.model import batch_features, build_model
from nic.vocab import Vocabulary

__all__ = ["METHODS", "Caption", "Captioner", "DecodeSettings", "UnreadableImage", "decoded_images"]


class UnreadableImage(ValueError):
    """An image file that cannot be captioned; ``path`` and ``cause`` (the original error) say which and why."""

    def __init__(self, path: Path, cause: Exception) -> None:
        super().__init__(f"{path}: {type(cause).__name__}: {cause}")
        self.path, self.cause = path, cause


@dataclass
class Caption:
    """One decoded caption."""

    words: list[str]
    logprob: float
    score: float
    finished: bool
    alphas: Tensor | None = None  # (steps, P) attention weights, when the decoder has them

    @property
    def text(self) -> str:
        return " ".join(self.words)


class Captioner:
    def __init__(self, encoder: Encoder, decoder: StepDecoderBase, vocab: Vocabulary, *,
                 config: Config | None = None, device: str | torch.device = "cpu",
                 encoder_trained: bool = False) -> None:
        self.device = torch.device(device)
        self.encoder_trained = encoder_trained  # the checkpoint carried CNN weights (fine-tuned)
        self.encoder = encoder.to(self.device).eval()
        self.decoder = decoder.to(self.device).eval()
        self.vocab = vocab
        self.config = config or Config()

    @property
    def settings(self) -> DecodeSettings:
        """How this model's captions were scored: its config's ``eval`` section (beam, length penalty, ...)."""
        return DecodeSettings.from_eval(self.config.eval)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        encoder_weights: str | None = None) -> Captioner:
        """The model of a checkpoint file or run directory (its ``best.pt``), ready to caption.

        The file is memory-mapped (a run's optimizer state is never read) and the model is built
        on the meta device, so the loaded weights become its parameters with no throw-away
        random initialisation and no second copy.
        """
        path = checkpoint_file(path)  # the file errors name
        ckpt = load_checkpoint(path, mmap=True)
        require_entries(ckpt, ("config", "vocab", "encoder_name", "decoder"), path)
        cfg = config_from_dict(ckpt["config"], source=f"{path} (config)")
        vocab = Vocabulary.from_dict(ckpt["vocab"], source=f"{path} (vocab)")
        changes = ckpt.get("encoder_changes")  # an exported fine-tuned model: only what differs from the package
        trained_encoder = ckpt.get("encoder") is not None or changes is not None
        with shapes_only():  # the weights below become the parameters
            model = build_model(cfg, len(vocab), pad_id=vocab.pad_id, encoder_name=ckpt["encoder_name"],
                                encoder_weights=encoder_weights, pretrained=False)
        if ckpt.get("encoder") is not None:
            load_weights(model.encoder, ckpt["encoder"], source=path, part="encoder", assign=True)
            model.encoder.to_channels_last()
        else:
            load_pretrained(model.encoder, encoder_weights or cfg.encoder.weights)
            if changes is not None:
                load_weights(model.encoder, changes, source=path, part="encoder", partial=True)
        load_weights(model.decoder, ckpt["decoder"], source=path, part="decoder", vocab_size=len(vocab), assign=True)
        decoder = model.decoder
        if ckpt.get("members"):  # an exported ensemble (nic.checkpoint.export_model with several sources)
            decoder = EnsembleDecoder([decoder, *cls._members(ckpt["members"], cfg, model.encoder, vocab, path)])
        _check_materialised(model.encoder, decoder, path)
        return cls(model.encoder, decoder, vocab, config=cfg, device=device, encoder_trained=trained_encoder)

    @staticmethod
    def _members(members: Any, first: Config, encoder: Encoder, vocab: Vocabulary,
                 path: Path) -> list[StepDecoderBase]:
        """The further decoders of an exported ensemble, each from its own config, over ``encoder``'s features."""
        if not isinstance(members, list):
            raise ValueError(f"{path}: 'members' must be a list of {{config, decoder}}")
        decoders = []
        for i, member in enumerate(members):
            where = f"{path} (members[{i}])"
            if not isinstance(member, dict):
                raise ValueError(f"{where}: not a {{config, decoder}} entry")
            require_entries(member, ("config", "decoder"), where)
            cfg = config_from_dict(member["config"], source=f"{where}.config")
            mine, theirs = (feature_input(c.to_dict(), encoder.spec.name) for c in (cfg, first))
            if mine != theirs:
                raise ValueError(f"{where}: encoder (name, grid_size, grid_below_top, image_size) {mine} differs "
                                 f"from the first model's {theirs}")
            with shapes_only():
                decoder = build_decoder(cfg.decoder, vocab_size=len(vocab), feature_dim=encoder.feature_dim,
                                        grid_dim=encoder.grid_dim, pad_id=vocab.pad_id)
            load_weights(decoder, member["decoder"], source=where, part="decoder", vocab_size=len(vocab), assign=True)
            decoders.append(decoder)
        return decoders

    @classmethod
    def from_checkpoints(cls, paths: str | Path | Sequence[str | Path], *, device: str | torch.device = "cpu",
                         encoder_weights: str | None = None) -> Captioner:
        """One checkpoint (:meth:`from_checkpoint`), or an ensemble of several (:mod:`nic.ensemble`).

        The members must share the vocabulary and the encoder's input and features; the first
        checkpoint's config gives the decoding settings. Raises ``ValueError`` naming the
        checkpoint that does not fit.
        """
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise ValueError("no checkpoint given")
        parts = [cls.from_checkpoint(p, device=device, encoder_weights=encoder_weights) for p in paths]
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        for path, part in zip(paths, parts):
            if part.encoder_trained:
                raise ValueError(f"{path}: its CNN was fine-tuned; an ensemble's members must read the features "
                                 "of one frozen encoder")
            if part.vocab.hash() != first.vocab.hash():
                raise ValueError(f"{path}: its vocabulary differs from {paths[0]}'s; ensemble models trained "
                                 "on the same stores")
            mine, theirs = (feature_input(c.config.to_dict(), c.encoder.spec.name) for c in (part, first))
            if mine != theirs:
                raise ValueError(f"{path}: encoder (name, grid_size, grid_below_top, image_size) {mine} differs "
                                 f"from {paths[0]}'s {theirs}")
        decoder = EnsembleDecoder([p.decoder for p in parts])
        return cls(first.encoder, decoder, first.vocab, config=first.config, device=device)

    # ------------------------------------------------------------------ decoding
    @torch.inference_mode()
    def decode(self, pooled: Tensor, grid: Tensor | None = None, settings: DecodeSettings | None = None, *,
               generator: torch.Generator | None = None, **overrides: Any) -> list[list[Caption]]:
        """Decode features (pooled (B, F), grid (B, P, F) | None) into ``n_best`` captions per image.

        ``settings``: how (default :attr:`settings`, the checkpoint's); keyword ``overrides``
        change single fields of it (``beam_size=3``; a ``None`` value keeps the setting).
        """
        s = (settings or self.settings).replace(**overrides)
        was_training = self.decoder.training
        self.decoder.eval()
        pooled = pooled.to(self.device, torch.float32)
        grid = grid.to(self.device, torch.float32) if grid is not None else None
        ids = {"start_id": self.vocab.start_id, "end_id": self.vocab.end_id, "pad_id": self.vocab.pad_id,
               "max_len": s.max_len}
        if s.method == "beam":
            hyps = search.beam_search(self.decoder, pooled, grid, beam_size=s.beam_size,
                                      length_penalty=s.length_penalty, n_best=s.n_best, **ids)
        elif s.method == "greedy":
            hyps = [[h] for h in search.greedy_search(self.decoder, pooled, grid, **ids)]
        else:
            hyps = [[h] for h in search.sample(self.decoder, pooled, grid, temperature=s.temperature,
                                               top_k=s.top_k, generator=generator, **ids)]
        self.decoder.train(was_training)
        return [[self._caption(h) for h in per_image] for per_image in hyps]

    @torch.inference_mode()
    def score(self, pooled: Tensor, grid: Tensor | None, captions: Sequence[Sequence[str]]) -> Tensor:
        """log P(caption | image) of given captions (B,), <end> included: caption b of image b.

        Teacher-forced through the decoder step API (so every decoder can be scored); words
        outside the vocabulary count as ``<unk>``. For re-ranking and forced-choice tests.
        """
        was_training = self.decoder.training
        self.decoder.eval()
        ids = [self.vocab.encode(list(c)) for c in captions]
        tokens = torch.full((len(ids), max(map(len, ids))), self.vocab.pad_id, dtype=torch.long)
        for b, row in enumerate(ids):
            tokens[b, : len(row)] = torch.tensor(row)
        tokens = tokens.to(self.device)
        grid = grid.to(self.device, torch.float32) if grid is not None and self.uses_grid else None
        state = self.decoder.init_state(pooled.to(self.device, torch.float32), grid)
        total = torch.zeros(len(ids), device=self.device)
        for t in range(tokens.shape[1] - 1):
            log_probs, state = self.decoder.step(tokens[:, t], state)  # (B, V)
            target = tokens[:, t + 1]
            total += log_probs.gather(1, target[:, None]).squeeze(1) * (target != self.vocab.pad_id)
        self.decoder.train(was_training)
        return total.cpu()

    def _caption(self, h: search.Hypothesis) -> Caption:
        return Caption(words=self.vocab.decode(h.tokens), logprob=h.logprob, score=h.score,
                       finished=h.finished, alphas=h.alphas)

    @torch.inference_mode()
    def features(self, batch: dict[str, Tensor] | Tensor, trunk_top: int = 0) -> tuple[Tensor, Tensor | None]:
        """(pooled (B, F), grid (B, P, C) | None) of uint8 images (B, 3, H, W), or of a batch of
        :mod:`nic.data` (images, cached features or a cached trunk below ``trunk_top`` stages).
        The grid is None when the decoder does not attend."""
        if isinstance(batch, Tensor):
            batch = {"images": batch}
        return batch_features(self.encoder, batch, device=self.device, trunk_top=trunk_top,
                              with_grid=self.uses_grid)

    def caption_images(self, images: Tensor, settings: DecodeSettings | None = None,
                       **kwargs: Any) -> list[list[Caption]]:
        pooled, grid = self.features(images)
        return self.decode(pooled, grid, settings, **kwargs)

    def caption_files(self, paths: Sequence[str | Path], settings: DecodeSettings | None = None, *,
                      batch_size: int = 16, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                      on_error: Callable[[Path, Exception], None] | None = None, workers: int = 2,
                      **kwargs: Any) -> Iterable[tuple[Path, list[Caption]]]:
        """Caption image files of any mode (decoded and resized like the stores), in order.

        Each file is read on its own (:func:`nic.images.load_image`, ``max_pixels``: None for no
        limit): one that cannot be read (missing, not an image, truncated, over ``max_pixels``)
        raises :class:`UnreadableImage` naming it, or, with ``on_error``, is handed to
        ``on_error(path, error)`` and skipped while every other file is captioned.

        A pipeline: ``workers`` threads decode the files (Pillow releases the GIL) ahead of the
        batch of ``batch_size`` images that the encoder and the batched search are working on.
        An image's captions do not depend on the batch it is in.
        """
        size = self.config.data.image_size
        chunk: list[Path] = []
        images: list[Tensor] = []
        for path, image in decoded_images(paths, size, max_pixels=max_pixels, workers=workers,
                                          ahead=2 * batch_size):
            if isinstance(image, Exception):  # the per-file boundary: Pillow raises many kinds on a bad file
                if on_error is None:
                    raise UnreadableImage(path, image) from image
                on_error(path, image)
                continue
            chunk.append(path)
            images.append(image)
            if len(chunk) == batch_size:
                yield from zip(chunk, self.caption_images(torch.stack(images), settings, **kwargs))  # (B, 3, S, S)
                chunk, images = [], []
        if chunk:
            yield from zip(chunk, self.caption_images(torch.stack(images), settings, **kwargs))

    def quantize_int8(self) -> Captioner:
        """int8 dynamic quantization (fbgemm, CPU): the decoder's Linear and LSTM layers keep int8 weights and
        quantize their inputs on the fly. The CNN is left in float32 (dynamic quantization covers no
        convolution). Captions can differ from float32's: see docs/benchmarks.md for its BLEU. Returns self."""
        from torch.ao.quantization import quantize_dynamic

        if self.device.type != "cpu":
            raise ValueError(f"int8 dynamic quantization runs on the CPU only, not on {self.device}")
        if "fbgemm" in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = "fbgemm"
        with warnings.catch_warnings():  # torch announces that eager-mode quantization moves to torchao
            warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=UserWarning)
            warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated",
                                    category=DeprecationWarning)
            self.decoder = quantize_dynamic(self.decoder, {nn.Linear, nn.LSTM, nn.LSTMCell}, dtype=torch.qint8)
        return self

    @property
    def uses_grid(self) -> bool:
        return bool(getattr(self.decoder, "uses_grid", False))


class _SkipInit(TorchFunctionMode):
    """``torch.nn.init.*`` calls return their tensor untouched (no random draws)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else next(iter((kwargs or {}).values()))
        return func(*args, **(kwargs or {}))


@contextmanager
def shapes_only() -> Iterator[None]:
    """Modules built inside have their parameters on the meta device (shapes, no memory) and skip their
    random initialisation (which on the meta device would also import torch's compiler, seconds of start-up);
    ``load_state_dict(..., assign=True)`` then gives them real tensors."""
    with torch.device("meta"), _SkipInit():
        yield


def decoded_images(paths: Sequence[str | Path], size: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                   workers: int = 2, ahead: int = 32) -> Iterator[tuple[Path, Tensor | Exception]]:
    """(path, uint8 image (3, size, size) or the error that reading it raised) for each path, in order,
    decoded by ``workers`` threads at most ``ahead`` files in advance of the caller."""
    def read(path: Path) -> Tensor:
        return torch.from_numpy(load_image(path, size, max_pixels=max_pixels))

    todo = iter([Path(p) for p in paths])
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="nic-decode")
    pending: deque[tuple[Path, Future[Tensor]]] = deque()
    try:
        while True:
            while len(pending) < max(1, ahead) and (path := next(todo, None)) is not None:
                pending.append((path, pool.submit(read, path)))
            if not pending:
                return
            path, future = pending.popleft()
            try:
                image: Tensor | Exception = future.result()
            except Exception as e:  # handed to the caller, who decides (skip and report, or raise)
                image = e
            yield path, image
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _check_materialised(encoder: nn.Module, decoder: nn.Module, path: Path) -> None:
    """Every tensor of a model built on the meta device got real values (a buffer outside the state dict would not)."""
    for part, module in (("encoder", encoder), ("decoder", decoder)):
        meta = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if meta:
            raise ValueError(f"{path}: the {part} tensors {', '.join(meta[:3])} have no values after loading the "
                             "weights (a buffer that is not saved in the state dict?)")
