"""Where a model's parameters, MACs and latency go, stage by stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from slimkit.analysis.latency import per_module_latency
from slimkit.analysis.profile import ModelProfile, profile

__all__ = ["StageCost", "top_level_parts", "stage_breakdown"]


@dataclass
class StageCost:
    """Cost of one part of a network (stem, a stage, the head)."""

    name: str
    params: int
    macs: int
    latency_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def top_level_parts(model: nn.Module) -> list[str]:
    """Non-nesting parts to attribute costs to: each stage of ``model.stages`` if present,
    and every other direct child that has parameters or runs (stem, head conv, classifier)."""
    parts: list[str] = []
    for name, child in model.named_children():
        if name == "stages" and isinstance(child, nn.Sequential):
            parts.extend(f"stages.{i}" for i in range(len(child)))
        elif not isinstance(child, nn.Identity):
            parts.append(name)
    return parts


def stage_breakdown(model: nn.Module, input_size: int | None = None, *, threads: int = 2,
                    runs: int = 20) -> tuple[ModelProfile, list[StageCost]]:
    """Profile ``model`` and split params, MACs and eager batch-1 latency over its parts."""
    prof = profile(model, input_size)
    parts = top_level_parts(model)
    x = torch.randn(*prof.input_shape)
    times = per_module_latency(model, x, parts, threads=threads, runs=runs)
    rows = []
    for part in parts:
        prefix = part + "."
        layers = [r for r in prof.layers if r.name == part or r.name.startswith(prefix)]
        rows.append(StageCost(part, sum(r.params for r in layers), sum(r.macs for r in layers),
                              times[part]))
    return prof, rows
