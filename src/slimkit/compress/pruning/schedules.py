"""Pruning schedules: one-shot, iterative (prune, fine-tune, repeat) and gradual (AGP).

- One-shot is :func:`slimkit.compress.pruning.prune` followed by fine-tuning.
- :func:`iterative_prune` reaches the target in ``steps`` equal multiplicative steps (each
  keeps ``goal ** (1 / steps)`` of the current MACs/params/channels) with ``finetune_epochs``
  of training after each.
- :class:`GradualPruning` prunes *during* training (Zhu & Gupta 2017, "To prune, or not to
  prune"): the removed fraction follows ``s_t = s_f (1 - (1 - t / n)^3)`` over the first
  ``n`` epochs, so most channels go early while the network can still recover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slimkit.compress.pruning.structured import PruneResult, prune
from slimkit.data import BatchLoader, DatasetBundle
from slimkit.errors import InvalidArgumentError
from slimkit.train.callbacks import Callback
from slimkit.train.trainer import FitResult, TrainConfig, fit

__all__ = ["IterativeResult", "iterative_prune", "GradualPruning", "agp_fraction",
           "calibration_batches"]


def calibration_batches(data: DatasetBundle, n: int = 4, batch_size: int = 64
                        ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A few training batches (no augmentation) for data-driven criteria (taylor)."""
    loader = BatchLoader.for_bundle(data, "train", batch_size, shuffle=True, augment="none")
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) >= n:
            break
    return out


@dataclass
class IterativeResult:
    """Each step's :class:`PruneResult` summary and fine-tuning result."""

    model: nn.Module
    steps: list[dict[str, Any]] = field(default_factory=list)
    final: PruneResult | None = None
    finetune: list[FitResult] = field(default_factory=list)


def iterative_prune(
    model: nn.Module,
    data: DatasetBundle,
    *,
    steps: int = 1,
    ratio: float | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    finetune_epochs: int = 0,
    finetune_config: TrainConfig | None = None,
    method: str = "l2",
    global_pruning: bool = False,
    round_to: int | None = 8,
    ignore: Sequence[str] = (),
    layer_ratios: dict[str, float] | None = None,
    seed: int = 0,
) -> IterativeResult:
    """Prune to the target in ``steps`` steps with ``finetune_epochs`` of training after each.

    Targets are as in :func:`prune`; ``layer_ratios`` (from sensitivity analysis) are applied
    in the same geometric steps. Returns the final model and a record of every step.
    """
    if steps < 1:
        raise InvalidArgumentError(f"--steps must be >= 1, got {steps}")
    if finetune_epochs < 0:
        raise InvalidArgumentError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    x = torch.zeros(1, data.in_chans, data.input_size, data.input_size)
    from slimkit.analysis.profile import count_macs, count_params

    model.eval()
    macs0, params0 = count_macs(model, x), count_params(model)
    result = IterativeResult(model=model)
    current = model
    calib = calibration_batches(data) if method == "taylor" else None
    for i in range(1, steps + 1):
        frac = i / steps
        kwargs: dict[str, Any] = {}
        if ratio is not None:
            kwargs["ratio"] = 1 - (1 - ratio) ** (1 / steps)
        elif target_macs is not None:
            kwargs["target_macs"] = min(1.0, macs0 * target_macs ** frac
                                        / max(count_macs(current.eval(), x), 1))
        elif target_params is not None:
            kwargs["target_params"] = min(1.0, params0 * target_params ** frac
                                          / max(count_params(current), 1))
        step_ratios = ({k: 1 - (1 - v) ** (1 / steps) for k, v in layer_ratios.items()}
                       if layer_ratios else None)
        if not kwargs and step_ratios is None:
            raise InvalidArgumentError("give one of ratio, target_macs, target_params")
        res = prune(current, x, method=method, global_pruning=global_pruning,
                    round_to=round_to, ignore=ignore, layer_ratios=step_ratios,
                    calibration=calib, seed=seed, **kwargs)
        current = res.model
        record = {"step": i, **res.summary(), "macs_vs_original": res.macs_after / macs0,
                  "params_vs_original": res.params_after / params0}
        if finetune_epochs:
            cfg = finetune_config or TrainConfig(lr=0.01, warmup_epochs=0)
            cfg = TrainConfig(**{**cfg.__dict__, "epochs": finetune_epochs, "seed": seed + i})
            fitted = fit(current, data, cfg, progress=False)
            result.finetune.append(fitted)
            record["finetune_test_top1"] = fitted.test.top1 if fitted.test else None
        result.steps.append(record)
        result.final = res
    result.model = current
    return result


def agp_fraction(epoch: int, final: float, n_epochs: int, initial: float = 0.0) -> float:
    """Removed fraction after ``epoch`` (1-based) of ``n_epochs`` under the cubic AGP rule."""
    t = min(max(epoch, 0), n_epochs) / max(n_epochs, 1)
    return final + (initial - final) * (1 - t) ** 3


class GradualPruning(Callback):
    """Prune channels at the end of each of the first ``prune_epochs`` epochs of a ``fit``,
    following the cubic AGP schedule up to ``final_ratio`` of the channels removed.

    Each pruning step replaces parameters, so the trainer's optimizer (and EMA) is rebuilt
    and its moments restart. Single-process only.
    """

    def __init__(self, final_ratio: float, prune_epochs: int, *, method: str = "l2",
                 round_to: int | None = 8, ignore: Sequence[str] = (),
                 example_inputs: torch.Tensor | None = None) -> None:
        if not 0 < final_ratio < 1:
            raise InvalidArgumentError(f"final ratio must be in (0, 1), got {final_ratio}")
        if prune_epochs < 1:
            raise InvalidArgumentError(f"prune_epochs must be >= 1, got {prune_epochs}")
        self.final_ratio = final_ratio
        self.prune_epochs = prune_epochs
        self.method = method
        self.round_to = round_to
        self.ignore = list(ignore)
        self.example = example_inputs
        self.removed = 0.0  # fraction of the original channels removed so far
        self.history: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: Any) -> None:
        if self.example is None:
            d = trainer.data
            self.example = torch.zeros(1, d.in_chans, d.input_size, d.input_size)

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        if epoch > self.prune_epochs:
            return
        goal = agp_fraction(epoch, self.final_ratio, self.prune_epochs)
        # remove (goal - removed) of the original = this fraction of what is left
        step = 1 - (1 - goal) / (1 - self.removed)
        if step <= 1e-6:
            return
        res = prune(trainer.module, self.example, ratio=min(step, 0.95), method=self.method,
                    round_to=self.round_to, ignore=self.ignore, inplace=True)
        self.removed = goal
        trainer.rebuild_optimizer()
        record = {"epoch": epoch, "removed_fraction": goal, "macs_after": res.macs_after,
                  "params_after": res.params_after}
        self.history.append(record)
        metrics.update({f"prune_{k}": v for k, v in record.items() if k != "epoch"})
