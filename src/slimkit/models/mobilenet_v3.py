"""MobileNetV3 small and large (Howard et al. 2019, arXiv:1905.02244), Tables 1-2 as data.

Rows give the expanded ("exp size") width explicitly; SE widths are
``make_divisible(exp / 4, 8)`` with a hard-sigmoid gate; h-swish in the later stages.
"""

from __future__ import annotations

from dataclasses import replace

from slimkit.models.builder import ArchSpec, BlockRow, register_spec, stage
from slimkit.models.registry import PublishedFigures


def _b(k: int, exp: int, out: int, se: bool, act: str, s: int) -> BlockRow:
    """A row as the paper writes it: kernel, exp size, #out, SE, NL, stride."""
    return BlockRow("ir", out, stride=s, kernel=k, mid_chs=exp, se=0.25 if se else 0.0,
                    act={"RE": "relu", "HS": "hardswish"}[act])


_COMMON = dict(
    stem_chs=16,
    stem_act="hardswish",
    act="relu",
    head_act="hardswish",
    pre_logits_chs=1280,
    pre_logits_act="hardswish",
    pre_logits_scaling="scale",
    se_base="mid",
    se_divisor=8,
    se_act="relu",
    se_gate="hardsigmoid",
    drop_rate=0.2,
    norm_eps=1e-3,
    norm_momentum=0.01,
)

MOBILENET_V3_LARGE = ArchSpec(
    stages=(
        stage(_b(3, 16, 16, False, "RE", 1)),
        stage(_b(3, 64, 24, False, "RE", 2), _b(3, 72, 24, False, "RE", 1)),
        stage(_b(5, 72, 40, True, "RE", 2), _b(5, 120, 40, True, "RE", 1),
              _b(5, 120, 40, True, "RE", 1)),
        stage(_b(3, 240, 80, False, "HS", 2), _b(3, 200, 80, False, "HS", 1),
              _b(3, 184, 80, False, "HS", 1), _b(3, 184, 80, False, "HS", 1),
              _b(3, 480, 112, True, "HS", 1), _b(3, 672, 112, True, "HS", 1)),
        stage(_b(5, 672, 160, True, "HS", 2), _b(5, 960, 160, True, "HS", 1),
              _b(5, 960, 160, True, "HS", 1)),
    ),
    head_chs=960,
    **_COMMON,  # type: ignore[arg-type]
)

MOBILENET_V3_SMALL = ArchSpec(
    stages=(
        stage(_b(3, 16, 16, True, "RE", 2)),
        stage(_b(3, 72, 24, False, "RE", 2), _b(3, 88, 24, False, "RE", 1)),
        stage(_b(5, 96, 40, True, "HS", 2), _b(5, 240, 40, True, "HS", 1),
              _b(5, 240, 40, True, "HS", 1), _b(5, 120, 48, True, "HS", 1),
              _b(5, 144, 48, True, "HS", 1)),
        stage(_b(5, 288, 96, True, "HS", 2), _b(5, 576, 96, True, "HS", 1),
              _b(5, 576, 96, True, "HS", 1)),
    ),
    head_chs=576,
    **{**_COMMON, "pre_logits_chs": 1024},  # type: ignore[arg-type]
)

PUBLISHED = {
    ("large", 1.0): PublishedFigures(5_483_032, 217_000_000, 224, "torchvision meta; paper",
                                     75.2),
    ("small", 1.0): PublishedFigures(2_542_856, 57_000_000, 224, "torchvision meta; paper",
                                     67.4),
}

for _size, _spec in (("large", MOBILENET_V3_LARGE), ("small", MOBILENET_V3_SMALL)):
    for _width in (0.75, 1.0):
        register_spec(
            f"mobilenet_v3_{_size}_{round(_width * 100):03d}",
            replace(_spec, width_mult=_width),
            family="mobilenet_v3",
            description=f"MobileNetV3-{_size.capitalize()} x{_width}: MBConv + SE + h-swish",
            published=PUBLISHED.get((_size, _width)),
            aliases=(f"mobilenet_v3_{_size}",) if _width == 1.0 else (),
        )
