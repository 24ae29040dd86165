"""Report figures (matplotlib, Agg, PNG): trade-off scatters with their Pareto front, per-layer
bars, pruning sensitivity curves and the confusion matrix.

Every function draws one figure, writes it atomically to ``path`` and returns the path. The
figures are built with ``matplotlib.figure.Figure`` directly (no pyplot state), so they are
safe to draw from any thread and never open a window.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slimkit.report.data import StageRow
from slimkit.report.pareto import pareto_front, rows_with
from slimkit.train.checkpoint import atomic_write_bytes

__all__ = [
    "COST_AXES",
    "PNG_SIGNATURE",
    "is_png",
    "mpl_text",
    "plot_confusion_matrix",
    "plot_layer_bars",
    "plot_sensitivity_table",
    "plot_tradeoff",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: cost field -> (axis label, scale applied to the values)
COST_AXES: dict[str, tuple[str, float]] = {
    "latency_ms": ("latency (ms, batch 1)", 1.0),
    "size_bytes": ("size (MB)", 1e-6),
    "macs": ("MACs (millions)", 1e-6),
}

_DPI = 110


def is_png(data: bytes) -> bool:
    """Whether ``data`` starts with the PNG signature."""
    return data[:8] == PNG_SIGNATURE


def mpl_text(text: str, limit: int = 48) -> str:
    """``text`` safe for a matplotlib label: ``$`` would start mathtext (and can fail to
    parse), long names are shortened in the middle."""
    text = str(text)
    if len(text) > limit:
        keep = (limit - 1) // 2
        text = text[:keep] + "…" + text[-keep:]
    return text.replace("$", r"\$")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _save(fig: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return atomic_write_bytes(path, buf.getvalue())


def plot_tradeoff(
    stages: Sequence[StageRow],
    candidates: Sequence[StageRow],
    cost: str,
    path: str | Path,
    *,
    title: str | None = None,
    connect_stages: bool = True,
    stage_label: str = "stages",
    candidate_label: str = "candidates",
    label_limit: int = 12,
) -> Path:
    """Top-1 against ``cost`` (``latency_ms``, ``size_bytes`` or ``macs``) for every row that
    has both, stages as dots (joined in order when ``connect_stages``), candidates as
    crosses, and the Pareto front over all of them ringed in red and joined by a step line.

    Latencies measured on different runtimes are labelled with the runtime.
    """
    if cost not in COST_AXES:
        raise ValueError(f"cost must be one of {sorted(COST_AXES)}, got {cost!r}")
    xlabel, scale = COST_AXES[cost]
    s_rows, c_rows = rows_with(stages, cost), rows_with(candidates, cost)
    rows = s_rows + c_rows
    runtimes = {r.runtime for r in rows}
    tag_runtime = cost == "latency_ms" and len(runtimes) > 1

    def x(r: StageRow) -> float:
        return float(getattr(r, cost)) * scale

    fig = _figure(7.0, 4.6)
    ax = fig.subplots()
    if c_rows:
        ax.scatter([x(r) for r in c_rows], [r.top1 for r in c_rows], marker="x", s=36,
                   color="#7f7f7f", label=candidate_label, zorder=2)
    if s_rows:
        ax.plot([x(r) for r in s_rows], [r.top1 for r in s_rows],
                linestyle="-" if connect_stages else "none", linewidth=1, marker="o",
                markersize=6, color="#1f77b4", label=stage_label, zorder=3)
    front = [rows[i] for i in pareto_front([(x(r), float(r.top1)) for r in rows])]  # type: ignore[arg-type]
    if front:
        ax.plot([x(r) for r in front], [r.top1 for r in front], drawstyle="steps-post",
                color="#d62728", linewidth=1.2, alpha=0.8, zorder=1)
        ax.scatter([x(r) for r in front], [r.top1 for r in front], s=170, facecolors="none",
                   edgecolors="#d62728", linewidths=1.5, label="Pareto front", zorder=4)
    labelled = s_rows + (c_rows if len(c_rows) <= label_limit
                         else [r for r in c_rows if any(r is f for f in front)])
    for r in labelled:
        text = r.name + (f" [{r.runtime}]" if tag_runtime and r.runtime else "")
        ax.annotate(mpl_text(text, 32), (x(r), r.top1), textcoords="offset points",
                    xytext=(6, 4), fontsize=7)
    if cost == "latency_ms" and len(runtimes) == 1 and None not in runtimes:
        xlabel = f"{xlabel} on {next(iter(runtimes))}"
    ax.set_xlabel(mpl_text(xlabel, 80))
    ax.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
    ax.set_ylabel("top-1 (%)")
    ax.set_title(mpl_text(title or f"accuracy vs {xlabel.split(' (')[0]}", 80))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def plot_layer_bars(
    layers: Sequence[Mapping[str, Any]],
    key: str,
    path: str | Path,
    *,
    top: int = 15,
    title: str,
    xlabel: str,
    scale: float = 1.0,
) -> Path:
    """Horizontal bars of the ``top`` layers by ``layers[i][key]`` (largest on top), each
    labelled ``name (type)`` when a type is given."""
    rows = sorted((r for r in layers if isinstance(r.get(key), int | float) and r[key] > 0),
                  key=lambda r: -float(r[key]))[:top]
    fig = _figure(7.0, max(2.5, 0.32 * len(rows) + 1.4))
    ax = fig.subplots()
    names = [mpl_text(f"{r['name'] or '(root)'}" + (f" ({r['type']})" if r.get("type") else ""),
                      44) for r in rows]
    values = [float(r[key]) * scale for r in rows]
    ax.barh(range(len(rows)), values, color="#1f77b4")
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(mpl_text(xlabel, 80))
    ax.set_title(mpl_text(title, 80))
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_sensitivity_table(sensitivity: Mapping[str, Any], path: str | Path,
                           top: int = 12) -> Path:
    """The curves of a ``sensitivity.json`` table, drawn by
    :func:`slimkit.compress.pruning.sensitivity.plot_sensitivity`."""
    from slimkit.compress.pruning.sensitivity import SensitivityResult, plot_sensitivity

    rows = [dict(r) for r in sensitivity.get("rows", [])]
    result = SensitivityResult(
        base_top1=float(sensitivity.get("base_top1") or 0.0),
        base_macs=int(sensitivity.get("base_macs") or 0),
        ratios=list(sensitivity.get("ratios") or sorted({r["ratio"] for r in rows})),
        rows=[{**r, "layer": mpl_text(r["layer"], 60)} for r in rows],
        samples=int(sensitivity.get("samples") or 0),
        method=str(sensitivity.get("method", "l2")),
        input_shape=list(sensitivity.get("input_shape") or []),
    )
    return plot_sensitivity(result, path, top=top)


def plot_confusion_matrix(confusion: Sequence[Sequence[int]], class_names: Sequence[str] | None,
                          path: str | Path, title: str = "confusion matrix") -> Path:
    """The confusion matrix drawn by :func:`slimkit.train.metrics.plot_confusion`."""
    from slimkit.train.metrics import plot_confusion

    names = [mpl_text(n, 24) for n in class_names] if class_names else None
    return plot_confusion([list(r) for r in confusion], names, path, title=mpl_text(title, 80))
