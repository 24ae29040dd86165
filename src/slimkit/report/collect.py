"""Gather a :class:`~slimkit.report.data.ReportData` from what a run directory holds.

What is read (the run directory and its immediate subdirectories; ``plots/`` and hidden
folders are skipped; nothing is unpickled and no weights are loaded):

- every ``*.safetensors`` slimkit checkpoint, its metadata header only
  (:func:`~slimkit.train.checkpoint.read_checkpoint_meta`). The *final* checkpoint is
  ``<run>/model.safetensors`` if present, else the one with the longest lineage (then a file
  named ``model.safetensors``, then the newest). Its lineage gives the stage rows; the last
  stage of any other checkpoint whose lineage leaves the final one (a sweep, an abandoned
  branch) becomes a candidate row. Foreign or unreadable files are skipped with a note.
- ``metrics.json``: in the directory of the final checkpoint (or, lacking one, the newest
  with a matrix), ``test.confusion`` gives the confusion matrix (and a ``confusion.png`` next
  to it is reused). A ``metrics.json`` in a folder without a checkpoint becomes a row: a stage
  row for the run directory itself when there are no stages, else a candidate named after its
  folder.
- ``sensitivity.json`` (``<run>/`` first, else the last subdirectory holding one): the
  sensitivity curves.
- ``pipeline.json`` in the run directory (schema in :mod:`slimkit.report`): its ``title``,
  ``headline``, ``notes`` and optional sections are used as given, and when its ``stages``
  list is not empty, its ``stages`` and ``candidates`` *are* the tables (the lineage is not
  read for rows then, so nothing is listed twice).

Numbers come from three places and nowhere else: lineage ``metrics`` (the stage's own dict,
or its ``after`` dict for stages that record ``before``/``after`` like ``prune``; a
``before`` dict fills the gaps of the previous row, or adds an "input model" row when the
stage is the first), ``metrics.json`` / ``pipeline.json``, and, when ``profile_model`` is set,
a profile of the final checkpoint's architecture (built on the meta device) that fills the
params / MACs / fp32 size / energy the last stage did not record; a note says so.
Latency in ``before``/``after`` dicts without a ``runtime`` is the eager PyTorch latency
``prune`` measures, so it is labelled "torch eager".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from slimkit.errors import FileFormatError, InvalidArgumentError
from slimkit.report.data import ReportData, StageRow, check_sensitivity
from slimkit.train.checkpoint import CheckpointMeta, read_checkpoint_meta

__all__ = ["collect", "lineage_rows", "measured_values"]

_SKIP_DIRS = {"plots"}
EAGER = "torch eager"


@dataclass
class _Checkpoint:
    path: Path
    rel: str
    meta: CheckpointMeta
    mtime: float


def _int(v: Any) -> int | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return int(v)


def _float(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def measured_values(metrics: Mapping[str, Any], *, stats_dict: bool = False) -> dict[str, Any]:
    """The StageRow numbers found in one metrics dict (missing ones are ``None``).

    Understands flat dicts (``params``, ``macs``, ``size_bytes``, ``top1`` or ``test_top1``,
    ``latency_ms``, ``runtime``, ``energy_mj``), ``{"after": {...}}`` and the trainer's
    ``{"test": {"top1": ...}}``. ``stats_dict``: the dict is a ``prune`` before/after record,
    whose latency (when no runtime is given) is eager PyTorch.
    """
    if isinstance(metrics.get("after"), Mapping):
        return measured_values(metrics["after"], stats_dict=True)
    top1 = _float(metrics.get("top1"))
    if top1 is None:
        top1 = _float(metrics.get("test_top1"))
    if top1 is None and isinstance(metrics.get("test"), Mapping):
        top1 = _float(metrics["test"].get("top1"))
    latency = _float(metrics.get("latency_ms"))
    runtime = metrics.get("runtime") if isinstance(metrics.get("runtime"), str) else None
    if latency is not None and runtime is None and stats_dict:
        runtime = EAGER
    return {
        "params": _int(metrics.get("params")),
        "macs": _int(metrics.get("macs")),
        "size_bytes": _int(metrics.get("size_bytes")),
        "top1": top1,
        "latency_ms": latency,
        "runtime": runtime if latency is not None else None,
        "energy_mj": _float(metrics.get("energy_mj")),
    }


def _has_numbers(values: Mapping[str, Any]) -> bool:
    return any(v is not None for k, v in values.items() if k != "runtime")


def _unique_names(rows: list[StageRow]) -> list[StageRow]:
    seen: dict[str, int] = {}
    for r in rows:
        seen[r.name] = seen.get(r.name, 0) + 1
        if seen[r.name] > 1:
            r.name = f"{r.name} ({seen[r.name]})"
    return rows


def lineage_rows(meta: CheckpointMeta, rel: str = "checkpoint") -> list[StageRow]:
    """One row per lineage stage of a checkpoint (repeated names get " (2)", " (3)"...)."""
    rows: list[StageRow] = []
    for i, entry in enumerate(meta.lineage):
        if not isinstance(entry, Mapping):
            continue
        metrics = entry.get("metrics") if isinstance(entry.get("metrics"), Mapping) else {}
        source = f"{rel} lineage[{i}]"
        before = metrics.get("before")
        if isinstance(before, Mapping):
            prev = measured_values(before, stats_dict=True)
            if rows:
                rows[-1].fill_missing(prev, f"{source}.metrics.before")
            elif _has_numbers(prev):
                rows.append(StageRow(name="input model", **prev,
                                     extra={"source": f"{source}.metrics.before"}))
        extra: dict[str, Any] = {"source": source}
        if entry.get("time"):
            extra["time"] = str(entry["time"])
        rows.append(StageRow(name=str(entry.get("stage") or f"stage {i}"),
                             **measured_values(metrics), extra=extra))
    return _unique_names(rows)


def _entry_key(entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return repr(entry)
    return json.dumps([entry.get("stage"), entry.get("time"), entry.get("params")],
                      sort_keys=True, default=str)


def _read_json(path: Path, rel: str, notes: list[str] | None) -> Any:
    """Parsed JSON; a broken file is a note (``notes`` given) or a one-line error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{rel} is not readable JSON ({str(exc).splitlines()[0]})"
        if notes is None:
            raise FileFormatError(f"{msg}; fix or delete it") from exc
        notes.append(f"skipped {msg}")
        return None


def _check_run_dir(root: Path) -> None:
    if not root.exists():
        raise InvalidArgumentError(
            f"run directory {root} does not exist; pass the --out folder of a slimkit run")
    if not root.is_dir():
        raise InvalidArgumentError(
            f"{root} is a file; pass the run directory that holds it ({root.parent})")


def _final(root: Path, ckpts: Sequence[_Checkpoint]) -> _Checkpoint | None:
    if not ckpts:
        return None
    return max(ckpts, key=lambda c: (c.path == root / "model.safetensors", len(c.meta.lineage),
                                     c.path.name == "model.safetensors", c.mtime))


def _profile(ck: _Checkpoint) -> tuple[Any, str | None]:
    """A profile of the checkpoint's architecture on the meta device, or ``(None, why)``."""
    meta = ck.meta
    if not meta.arch or not meta.arch.get("name"):
        return None, (f"no per-layer profile: {ck.rel} holds a model outside the slimkit "
                      "registry")
    if not meta.input_size:
        return None, f"no per-layer profile: {ck.rel} does not record its input size"
    try:
        import torch

        from slimkit.analysis.profile import profile
        from slimkit.models import create_model
        from slimkit.train.checkpoint import apply_structure

        with torch.device("meta"):
            model = create_model(str(meta.arch["name"]), **dict(meta.arch.get("kwargs") or {}))
            if meta.structure:
                apply_structure(model, meta.structure)
        return profile(model, tuple(meta.input_size)), None
    except Exception as exc:  # noqa: BLE001 - a report must not fail for one section
        return None, f"no per-layer profile of {ck.rel}: {str(exc).splitlines()[0]}"


def _confusion_of(metrics: Any) -> list[list[int]] | None:
    test = metrics.get("test") if isinstance(metrics, Mapping) else None
    cm = test.get("confusion") if isinstance(test, Mapping) else None
    if (isinstance(cm, list) and cm and all(isinstance(r, list) and len(r) == len(cm) for r in cm)
            and all(isinstance(v, int) and not isinstance(v, bool) for r in cm for v in r)):
        return cm
    return None


def _headline(first: StageRow, last: StageRow) -> str | None:
    parts = []
    if first.latency_ms and last.latency_ms and first.runtime == last.runtime:
        parts.append(f"{first.latency_ms / last.latency_ms:.1f}x faster")
    if first.size_bytes and last.size_bytes:
        parts.append(f"{first.size_bytes / last.size_bytes:.1f}x smaller")
    if first.macs and last.macs:
        parts.append(f"{first.macs / last.macs:.1f}x fewer MACs")
    if first.top1 is not None and last.top1 is not None:
        parts.append(f"{last.top1 - first.top1:+.2f} pt top-1")
    return f"{last.name} vs {first.name}: " + ", ".join(parts) if parts else None


def collect(run_dir: str | Path, *, profile_model: bool = True) -> ReportData:
    """Build the report data of one run directory (see the module docstring for what is read).

    Raises:
        InvalidArgumentError: the directory does not exist, or holds nothing to report.
        FileFormatError: ``pipeline.json`` is broken (other unreadable files become notes).
    """
    root = Path(run_dir)
    _check_run_dir(root)
    subdirs = sorted(d for d in root.iterdir()
                     if d.is_dir() and not d.name.startswith(".") and d.name not in _SKIP_DIRS)
    dirs = [root, *subdirs]

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    notes: list[str] = []
    ckpts: list[_Checkpoint] = []
    for d in dirs:
        for p in sorted(d.glob("*.safetensors")):
            try:
                ckpts.append(_Checkpoint(p, rel(p), read_checkpoint_meta(p), p.stat().st_mtime))
            except FileFormatError as exc:
                notes.append(f"skipped {rel(p)}: {exc}")
    metrics: dict[Path, dict[str, Any]] = {}
    for d in dirs:
        if (d / "metrics.json").is_file():
            m = _read_json(d / "metrics.json", rel(d / "metrics.json"), notes)
            if isinstance(m, dict):
                metrics[d] = m
    pipeline: ReportData | None = None
    pipeline_title = None
    if (root / "pipeline.json").is_file():
        raw = _read_json(root / "pipeline.json", "pipeline.json", None)
        pipeline = ReportData.from_dict(raw, "pipeline.json")
        pipeline_title = raw.get("title") if isinstance(raw.get("title"), str) else None
    sensitivity, sens_src = None, None
    for d in [root, *reversed(subdirs)]:
        if (d / "sensitivity.json").is_file():
            raw = _read_json(d / "sensitivity.json", rel(d / "sensitivity.json"), notes)
            if raw is not None:
                try:
                    sensitivity, sens_src = check_sensitivity(raw, rel(d / "sensitivity.json")), \
                        rel(d / "sensitivity.json")
                except FileFormatError as exc:
                    notes.append(f"skipped {exc}")
            break
    if not ckpts and not metrics and pipeline is None and sensitivity is None:
        raise InvalidArgumentError(
            f"{root} holds nothing to report (no slimkit checkpoint, metrics.json, "
            "pipeline.json or sensitivity.json); pass the --out folder of a finished run")

    final = _final(root, ckpts)
    data = ReportData(title=f"slimkit report: {root.name}", run_dir=str(root), notes=notes)
    if final is not None:
        m = final.meta
        arch = (m.arch or {}).get("name")
        if arch:
            data.title += f" ({arch})"
            data.info["architecture"] = str(arch)
        if m.dataset:
            data.info["dataset"] = str(m.dataset)
        if m.input_size:
            data.info["input size"] = "x".join(str(v) for v in m.input_size)
        if m.num_classes is not None:
            data.info["classes"] = str(m.num_classes)
        data.info["final checkpoint"] = final.rel
        if m.lineage:
            data.info["lineage"] = " → ".join(str(e.get("stage", "?")) for e in m.lineage
                                              if isinstance(e, Mapping))
        data.class_names = list(m.class_names) if m.class_names else None

    use_pipeline_rows = pipeline is not None and bool(pipeline.stages)
    if use_pipeline_rows:
        assert pipeline is not None
        data.stages, data.candidates = list(pipeline.stages), list(pipeline.candidates)
    else:
        if final is not None:
            data.stages = lineage_rows(final.meta, final.rel)
        if pipeline is not None:
            data.candidates.extend(pipeline.candidates)
        final_keys = {_entry_key(e) for e in (final.meta.lineage if final else [])}
        for ck in ckpts:
            if ck is final or not ck.meta.lineage:
                continue
            key = _entry_key(ck.meta.lineage[-1])
            if key in final_keys:
                continue  # a stage of the final model (e.g. an earlier checkpoint)
            final_keys.add(key)
            row = lineage_rows(ck.meta, ck.rel)[-1]
            row.name = f"{row.name} ({ck.rel})"
            data.candidates.append(row)
        dirs_with_ckpt = {ck.path.parent for ck in ckpts}
        for d, m in metrics.items():
            if d in dirs_with_ckpt:
                continue
            values = measured_values(m)
            if not _has_numbers(values):
                continue
            src = {"source": rel(d / "metrics.json")}
            if d == root and not data.stages:
                data.stages.append(StageRow(name=str(m.get("stage") or root.name), **values,
                                            extra=src))
            else:
                data.candidates.append(StageRow(name=rel(d), **values, extra=src))

    if final is not None and profile_model:
        prof, why = _profile(final)
        if prof is None:
            notes.append(str(why))
        else:
            data.profile_layers = [{**asdict(layer), "output_shape": list(layer.output_shape)}
                                   for layer in prof.layers]
            shape = "x".join(str(v) for v in prof.input_shape[1:]) + " (batch 1)"
            data.sources["profile"] = f"{final.rel} at input {shape}"
            if not use_pipeline_rows and data.stages:
                last = data.stages[-1]
                filled = last.fill_missing({
                    "params": prof.params, "macs": prof.macs,
                    "size_bytes": prof.weight_bytes_fp32, "energy_mj": prof.energy_fp32_mj,
                }, f"profile of {final.rel}")
                if filled:
                    names = {"params": "params", "macs": "MACs", "size_bytes": "size",
                             "energy_mj": "energy"}
                    notes.append(
                        f"{', '.join(names[k] for k in filled)} of stage {last.name!r} profiled "
                        f"from {final.rel} at input {shape} (size: fp32 weights; energy: "
                        f"{prof.energy_model} estimate, see docs/costs.md)")

    # the confusion matrix: of the final checkpoint if its folder has one, else the newest
    ranked = []
    for d, m in metrics.items():
        cm = _confusion_of(m)
        if cm is None:
            continue
        here = [ck for ck in ckpts if ck.path.parent == d]
        depth = max((len(ck.meta.lineage) for ck in here), default=-1)
        ranked.append(((final is not None and final.path.parent == d, depth,
                        (d / "metrics.json").stat().st_mtime), d, cm, here))
    if ranked:
        _, d, cm, here = max(ranked, key=lambda t: t[0])
        data.confusion = cm
        owner = final if final is not None and final.path.parent == d else (
            max(here, key=lambda c: len(c.meta.lineage)) if here else None)
        data.sources["confusion"] = (f"{owner.rel}, test split" if owner is not None
                                     else f"{rel(d / 'metrics.json')}, test split")
        if owner is not None and owner.meta.class_names:
            data.class_names = list(owner.meta.class_names)
        if (d / "confusion.png").is_file():
            data.confusion_png = str(d / "confusion.png")
    if sensitivity is not None:
        data.sensitivity = sensitivity
        data.sources["sensitivity"] = str(sens_src)

    if pipeline is not None:
        data.sources["pipeline"] = "pipeline.json"
        if pipeline_title:
            data.title = pipeline_title
        data.headline = pipeline.headline
        data.notes = [*pipeline.notes, *data.notes]
        data.info.update(pipeline.info)
        for key, section in (("profile_layers", "profile"), ("layer_latency", "layer latency"),
                             ("sensitivity", "sensitivity"), ("confusion", "confusion")):
            if getattr(pipeline, key) is not None:
                setattr(data, key, getattr(pipeline, key))
                data.sources[section] = "pipeline.json"
        if pipeline.class_names is not None and pipeline.class_names != data.class_names:
            data.class_names = pipeline.class_names
            data.confusion_png = None  # drawn again, with these names
        if pipeline.confusion is not None:
            png = pipeline.confusion_png
            data.confusion_png = str(root / png) if png and not Path(png).is_absolute() else png
        data.sources.update(pipeline.sources)
    if data.headline is None and len(data.stages) >= 2:
        data.headline = _headline(data.stages[0], data.stages[-1])
    return data
