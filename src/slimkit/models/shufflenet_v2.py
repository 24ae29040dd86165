"""ShuffleNetV2 (Ma et al. 2018, arXiv:1807.11164), Table 5 as data.

Units split the channels, transform half, concatenate and shuffle. Each width has its own
published channel table; widths are rounded to multiples of 4 so the tables stay exact.
"""

from __future__ import annotations

from slimkit.models.builder import ArchSpec, BlockRow, register_spec, stage
from slimkit.models.registry import PublishedFigures

# stage output channels (stage2, stage3, stage4, conv5) per width, from the paper's Table 5
WIDTHS = {
    "x0_5": (48, 96, 192, 1024),
    "x1_0": (116, 232, 464, 1024),
    "x1_5": (176, 352, 704, 1024),
    "x2_0": (244, 488, 976, 2048),
}
REPEATS = (4, 8, 4)


def shufflenet_v2_spec(channels: tuple[int, int, int, int]) -> ArchSpec:
    """The ShuffleNetV2 spec for one column of Table 5."""
    return ArchSpec(
        stem_chs=24,
        stem_stride=2,
        stem_pool=True,
        stages=tuple(
            stage(BlockRow("shuffle", c, repeats=1, stride=2),
                  BlockRow("shuffle", c, repeats=n - 1))
            for c, n in zip(channels[:3], REPEATS, strict=True)
        ),
        head_chs=channels[3],
        act="relu",
        divisor=4,
    )


PUBLISHED = {
    "x1_0": PublishedFigures(2_278_604, 146_000_000, 224, "torchvision meta; paper", 69.4),
}

for _name, _chs in WIDTHS.items():
    register_spec(
        f"shufflenet_v2_{_name}",
        shufflenet_v2_spec(_chs),
        family="shufflenet_v2",
        description=f"ShuffleNetV2 {_name.replace('_', '.')}: channel split + shuffle units",
        published=PUBLISHED.get(_name),
        aliases=("shufflenet_v2",) if _name == "x1_0" else (),
    )
