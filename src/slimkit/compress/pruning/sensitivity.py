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

__all__ = ["SensitivityResult", "allocate_ratios", "allocation_path", "plot_sensitivity",
           "prune_to_target", "save_table", "sensitivity_analysis"]


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


def allocation_path(result: SensitivityResult) -> list[tuple[dict[str, float], float]]:
    """The greedy allocation's steps, mildest first: ``(per-layer ratios, predicted MAC
    saving)`` after each step, until every layer is at its largest measured ratio.

    Each step advances the layer whose next measured ratio buys MACs at the lowest cost
    (extra accuracy drop per extra MAC saved, drops clipped at 0). The predicted saving adds
    the layers' savings measured alone; the real saving is larger where two pruned layers
    meet (a convolution loses input *and* output channels), so :func:`prune_to_target`
    walks this path with *measured* MACs.
    """
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

    saved, path = 0.0, []
    while True:
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
            return path
        saved -= state(best)[1]
        level[best] += 1
        saved += state(best)[1]
        path.append(({layer: curves[layer][i]["ratio"] for layer, i in level.items() if i >= 0},
                     saved))


def allocate_ratios(result: SensitivityResult, target_macs: float) -> dict[str, float]:
    """Per-layer ratios meeting ``target_macs`` (fraction of MACs to keep) at the least
    predicted accuracy drop: the first step of :func:`allocation_path` whose *predicted*
    saving reaches ``1 - target_macs``. Raises when even the largest measured ratio
    everywhere is predicted not to reach the target (:func:`prune_to_target` measures
    instead of predicting, and goes further).
    """
    if not 0 < target_macs <= 1:
        raise InvalidArgumentError(f"target MACs fraction must be in (0, 1], got {target_macs}")
    need = 1 - target_macs
    if need <= 0:
        return {}
    path = allocation_path(result)
    for ratios, saved in path:
        if saved >= need:
            return ratios
    most = path[-1][1] if path else 0.0
    raise InvalidArgumentError(
        f"the analysed ratios save at most {most:.2f} of the MACs, short of {need:.2f}; "
        "analyse larger --ratios"
    )


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
                    ignore: Sequence[str] = (), tolerance: float = 0.0,
                    max_rounds: int = 12) -> tuple[Any, dict[str, float]]:
    """Prune with sensitivity-allocated per-layer ratios to at most ``target_macs`` of the
    MACs, *measured*.

    Walks :func:`allocation_path` (mildest first) by bisection on the measured MACs of the
    pruned model, and returns the mildest step whose MACs are within ``target_macs +
    tolerance`` (``max_rounds`` prunes at most), with its ratios. Predicted savings add up
    the layers' savings measured alone; real ones compound where pruned layers meet, so the
    path often reaches targets the additive prediction says are out of reach.
    """
    if not 0 < target_macs < 1:
        raise InvalidArgumentError(f"--target-macs must be in (0, 1) to prune, got {target_macs}")
    path = allocation_path(result)
    example = _example_for(model, result)
    if not path:
        raise InvalidArgumentError("the sensitivity table has no prunable layer to allocate")

    def attempt(i: int) -> Any:
        return prune(model, example, layer_ratios=path[i][0], method=method,
                     round_to=round_to, ignore=ignore)

    limit = target_macs + tolerance
    # the first step whose predicted saving reaches the target is a good lower bound
    lo = next((i for i, (_, saved) in enumerate(path) if saved >= 1 - target_macs),
              len(path) - 1)
    lo = max(0, min(lo, len(path) - 1))
    res_lo = attempt(lo)
    if res_lo.macs_ratio <= limit:
        hi, best = lo, (res_lo, lo)
        lo = -1  # search milder steps
    else:
        res_last = attempt(len(path) - 1)
        if res_last.macs_ratio > limit:
            raise InvalidArgumentError(
                f"sensitivity allocation cannot reach --target-macs {target_macs}: with the "
                f"largest analysed ratios {result.ratios} everywhere the model keeps "
                f"{res_last.macs_ratio:.3f} of its MACs; analyse larger ratios"
            )
        hi, best = len(path) - 1, (res_last, len(path) - 1)
    rounds = 2
    while hi - lo > 1 and rounds < max_rounds:  # invariant: step hi meets the limit
        mid = (lo + hi) // 2
        res = attempt(mid)
        rounds += 1
        if res.macs_ratio <= limit:
            hi, best = mid, (res, mid)
        else:
            lo = mid
    res, i = best
    return res, path[i][0]


def _example_for(model: nn.Module, result: SensitivityResult) -> torch.Tensor:
    shape = getattr(result, "input_shape", None)
    if shape:
        return torch.zeros(1, *shape)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return torch.zeros(1, *cfg.get("input_size", (3, 32, 32)))
