"""What a report shows, as plain JSON-able data: :class:`StageRow` and :class:`ReportData`.

Both round-trip through ``to_dict`` / ``from_dict``; ``from_dict`` validates (a wrong type is a
one-line :class:`~slimkit.errors.FileFormatError` naming the field), so the same code checks a
hand-built report and the ``pipeline.json`` a recipe run writes (schema: :mod:`slimkit.report`).

Units: ``params`` and ``macs`` are counts (MACs = multiply-accumulates of one batch-1 forward
pass), ``size_bytes`` bytes, ``top1`` percent on the test split, ``latency_ms`` milliseconds
(median, batch 1) on the runtime named in ``runtime``, ``energy_mj`` millijoules per
inference (the :mod:`slimkit.analysis.profile` estimate). ``None`` means "not measured" and is
shown as "—"; the report never fills a gap with a guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from slimkit.errors import FileFormatError

__all__ = ["FLOAT_FIELDS", "INT_FIELDS", "ReportData", "StageRow"]

#: StageRow fields holding counts (stored as int)
INT_FIELDS = ("params", "macs", "size_bytes")
#: StageRow fields holding measurements (stored as float)
FLOAT_FIELDS = ("top1", "latency_ms", "energy_mj")


def _number(value: Any, where: str, *, integer: bool) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FileFormatError(f"{where} must be a number or null, got {value!r}; fix the file")
    if not math.isfinite(value):
        return None  # NaN / Infinity: a failed measurement, shown as missing
    if integer:
        if float(value) != int(value):
            raise FileFormatError(f"{where} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _text(value: Any, where: str, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise FileFormatError(f"{where} must be a string, got {value!r}; fix the file")
    return value


@dataclass
class StageRow:
    """One model in a report: a stage of the lineage, a candidate of a search, or a run.

    Attributes:
        name: what the row is ("train", "prune", "int8 candidate 3"...).
        params: parameter count.
        macs: multiply-accumulates of one forward pass at batch 1.
        size_bytes: model size in bytes (fp32 weights = 4 x params, or the file size of an
            exported model; ``extra["size_kind"]`` may say which).
        top1: test top-1 accuracy in percent.
        latency_ms: median batch-1 latency in milliseconds, measured on ``runtime``.
        runtime: where ``latency_ms`` was measured ("onnxruntime", "torch eager"...).
        energy_mj: energy estimate per inference in millijoules.
        extra: anything else worth keeping (source file, timestamp...); JSON-able.
    """

    name: str
    params: int | None = None
    macs: int | None = None
    size_bytes: int | None = None
    top1: float | None = None
    latency_ms: float | None = None
    runtime: str | None = None
    energy_mj: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "stage") -> StageRow:
        """Validate a StageRow-like dict: ``name`` (or ``stage``) is required, numbers must be
        numbers or null, unknown keys are kept in ``extra``."""
        if not isinstance(data, Mapping):
            raise FileFormatError(f"{where} must be an object with a name, got {data!r}")
        name = data.get("name", data.get("stage"))
        if not isinstance(name, str) or not name:
            raise FileFormatError(f"{where} needs a non-empty string 'name'; add one")
        values: dict[str, Any] = {"name": name}
        for key in INT_FIELDS:
            values[key] = _number(data.get(key), f"{where}.{key}", integer=True)
        for key in FLOAT_FIELDS:
            values[key] = _number(data.get(key), f"{where}.{key}", integer=False)
        values["runtime"] = _text(data.get("runtime"), f"{where}.runtime")
        extra = data.get("extra") or {}
        if not isinstance(extra, Mapping):
            raise FileFormatError(f"{where}.extra must be an object, got {extra!r}")
        known = {"name", "stage", "runtime", "extra", *INT_FIELDS, *FLOAT_FIELDS}
        values["extra"] = {**{k: v for k, v in data.items() if k not in known}, **extra}
        return cls(**values)

    def fill_missing(self, other: Mapping[str, Any], source: str) -> list[str]:
        """Set the fields that are still ``None`` from ``other`` (a dict of measured values);
        returns the names of the fields filled and records ``source`` for them in ``extra``."""
        filled = []
        for key in (*INT_FIELDS, *FLOAT_FIELDS, "runtime"):
            if getattr(self, key) is None and other.get(key) is not None:
                setattr(self, key, other[key])
                filled.append(key)
        if filled:
            self.extra.setdefault("filled_from", {}).update({k: source for k in filled})
        return filled


def _rows(value: Any, where: str) -> list[StageRow]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise FileFormatError(f"{where} must be a list of objects, got {type(value).__name__}")
    return [StageRow.from_dict(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _dict_list(value: Any, where: str, required: Sequence[str]) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise FileFormatError(f"{where} must be a list of objects")
    for i, v in enumerate(value):
        missing = [k for k in required if k not in v]
        if missing:
            raise FileFormatError(f"{where}[{i}] lacks {', '.join(missing)}; add them")
        if not isinstance(v["name"], str):
            raise FileFormatError(f"{where}[{i}].name must be a string")
        for k in required[1:]:
            _number(v[k], f"{where}[{i}].{k}", integer=False)
    return [dict(v) for v in value]


def _matrix(value: Any, where: str) -> list[list[int]] | None:
    if value is None:
        return None
    ok = isinstance(value, list) and value and all(
        isinstance(r, list) and len(r) == len(value)
        and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in r)
        for r in value)
    if not ok:
        raise FileFormatError(f"{where} must be a square list of lists of counts (rows: true "
                              "class, columns: predicted)")
    return [list(r) for r in value]


def _str_list(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FileFormatError(f"{where} must be a list of strings")
    return list(value)


@dataclass
class ReportData:
    """Everything one report shows; JSON-able (``to_dict`` / ``from_dict``).

    Attributes:
        title: the page title.
        run_dir: the run directory the data came from (``None`` for hand-built data).
        stages: the lineage of the final model, first stage first.
        candidates: other models measured along the way (search candidates, sweeps).
        profile_layers: per-layer rows ``{"name", "type", "macs", "params", ...}`` (the
            :class:`~slimkit.analysis.profile.LayerProfile` fields) for the MACs bars.
        layer_latency: per-layer rows ``{"name", "latency_ms"}`` for the latency bars.
        sensitivity: a :class:`~slimkit.compress.pruning.sensitivity.SensitivityResult` as a
            dict (the content of ``sensitivity.json``).
        confusion: the test confusion matrix (rows: true class, columns: predicted).
        confusion_png: an existing PNG of that matrix to reuse (drawn from ``confusion``
            when absent or unreadable).
        class_names: names of the classes, in confusion-matrix order.
        headline: one sentence on top of the report.
        info: short facts shown as a table (architecture, dataset, input size...).
        notes: remarks listed at the end (what was skipped and why, how a number was got).
        sources: where sections came from, shown under them: keys ``"profile"`` (the model
            the per-layer rows describe), ``"confusion"``, ``"sensitivity"``, ``"pipeline"``,
            values free text (usually a file relative to the run directory).
    """

    title: str
    run_dir: str | None = None
    stages: list[StageRow] = field(default_factory=list)
    candidates: list[StageRow] = field(default_factory=list)
    profile_layers: list[dict[str, Any]] | None = None
    layer_latency: list[dict[str, Any]] | None = None
    sensitivity: dict[str, Any] | None = None
    confusion: list[list[int]] | None = None
    confusion_png: str | None = None
    class_names: list[str] | None = None
    headline: str | None = None
    info: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["stages"] = [r.to_dict() for r in self.stages]
        d["candidates"] = [r.to_dict() for r in self.candidates]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "report") -> ReportData:
        if not isinstance(data, Mapping):
            raise FileFormatError(f"{where} must be a JSON object")
        sens = data.get("sensitivity")
        if sens is not None:
            check_sensitivity(sens, f"{where}.sensitivity")
        info = data.get("info") or {}
        sources = data.get("sources") or {}
        for key, value in (("info", info), ("sources", sources)):
            if not isinstance(value, Mapping):
                raise FileFormatError(f"{where}.{key} must be an object")
        return cls(
            title=_text(data.get("title") or "slimkit report", f"{where}.title") or "",
            run_dir=_text(data.get("run_dir"), f"{where}.run_dir"),
            stages=_rows(data.get("stages"), f"{where}.stages"),
            candidates=_rows(data.get("candidates"), f"{where}.candidates"),
            profile_layers=_dict_list(data.get("profile_layers"), f"{where}.profile_layers",
                                      ("name", "macs")),
            layer_latency=_dict_list(data.get("layer_latency"), f"{where}.layer_latency",
                                     ("name", "latency_ms")),
            sensitivity=dict(sens) if sens is not None else None,
            confusion=_matrix(data.get("confusion"), f"{where}.confusion"),
            confusion_png=_text(data.get("confusion_png"), f"{where}.confusion_png"),
            class_names=_str_list(data.get("class_names"), f"{where}.class_names"),
            headline=_text(data.get("headline"), f"{where}.headline"),
            info={str(k): str(v) for k, v in info.items()},
            notes=_str_list(data.get("notes"), f"{where}.notes") or [],
            sources={str(k): str(v) for k, v in sources.items()},
        )


def check_sensitivity(data: Any, where: str = "sensitivity.json") -> dict[str, Any]:
    """Check the shape of a ``SensitivityResult`` dict; returns it."""
    if not isinstance(data, Mapping) or not isinstance(data.get("rows"), list):
        raise FileFormatError(f"{where} is not a sensitivity table (no 'rows' list); "
                              "re-create it with `slimkit prune sensitivity`")
    _number(data.get("base_top1"), f"{where}.base_top1", integer=False)
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, Mapping) or not isinstance(row.get("layer"), str):
            raise FileFormatError(f"{where}.rows[{i}] needs a 'layer' name")
        for k in ("ratio", "top1", "drop"):
            if _number(row.get(k), f"{where}.rows[{i}].{k}", integer=False) is None:
                raise FileFormatError(f"{where}.rows[{i}] lacks {k!r}")
    return dict(data)
