"""Knowledge distillation as trainer callbacks, so it combines with pruning fine-tuning and QAT.

- :class:`LogitDistillation` (Hinton et al. 2015): ``alpha * T^2 * KL(p_t^T || p_s^T)``
  plus ``(1 - alpha)`` of the task loss; defaults T = 4, alpha = 0.9 (the CRD setup).
- :class:`FeatureDistillation` (FitNets, Romero et al. 2015): the student's feature maps,
  through learned 1x1 adapters, regress the teacher's at named layers.
- :class:`AttentionTransfer` (Zagoruyko & Komodakis 2017): the students' spatial attention
  maps (channel-mean of squared activations, L2-normalised) match the teacher's.

Layers are named by module path (``stages.2``); the teacher runs in eval mode without
gradients. With no augmentation, teacher logits are computed once per image and cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.errors import InvalidArgumentError, suggest
from slimkit.train.callbacks import Callback

__all__ = ["LogitDistillation", "FeatureDistillation", "AttentionTransfer", "make_distiller",
           "distill_checkpoint", "METHODS"]

METHODS = ("logit", "feature", "at")


def _module(model: nn.Module, name: str, role: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        raise InvalidArgumentError(
            f"the {role} has no layer named {name!r}; see `slimkit profile --per-layer`."
            + suggest(name, [n for n in modules if n])
        )
    return modules[name]


def _num_outputs(model: nn.Module, example: torch.Tensor) -> int:
    with torch.no_grad():
        was = model.training
        model.eval()
        out = model(example)
        model.train(was)
    return int(out.shape[-1])


class _TeacherMixin(Callback):
    def __init__(self, teacher: nn.Module) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def _teacher_forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(x)


class LogitDistillation(_TeacherMixin):
    """Hinton distillation on the logits.

    Args:
        teacher: a model with the student's number of classes.
        temperature: softening T (>0). alpha: weight of the KD term in [0, 1]; the task loss
            keeps ``1 - alpha``.
        cache: cache teacher logits per training image when the loader does no
            augmentation (saves one teacher forward per image per epoch).
    """

    def __init__(self, teacher: nn.Module, *, temperature: float = 4.0, alpha: float = 0.9,
                 cache: bool = True) -> None:
        super().__init__(teacher)
        if temperature <= 0:
            raise InvalidArgumentError(f"--temperature must be > 0, got {temperature}")
        if not 0 <= alpha <= 1:
            raise InvalidArgumentError(f"--alpha must be in [0, 1], got {alpha}")
        self.temperature = temperature
        self.alpha = alpha
        self.task_loss_weight = 1.0 - alpha
        self.cache_enabled = cache
        self._cache: torch.Tensor | None = None
        self._cached: torch.Tensor | None = None
        self.teacher_calls = 0
        self.cache_hits = 0

    def on_fit_start(self, trainer: Any) -> None:
        d = trainer.data
        example = torch.zeros(1, d.in_chans, d.input_size, d.input_size)
        t_classes = _num_outputs(self.teacher, example)
        if t_classes != d.num_classes:
            raise InvalidArgumentError(
                f"the teacher predicts {t_classes} classes but the data has {d.num_classes}; "
                "distil from a teacher trained on the same classes"
            )
        use_cache = self.cache_enabled and trainer.train_loader.augment == "none"
        if use_cache:
            n = len(d.train)
            self._cache = torch.zeros(n, t_classes)
            self._cached = torch.zeros(n, dtype=torch.bool)

    def _teacher_logits(self, trainer: Any, x: torch.Tensor) -> torch.Tensor:
        idx = getattr(trainer.train_loader, "last_indices", None)
        if self._cache is not None and idx is not None and len(idx) == len(x):
            assert self._cached is not None
            have = self._cached[idx]
            if bool(have.all()):
                self.cache_hits += len(idx)
                return self._cache[idx]
            logits = self._teacher_forward(x)
            self.teacher_calls += len(x)
            self._cache[idx] = logits.float()
            self._cached[idx] = True
            return logits
        self.teacher_calls += len(x)
        return self._teacher_forward(x)

    def extra_loss(self, trainer: Any, inputs: torch.Tensor, targets: torch.Tensor,
                   outputs: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        teacher = self._teacher_logits(trainer, inputs)
        kd = F.kl_div(F.log_softmax(outputs.float() / t, dim=1),
                      F.log_softmax(teacher.float() / t, dim=1), reduction="batchmean",
                      log_target=True)
        return self.alpha * t * t * kd


class _HookedPairs(_TeacherMixin):
    """Captures the outputs of named student/teacher layers during the forward passes."""

    def __init__(self, teacher: nn.Module, pairs: Sequence[tuple[str, str]]) -> None:
        super().__init__(teacher)
        if not pairs:
            raise InvalidArgumentError("give at least one student:teacher layer pair")
        self.pairs = list(pairs)
        self._student: dict[str, torch.Tensor] = {}
        self._teacher: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def _hook(self, store: dict[str, torch.Tensor], key: str):  # type: ignore[no-untyped-def]
        def fn(_m: nn.Module, _a: Any, out: torch.Tensor) -> None:
            store[key] = out

        return fn

    def on_fit_start(self, trainer: Any) -> None:
        for s_name, t_name in self.pairs:
            s_mod = _module(trainer.module, s_name, "student")
            t_mod = _module(self.teacher, t_name, "teacher")
            self._handles.append(s_mod.register_forward_hook(self._hook(self._student, s_name)))
            self._handles.append(t_mod.register_forward_hook(self._hook(self._teacher, t_name)))

    def on_fit_end(self, trainer: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class FeatureDistillation(_HookedPairs):
    """FitNets hints: ``beta * MSE(adapter(student_feature), teacher_feature)`` per pair.

    A 1x1 convolution adapts the student's channels to the teacher's (trained with the
    student: added to the trainer's optimizer); the student map is resized to the teacher's
    spatial size when they differ. Adapters are not part of the saved model.
    """

    def __init__(self, teacher: nn.Module, pairs: Sequence[tuple[str, str]], *,
                 beta: float = 1.0) -> None:
        super().__init__(teacher, pairs)
        self.beta = beta
        self.adapters = nn.ModuleDict()

    def on_fit_start(self, trainer: Any) -> None:
        super().on_fit_start(trainer)
        d = trainer.data
        example = torch.zeros(1, d.in_chans, d.input_size, d.input_size)
        was = trainer.module.training
        trainer.module.eval()
        with torch.no_grad():
            trainer.module(example)
            self.teacher(example)
        trainer.module.train(was)
        for s_name, t_name in self.pairs:
            s, t = self._student[s_name], self._teacher[t_name]
            if s.ndim != 4 or t.ndim != 4:
                raise InvalidArgumentError(
                    f"feature distillation needs 4-D feature maps; {s_name!r} gives "
                    f"{tuple(s.shape)} and {t_name!r} gives {tuple(t.shape)}"
                )
            self.adapters[s_name.replace(".", "_")] = nn.Conv2d(s.shape[1], t.shape[1], 1)
        trainer.optimizer.add_param_group({"params": list(self.adapters.parameters()),
                                           "weight_decay": 0.0, "lr_mult": 1.0,
                                           "name": "distill_adapters"})

    def extra_loss(self, trainer: Any, inputs: torch.Tensor, targets: torch.Tensor,
                   outputs: torch.Tensor) -> torch.Tensor:
        self._teacher_forward(inputs)
        loss = outputs.new_zeros(())
        for s_name, t_name in self.pairs:
            s = self.adapters[s_name.replace(".", "_")](self._student[s_name].float())
            t = self._teacher[t_name].float()
            if s.shape[-2:] != t.shape[-2:]:
                s = F.adaptive_avg_pool2d(s, t.shape[-2:]) if s.shape[-1] > t.shape[-1] \
                    else F.interpolate(s, size=t.shape[-2:], mode="bilinear",
                                       align_corners=False)
            loss = loss + F.mse_loss(s, t)
        return self.beta * loss


def attention_map(f: torch.Tensor) -> torch.Tensor:
    """``normalize(mean_c(f^2))`` flattened: ``(N, C, H, W) -> (N, H * W)``."""
    return F.normalize(f.float().pow(2).mean(1).flatten(1), dim=1)


class AttentionTransfer(_HookedPairs):
    """``beta / 2 * mean((a_s - a_t)^2)`` over pairs of spatial attention maps; maps of
    different sizes are compared at the smaller one. ``beta`` = 1000 as in the paper."""

    def __init__(self, teacher: nn.Module, pairs: Sequence[tuple[str, str]], *,
                 beta: float = 1000.0) -> None:
        super().__init__(teacher, pairs)
        self.beta = beta

    def extra_loss(self, trainer: Any, inputs: torch.Tensor, targets: torch.Tensor,
                   outputs: torch.Tensor) -> torch.Tensor:
        self._teacher_forward(inputs)
        loss = outputs.new_zeros(())
        for s_name, t_name in self.pairs:
            s, t = self._student[s_name], self._teacher[t_name]
            size = min(s.shape[-1], t.shape[-1])
            if s.shape[-1] != size:
                s = F.adaptive_avg_pool2d(s, size)
            if t.shape[-1] != size:
                t = F.adaptive_avg_pool2d(t, size)
            loss = loss + (attention_map(s) - attention_map(t)).pow(2).mean()
        return self.beta / 2 * loss


def make_distiller(method: str, teacher: nn.Module, *, temperature: float = 4.0,
                   alpha: float = 0.9, pairs: Sequence[tuple[str, str]] = (),
                   beta: float | None = None) -> Callback:
    """The callback for ``method`` (``logit``, ``feature``, ``at``)."""
    if method == "logit":
        return LogitDistillation(teacher, temperature=temperature, alpha=alpha)
    if method == "feature":
        return FeatureDistillation(teacher, pairs, beta=1.0 if beta is None else beta)
    if method == "at":
        return AttentionTransfer(teacher, pairs, beta=1000.0 if beta is None else beta)
    raise InvalidArgumentError(f"unknown distillation method {method!r}; choose one of "
                               f"{METHODS}." + suggest(method, METHODS))


def parse_pairs(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``["stages.2:stages.3", ...]`` -> ``[("stages.2", "stages.3"), ...]``."""
    pairs = []
    for spec in specs:
        if spec.count(":") != 1 or not all(spec.split(":")):
            raise InvalidArgumentError(f"a layer pair is STUDENT_LAYER:TEACHER_LAYER, got "
                                       f"{spec!r}")
        s, t = spec.split(":")
        pairs.append((s, t))
    return pairs


def distill_checkpoint(teacher_path: str | Path, student: str, data_spec: str,
                       out_dir: str | Path, *, method: str = "logit",
                       temperature: float = 4.0, alpha: float = 0.9,
                       pairs: Sequence[str] = (), beta: float | None = None,
                       config: Any = None, force: bool = False) -> Any:
    """Train ``student`` (a zoo name or a checkpoint) with the teacher checkpoint's guidance.
    Returns the :class:`~slimkit.train.FitResult`."""
    from slimkit.data import load_dataset
    from slimkit.train import CheckpointMeta, TrainConfig, fit, load_checkpoint
    from slimkit.train.api import (
        build_model_for_data,
        check_model_fits_data,
        fit_data_to_checkpoint,
    )

    teacher = load_checkpoint(teacher_path)
    size = teacher.meta.input_size[-1] if teacher.meta.input_size else None
    data = load_dataset(data_spec, input_size=size)
    data = fit_data_to_checkpoint(teacher.meta, data, Path(teacher_path))
    parsed = parse_pairs(pairs)
    if method != "logit" and not parsed:
        raise InvalidArgumentError(f"--method {method} needs --pair STUDENT_LAYER:TEACHER_LAYER")
    cfg = config or TrainConfig()
    meta = CheckpointMeta()
    if student.endswith(".safetensors"):
        loaded = load_checkpoint(student)
        check_model_fits_data(loaded.meta, data, Path(student))
        model = loaded.model
        meta = loaded.meta
    else:
        torch.manual_seed(cfg.seed)
        model = build_model_for_data(student, data)
    callback = make_distiller(method, teacher.model, temperature=temperature, alpha=alpha,
                              pairs=parsed, beta=beta)
    for s, t in parsed:  # fail before training starts
        _module(model, s, "student")
        _module(teacher.model, t, "teacher")
    return fit(model, data, cfg, out_dir=out_dir, callbacks=[callback], force=force,
               meta=meta, stage=f"distill-{method}")
