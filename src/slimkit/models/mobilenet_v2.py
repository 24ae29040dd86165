"""MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381), Table 2 as data.

Inverted residuals with linear bottlenecks, ReLU6. The 1280-wide head conv never shrinks
below 1280 for widths < 1 (as in the reference implementation).
"""

from __future__ import annotations

from dataclasses import replace

from slimkit.models.builder import ArchSpec, BlockRow, register_spec, stage
from slimkit.models.registry import PublishedFigures


def _ir(t: float, c: int, n: int, s: int) -> BlockRow:
    """A row of the paper's table: expansion t, channels c, repeats n, stride s."""
    return BlockRow("ir", c, repeats=n, stride=s, expand=t)


MOBILENET_V2 = ArchSpec(
    stem_chs=32,
    stages=(
        stage(_ir(1, 16, 1, 1)),
        stage(_ir(6, 24, 2, 2)),
        stage(_ir(6, 32, 3, 2)),
        stage(_ir(6, 64, 4, 2), _ir(6, 96, 3, 1)),
        stage(_ir(6, 160, 3, 2), _ir(6, 320, 1, 1)),
    ),
    act="relu6",
    head_chs=1280,
    head_scaling="no_shrink",
    drop_rate=0.2,
)

PUBLISHED = {
    1.0: PublishedFigures(3_504_872, 300_000_000, 224, "torchvision weights meta; paper", 72.0),
    0.5: PublishedFigures(1_970_000, 97_000_000, 224, "TF-slim table; timm mobilenetv2_050",
                          65.4),
}

for _width in (0.35, 0.5, 0.75, 1.0, 1.4):
    register_spec(
        f"mobilenet_v2_{round(_width * 100):03d}",
        replace(MOBILENET_V2, width_mult=_width),
        family="mobilenet_v2",
        description=f"MobileNetV2 x{_width}: inverted residuals, linear bottlenecks",
        published=PUBLISHED.get(_width),
        aliases=("mobilenet_v2",) if _width == 1.0 else (),
    )
