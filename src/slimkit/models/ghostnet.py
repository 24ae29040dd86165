"""GhostNet (Han et al. 2020, arXiv:1911.11907), Table 1 as data.

Ghost bottlenecks (half the maps from cheap depthwise ops), SE with a hard-sigmoid gate on
some blocks, channels rounded to multiples of 4. After pooling, a 1280-wide layer with ReLU
(a 1x1 conv with bias in the reference code, a Linear here: same weights and MACs).
"""

from __future__ import annotations

from dataclasses import replace

from slimkit.models.builder import ArchSpec, BlockRow, register_spec, stage
from slimkit.models.registry import PublishedFigures


def _g(k: int, exp: int, out: int, se: float, s: int) -> BlockRow:
    """A row as the paper writes it: kernel, #exp, #out, SE ratio, stride."""
    return BlockRow("ghost", out, stride=s, kernel=k, mid_chs=exp, se=se)


GHOSTNET = ArchSpec(
    stem_chs=16,
    stages=(
        stage(_g(3, 16, 16, 0, 1)),
        stage(_g(3, 48, 24, 0, 2), _g(3, 72, 24, 0, 1)),
        stage(_g(5, 72, 40, 0.25, 2), _g(5, 120, 40, 0.25, 1)),
        stage(_g(3, 240, 80, 0, 2), _g(3, 200, 80, 0, 1), _g(3, 184, 80, 0, 1),
              _g(3, 184, 80, 0, 1), _g(3, 480, 112, 0.25, 1), _g(3, 672, 112, 0.25, 1)),
        stage(_g(5, 672, 160, 0.25, 2), _g(5, 960, 160, 0, 1), _g(5, 960, 160, 0.25, 1),
              _g(5, 960, 160, 0, 1), _g(5, 960, 160, 0.25, 1)),
    ),
    act="relu",
    head_chs=960,
    pre_logits_chs=1280,
    pre_logits_act="relu",
    pre_logits_scaling="fixed",
    divisor=4,
    se_base="mid",
    se_divisor=4,
    se_act="relu",
    se_gate="hardsigmoid",
    drop_rate=0.2,
)

PUBLISHED = {
    1.0: PublishedFigures(5_180_000, 141_000_000, 224, "timm ghostnet_100; paper", 73.9),
}

for _width in (0.5, 1.0, 1.3):
    register_spec(
        f"ghostnet_{round(_width * 100):03d}",
        replace(GHOSTNET, width_mult=_width),
        family="ghostnet",
        description=f"GhostNet x{_width}: ghost bottlenecks with SE",
        published=PUBLISHED.get(_width),
        aliases=("ghostnet",) if _width == 1.0 else (),
    )
