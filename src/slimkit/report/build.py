"""Write a run's report (``report.md`` + ``report.html``) and side-by-side comparisons of runs
(``compare.md`` + ``compare.html``), with their figures as PNG files in ``plots/``.

``report.md`` links the PNGs by relative path; ``report.html`` embeds the same PNGs as data
URIs and needs nothing else (no network, no script). Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slimkit.errors import InvalidArgumentError
from slimkit.report.collect import collect
from slimkit.report.data import ReportData, StageRow
from slimkit.report.pareto import pareto_rows, rows_with
from slimkit.report.plots import (
    COST_AXES,
    is_png,
    plot_confusion_matrix,
    plot_layer_bars,
    plot_sensitivity_table,
    plot_tradeoff,
)
from slimkit.report.render import (
    MISSING,
    Block,
    fmt_float,
    fmt_int,
    render_html,
    render_markdown,
)
from slimkit.train.checkpoint import OutputExistsError, atomic_write_bytes, atomic_write_text

__all__ = ["STAGE_COLUMNS", "build_report", "compare_runs", "stage_table", "write_report"]

PLOTS = "plots"

#: (header, formatter, right-aligned) of the stage / candidate tables
STAGE_COLUMNS: list[tuple[str, Callable[[StageRow], str], bool]] = [
    ("stage", lambda r: r.name, False),
    ("params", lambda r: fmt_int(r.params), True),
    ("MACs", lambda r: fmt_int(r.macs), True),
    ("size (bytes)", lambda r: fmt_int(r.size_bytes), True),
    ("top-1 (%)", lambda r: fmt_float(r.top1, 2), True),
    ("latency (ms)", lambda r: fmt_float(r.latency_ms, 3), True),
    ("runtime", lambda r: r.runtime or MISSING, False),
    ("energy (mJ)", lambda r: fmt_float(r.energy_mj, 3), True),
]

_COST_NAMES = {"latency_ms": "latency", "size_bytes": "size", "macs": "MACs"}
_REPORT_PLOTS = ("accuracy_vs_latency.png", "accuracy_vs_size.png", "accuracy_vs_macs.png",
                 "layer_macs.png", "layer_latency.png", "sensitivity.png", "confusion.png")


def stage_table(rows: Sequence[StageRow], first: str = "stage") -> Block:
    """The table block of ``rows`` (formatted as in :data:`STAGE_COLUMNS`)."""
    headers = [first, *(h for h, _, _ in STAGE_COLUMNS[1:])]
    return ("table", headers, [[f(r) for _, f, _ in STAGE_COLUMNS] for r in rows],
            [n for _, _, n in STAGE_COLUMNS])


class _Figures:
    """Draws figures into ``out_dir/plots`` and keeps their bytes for the HTML."""

    def __init__(self, out_dir: Path, notes: list[str]) -> None:
        self.dir = out_dir / PLOTS
        self.notes = notes
        self.png: dict[str, bytes] = {}

    def add(self, name: str, draw: Callable[[Path], Any], what: str) -> bool:
        path = self.dir / name
        try:
            draw(path)
            data = path.read_bytes()
        except Exception as exc:  # noqa: BLE001 - one failed figure must not sink the report
            self.notes.append(f"could not draw the {what}: {str(exc).splitlines()[0]}")
            return False
        if not is_png(data):
            self.notes.append(f"could not draw the {what}: not a PNG")
            return False
        self.png[name] = data
        return True

    def copy(self, name: str, source: Path) -> bool:
        try:
            data = source.read_bytes()
        except OSError:
            return False
        if not is_png(data):
            return False
        atomic_write_bytes(self.dir / name, data)
        self.png[name] = data
        return True

    def links(self) -> dict[str, str]:
        return {name: f"{PLOTS}/{name}" for name in self.png}


def _prepare(out_dir: Path, outputs: Sequence[str], plots: Sequence[str],
             overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidArgumentError(f"{out_dir} is a file; pass a directory for the report")
    existing = [out_dir / n for n in outputs if (out_dir / n).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]} already exists; pass --force to overwrite it")
    for name in plots:  # figures of an earlier report that this one may not draw again
        (out_dir / PLOTS / name).unlink(missing_ok=True)


def _tradeoff_blocks(fig: _Figures, stages: Sequence[StageRow], candidates: Sequence[StageRow],
                     prefix: str, **kwargs: Any) -> list[Block]:
    blocks: list[Block] = []
    for cost in COST_AXES:
        rows = rows_with([*stages, *candidates], cost)
        if len(rows) < 2:
            continue
        name = f"{prefix}accuracy_vs_{_COST_NAMES[cost].lower()}.png"
        what = f"accuracy-vs-{_COST_NAMES[cost]} plot"
        if fig.add(name, lambda p, c=cost: plot_tradeoff(stages, candidates, c, p, **kwargs),
                   what):
            blocks.append(("img", name,
                           f"top-1 against {_COST_NAMES[cost]}, Pareto front ringed"))
        front = pareto_rows(rows, cost)
        blocks.append(("p", f"Pareto front (top-1 vs {_COST_NAMES[cost]}): "
                            + ", ".join(r.name for r in front)))
    return blocks


def _report_blocks(data: ReportData, fig: _Figures, top_layers: int) -> list[Block]:
    blocks: list[Block] = []
    if data.headline:
        blocks.append(("strong", data.headline))
    info = dict(data.info)
    if data.run_dir:
        info = {"run directory": data.run_dir, **info}
    if info:
        blocks.append(("table", ["property", "value"], [[k, v] for k, v in info.items()], [False, False]))

    blocks.append(("h2", "Stages"))
    if data.stages:
        blocks.append(stage_table(data.stages))
    else:
        blocks.append(("p", "No stage was recorded."))
    if data.candidates:
        blocks += [("h2", "Candidates"), stage_table(data.candidates, "candidate")]

    trade = _tradeoff_blocks(fig, data.stages, data.candidates, "")
    blocks.append(("h2", "Trade-offs"))
    blocks += trade or [("p", ("Trade-off plots need at least two models with both a top-1 "
                               "and a latency, size or MACs measurement."))]

    layers = [r for r in data.profile_layers or [] if (r.get("macs") or 0) > 0]
    if layers:
        top = sorted(layers, key=lambda r: -float(r["macs"]))[:top_layers]
        total = sum(float(r["macs"]) for r in layers)
        blocks.append(("h2", f"Per-layer MACs (top {len(top)} of {len(layers)} layers)"))
        if "profile" in data.sources:
            blocks.append(("small", f"Profile of {data.sources['profile']}"))
        if fig.add("layer_macs.png",
                   lambda p: plot_layer_bars(layers, "macs", p, top=top_layers,
                                             title="MACs per layer", xlabel="MACs (millions)",
                                             scale=1e-6), "per-layer MACs plot"):
            blocks.append(("img", "layer_macs.png", "MACs of the largest layers"))
        blocks.append(("table", ["layer", "type", "params", "MACs", "share (%)"],
                       [[r["name"], str(r.get("type") or MISSING),
                         fmt_int(r["params"]) if isinstance(r.get("params"), int) else MISSING,
                         fmt_int(int(r["macs"])), fmt_float(100 * float(r["macs"]) / total, 1)]
                        for r in top], [False, False, True, True, True]))

    lat = [r for r in data.layer_latency or [] if r.get("latency_ms") is not None]
    if lat:
        top = sorted(lat, key=lambda r: -float(r["latency_ms"]))[:top_layers]
        blocks.append(("h2", f"Per-layer latency (top {len(top)} of {len(lat)} layers)"))
        if "layer latency" in data.sources:
            blocks.append(("small", f"Source: {data.sources['layer latency']}"))
        if fig.add("layer_latency.png",
                   lambda p: plot_layer_bars(lat, "latency_ms", p, top=top_layers,
                                             title="latency per layer", xlabel="latency (ms)"),
                   "per-layer latency plot"):
            blocks.append(("img", "layer_latency.png", "latency of the slowest layers"))
        blocks.append(("table", ["layer", "latency (ms)"],
                       [[r["name"], fmt_float(r["latency_ms"], 3)] for r in top], [False, True]))

    if data.sensitivity and data.sensitivity.get("rows"):
        blocks += _sensitivity_blocks(data, fig, top_layers)
    if data.confusion:
        blocks += _confusion_blocks(data, fig)
    if data.notes:
        blocks += [("h2", "Notes"), ("ul", list(data.notes))]
    return blocks


def _sensitivity_blocks(data: ReportData, fig: _Figures, top_layers: int) -> list[Block]:
    sens = data.sensitivity or {}
    rows = sens["rows"]
    blocks: list[Block] = [("h2", "Pruning sensitivity")]
    src = data.sources.get("sensitivity")
    base = sens.get("base_top1")
    blocks.append(("small", "Each layer group pruned alone; top-1 on "
                   f"{sens.get('samples', MISSING)} validation images, unpruned "
                   f"{fmt_float(base, 2)} %" + (f" ({src})" if src else "")))
    if fig.add("sensitivity.png", lambda p: plot_sensitivity_table(sens, p),
               "sensitivity plot"):
        blocks.append(("img", "sensitivity.png", "top-1 against the ratio pruned, per group"))
    ratios = sorted({float(r["ratio"]) for r in rows})
    layers: dict[str, dict[float, float]] = {}
    for r in rows:
        layers.setdefault(r["layer"], {})[float(r["ratio"])] = float(r["drop"])
    worst = sorted(layers, key=lambda name: -max(layers[name].values()))
    blocks.append(("table", ["layer", *(f"drop at {r:g} (pt)" for r in ratios)],
                   [[name, *(fmt_float(layers[name].get(r), 2) for r in ratios)]
                    for name in worst[:top_layers]], [False, *([True] * len(ratios))]))
    if len(worst) > top_layers:
        blocks.append(("small", f"{len(worst) - top_layers} less sensitive groups not listed"
                       + (f"; all are in {src}" if src else "")))
    blocks += _latency_table_blocks(sens, ratios, top_layers)
    return blocks


def _latency_table_blocks(sens: dict[str, Any], ratios: list[float], top_layers: int
                          ) -> list[Block]:
    """The measured latency each group saves alone (a latency-probed analysis only)."""
    rows = sens["rows"]
    if not rows or any(not isinstance(r.get("latency_saved"), int | float) for r in rows):
        return []
    probe = sens.get("latency") or {}
    saved: dict[str, dict[float, float]] = {}
    for r in rows:
        saved.setdefault(r["layer"], {})[float(r["ratio"])] = 100 * float(r["latency_saved"])
    best = sorted(saved, key=lambda name: -max(saved[name].values()))
    what = (f"{'INT8 ' if probe.get('int8') else ''}{probe.get('runtime', 'runtime')} latency, "
            f"batch 1, {probe.get('threads', MISSING)} threads, reference "
            f"{fmt_float(probe.get('reference_ms'), 3)} ms")
    blocks: list[Block] = [
        ("h2", "Measured latency saved per group"),
        ("small", f"Each group pruned alone, {what}; the latency allocation spends accuracy "
                  "where time is saved. Differences of 1–2 % are within the measurement "
                  "noise."),
        ("table", ["layer", *(f"saved at {r:g} (%)" for r in ratios)],
         [[name, *(fmt_float(saved[name].get(r), 1) for r in ratios)]
          for name in best[:top_layers]], [False, *([True] * len(ratios))]),
    ]
    if len(best) > top_layers:
        blocks.append(("small", f"{len(best) - top_layers} groups saving less not listed"))
    return blocks


def _confusion_blocks(data: ReportData, fig: _Figures) -> list[Block]:
    cm = data.confusion or []
    k = len(cm)
    names = data.class_names if data.class_names and len(data.class_names) == k else \
        [str(i) for i in range(k)]
    blocks: list[Block] = [("h2", "Confusion matrix")]
    if "confusion" in data.sources:
        blocks.append(("small", (f"Of {data.sources['confusion']}; rows: true class, "
                                 "columns: predicted")))
    reused = bool(data.confusion_png) and fig.copy("confusion.png", Path(str(data.confusion_png)))
    if reused or fig.add("confusion.png",
                         lambda p: plot_confusion_matrix(cm, names, p), "confusion matrix"):
        blocks.append(("img", "confusion.png", "confusion matrix"))
    per_class = []
    for i, name in enumerate(names):
        n = sum(cm[i])
        per_class.append([name, fmt_int(n), fmt_int(cm[i][i]),
                          fmt_float(100.0 * cm[i][i] / n, 2) if n else MISSING])
    blocks.append(("table", ["class", "samples", "correct", "top-1 (%)"], per_class,
                   [False, True, True, True]))
    return blocks


def _write_pair(out_dir: Path, stem: str, title: str, blocks: Sequence[Block],
                fig: _Figures) -> tuple[Path, Path]:
    md = atomic_write_text(out_dir / f"{stem}.md", render_markdown(title, blocks, fig.links()))
    page = atomic_write_text(out_dir / f"{stem}.html", render_html(title, blocks, fig.png))
    return md, page


def write_report(data: ReportData, out_dir: str | Path, *, top_layers: int = 15,
                 overwrite: bool = True) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (and the figures in ``plots/``) to ``out_dir``.

    Args:
        data: what to show (see :func:`slimkit.report.collect`).
        out_dir: the folder to write to (usually the run directory; created if missing).
        top_layers: how many layers the per-layer bars and tables show.
        overwrite: replace an existing report (the default: a report is derived from the
            run and regenerated); ``False`` raises ``OutputExistsError`` instead.

    Returns:
        The paths of ``report.md`` and ``report.html``.
    """
    out = Path(out_dir)
    if top_layers < 1:
        raise InvalidArgumentError(f"top_layers must be >= 1, got {top_layers}")
    _prepare(out, ("report.md", "report.html"), _REPORT_PLOTS, overwrite)
    notes = list(data.notes)
    fig = _Figures(out, notes)
    shown = ReportData(**{**data.__dict__, "notes": notes})
    blocks = _report_blocks(shown, fig, top_layers)
    return _write_pair(out, "report", data.title, blocks, fig)


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, *,
                 overwrite: bool = True) -> tuple[Path, Path]:
    """``write_report(collect(run_dir), out_dir or run_dir)``."""
    return write_report(collect(run_dir), run_dir if out_dir is None else out_dir,
                        overwrite=overwrite)


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    labels = [p.resolve().name or str(p) for p in run_dirs]
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            parts = run_dirs[i].resolve().parts
            labels[i] = "/".join(parts[-2:])
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} ({seen[label]})"
    return labels


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *,
                 overwrite: bool = True, profile_model: bool = True) -> tuple[Path, Path]:
    """Put runs side by side: one table of their final models and the accuracy-vs-latency /
    size / MACs plots with the Pareto front across runs. Writes ``compare.md`` and
    ``compare.html`` (figures: ``plots/compare_*.png``) to ``out_dir``.

    Each run is read with :func:`collect`; its final model is its last stage row.
    """
    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 2:
        raise InvalidArgumentError(
            f"compare needs at least two run directories, got {len(dirs)}; pass more")
    data = [collect(d, profile_model=profile_model) for d in dirs]
    labels = _labels(dirs)
    out = Path(out_dir)
    plots = [f"compare_accuracy_vs_{_COST_NAMES[c].lower()}.png" for c in COST_AXES]
    _prepare(out, ("compare.md", "compare.html"), plots, overwrite)
    notes: list[str] = []
    fig = _Figures(out, notes)
    finals: list[StageRow] = []
    table_rows = []
    for label, d in zip(labels, data):
        last = d.stages[-1] if d.stages else None
        if last is None:
            notes.append(f"{label}: no stage recorded")
            table_rows.append([label, MISSING, *([MISSING] * 6)])
            continue
        row = StageRow(**{**last.to_dict(), "name": label})
        finals.append(row)
        table_rows.append([label, last.name, *(f(last) for _, f, _ in STAGE_COLUMNS[1:7])])
    blocks: list[Block] = [
        ("p", f"{len(dirs)} runs; each row is the final model of a run (its last stage)."),
        ("table", ["run", "final stage", *(h for h, _, _ in STAGE_COLUMNS[1:7])], table_rows,
         [False, False, *(n for _, _, n in STAGE_COLUMNS[1:7])]),
    ]
    trade = _tradeoff_blocks(fig, finals, [], "compare_", connect_stages=False,
                             stage_label="final models")
    blocks.append(("h2", "Trade-offs"))
    blocks += trade or [("p", ("Trade-off plots need at least two runs with both a top-1 and "
                               "a latency, size or MACs measurement."))]
    headlines = [f"{label}: {d.headline}" for label, d in zip(labels, data) if d.headline]
    if headlines:
        blocks += [("h2", "Headlines"), ("ul", headlines)]
    blocks += [("h2", "Runs"), ("ul", [f"{label}: {d.run_dir}" for label, d in zip(labels, data)])]
    if notes:
        blocks += [("h2", "Notes"), ("ul", notes)]
    return _write_pair(out, "compare", "slimkit comparison: " + ", ".join(labels), blocks, fig)
