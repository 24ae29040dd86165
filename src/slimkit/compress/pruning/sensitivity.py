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
from slimkit.compress.pruning.latency_probe import OrtLatencyProbe
from slimkit.compress.pruning.structured import prunable_groups, prune
from slimkit.data import BatchLoader, DatasetBundle
from slimkit.errors import InvalidArgumentError
from slimkit.train.metrics import EvalResult
from slimkit.train.trainer import evaluate

__all__ = ["ALLOCATE_BY", "SensitivityResult", "allocate_ratios", "allocation_path",
           "load_table", "plot_sensitivity", "prune_to_target", "save_table",
           "sensitivity_analysis"]


@dataclass
class SensitivityResult:
    """Rows ``{"layer", "ratio", "top1", "drop", "macs_saved"}`` (``macs_saved`` as a
    fraction of the model's MACs; with a latency probe also ``latency_saved``, the measured
    fraction of the runtime latency saved), the unpruned accuracy and the settings
    (``latency``: the probe's settings, ``None`` without one)."""

    base_top1: float
    base_macs: int
    ratios: list[float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0
    method: str = "l2"
    input_shape: list[int] = field(default_factory=list)
    adapt_bn: bool = False
    latency: dict[str, Any] | None = None

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
    latency_probe: OrtLatencyProbe | None = None,
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
        latency_probe: also time every candidate on the deployment runtime
            (:class:`~slimkit.compress.pruning.latency_probe.OrtLatencyProbe`, built on
            ``model``) and record ``latency_saved``; then ``allocation_path(result,
            by="latency")`` spends accuracy per measured millisecond rather than per MAC.
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
                               adapt_bn=bool(bn_batches),
                               latency=latency_probe.describe() if latency_probe else None)
    for layer in groups:
        for r in sorted(ratios):
            pruned = prune(model, x, layer_ratios={layer: r}, method=method,
                           round_to=round_to, ignore=ignore).model
            recalibrate_bn(pruned, bn_batches)
            acc = top1(pruned)
            saved = 1 - count_macs(pruned.eval(), x) / macs0
            row = {"layer": layer, "ratio": r, "top1": acc, "drop": base - acc,
                   "macs_saved": saved}
            if latency_probe is not None:
                row["latency_saved"] = 1 - latency_probe.kept(pruned)
            result.rows.append(row)
    return result


ALLOCATE_BY = ("macs", "latency")


def _saving_key(result: SensitivityResult, by: str) -> str:
    if by not in ALLOCATE_BY:
        raise InvalidArgumentError(f"allocate by one of {ALLOCATE_BY}, got {by!r}")
    if by == "latency" and any("latency_saved" not in r for r in result.rows):
        raise InvalidArgumentError("the sensitivity table has no measured latency; run the "
                                   "analysis with a latency probe (slimkit compress does)")
    return f"{by}_saved"


def allocation_path(result: SensitivityResult, by: str = "macs"
                    ) -> list[tuple[dict[str, float], float]]:
    """The greedy allocation's steps, mildest first: ``(per-layer ratios, predicted saving)``
    after each step, until no layer has a further measured ratio that saves more.

    Each step advances the layer whose next measured ratio buys the saving at the lowest
    cost (extra accuracy drop per extra fraction saved, drops clipped at 0). ``by="macs"``
    saves MACs; ``by="latency"`` saves measured runtime latency (``latency_saved``, from a
    sensitivity analysis with a latency probe). A ratio that saves nothing over the layer's
    current one is stepped over (measured latency is noisy and not monotone), so a layer
    whose pruning buys no time is left alone. The predicted saving adds the layers' savings
    measured alone; the real saving differs where pruned layers meet (a convolution loses
    input *and* output channels), so :func:`prune_to_target` walks this path measuring.
    """
    key = _saving_key(result, by)
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
        return max(row["drop"], 0.0), row[key]

    saved, path = 0.0, []
    while True:
        best, best_level, best_cost = None, -1, float("inf")
        for layer, rows in curves.items():
            drop0, saved0 = state(layer)
            # the next measured ratio that saves more than the current one
            j = next((j for j in range(level[layer] + 1, len(rows))
                      if rows[j][key] - saved0 > 0), None)
            if j is None:
                continue
            cost = (max(rows[j]["drop"], 0.0) - drop0) / (rows[j][key] - saved0)
            if cost < best_cost:
                best, best_level, best_cost = layer, j, cost
        if best is None:
            return path
        saved -= state(best)[1]
        level[best] = best_level
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


def load_table(path: str | Path) -> SensitivityResult:
    """A table written by :func:`save_table` (plain JSON), checked: one clear error for a
    missing file, broken JSON or a table with missing or unknown fields."""
    from slimkit.errors import FileFormatError

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path} does not exist; write one with `slimkit sensitivity`")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"{path} is not a sensitivity table (JSON): {exc}") from None
    fields = set(SensitivityResult.__dataclass_fields__)
    if not isinstance(table, dict) or not {"base_top1", "base_macs", "ratios"} <= set(table):
        raise FileFormatError(f"{path} is not a sensitivity table: it needs base_top1, "
                              "base_macs, ratios and rows")
    unknown = sorted(set(table) - fields)
    if unknown:
        raise FileFormatError(f"{path}: unknown sensitivity table fields {unknown}")
    rows = table.get("rows", [])
    need = {"layer", "ratio", "drop", "macs_saved"}
    if not isinstance(rows, list) or any(not isinstance(r, dict) or not need <= set(r)
                                         for r in rows):
        raise FileFormatError(f"{path}: every row needs {sorted(need)}")
    return SensitivityResult(**table)


def prune_to_target(model: nn.Module, result: SensitivityResult, target: float, *,
                    method: str = "l2", round_to: int | None = 8,
                    ignore: Sequence[str] = (), tolerance: float = 0.0,
                    max_rounds: int = 12, by: str = "macs",
                    probe: OrtLatencyProbe | None = None) -> tuple[Any, dict[str, float]]:
    """Prune with sensitivity-allocated per-layer ratios to at most ``target`` of the MACs
    (``by="macs"``) or of the measured latency (``by="latency"``, timed by ``probe``).

    Walks :func:`allocation_path` (mildest first) by bisection on the *measured* MACs (or
    latency) of the pruned model, and returns the mildest step within ``target +
    tolerance`` (``max_rounds`` prunes at most), with its ratios. Predicted savings add up
    the layers' savings measured alone; real ones compound where pruned layers meet, so the
    path often reaches targets the additive prediction says are out of reach. Latency is
    noisy: the step returned measured under the target once, which the caller should
    confirm with its own measurement of the final model.
    """
    if not 0 < target < 1:
        what = "--target-macs" if by == "macs" else "the latency fraction to keep"
        raise InvalidArgumentError(f"{what} must be in (0, 1) to prune, got {target}")
    if by == "latency" and probe is None:
        raise InvalidArgumentError("pruning to a latency target needs a latency probe")
    path = allocation_path(result, by=by)
    example = _example_for(model, result)
    if not path:
        raise InvalidArgumentError(f"the sensitivity table has no layer whose pruning saves "
                                   f"{by}")

    def attempt(i: int) -> tuple[Any, float]:
        res = prune(model, example, layer_ratios=path[i][0], method=method,
                    round_to=round_to, ignore=ignore)
        kept = res.macs_ratio if by == "macs" else probe.kept(res.model)  # type: ignore[union-attr]
        return res, kept

    limit = target + tolerance
    # the first step whose predicted saving reaches the target is a good lower bound
    lo = next((i for i, (_, saved) in enumerate(path) if saved >= 1 - target),
              len(path) - 1)
    lo = max(0, min(lo, len(path) - 1))
    res_lo, kept_lo = attempt(lo)
    if kept_lo <= limit:
        hi, best = lo, (res_lo, lo)
        lo = -1  # search milder steps
    else:
        res_last, kept_last = attempt(len(path) - 1)
        if kept_last > limit:
            what = "MACs" if by == "macs" else "measured latency"
            raise InvalidArgumentError(
                f"sensitivity allocation cannot reach a target of {target} of the {what}: with "
                f"the largest analysed ratios {result.ratios} the model keeps {kept_last:.3f} "
                f"of it; analyse larger ratios (e.g. --ratios 0.3,0.5,0.7,0.85)"
            )
        hi, best = len(path) - 1, (res_last, len(path) - 1)
    rounds = 2
    while hi - lo > 1 and rounds < max_rounds:  # invariant: step hi meets the limit
        mid = (lo + hi) // 2
        res, kept = attempt(mid)
        rounds += 1
        if kept <= limit:
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
