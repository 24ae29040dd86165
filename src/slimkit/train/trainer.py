"""``fit`` and ``evaluate``: the training loop every compression technique reuses.

Design points:

- The learning rate is a pure function of the optimizer step, data order and augmentation
  are pure functions of ``(seed, epoch, batch)``, and the torch RNG state is saved with
  every checkpoint, so a run resumed from ``last.safetensors`` (written at each epoch and on
  Ctrl-C) ends with the same weights as an uninterrupted one.
- Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in DDP (gloo on CPU), each
  rank reads a disjoint shard, evaluation is sharded and all-reduced, and only rank 0
  writes files.
- Hooks (:class:`~slimkit.train.callbacks.Callback`) let compression add loss terms and act
  after backward / after each step.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from slimkit.data import BatchLoader, DatasetBundle
from slimkit.errors import FileFormatError, InvalidArgumentError
from slimkit.train import distributed as dist_utils
from slimkit.train.callbacks import Callback
from slimkit.train.checkpoint import (
    CheckpointMeta,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from slimkit.train.ema import ModelEMA
from slimkit.train.metrics import EvalResult, confusion_update, plot_confusion, result_from_counts
from slimkit.train.rundir import RunDir
from slimkit.train.schedule import SCHEDULES, lr_factor

__all__ = ["TrainConfig", "FitResult", "Trainer", "fit", "evaluate", "bf16_supported"]

LAST = "last.safetensors"
FINAL = "model.safetensors"


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (all JSON-serialisable; stored in checkpoints).

    Attributes:
        epochs: passes over the training split.
        batch_size: samples per optimizer step per process.
        optimizer: ``sgd`` (Nesterov momentum) or ``adamw``.
        lr: peak learning rate (default: 0.1 x batch/256 for SGD, 2e-3 for AdamW).
        momentum: SGD momentum.
        weight_decay: applied to conv/linear weights only, never to norms and biases
            (default: 5e-4 for SGD, 0.05 for AdamW).
        schedule: ``cosine``, ``onecycle`` or ``constant``; ``warmup_epochs`` of linear
            warm-up (fractions allowed).
        label_smoothing: cross-entropy smoothing in [0, 1).
        grad_clip: max global gradient norm (None: no clipping).
        ema_decay: keep an EMA of the weights and evaluate/save it (None: off).
        channels_last: NHWC memory format (default on: about 1.4x faster training of
            depthwise-heavy models on these CPUs, measured on small-input MobileNetV2).
        precision: ``fp32``, ``bf16`` (CPU autocast; error if unsupported) or ``auto``.
        seed: seeds data order, augmentation and the torch RNG.
        backbone_lr_mult: learning-rate multiplier of everything but the classifier.
        eval_every: validate every N epochs (and always after the last).
        augment: override the dataset's augmentation preset.
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    ema_decay: float | None = None
    channels_last: bool = True
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    seed: int = 0
    backbone_lr_mult: float = 1.0
    eval_every: int = 1
    augment: str | None = None

    def resolved(self) -> TrainConfig:
        """A copy with defaults filled in and values checked."""
        c = TrainConfig(**asdict(self))
        if c.epochs < 1 or c.batch_size < 1:
            raise InvalidArgumentError(
                f"epochs and batch_size must be >= 1, got {c.epochs} and {c.batch_size}"
            )
        if c.optimizer not in ("sgd", "adamw"):
            raise InvalidArgumentError(f"optimizer must be sgd or adamw, got {c.optimizer!r}")
        if c.schedule not in SCHEDULES:
            raise InvalidArgumentError(f"schedule must be one of {SCHEDULES}, got {c.schedule!r}")
        if c.lr is None:
            c.lr = 0.1 * c.batch_size / 256 if c.optimizer == "sgd" else 2e-3
        if c.weight_decay is None:
            c.weight_decay = 5e-4 if c.optimizer == "sgd" else 0.05
        if c.lr <= 0 or c.weight_decay < 0:
            raise InvalidArgumentError(f"need lr > 0 and weight_decay >= 0, got {c.lr}, "
                                       f"{c.weight_decay}")
        if not 0 <= c.label_smoothing < 1:
            raise InvalidArgumentError(f"label_smoothing must be in [0, 1), got "
                                       f"{c.label_smoothing}")
        if c.precision not in ("fp32", "bf16", "auto"):
            raise InvalidArgumentError(f"precision must be fp32, bf16 or auto, got "
                                       f"{c.precision!r}")
        if c.precision == "bf16" and not bf16_supported():
            raise InvalidArgumentError(
                "this CPU has no native bf16 (avx512_bf16/amx); use --precision fp32 or auto"
            )
        return c


def bf16_supported() -> bool:
    """Whether the CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    from slimkit.analysis.latency import cpu_info

    isa = set(cpu_info()["isa"])
    return bool(isa & {"avx512_bf16", "amx_bf16"})


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained model (EMA weights if EMA was on), per-epoch
    history, test metrics, where the checkpoint went, and timing."""

    model: nn.Module
    history: list[dict[str, Any]]
    test: EvalResult | None
    checkpoint: Path | None
    wall_time_s: float
    train_samples_per_s: float
    config: TrainConfig = field(default_factory=TrainConfig)
    rank: int = 0


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Decay for weights of conv/linear layers only; the classifier keeps the full lr."""
    head_ids = set()
    get_cls = getattr(model, "get_classifier", None)
    if callable(get_cls):
        head_ids = {id(p) for p in get_cls().parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        decay = p.ndim > 1
        head = id(p) in head_ids
        groups.setdefault((decay, head), []).append(p)
    out = []
    for (decay, head), params in sorted(groups.items()):
        lr_mult = 1.0 if head or not head_ids else cfg.backbone_lr_mult
        out.append({"params": params, "weight_decay": cfg.weight_decay if decay else 0.0,
                    "lr_mult": lr_mult, "name": f"{'head' if head else 'body'}"
                    f"{'' if decay else '_no_decay'}"})
    return out


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor],
                                                             dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, state: dict[str, torch.Tensor],
                       info: dict[str, Any]) -> None:
    sd = opt.state_dict()
    per_param: dict[int, dict[str, Any]] = {}
    for key, v in state.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            per_param.setdefault(int(idx), {})[name] = v.clone()
    for idx, scal in info.get("scalars", {}).items():
        per_param.setdefault(int(idx), {}).update(scal)
    sd["state"] = per_param
    opt.load_state_dict(sd)


def _rng_tensors() -> dict[str, torch.Tensor]:
    return {"rng.torch": torch.get_rng_state()}


def _rng_json() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}


def _restore_rng(state: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    if "rng.torch" in state:
        torch.set_rng_state(state["rng.torch"])
    py = info.get("python")
    if py:
        random.setstate((py[0], tuple(py[1]), py[2]))
    npy = info.get("numpy")
    if npy:
        np.random.set_state((npy[0], np.array(npy[1], dtype=np.uint32), *npy[2:]))


class Trainer:
    """The state of one training run; :func:`fit` is the usual entry point.

    Attributes available to callbacks: ``model`` (possibly DDP-wrapped), ``module`` (the
    bare model), ``optimizer``, ``config``, ``epoch``, ``step``, ``data``, ``rank``,
    ``world_size``, ``teacher`` slots etc. set by callbacks themselves.
    """

    def __init__(self, model: nn.Module, data: DatasetBundle, config: TrainConfig,
                 callbacks: Sequence[Callback] = (), run_dir: RunDir | None = None,
                 progress: bool | None = None) -> None:
        self.config = config.resolved()
        self.data = data
        self.callbacks = list(callbacks)
        self.run_dir = run_dir
        self.dist = dist_utils.current()
        self.rank, self.world_size = self.dist.rank, self.dist.world_size
        self.is_main = self.rank == 0
        self.module = model
        self.progress = (sys.stdout.isatty() if progress is None else progress) and self.is_main
        cfg = self.config
        self.autocast = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_supported())
        if cfg.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.model: nn.Module = dist_utils.wrap(self.module, self.dist)
        self.optimizer = _make_optimizer(self.module, cfg)
        self.ema = ModelEMA(self.module, cfg.ema_decay) if cfg.ema_decay else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.train_loader = BatchLoader.for_bundle(
            data, "train", cfg.batch_size, seed=cfg.seed, drop_last=self.world_size > 1,
            rank=self.rank, world_size=self.world_size,
            **({"augment": cfg.augment} if cfg.augment else {}),
        )
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise InvalidArgumentError(
                f"the training split ({len(data.train)} samples) is smaller than one batch "
                f"({cfg.batch_size} x {self.world_size} processes); lower --batch-size"
            )
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.samples_seen = 0
        self.train_time = 0.0

    def rebuild_optimizer(self) -> None:
        """Recreate the optimizer (and EMA) after the model's parameters were replaced, e.g.
        by structured pruning during training. Optimizer moments are reset."""
        if self.world_size > 1:
            from slimkit.errors import UnsupportedModuleError

            raise UnsupportedModuleError(
                "changing the model's structure during multi-process training is not "
                "supported; prune between runs instead"
            )
        if self.config.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.model = self.module
        self.optimizer = _make_optimizer(self.module, self.config)
        if self.ema is not None:
            self.ema = ModelEMA(self.module, self.config.ema_decay or 0.999)

    # -- state -------------------------------------------------------------------------

    def _set_lr(self) -> None:
        f = lr_factor(self.step, self.total_steps, schedule=self.config.schedule,
                      warmup_steps=self.warmup_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = self.config.lr * f * g.get("lr_mult", 1.0)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and JSON describing everything needed to resume."""
        tensors, opt_info = _optimizer_tensors(self.optimizer)
        tensors.update(_rng_tensors())
        if self.ema is not None:
            tensors.update(self.ema.state_tensors())
        info = {
            "config": asdict(self.config),
            "epoch": self.epoch,
            "step": self.step,
            "loader": self.train_loader.state_dict(),
            "optimizer": opt_info,
            "rng": _rng_json(),
            "history": self.history,
            "samples_seen": self.samples_seen,
            "train_time": self.train_time,
            "world_size": self.world_size,
        }
        return tensors, info

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
        saved = info.get("config", {})
        for key in ("batch_size", "optimizer", "seed", "epochs", "schedule"):
            if key in saved and saved[key] != getattr(self.config, key):
                raise InvalidArgumentError(
                    f"cannot resume: the run used {key}={saved[key]!r}, now "
                    f"{getattr(self.config, key)!r}; resume with the same settings"
                )
        if info.get("world_size", 1) != self.world_size:
            raise InvalidArgumentError(
                f"cannot resume: the run used {info.get('world_size')} processes, now "
                f"{self.world_size}; resume with the same number"
            )
        _restore_optimizer(self.optimizer, tensors, info.get("optimizer", {}))
        if self.ema is not None:
            self.ema.load_state_tensors(tensors)
        _restore_rng(tensors, info.get("rng", {}))
        self.epoch = int(info["epoch"])
        self.step = int(info["step"])
        self.history = list(info.get("history", []))
        self.samples_seen = int(info.get("samples_seen", 0))
        self.train_time = float(info.get("train_time", 0.0))
        self.train_loader.load_state_dict(info["loader"])

    # -- the loop ----------------------------------------------------------------------

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def train_epoch(self) -> dict[str, float]:
        """One pass (or the rest of one, after a resume) over the training split.

        The model must be in train mode (``run`` sets it before the epoch-start hooks, so a
        hook may put frozen parts back in eval mode)."""
        loader = self.train_loader
        loader.set_epoch(self.epoch)
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        seen = 0
        channels_last = self.config.channels_last
        clip = self.config.grad_clip
        task_weight = 1.0
        for cb in self.callbacks:
            task_weight *= cb.task_loss_weight
        t0 = time.perf_counter()
        bar = _progress(self.progress, len(loader), f"epoch {self.epoch + 1}/"
                        f"{self.config.epochs}", loader.start_batch)
        for x, y in loader:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            self._set_lr()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                out = self.model(x)
                loss = self.criterion(out, y)
                if task_weight != 1.0:
                    loss = loss * task_weight
                for cb in self.callbacks:
                    extra = cb.extra_loss(self, x, y, out)
                    if extra is not None:
                        loss = loss + extra
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._call("on_after_backward")
            if clip:
                nn.utils.clip_grad_norm_(self.module.parameters(), clip)
            self.optimizer.step()
            self.step += 1
            if self.ema is not None:
                self.ema.update(self.module)
            self._call("on_step_end", self.step)
            n = y.shape[0]
            loss_sum += loss.detach().double() * n
            correct += (out.detach().argmax(1) == y).sum()
            seen += n
            bar.advance()
        bar.close()
        self.train_time += time.perf_counter() - t0
        self.samples_seen += seen * self.world_size
        stats = dist_utils.all_reduce_sum(self.dist, [float(loss_sum), float(correct), seen])
        return {"train_loss": stats[0] / max(stats[2], 1),
                "train_top1": 100.0 * stats[1] / max(stats[2], 1)}

    def evaluate_split(self, split: str) -> EvalResult:
        """Evaluate on ``split`` (with the EMA weights when EMA is on)."""
        loader = BatchLoader.for_bundle(self.data, split, max(self.config.batch_size, 256),
                                        rank=self.rank, world_size=self.world_size)
        if self.ema is not None:
            with self.ema.applied(self.module):
                return evaluate(self.module, loader, self.data.num_classes, dist=self.dist,
                                channels_last=self.config.channels_last)
        return evaluate(self.module, loader, self.data.num_classes, dist=self.dist,
                        channels_last=self.config.channels_last)

    def save_last(self, meta: CheckpointMeta) -> Path | None:
        if self.run_dir is None or not self.is_main:
            return None
        tensors, info = self.state()
        meta = CheckpointMeta(**{**asdict(meta), "training": info})
        return save_checkpoint(self.run_dir.path / LAST, self.module, meta, state=tensors,
                               overwrite=True)

    def run(self, meta: CheckpointMeta) -> None:
        cfg = self.config
        self._call("on_fit_start")
        try:
            while self.epoch < cfg.epochs:
                self.model.train()
                self._call("on_epoch_start", self.epoch)
                train_stats = self.train_epoch()
                self.epoch += 1
                record: dict[str, Any] = {"epoch": self.epoch, "step": self.step,
                                          "lr": self.optimizer.param_groups[0]["lr"],
                                          **train_stats}
                if self.epoch % cfg.eval_every == 0 or self.epoch == cfg.epochs:
                    val = self.evaluate_split("val" if len(self.data.val) else "test")
                    record.update(val_loss=val.loss, val_top1=val.top1, val_top5=val.top5)
                record["elapsed_s"] = round(self.train_time, 3)
                self.history.append(record)
                self._call("on_epoch_end", self.epoch, record)
                # checkpoint first: a log line for epoch N promises a resumable epoch N
                self.save_last(meta)
                if self.is_main:
                    if self.run_dir is not None:
                        self.run_dir.log(record)
                    _print_epoch(record, cfg.epochs)
        except KeyboardInterrupt:
            # the loader knows how many batches of this epoch were consumed
            path = self.save_last(meta)
            if path is not None:
                print(f"interrupted: state saved to {path}; continue with --resume",
                      file=sys.stderr)
            raise
        self._call("on_fit_end")


class _NoBar:
    def advance(self) -> None: ...

    def close(self) -> None: ...


class _RichBar:
    def __init__(self, total: int, desc: str, done: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TimeRemainingColumn,
        )

        self.p = Progress("[progress.description]{task.description}", BarColumn(),
                          MofNCompleteColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                          transient=True)
        self.p.start()
        self.task = self.p.add_task(desc, total=total, completed=done)

    def advance(self) -> None:
        self.p.advance(self.task)

    def close(self) -> None:
        self.p.stop()


def _progress(enabled: bool, total: int, desc: str, done: int) -> _NoBar | _RichBar:
    return _RichBar(total, desc, done) if enabled else _NoBar()


def _print_epoch(record: dict[str, Any], epochs: int) -> None:
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['train_loss']:.4f}",
             f"train {record['train_top1']:.2f} %"]
    if "val_top1" in record:
        parts.append(f"val {record['val_top1']:.2f} %")
    parts.append(f"{record['elapsed_s']:.1f} s")
    print("  ".join(parts), file=sys.stderr, flush=True)  # stdout stays for results (--json)


@torch.no_grad()
def evaluate(model: nn.Module, data: DatasetBundle | BatchLoader | Iterable[Any],
             num_classes: int | None = None, *, split: str = "test", batch_size: int = 256,
             dist: dist_utils.DistInfo | None = None, channels_last: bool = False
             ) -> EvalResult:
    """Top-1/top-5 accuracy, loss, per-class accuracy and confusion matrix of ``model``.

    Args:
        model: the network (evaluated in eval mode, restored afterwards).
        data: a :class:`DatasetBundle` (its ``split`` is used), a :class:`BatchLoader`, or
            any iterable of ``(images (B, C, H, W), labels (B,))``.
        num_classes: required unless ``data`` is a bundle.
        dist: under torch.distributed, counts are summed over ranks.
    """
    if isinstance(data, DatasetBundle):
        num_classes = data.num_classes
        data = BatchLoader.for_bundle(data, split, batch_size)
    if num_classes is None:
        raise InvalidArgumentError("evaluate() needs num_classes when given a loader")
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loss_sum, top5 = 0.0, 0
    try:
        for x, y in data:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = model(x).float()
            if out.ndim != 2 or out.shape[1] != num_classes:
                raise InvalidArgumentError(
                    f"the model outputs shape {tuple(out.shape)} but the data has "
                    f"{num_classes} classes; reset the classifier (num_classes={num_classes})"
                )
            loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            confusion, hits = confusion_update(confusion, out, y)
            top5 += hits
    finally:
        model.train(was_training)
    if dist is not None and dist.world_size > 1:
        confusion = dist_utils.all_reduce_tensor(dist, confusion)
        loss_sum, top5 = dist_utils.all_reduce_sum(dist, [loss_sum, top5])
    return result_from_counts(confusion, loss_sum, int(top5))


def fit(
    model: nn.Module,
    data: DatasetBundle,
    config: TrainConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = False,
    force: bool = False,
    progress: bool | None = None,
    meta: CheckpointMeta | None = None,
    stage: str = "train",
) -> FitResult:
    """Train ``model`` on ``data``; evaluate on the test split at the end.

    Args:
        model: any ``nn.Module`` whose outputs are ``(N, data.num_classes)`` logits.
        data: a dataset bundle from :func:`slimkit.data.load_dataset`.
        config: hyper-parameters (defaults: :class:`TrainConfig`).
        out_dir: run directory for ``last.safetensors`` (resume state, each epoch and on
            Ctrl-C), ``model.safetensors``, ``metrics.json``, ``log.jsonl`` and
            ``confusion.png``. ``None`` writes nothing.
        callbacks: hooks (pruning masks, distillation losses, freezing...).
        resume: continue from ``out_dir/last.safetensors``.
        force: reuse an ``out_dir`` that already holds a run (its files are replaced).
        progress: progress bars (default: when stdout is a terminal).
        meta: lineage and metadata to extend (e.g. from the checkpoint being fine-tuned).
        stage: the lineage stage name recorded for this run.
    """
    cfg = (config or TrainConfig()).resolved()
    dist_info = dist_utils.current()
    run_dir = None
    if out_dir is not None:
        run_dir = RunDir(out_dir, resume=resume, force=force, is_main=dist_info.rank == 0)
    elif resume:
        raise InvalidArgumentError("--resume needs the run directory (--out DIR) to resume from")
    torch.manual_seed(cfg.seed + dist_info.rank)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    meta = meta or CheckpointMeta()
    meta = CheckpointMeta(**asdict(meta))
    meta.class_names = data.class_names
    meta.dataset = data.name
    meta.num_classes = data.num_classes
    meta.input_size = [data.in_chans, data.input_size, data.input_size]
    meta.mean, meta.std = list(data.mean), list(data.std)
    loaded = None
    if resume and run_dir is not None:
        # weights first (this may resize pruned layers), then the trainer and its optimizer
        last = run_dir.path / LAST
        loaded = load_checkpoint(last, model=model)
        if not loaded.meta.training:
            raise FileFormatError(f"{last} holds no training state; it cannot be resumed")
    trainer = Trainer(model, data, cfg, callbacks, run_dir, progress)
    if loaded is not None and loaded.meta.training is not None:
        trainer.load_state(loaded.state, loaded.meta.training)
        if trainer.is_main:
            print(f"resuming from {last} at epoch {trainer.epoch} (step {trainer.step})",
                  file=sys.stderr)
    t0 = time.perf_counter()
    trainer.run(meta)
    test = trainer.evaluate_split("test")
    if trainer.ema is not None:
        trainer.module.load_state_dict(trainer.ema.shadow)
    wall = time.perf_counter() - t0
    throughput = trainer.samples_seen / trainer.train_time if trainer.train_time else 0.0
    final_path = None
    if run_dir is not None and trainer.is_main:
        meta.add_stage(stage, params=asdict(cfg), metrics={
            "test_top1": test.top1, "test_top5": test.top5, "test_loss": test.loss,
            "epochs": cfg.epochs, "train_samples_per_s": throughput})
        final_path = save_checkpoint(run_dir.path / FINAL, trainer.module, meta, overwrite=True)
        metrics = {"test": test.to_dict(), "history": trainer.history,
                   "train_samples_per_s": throughput, "train_time_s": trainer.train_time,
                   "config": asdict(cfg), "dataset": data.name,
                   "world_size": trainer.world_size}
        atomic_write_text(run_dir.path / "metrics.json", json.dumps(metrics, indent=2))
        plot_confusion(test.confusion, data.class_names, run_dir.path / "confusion.png",
                       title=f"{data.name}: test top-1 {test.top1:.2f} %")
        run_dir.log({"event": "done", "test_top1": test.top1, "test_top5": test.top5})
    dist_utils.barrier(dist_info)
    return FitResult(model=trainer.module, history=trainer.history, test=test,
                     checkpoint=final_path, wall_time_s=wall,
                     train_samples_per_s=throughput, config=cfg, rank=trainer.rank)

