"""YAML recipes: a model, a dataset and an ordered list of stages, validated by pydantic.

A recipe names where to start (``model:`` a zoo name to train, or ``checkpoint:``), the data,
and the stages; each stage is a one-key mapping ``{stage_name: {parameters}}``::

    name: mbv2-digits
    model: mobilenet_v2
    model_args: {small_input: true}
    data: digits
    stages:
      - train: {epochs: 8}
      - sensitivity: {ratios: [0.25, 0.5]}
      - prune: {target_macs: 0.5, allocation: sensitivity, finetune_epochs: 2, distill: true}
      - quantize: {calib_samples: 256, max_acc_drop: 1.0}
      - bench: {runs: 50}

Mistakes are reported in one line with the path to them: an unknown key gets "did you
mean", a wrong type names the expected one (``stages[2].prune.ratio: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slimkit.errors import FileFormatError, InvalidArgumentError, suggest

__all__ = ["Recipe", "load_recipe", "parse_recipe", "STAGES", "StageSpec"]


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")


Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
KeepFraction = Annotated[float, Field(gt=0.0, le=1.0)]


class TrainStage(_Stage):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float | None = Field(None, gt=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    pretrained: str | None = None  # weights to start from (transfer learning)
    freeze_backbone: bool = False
    linear_probe_epochs: int | None = Field(None, ge=1)


class SensitivityStage(_Stage):
    ratios: list[Fraction] = [0.25, 0.5, 0.75]
    method: Literal["l1", "l2", "bn", "taylor", "fpgm", "random"] = "l2"
    samples: int = Field(512, ge=1)


class PruneStage(_Stage):
    ratio: float | None = Field(None, ge=0.0, lt=1.0)
    target_macs: KeepFraction | None = None
    target_params: KeepFraction | None = None
    method: Literal["l1", "l2", "bn", "taylor", "fpgm", "random"] = "l2"
    allocation: Literal["uniform", "sensitivity"] = "uniform"
    global_pruning: bool = False
    round_to: int = Field(8, ge=1)
    ignore: list[str] = []
    steps: int = Field(1, ge=1)
    finetune_epochs: int = Field(0, ge=0)
    finetune_lr: float = Field(0.01, gt=0)
    distill: bool = False
    unstructured: bool = False
    sparsity: Fraction | None = None

    @model_validator(mode="after")
    def _one_target(self) -> PruneStage:
        if self.unstructured:
            if self.sparsity is None:
                raise ValueError("unstructured pruning needs sparsity")
            return self
        given = [k for k in ("ratio", "target_macs", "target_params")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of ratio, target_macs, target_params")
        if self.allocation == "sensitivity" and self.target_macs is None:
            raise ValueError("allocation: sensitivity needs target_macs")
        return self


class DistillStage(_Stage):
    teacher: str = "original"  # "original", "previous" or a checkpoint path
    method: Literal["logit", "feature", "at"] = "logit"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)
    pairs: list[str] = []
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float | None = Field(None, gt=0)


class DecomposeStage(_Stage):
    rank_ratio: KeepFraction | None = None
    energy: KeepFraction | None = None
    target_macs: KeepFraction | None = None
    finetune_epochs: int = Field(0, ge=0)
    finetune_lr: float = Field(0.01, gt=0)

    @model_validator(mode="after")
    def _one(self) -> DecomposeStage:
        if sum(v is not None for v in (self.rank_ratio, self.energy, self.target_macs)) != 1:
            raise ValueError("give exactly one of rank_ratio, energy, target_macs")
        return self


class SparsifyStage(_Stage):
    n: int = Field(2, ge=1)
    m: int = Field(4, ge=2)
    finetune_epochs: int = Field(0, ge=0)
    finetune_lr: float = Field(0.01, gt=0)


class ClusterStage(_Stage):
    clusters: int = Field(16, ge=2, le=256)
    finetune_epochs: int = Field(0, ge=0)
    finetune_lr: float = Field(0.005, gt=0)


class QuantizeStage(_Stage):
    calib_samples: int = Field(256, ge=1)
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    equalize: bool = False
    bias_correction: bool = False
    max_acc_drop: float | None = Field(None, ge=0)
    qat_epochs: int = Field(0, ge=0)


class ExportStage(_Stage):
    opset: int = Field(18, ge=13)
    exporter: Literal["auto", "dynamo", "legacy"] = "auto"


class BenchStage(_Stage):
    runtimes: list[Literal["torch", "torch-channels_last", "onnxruntime"]] = ["onnxruntime"]
    batch_size: int = Field(1, ge=1)
    threads: int = Field(2, ge=1)
    warmup: int = Field(10, ge=0)
    runs: int = Field(100, ge=1)


class EvaluateStage(_Stage):
    split: Literal["test", "val"] = "test"


STAGES: dict[str, type[_Stage]] = {
    "train": TrainStage,
    "sensitivity": SensitivityStage,
    "prune": PruneStage,
    "distill": DistillStage,
    "decompose": DecomposeStage,
    "sparsify": SparsifyStage,
    "cluster": ClusterStage,
    "quantize": QuantizeStage,
    "export": ExportStage,
    "bench": BenchStage,
    "evaluate": EvaluateStage,
}


class StageSpec(BaseModel):
    """One validated stage: its kind and parameters."""

    kind: str
    params: _Stage

    def to_dict(self) -> dict[str, Any]:
        return {self.kind: self.params.model_dump()}


class Recipe(BaseModel):
    """A validated recipe."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    model: str | None = None
    checkpoint: str | None = None
    model_args: dict[str, Any] = {}
    data: str = "digits"
    seed: int = 0
    stages: list[dict[str, Any]]

    @model_validator(mode="after")
    def _start(self) -> Recipe:
        if (self.model is None) == (self.checkpoint is None):
            raise ValueError("give exactly one of model (a zoo name) or checkpoint (a file)")
        if not self.stages:
            raise ValueError("stages must list at least one stage")
        return self


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _one_line(err: ValidationError, prefix: str, fields: list[str]) -> str:
    e = err.errors()[0]
    loc = _fmt_loc(tuple(e["loc"]))
    where = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
    if e["type"] == "extra_forbidden":
        key = str(e["loc"][-1])
        return f"{where}: unknown key {key!r}." + suggest(key, fields)
    msg = e["msg"].replace("Value error, ", "")
    got = e.get("input")
    got_s = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    return f"{where}: {msg}{got_s}" if where else f"{msg}{got_s}"


def parse_recipe(data: Any, source: str = "recipe") -> tuple[Recipe, list[StageSpec]]:
    """Validate a recipe mapping; returns it and its typed stages."""
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"{source}: a recipe is a mapping with model/checkpoint, "
                                   "data and stages")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise InvalidArgumentError(f"{source}: " + _one_line(exc, "", list(Recipe.model_fields))
                                   ) from exc
    specs = []
    for i, entry in enumerate(recipe.stages):
        where = f"stages[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise InvalidArgumentError(f"{source}: {where}: a stage is one mapping like "
                                       "'- prune: {target_macs: 0.5}'")
        kind, params = next(iter(entry.items()))
        if kind not in STAGES:
            raise InvalidArgumentError(f"{source}: {where}: unknown stage {kind!r}; choose from "
                                       f"{', '.join(STAGES)}." + suggest(str(kind), STAGES))
        try:
            parsed = STAGES[kind].model_validate(params or {})
        except ValidationError as exc:
            raise InvalidArgumentError(
                f"{source}: " + _one_line(exc, f"{where}.{kind}", list(STAGES[kind].model_fields))
            ) from exc
        specs.append(StageSpec(kind=kind, params=parsed))
    return recipe, specs


def load_recipe(path: str | Path) -> tuple[Recipe, list[StageSpec]]:
    """Read and validate a YAML recipe file."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"recipe {str(path)!r} does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise FileFormatError(f"{path.name} is not valid YAML{where}: "
                              f"{getattr(exc, 'problem', exc)}") from exc
    recipe, specs = parse_recipe(data, path.name)
    if recipe.name is None:
        recipe.name = path.stem
    return recipe, specs
