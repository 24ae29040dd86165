"""Analysis: what a model costs (profile) and how fast it runs (latency)."""

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
    "HOROWITZ_45NM",
    "EnergyModel",
    "LayerProfile",
    "ModelProfile",
    "count_macs",
    "count_params",
    "profile",
]
