"""Pruning: structured (channels really removed) and unstructured (magnitude masks)."""

from slimkit.compress.pruning.bn import recalibrate_bn
from slimkit.compress.pruning.latency_probe import OrtLatencyProbe
from slimkit.compress.pruning.schedules import (
    GradualPruning,
    IterativeResult,
    agp_fraction,
    iterative_prune,
)
from slimkit.compress.pruning.sensitivity import (
    SensitivityResult,
    allocate_ratios,
    allocation_path,
    plot_sensitivity,
    prune_to_target,
    sensitivity_analysis,
)
from slimkit.compress.pruning.structured import (
    METHODS,
    PruneResult,
    check_targets,
    make_importance,
    prunable_groups,
    prune,
)
from slimkit.compress.pruning.unstructured import (
    LayerSparsity,
    MaskCallback,
    SparsityReport,
    UnstructuredResult,
    compressed_sizes,
    make_permanent,
    masks_from_zeros,
    prune_unstructured,
    sparsity_report,
)

__all__ = [
    "OrtLatencyProbe",
    "recalibrate_bn",
    "METHODS",
    "GradualPruning",
    "IterativeResult",
    "LayerSparsity",
    "MaskCallback",
    "PruneResult",
    "SensitivityResult",
    "SparsityReport",
    "UnstructuredResult",
    "agp_fraction",
    "allocate_ratios",
    "allocation_path",
    "check_targets",
    "compressed_sizes",
    "iterative_prune",
    "make_importance",
    "make_permanent",
    "masks_from_zeros",
    "plot_sensitivity",
    "prunable_groups",
    "prune",
    "prune_to_target",
    "prune_unstructured",
    "sensitivity_analysis",
    "sparsity_report",
]
