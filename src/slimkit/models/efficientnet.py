"""EfficientNet B0-B7 (Tan & Le 2019, arXiv:1905.11946).

B0's table (Table 1) as data, and compound scaling as data: each variant multiplies the
widths (``make_divisible(c * w, 8)``), the repeats (``ceil(n * d)``), the input resolution
and the dropout, as in the paper's Eq. 3 and its released coefficients. SE widths are a
quarter of the block's *input* width, with SiLU and a sigmoid gate.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from slimkit.models.builder import ArchSpec, BlockRow, register_spec, stage
from slimkit.models.registry import PublishedFigures


def _mb(e: float, k: int, s: int, c: int, n: int) -> BlockRow:
    """MBConv{e} k x k, stride s, c channels, n layers (Table 1)."""
    return BlockRow("ir", c, repeats=n, stride=s, kernel=k, expand=e, se=0.25)


EFFICIENTNET_B0 = ArchSpec(
    stem_chs=32,
    stages=(
        stage(_mb(1, 3, 1, 16, 1)),
        stage(_mb(6, 3, 2, 24, 2)),
        stage(_mb(6, 5, 2, 40, 2)),
        stage(_mb(6, 3, 2, 80, 3), _mb(6, 5, 1, 112, 3)),
        stage(_mb(6, 5, 2, 192, 4), _mb(6, 3, 1, 320, 1)),
    ),
    act="silu",
    head_chs=1280,
    head_scaling="scale",
    se_base="in",
    se_divisor=None,
    se_act="silu",
    se_gate="sigmoid",
    drop_path_rate=0.2,
    norm_eps=1e-3,
    norm_momentum=0.01,
)


class Compound(NamedTuple):
    """Compound-scaling coefficients of one variant."""

    width: float
    depth: float
    resolution: int
    dropout: float


COMPOUND = {
    "b0": Compound(1.0, 1.0, 224, 0.2),
    "b1": Compound(1.0, 1.1, 240, 0.2),
    "b2": Compound(1.1, 1.2, 260, 0.3),
    "b3": Compound(1.2, 1.4, 300, 0.3),
    "b4": Compound(1.4, 1.8, 380, 0.4),
    "b5": Compound(1.6, 2.2, 456, 0.4),
    "b6": Compound(1.8, 2.6, 528, 0.5),
    "b7": Compound(2.0, 3.1, 600, 0.5),
}

PUBLISHED = {
    "b0": PublishedFigures(5_288_548, 388_000_000, 224, "torchvision meta; paper", 77.1),
    "b1": PublishedFigures(7_794_184, 694_000_000, 240, "torchvision meta; paper", 79.1),
    "b2": PublishedFigures(9_109_994, 1_000_000_000, 260, "torchvision meta; paper", 80.1),
    "b3": PublishedFigures(12_233_232, 1_800_000_000, 300, "torchvision meta; paper", 81.6),
}

for _variant, _c in COMPOUND.items():
    register_spec(
        f"efficientnet_{_variant}",
        replace(EFFICIENTNET_B0, width_mult=_c.width, depth_mult=_c.depth,
                input_size=_c.resolution, drop_rate=_c.dropout),
        family="efficientnet",
        description=(f"EfficientNet-{_variant.upper()}: width x{_c.width}, depth x{_c.depth}, "
                     f"{_c.resolution} px"),
        published=PUBLISHED.get(_variant),
    )
