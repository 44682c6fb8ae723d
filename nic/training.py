"""Training: per-word negative log-likelihood, validation BLEU from real decoding, exact resume.

:func:`train` runs a whole job from a :class:`nic.config.Config`; the steps are small
functions over one explicit :class:`Run` object (``setup``, ``train_one_epoch``,
``validate``, ``save``, ``restore``), so nothing hides in globals.

A run directory ``<train.out_dir>/<train.name>/`` holds::

    config.yaml      the resolved configuration
    vocab.json       the vocabulary
    env.json         versions of python/torch/timm/..., the git commit, the launch command
    metrics.jsonl    one JSON line per epoch (losses, validation BLEU-1..4 and CIDEr-D, lr, time; SCST:
                     mean reward, baseline, sample entropy, truncated and bad-ending shares)
    last.pt          written every epoch (and every train.save_every steps): resume point
    best.pt          the epoch with the highest validation BLEU-4 at beam train.val_beam (train.best:
                     cider, CIDEr-D; last, the latest epoch)
    tb/              TensorBoard events, when tensorboard is installed
    train.lock       locked by the job writing the directory, one at a time (:mod:`nic.rundir`)

Objectives: ``train.objective: xe`` minimises the references' per-word NLL; ``scst``
(:mod:`nic.scst`, usually with ``train.init_from`` a cross-entropy run's ``best.pt``)
follows the CIDEr-D of sampled captions. Both go through the one loop below.

Exact resume: ``last.pt`` holds the weights, optimizer, LR scheduler, AMP scaler, epoch,
step, position inside the epoch, best score, early-stopping counter and every RNG state;
the data order of an epoch is a function of (seed, epoch) alone (:class:`EpochSampler`),
so a resumed run continues exactly as if it had never stopped (bitwise on CPU).

Distributed: under ``torchrun`` the decoder (and a fine-tuned encoder) is wrapped in
DistributedDataParallel; ``train.batch_size`` is the global batch, split evenly over the
processes; the loss of each process is weighted by its share of the global batch's words,
so the gradient equals the single-process gradient of the same global batch. Only rank 0
validates, logs and writes files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from nic.captioner import Captioner
from nic.checkpoint import load_weights, save_checkpoint
from nic.cider import corpus_cider_d
from nic.config import BEST_EPOCH, Config
from nic.data import make_loader
from nic.decoding import DecodeSettings, check_search_memory
from nic.distributed import (
    DistInfo,
    EpochSampler,
    all_reduce_sums,
    average_gradients,
    barrier,
    broadcast_object,
    init_distributed,
)
from nic.evaluation import decode_split
from nic.features import FeatureReader
from nic.model import CaptionModel, build_model, split_feature_reader, trunk_split
from nic.run import Run, TrainState
from nic.rundir import ResumePoint, check_resume_vocab, lock_run_dir, read_init, read_resume, write_run_files
from nic.runlog import RunLog
from nic.runtime import resolve_device, rng_state, set_rng_state, set_seed
from nic.schedules import build_scheduler, ss_probability
from nic.scst import ScstObjective
from nic.scst import describe as describe_scst
from nic.store import SPLITS as STORE_SPLITS
from nic.store import StoreReader, store_path
from nic.vocab import Vocabulary

PrepareData = Callable[..., Any]  # (DataConfig, *, progress: bool) -> store folder; see setup()

SPLITS = ("train", "val")  # the splits training reads
BEST_KEY = {"bleu": "val_BLEU-4", "cider": "val_CIDEr-D"}  # train.best (but "last") -> the validation score it keeps


# ------------------------------------------------------------------- set-up
def prepare_features(cfg: Config, model: CaptionModel, store_dir: Path, device: torch.device, *, finetuned: bool,
                     dist_info: DistInfo, progress: bool) -> dict[str, FeatureReader | None]:
    """Every split's feature cache for ``cfg`` (:func:`nic.model.split_feature_reader`); rank 0 computes."""
    readers: dict[str, FeatureReader | None] = {}
    for split in STORE_SPLITS:  # every split gets its feature cache
        kwargs = dict(uses_grid=model.decoder.uses_grid, finetuned=finetuned, device=device)
        path = store_path(store_dir, split)
        if dist_info.is_main:
            readers[split] = split_feature_reader(cfg, model.encoder, path, progress=progress, **kwargs)
        barrier(dist_info)
        if not dist_info.is_main:
            readers[split] = split_feature_reader(cfg, model.encoder, path, progress=False, **kwargs)
    return readers


def check_early(cfg: Config) -> None:
    """Settings that would otherwise fail late: checked before any data or feature work."""
    if cfg.train.best not in BEST_EPOCH:
        raise ValueError(f"train.best={cfg.train.best!r}; valid: bleu (highest validation BLEU-4), cider (highest "
                         "validation CIDEr-D), last (latest epoch)")
    DecodeSettings.from_eval(cfg.eval).replace(beam_size=cfg.train.val_beam)


def device_type(cfg: Config) -> str:
    auto_cuda = cfg.train.device == "auto" and torch.cuda.is_available()
    return "cuda" if auto_cuda or cfg.train.device.startswith("cuda") else "cpu"


def setup(cfg: Config, *, progress: bool = True, prepare_data: PrepareData | None = None,
          resume: ResumePoint | None = None) -> Run:
    """Build everything a run needs: data, features, model, optimizer, schedule.

    ``prepare_data(cfg.data, progress=...)``, when given, builds the stores first (rank 0
    only; ``train.py`` passes :func:`preprocess.build.prepare`); otherwise they must exist.
    ``resume``: its vocabulary must be the stores' (checked before any feature work).
    """
    check_early(cfg)
    dist_info = init_distributed(device_type(cfg))
    device = resolve_device(cfg.train.device, dist_info)
    set_seed(cfg.train.seed)
    if cfg.train.batch_size % dist_info.world_size:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} must be divisible by the "
                         f"{dist_info.world_size} processes")
    run_dir = Path(cfg.train.out_dir) / cfg.train.name
    if dist_info.is_main and prepare_data is not None:
        prepare_data(cfg.data, progress=progress)
    barrier(dist_info)
    store_dir = cfg.data.resolved_store_dir()
    vocab = Vocabulary.load(store_dir / "vocab.json")
    if resume is not None:
        check_resume_vocab(resume, vocab, store_dir / "vocab.json")
    for images, beam in ((cfg.eval.batch_size, max(cfg.eval.beam_sizes)), (cfg.train.batch_size, cfg.train.val_beam)):
        check_search_memory(images, beam, len(vocab), device, max_len=cfg.eval.max_len)  # before any training
    model = build_model(cfg, len(vocab), pad_id=vocab.pad_id)
    model.trunk_top = trunk_split(cfg, model.encoder)
    encoder_from_init = bool(cfg.train.init_from) and init_weights(
        model, read_init(cfg.train.init_from, vocab, store_dir / "vocab.json"), len(vocab))
    model.to(device)
    model.encoder.requires_grad_(not cfg.encoder.freeze)
    if cfg.encoder.freeze:
        model.encoder.eval()
    # frozen epochs read the final features; fine-tuning on a cached trunk switches to the trunk
    features = prepare_features(cfg, model, store_dir, device, finetuned=False, dist_info=dist_info,
                                progress=progress)
    trunk_features = None
    if model.trunk_top:
        trunk_features = prepare_features(cfg, model, store_dir, device, finetuned=True, dist_info=dist_info,
                                          progress=progress)
    stores = {s: StoreReader(store_path(store_dir, s)) for s in SPLITS}
    train_store = stores["train"]
    n_items, global_batch = items_per_step(cfg, train_store)
    per_rank = max(1, global_batch // dist_info.world_size)
    sampler = EpochSampler(n_items, seed=cfg.train.seed, rank=dist_info.rank, world_size=dist_info.world_size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,  # fused: one pass
                                 fused=device.type in ("cpu", "cuda"))  # over the memory, same update (rounding aside)
    steps_per_epoch = math.ceil(len(sampler) / per_rank)
    run = Run(cfg=cfg, dist=dist_info, device=device, run_dir=run_dir, vocab=vocab, model=model,
              optimizer=optimizer, scheduler=build_scheduler(optimizer, cfg, steps_per_epoch),
              scaler=torch.amp.GradScaler("cuda", enabled=False), stores=stores, features=features,
              sampler=sampler, per_rank_batch=per_rank, trunk_features=trunk_features,
              log=RunLog(run_dir, enabled=dist_info.is_main), encoder_from_init=encoder_from_init)
    run.scaler = torch.amp.GradScaler("cuda", enabled=run.amp_dtype == torch.float16)
    if cfg.train.objective == "scst":
        run.scst = ScstObjective(train_store.references(), vocab, cfg.scst, max_len=cfg.eval.max_len,
                                 seed=cfg.train.seed)
    wrap_ddp(run)
    return run


def items_per_step(cfg: Config, train_store: StoreReader) -> tuple[int, int]:
    """(items an epoch iterates, items per global batch): captions, or images (SCST, train.group_captions)."""
    if cfg.train.objective == "scst":  # images per batch; each samples its own captions
        return train_store.num_images, cfg.train.batch_size
    if cfg.train.group_captions:  # whole images per batch: about train.batch_size captions
        per_caption = train_store.num_captions / max(train_store.num_images, 1)
        return train_store.num_images, max(1, round(cfg.train.batch_size / per_caption))
    return train_store.num_captions, cfg.train.batch_size


def init_weights(model: CaptionModel, point: ResumePoint, vocab_size: int) -> bool:
    """train.init_from: the decoder's (and a fine-tuned encoder's) weights; True when the encoder's came too."""
    load_weights(model.decoder, point.checkpoint["decoder"], source=point.path, part="decoder", vocab_size=vocab_size)
    if point.checkpoint.get("encoder") is not None:
        load_weights(model.encoder, point.checkpoint["encoder"], source=point.path, part="encoder")
    elif point.checkpoint.get("encoder_changes") is not None:  # an exported fine-tuned model
        load_weights(model.encoder, point.checkpoint["encoder_changes"], source=point.path, part="encoder",
                     partial=True)
    else:
        return False
    return True


def wrap_ddp(run: Run) -> None:
    if run.dist.enabled and run.scst is None:  # SCST averages its gradients itself (average_gradients)
        ids = [run.device.index] if run.device.type == "cuda" else None
        run.ddp = nn.parallel.DistributedDataParallel(run.model, device_ids=ids)


def start_finetuning(run: Run) -> None:
    """Unfreeze the encoder's top blocks (encoder.finetune_blocks) with their own learning rate."""
    e = run.cfg.encoder
    run.encoder.set_trainable(e.finetune_blocks)
    params = [p for p in run.encoder.parameters() if p.requires_grad]
    # the new group follows the same schedule (LambdaLR keeps one factor function per group)
    factor = run.scheduler.lr_lambdas[0]
    run.optimizer.add_param_group({"params": params, "lr": e.finetune_lr * factor(run.scheduler.last_epoch),
                                   "initial_lr": e.finetune_lr, "weight_decay": run.cfg.train.weight_decay})
    run.scheduler.base_lrs.append(e.finetune_lr)
    run.scheduler.lr_lambdas.append(factor)
    # from now on the head changes: its input comes from the trunk cache, or from images
    run.features = run.trunk_features if run.trunk_features is not None else {k: None for k in run.features}
    run.state.finetuning = True
    wrap_ddp(run)


def should_finetune(run: Run) -> bool:
    e = run.cfg.encoder
    return (not run.state.finetuning and e.finetune_blocks != 0 and e.finetune_after > 0
            and run.state.epoch >= e.finetune_after)


# ------------------------------------------------------------------ the loop
def batches_per_epoch(run: Run) -> int:
    return math.ceil(-(-run.sampler.n // run.dist.world_size) / run.per_rank_batch)


def train_one_epoch(run: Run, *, progress: bool = True) -> float:
    """Train one epoch (from ``state.batch_in_epoch`` when resuming); return its mean per-word NLL."""
    cfg, state = run.cfg, run.state
    per_rank = run.per_rank_batch
    run.sampler.set_epoch(state.epoch, skip=state.batch_in_epoch * per_rank)
    loader = make_loader(run.dataset("train"), batch_size=per_rank, shuffle=False, sampler=run.sampler,
                         num_workers=cfg.data.num_workers)
    run.model.train()
    if not state.finetuning:
        run.encoder.eval()
    module = run.ddp or run.model
    ss_prob = ss_probability(cfg, state.epoch)
    if state.batch_in_epoch == 0:
        state.epoch_nll = state.epoch_words = 0.0
        state.epoch_sums = {}
    bar = tqdm(loader, desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}", unit="batch",
               disable=not (progress and run.dist.is_main), leave=False, initial=state.batch_in_epoch,
               total=state.batch_in_epoch + len(loader))
    for batch in bar:
        loss, n_local, sums = batch_loss(run, module, batch, ss_prob)
        # one all-reduce per step: words, the logged sums and the loss of every process, so that a
        # non-finite loss anywhere stops every process at the same step
        n_global, *sums_global, loss_sum = all_reduce_sums([n_local, *sums.values(), float(loss.detach())],
                                                           run.dist, run.device)
        nll_global = sums_global[0]
        if not math.isfinite(loss_sum):
            raise FloatingPointError(
                f"non-finite loss ({float(loss.detach())}) at step {state.step}, epoch {state.epoch + 1}; "
                f"the last good checkpoint {run.run_dir / 'last.pt'} is kept. Lower train.lr, raise "
                "train.grad_clip, or check the input features")
        # weight by this process's share of the global batch's words (DDP averages gradients)
        scaled = loss * (n_local * run.dist.world_size / max(n_global, 1))
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(scaled).backward()
        if run.scst is not None:
            average_gradients(run.model, run.dist)
        if cfg.train.grad_clip > 0:
            run.scaler.unscale_(run.optimizer)
            for group in run.optimizer.param_groups:  # per group: a fine-tuned CNN's large gradients
                nn.utils.clip_grad_norm_(group["params"], cfg.train.grad_clip)  # never shrink the decoder's
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        state.step += 1
        state.batch_in_epoch += 1
        state.epoch_nll += nll_global
        state.epoch_words += n_global
        for key, value in zip(sums, sums_global, strict=True):
            state.epoch_sums[key] = state.epoch_sums.get(key, 0.0) + value
        if cfg.train.log_every and state.step % cfg.train.log_every == 0:
            extra = describe_scst(dict(zip(sums, sums_global, strict=True)), n_global) if run.scst else {}
            run.log.step(step=state.step, epoch=state.epoch, loss=nll_global / max(n_global, 1),
                         lr=run.optimizer.param_groups[0]["lr"], **extra)
        bar.set_postfix(loss=f"{state.epoch_nll / max(state.epoch_words, 1):.3f}",
                        lr=f"{run.optimizer.param_groups[0]['lr']:.2e}")
        if cfg.train.save_every and state.step % cfg.train.save_every == 0:
            save(run, best=False)
        if cfg.train.max_steps and state.step >= cfg.train.max_steps:
            break
    return state.epoch_nll / max(state.epoch_words, 1)


def batch_loss(run: Run, module: nn.Module, batch: dict[str, torch.Tensor], ss_prob: float
               ) -> tuple[torch.Tensor, int, dict[str, float]]:
    """(loss: mean over this process's words, their number, sums to log: the first is the loss summed over them).

    Cross-entropy: the references' words; SCST: the sampled captions' words (:mod:`nic.scst`).
    """
    if run.scst is not None:
        pooled, grid = run.model.features(batch, run.device)
        loss, n_words, stats = run.scst(run.decoder, pooled, grid, batch["index"].tolist(), run.state.epoch)
        return loss, n_words, {"loss": float(loss.detach()) * n_words, **stats}
    n_local = int((batch["captions"][:, 1:] != run.vocab.pad_id).sum())
    with run.autocast():
        loss, parts = module(batch, ss_prob)
    return loss, n_local, {"nll": parts["nll"] * n_local}


@torch.inference_mode()
def validation_loss(run: Run) -> float:
    run.model.eval()
    loader = make_loader(run.dataset("val"), batch_size=run.per_rank_batch * run.dist.world_size, shuffle=False,
                         num_workers=run.cfg.data.num_workers)
    total = count = 0.0
    for batch in loader:
        _, parts = run.model(batch)  # the per-word NLL part (not e.g. attention's regulariser)
        n = int((batch["captions"][:, 1:] != run.vocab.pad_id).sum())
        total, count = total + parts["nll"] * n, count + n
    return total / max(count, 1)


def validate(run: Run) -> dict[str, Any]:
    """Validation loss and BLEU-1..4 from real beam-search decoding (rank 0 only)."""
    cfg = run.cfg
    captioner = Captioner(run.encoder, run.decoder, run.vocab, config=cfg, device=run.device)
    settings = captioner.settings.replace(beam_size=cfg.train.val_beam)  # the checkpoint's, at the val beam
    decoded = decode_split(captioner, run.stores["val"], run.features["val"], settings, limit=cfg.train.val_images,
                           batch_size=cfg.eval.batch_size)
    val_loss = validation_loss(run)
    bleu = decoded.bleu().as_dict()
    cider, _ = corpus_cider_d(decoded.best, decoded.references)  # frequencies from these images' references
    return {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50)),
            **{f"val_{k}": v for k, v in bleu.items()}, "val_CIDEr-D": cider, "example": " ".join(decoded.best[0])}


# ------------------------------------------------------------- checkpoints
def checkpoint_payload(run: Run) -> dict[str, Any]:
    return {
        "config": run.cfg.to_dict(),
        "vocab": run.vocab.to_dict(),
        "encoder_name": run.encoder.name,
        "decoder": run.decoder.state_dict(),
        "encoder": (run.encoder.state_dict() if run.state.finetuning or run.encoder_from_init
                    or not run.cfg.encoder.freeze else None),
        "training": {"state": asdict(run.state), "optimizer": run.optimizer.state_dict(),
                     "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
                     "rng": rng_state()},
    }


def save(run: Run, *, best: bool) -> None:
    if not run.dist.is_main:
        return
    payload = checkpoint_payload(run)
    save_checkpoint(run.run_dir / "last.pt", payload)
    if best:
        save_checkpoint(run.run_dir / "best.pt", payload)


def restore(run: Run, point: ResumePoint) -> None:
    """Load weights, optimizer, scheduler, scaler, progress and RNG states from the checkpoint."""
    ckpt, training = point.checkpoint, point.checkpoint["training"]
    run.state = TrainState(**training["state"])
    if run.state.finetuning:
        run.state.finetuning = False
        start_finetuning(run)
    load_weights(run.decoder, ckpt["decoder"], source=point.path, part="decoder", vocab_size=len(run.vocab))
    if ckpt.get("encoder") is not None:
        load_weights(run.encoder, ckpt["encoder"], source=point.path, part="encoder")
    run.optimizer.load_state_dict(training["optimizer"])
    run.scheduler.load_state_dict(training["scheduler"])
    run.scaler.load_state_dict(training["scaler"])
    set_rng_state(training["rng"])


def train(cfg: Config, *, resume: str | Path | None = None, progress: bool = True,
          prepare_data: PrepareData | None = None) -> Path:
    """Train the model ``cfg`` describes; return the run directory.

    ``prepare_data``: builds the stores first when given (see :func:`setup`).

    ``resume``: a run directory (or checkpoint) to continue from; ``cfg`` should then be that
    run's saved config (``<run>/config.yaml``), possibly with overrides such as more epochs,
    but not of the data it trains on (:mod:`nic.rundir`). The run directory is locked for
    the whole job: a second job writing it fails at once.
    """
    check_early(cfg)
    point = read_resume(resume, cfg)
    dist_info = init_distributed(device_type(cfg))
    resolve_device(cfg.train.device, dist_info)  # the lock's broadcast runs on this process's device
    with lock_run_dir(Path(cfg.train.out_dir) / cfg.train.name, dist_info):
        run = setup(cfg, progress=progress, prepare_data=prepare_data, resume=point)
        if point is not None:
            restore(run, point)
        resumed_at = (run.state.epoch, run.state.step) if point else None
        run.log.start(resumed_at=resumed_at, tensorboard=cfg.train.tensorboard)
        if run.dist.is_main:
            write_run_files(run.run_dir, cfg, run.vocab)
            n_params = sum(p.numel() for p in run.decoder.parameters())
            print(f"run {run.run_dir}: {run.stores['train'].num_captions} training captions, vocab {len(run.vocab)}, "
                  f"{cfg.decoder.type} decoder ({n_params / 1e6:.1f}M params), device {run.device}"
                  f"{f', {run.dist.world_size} processes' if run.dist.enabled else ''}"
                  f"{f', resuming after epoch {run.state.epoch} step {run.state.step}' if point else ''}")
        fit(run, progress=progress)
        run.log.close()
    return run.run_dir


def fit(run: Run, *, progress: bool = True) -> None:
    cfg, state = run.cfg, run.state
    while state.epoch < cfg.train.epochs:
        if should_finetune(run):
            start_finetuning(run)
        t0 = time.time()
        train_loss = train_one_epoch(run, progress=progress)
        if state.batch_in_epoch < batches_per_epoch(run):  # stopped by train.max_steps
            save(run, best=False)
            break
        state.epoch += 1
        state.batch_in_epoch = 0
        stop = False
        if run.dist.is_main:
            scst = {f"scst_{k}": v for k, v in describe_scst(state.epoch_sums, state.epoch_words).items()}
            record = {"epoch": state.epoch, "step": state.step, "train_loss": train_loss,
                      **(scst if run.scst is not None else {}), **validate(run),
                      "lr": run.optimizer.param_groups[0]["lr"], "epoch_time_s": time.time() - t0}
            score = record[BEST_KEY.get(cfg.train.best, "val_BLEU-4")]
            improved = score > state.best_score
            if improved:
                state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch, 0
            else:
                state.bad_epochs += 1
            run.log.epoch(record)
            save(run, best=improved or cfg.train.best == "last")
            if progress:
                reward = f"reward {record['scst_reward']:.3f}  " if run.scst is not None else ""
                print(f"epoch {state.epoch:3d}  train {train_loss:.3f}  {reward}val {record['val_loss']:.3f}  "
                      f"BLEU-4@{cfg.train.val_beam} {record['val_BLEU-4']:.4f}  CIDEr-D {record['val_CIDEr-D']:.3f}"
                      f"{' *' if improved else '  '}  "
                      f"{record['epoch_time_s']:.0f}s  \"{record['example']}\"")
            stop = bool(cfg.train.patience and state.bad_epochs >= cfg.train.patience)
            if stop and progress:
                print(f"early stop: no validation {cfg.train.best} improvement for {state.bad_epochs} epochs "
                      f"(best {state.best_score:.4f} at epoch {state.best_epoch})")
        state.best_score, state.best_epoch, state.bad_epochs, stop = broadcast_object(
            (state.best_score, state.best_epoch, state.bad_epochs, stop), run.dist)
        if stop or (cfg.train.max_steps and state.step >= cfg.train.max_steps):
            break
