"""Analysis: what a model costs (profile) and how fast it runs (latency)."""

from slimkit.analysis.breakdown import StageCost, stage_breakdown
from slimkit.analysis.latency import LatencyStats, cpu_info, measure_torch
from slimkit.analysis.profile import (
    HOROWITZ_45NM,
    EnergyModel,
    LayerProfile,
    ModelProfile,
    count_macs,
    count_params,
    profile,
)

__all__ = [
    "LatencyStats",
    "StageCost",
    "cpu_info",
    "measure_torch",
    "stage_breakdown",
    "HOROWITZ_45NM",
    "EnergyModel",
    "LayerProfile",
    "ModelProfile",
    "count_macs",
    "count_params",
    "profile",
]
