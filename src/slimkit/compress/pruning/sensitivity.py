"""Sensitivity analysis: how much accuracy each prunable layer group costs to prune.

Each group (a root layer and every layer coupled to it) is pruned *alone* at several ratios
and the accuracy drop on a validation subset is measured, with the MACs each ratio saves.
:func:`allocate_ratios` then picks per-layer ratios that meet a MAC target with the least
predicted accuracy loss (a greedy exchange on the measured curves, assuming drops and
savings add up across groups; :func:`prune` with the result measures the real outcome).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.analysis.profile import count_macs
from slimkit.compress.pruning.bn import recalibrate_bn
from slimkit.compress.pruning.structured import prunable_groups, prune
from slimkit.data import BatchLoader, DatasetBundle
from slimkit.errors import InvalidArgumentError
from slimkit.train.metrics import EvalResult
from slimkit.train.trainer import evaluate

__all__ = ["SensitivityResult", "sensitivity_analysis", "allocate_ratios", "plot_sensitivity",
           "prune_to_target", "save_table"]


@dataclass
class SensitivityResult:
    """Rows ``{"layer", "ratio", "top1", "drop", "macs_saved"}`` (``macs_saved`` as a
    fraction of the model's MACs), the unpruned accuracy and the settings."""

    base_top1: float
    base_macs: int
    ratios: list[float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0
    method: str = "l2"
    input_shape: list[int] = field(default_factory=list)
    adapt_bn: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def layers(self) -> list[str]:
        seen: list[str] = []
        for r in self.rows:
            if r["layer"] not in seen:
                seen.append(r["layer"])
        return seen


def _subset_loader(data: DatasetBundle, split: str, samples: int, batch_size: int
                   ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    # no augmentation: the measurements (and BN statistics) are of the images as they are
    loader = BatchLoader.for_bundle(data, split, batch_size, augment="none")
    batches, n = [], 0
    for x, y in loader:
        batches.append((x, y))
        n += len(y)
        if n >= samples:
            break
    return batches


def sensitivity_analysis(
    model: nn.Module,
    data: DatasetBundle,
    *,
    ratios: Sequence[float] = (0.25, 0.5, 0.75),
    method: str = "l2",
    layers: Sequence[str] | None = None,
    samples: int = 512,
    split: str = "val",
    round_to: int | None = 8,
    ignore: Sequence[str] = (),
    adapt_bn: bool = True,
    bn_samples: int = 256,
) -> SensitivityResult:
    """Prune each layer group alone at each ratio and measure top-1 on ``samples`` images.

    Args:
        model: the trained model (left untouched).
        data: its dataset; ``split`` (default ``val``, ``test`` if val is empty) is used.
        ratios: channel ratios to try, each in (0, 1).
        layers: group roots to analyse (default: all, see :func:`prunable_groups`).
        samples: validation images per measurement (a subset keeps this fast).
        adapt_bn: re-estimate BatchNorm statistics of each pruned candidate on
            ``bn_samples`` training images before measuring it (:func:`recalibrate_bn`);
            without it a pruned MobileNetV2 often measures at chance level, which hides the
            differences between layers that the allocation needs.
    """
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise InvalidArgumentError(f"--ratios must be in (0, 1), got {list(ratios)}")
    if len(getattr(data, split)) == 0:
        split = "test"
    x = torch.zeros(1, data.in_chans, data.input_size, data.input_size)
    model = copy.deepcopy(model).eval()
    groups = list(layers) if layers is not None else prunable_groups(model, x, ignore)
    batches = _subset_loader(data, split, samples, 256)
    bn_batches = (_subset_loader(data, "train", bn_samples, 64)
                  if adapt_bn and len(data.train) else [])
    n = sum(len(y) for _, y in batches)

    def top1(m: nn.Module) -> float:
        res: EvalResult = evaluate(m, batches, data.num_classes)
        return res.top1

    base = top1(model)
    macs0 = count_macs(model, x)
    result = SensitivityResult(base_top1=base, base_macs=macs0, ratios=sorted(ratios),
                               samples=n, method=method, input_shape=list(x.shape[1:]),
                               adapt_bn=bool(bn_batches))
    for layer in groups:
        for r in sorted(ratios):
            pruned = prune(model, x, layer_ratios={layer: r}, method=method,
                           round_to=round_to, ignore=ignore).model
            recalibrate_bn(pruned, bn_batches)
            acc = top1(pruned)
            saved = 1 - count_macs(pruned.eval(), x) / macs0
            result.rows.append({"layer": layer, "ratio": r, "top1": acc, "drop": base - acc,
                                "macs_saved": saved})
    return result


def allocate_ratios(result: SensitivityResult, target_macs: float) -> dict[str, float]:
    """Per-layer ratios meeting ``target_macs`` (fraction of MACs to keep) at the least
    predicted accuracy drop.

    Greedy: start unpruned; repeatedly advance the layer whose next measured ratio buys MACs
    at the lowest cost (extra drop per extra MAC saved, drops clipped at 0) until the
    predicted saving reaches ``1 - target_macs``. Raises when even the largest measured
    ratio everywhere cannot reach the target.
    """
    if not 0 < target_macs <= 1:
        raise InvalidArgumentError(f"target MACs fraction must be in (0, 1], got {target_macs}")
    need = 1 - target_macs
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in result.rows:
        curves.setdefault(row["layer"], []).append(row)
    for rows in curves.values():
        rows.sort(key=lambda r: r["ratio"])
    level = {layer: -1 for layer in curves}  # index into the layer's curve, -1 = unpruned

    def state(layer: str) -> tuple[float, float]:
        i = level[layer]
        if i < 0:
            return 0.0, 0.0
        row = curves[layer][i]
        return max(row["drop"], 0.0), row["macs_saved"]

    saved = 0.0
    while saved < need:
        best, best_cost = None, float("inf")
        for layer, rows in curves.items():
            i = level[layer]
            if i + 1 >= len(rows):
                continue
            drop0, saved0 = state(layer)
            nxt = rows[i + 1]
            gain = nxt["macs_saved"] - saved0
            if gain <= 0:
                continue
            cost = (max(nxt["drop"], 0.0) - drop0) / gain
            if cost < best_cost:
                best, best_cost = layer, cost
        if best is None:
            raise InvalidArgumentError(
                f"the analysed ratios save at most {saved:.2f} of the MACs, short of "
                f"{need:.2f}; analyse larger --ratios"
            )
        saved -= state(best)[1]
        level[best] += 1
        saved += state(best)[1]
    return {layer: curves[layer][i]["ratio"] for layer, i in level.items() if i >= 0}


def plot_sensitivity(result: SensitivityResult, path: str | Path, top: int = 12) -> Path:
    """Accuracy-vs-ratio curves of the ``top`` most sensitive groups, saved as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slimkit.train.checkpoint import atomic_write_bytes

    worst = sorted(result.layers(), key=lambda layer: -max(
        r["drop"] for r in result.rows if r["layer"] == layer))[:top]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for layer in worst:
        rows = [r for r in result.rows if r["layer"] == layer]
        ax.plot([r["ratio"] for r in rows], [r["top1"] for r in rows], marker="o", label=layer)
    ax.axhline(result.base_top1, color="black", linestyle="--", linewidth=1, label="unpruned")
    ax.set_xlabel("channel ratio removed (this group only)")
    ax.set_ylabel(f"top-1 on {result.samples} validation images (%)")
    ax.set_title("pruning sensitivity (most sensitive groups)")
    ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def save_table(result: SensitivityResult, path: str | Path) -> Path:
    """The rows as JSON (for reports and `--layer-ratios`)."""
    from slimkit.train.checkpoint import atomic_write_text

    return atomic_write_text(path, json.dumps(result.to_dict(), indent=2))


def prune_to_target(model: nn.Module, result: SensitivityResult, target_macs: float, *,
                    method: str = "l2", round_to: int | None = 8,
                    ignore: Sequence[str] = (), tolerance: float = 0.02,
                    max_rounds: int = 6) -> tuple[Any, dict[str, float]]:
    """Prune with sensitivity-allocated per-layer ratios until the *measured* MACs meet
    ``target_macs`` (the allocation assumes savings add up; couplings make the real
    saving differ, so the allocation target is corrected and re-run)."""
    goal, best = target_macs, None
    for _ in range(max_rounds):
        try:
            ratios = allocate_ratios(result, goal)
        except InvalidArgumentError:
            break
        example = _example_for(model, result)
        res = prune(model, example, layer_ratios=ratios, method=method, round_to=round_to,
                    ignore=ignore)
        if res.macs_ratio <= target_macs + tolerance and (
                best is None or res.macs_ratio > best[0].macs_ratio):
            best = (res, ratios)
        if target_macs - tolerance <= res.macs_ratio <= target_macs + tolerance / 2:
            break
        goal = max(1e-3, goal * target_macs / max(res.macs_ratio, 1e-6))
    if best is None:
        raise InvalidArgumentError(
            f"sensitivity allocation cannot reach --target-macs {target_macs} with the "
            f"analysed ratios {result.ratios}; analyse larger ratios"
        )
    return best


def _example_for(model: nn.Module, result: SensitivityResult) -> torch.Tensor:
    shape = getattr(result, "input_shape", None)
    if shape:
        return torch.zeros(1, *shape)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return torch.zeros(1, *cfg.get("input_size", (3, 32, 32)))
