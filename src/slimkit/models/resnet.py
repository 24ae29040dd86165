"""ResNets (He et al. 2016) as reference models and distillation teachers.

ImageNet ResNet-18/34/50 (torchvision's V1.5: stride on the 3x3 of bottlenecks) and the
CIFAR ResNet-20/56 (3 stages of 16/32/64 channels on 32 px inputs, projection shortcuts).
"""

from __future__ import annotations

from slimkit.models.builder import ArchSpec, BlockRow, register_spec, stage
from slimkit.models.registry import PublishedFigures


def _imagenet_resnet(kind: str, repeats: tuple[int, int, int, int]) -> ArchSpec:
    expansion = 4 if kind == "bottleneck" else 1
    return ArchSpec(
        stem_chs=64,
        stem_kernel=7,
        stem_stride=2,
        stem_pool=True,
        stages=tuple(
            stage(BlockRow(kind, width * expansion, repeats=n, stride=1 if i == 0 else 2,
                           mid_chs=width if kind == "bottleneck" else None))
            for i, (width, n) in enumerate(zip((64, 128, 256, 512), repeats, strict=True))
        ),
        act="relu",
    )


def _cifar_resnet(depth: int) -> ArchSpec:
    n = (depth - 2) // 6
    return ArchSpec(
        stem_chs=16,
        stem_kernel=3,
        stem_stride=1,
        stages=tuple(
            stage(BlockRow("basic", width, repeats=n, stride=1 if i == 0 else 2))
            for i, width in enumerate((16, 32, 64))
        ),
        act="relu",
        input_size=32,
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    )


register_spec(
    "resnet18", _imagenet_resnet("basic", (2, 2, 2, 2)), family="resnet",
    description="ResNet-18: basic blocks, a reference and teacher",
    published=PublishedFigures(11_689_512, 1_810_000_000, 224, "torchvision meta", 69.8),
)
register_spec(
    "resnet34", _imagenet_resnet("basic", (3, 4, 6, 3)), family="resnet",
    description="ResNet-34: basic blocks, a reference and teacher",
    published=PublishedFigures(21_797_672, 3_660_000_000, 224, "torchvision meta", 73.3),
)
register_spec(
    "resnet50", _imagenet_resnet("bottleneck", (3, 4, 6, 3)), family="resnet",
    description="ResNet-50 (V1.5): bottleneck blocks, a reference and teacher",
    published=PublishedFigures(25_557_032, 4_090_000_000, 224, "torchvision meta (V1.5)", 76.1),
)
register_spec(
    "resnet20", _cifar_resnet(20), family="resnet",
    description="CIFAR ResNet-20 (32 px): 3 stages x 3 basic blocks",
    published=PublishedFigures(270_000, 40_800_000, 32,
                               "chenyaofo/pytorch-cifar-models", None, 10),
)
register_spec(
    "resnet56", _cifar_resnet(56), family="resnet",
    description="CIFAR ResNet-56 (32 px): 3 stages x 9 basic blocks",
    published=PublishedFigures(860_000, 125_800_000, 32,
                               "chenyaofo/pytorch-cifar-models", None, 10),
)
