"""MobileNetV1 (Howard et al. 2017, arXiv:1704.04861), Table 1 as data.

A 3x3 stem and 13 depthwise separable blocks (ReLU after both convs), no head conv.
Width multipliers 0.25-1.0 scale every layer.
"""

from __future__ import annotations

from dataclasses import replace

from slimkit.models.builder import ArchSpec, BlockRow, register_spec, stage
from slimkit.models.registry import PublishedFigures


def _ds(out_chs: int, stride: int = 1, repeats: int = 1) -> BlockRow:
    return BlockRow("ds", out_chs, repeats=repeats, stride=stride)


MOBILENET_V1 = ArchSpec(
    stem_chs=32,
    stages=(
        stage(_ds(64)),
        stage(_ds(128, 2), _ds(128)),
        stage(_ds(256, 2), _ds(256)),
        stage(_ds(512, 2), _ds(512, repeats=5)),
        stage(_ds(1024, 2), _ds(1024)),
    ),
    act="relu",
)

PUBLISHED = {
    1.0: PublishedFigures(4_230_000, 569_000_000, 224, "MobileNets paper Table 8; TF-slim 4.24 M",
                          70.6),
}

for _width in (0.25, 0.5, 0.75, 1.0):
    register_spec(
        f"mobilenet_v1_{round(_width * 100):03d}",
        replace(MOBILENET_V1, width_mult=_width),
        family="mobilenet_v1",
        description=f"MobileNetV1 x{_width}: 3x3 stem + 13 depthwise separable blocks",
        published=PUBLISHED.get(_width),
        aliases=("mobilenet_v1",) if _width == 1.0 else (),
    )
