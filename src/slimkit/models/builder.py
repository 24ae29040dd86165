"""The one builder: a stage table (typed rows, the paper's table as data) -> a network.

Every zoo family is a table of :class:`BlockRow` grouped into stages plus an
:class:`ArchSpec` of network-wide choices (stem, head, activation, SE rule, rounding).
:func:`build_network` applies width and depth multipliers in one place
(``make_divisible(c * width, divisor)`` and ``ceil(repeats * depth)``), the linear
stochastic-depth schedule, and the small-input rule, and returns a :class:`SlimNet`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from slimkit.errors import InvalidArgumentError, suggest
from slimkit.models.registry import PublishedFigures, register_model
from slimkit.nn.blocks import (
    BasicBlock,
    Bottleneck,
    DepthwiseSeparableConv,
    FusedMBConv,
    GhostBottleneck,
    InvertedResidual,
    ShuffleUnit,
)
from slimkit.nn.layers import ConvNormAct, batchnorm, create_act, get_act_layer, make_divisible

__all__ = [
    "BlockRow", "ArchSpec", "SlimNet", "build_network", "register_spec", "stage", "BLOCK_KINDS"
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_INPUT_STRIDE = 8  # 32 px -> 4x4 final map, as the CIFAR ports of these networks do

Scaling = Literal["scale", "no_shrink", "fixed"]


@dataclass(frozen=True)
class BlockRow:
    """One row of a paper's architecture table: ``repeats`` blocks of one kind.

    The first block of the row has ``stride``; the others stride 1.

    Attributes:
        kind: block type, a key of :data:`BLOCK_KINDS` (``ds``, ``ir``, ``fused_ir``,
            ``ghost``, ``shuffle``, ``basic``, ``bottleneck``).
        out_chs: output channels at width 1.0.
        repeats: number of blocks at depth 1.0.
        stride: stride of the first block (1 or 2).
        kernel: (depthwise) kernel size, odd.
        expand: expansion ratio (``mid = in * expand``) for ``ir``/``fused_ir``.
        mid_chs: explicit hidden width at width 1.0 (MobileNetV3 "exp size", GhostNet,
            ResNet bottlenecks); overrides ``expand``.
        se: squeeze-excitation ratio (0 = none); its base is ``ArchSpec.se_base``.
        act: activation override for this row (MobileNetV3 mixes ReLU and h-swish).
    """

    kind: str
    out_chs: int
    repeats: int = 1
    stride: int = 1
    kernel: int = 3
    expand: float = 1.0
    mid_chs: int | None = None
    se: float = 0.0
    act: str | None = None
    dilation: int = 1


@dataclass(frozen=True)
class ArchSpec:
    """Network-wide choices around the stage table.

    Attributes:
        stages: rows grouped into stages; each stage is one entry of ``feature_info``.
        stem_chs, stem_kernel, stem_stride, stem_pool: the stem conv (and a 3x3/2 max pool).
        act: default activation of blocks (rows may override), ``stem_act`` of the stem.
        head_chs: width of a 1x1 ConvNormAct after the last stage (``None``: none).
        pre_logits_chs: width of a Linear + activation after pooling (MobileNetV3/GhostNet).
        head_scaling / pre_logits_scaling: how the width multiplier applies to them:
            ``scale`` (like every channel), ``no_shrink`` (``max(1, width)``, MobileNetV2's
            1280) or ``fixed``.
        divisor: channels are rounded to multiples of it (8; 4 for GhostNet/ShuffleNet).
        se_base: whether SE widths derive from the block input (``in``, EfficientNet) or the
            expanded width (``mid``, MobileNetV3/GhostNet); ``se_divisor`` rounds them
            (``None``: ``int(base * ratio)``).
        width_mult, depth_mult: compound-scaling coefficients of the variant.
        drop_rate: dropout before the classifier; drop_path_rate: final stochastic depth.
    """

    stages: tuple[tuple[BlockRow, ...], ...]
    stem_chs: int = 32
    stem_kernel: int = 3
    stem_stride: int = 2
    stem_pool: bool = False
    act: str = "relu"
    stem_act: str | None = None
    head_chs: int | None = None
    head_act: str | None = None
    head_scaling: Scaling = "scale"
    pre_logits_chs: int | None = None
    pre_logits_act: str | None = None
    pre_logits_scaling: Scaling = "fixed"
    divisor: int = 8
    se_base: Literal["in", "mid"] = "mid"
    se_divisor: int | None = 8
    se_act: str = "relu"
    se_gate: str = "sigmoid"
    ds_pw_act: bool = True
    width_mult: float = 1.0
    depth_mult: float = 1.0
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-5
    norm_momentum: float = 0.1
    input_size: int = 224
    num_classes: int = 1000
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass
class BlockContext:
    """What a block factory needs beyond its row (resolved once per network)."""

    act: Callable[[], nn.Module] | None
    norm: Callable[[int], nn.Module]
    se_act: str
    se_gate: str
    ds_pw_act: bool


def _ds(in_chs: int, out_chs: int, mid: int, se: int, stride: int, row: BlockRow,
        ctx: BlockContext, dpr: float) -> nn.Module:
    return DepthwiseSeparableConv(
        in_chs, out_chs, row.kernel, stride, row.dilation, se_chs=se, act_layer=ctx.act,
        pw_act=ctx.ds_pw_act, norm_layer=ctx.norm, se_act=ctx.se_act, se_gate=ctx.se_gate,
        drop_path_rate=dpr,
    )


def _mbconv(cls: type[nn.Module]) -> Callable[..., nn.Module]:
    def factory(in_chs: int, out_chs: int, mid: int, se: int, stride: int, row: BlockRow,
                ctx: BlockContext, dpr: float) -> nn.Module:
        return cls(
            in_chs, out_chs, mid, row.kernel, stride, row.dilation, se_chs=se,
            act_layer=ctx.act, norm_layer=ctx.norm, se_act=ctx.se_act, se_gate=ctx.se_gate,
            drop_path_rate=dpr,
        )

    return factory


def _shuffle(in_chs: int, out_chs: int, mid: int, se: int, stride: int, row: BlockRow,
             ctx: BlockContext, dpr: float) -> nn.Module:
    return ShuffleUnit(in_chs, out_chs, row.kernel, stride, row.dilation, act_layer=ctx.act,
                       norm_layer=ctx.norm, drop_path_rate=dpr)


def _basic(in_chs: int, out_chs: int, mid: int, se: int, stride: int, row: BlockRow,
           ctx: BlockContext, dpr: float) -> nn.Module:
    return BasicBlock(in_chs, out_chs, row.kernel, stride, row.dilation, act_layer=ctx.act,
                      norm_layer=ctx.norm, drop_path_rate=dpr)


def _bottleneck(in_chs: int, out_chs: int, mid: int, se: int, stride: int, row: BlockRow,
                ctx: BlockContext, dpr: float) -> nn.Module:
    return Bottleneck(in_chs, out_chs, mid, row.kernel, stride, row.dilation,
                      act_layer=ctx.act, norm_layer=ctx.norm, drop_path_rate=dpr)


BLOCK_KINDS: dict[str, Callable[..., nn.Module]] = {
    "ds": _ds,
    "ir": _mbconv(InvertedResidual),
    "fused_ir": _mbconv(FusedMBConv),
    "ghost": _mbconv(GhostBottleneck),
    "shuffle": _shuffle,
    "basic": _basic,
    "bottleneck": _bottleneck,
}


class SlimNet(nn.Module):
    """A classification network built from a stage table.

    ``forward_features``: stem -> stages -> optional 1x1 head conv, ``(N, C_in, H, W) ->
    (N, num_features_map, H / r, W / r)``. ``forward_head``: global average pool ->
    optional pre-logits (Linear + act) -> dropout -> classifier, ``-> (N, num_classes)``.

    Attributes:
        feature_info: per stage, ``{"module", "num_chs", "reduction"}`` for dense heads.
        num_features: width of the vector fed to the classifier.
        pretrained_cfg: input size, mean/std and num_classes the model expects.
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: nn.Sequential,
        head_conv: nn.Module,
        pre_logits: nn.Module,
        num_features: int,
        num_classes: int,
        drop_rate: float,
        feature_info: list[dict[str, Any]],
        pretrained_cfg: dict[str, Any],
    ) -> None:
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.head_conv = head_conv
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.pre_logits = pre_logits
        self.drop_rate = drop_rate
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.num_features = num_features
        self.num_classes = num_classes
        self.classifier: nn.Module = (
            nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()
        )
        self.feature_info = feature_info
        self.pretrained_cfg = pretrained_cfg
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> the last feature map ``(N, F, H / r, W / r)``."""
        return self.head_conv(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits ``(N, num_classes)``, or the pooled vector if ``pre_logits``."""
        x = self.pre_logits(self.global_pool(x))
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one for ``num_classes`` (0: none)."""
        if num_classes < 0:
            raise InvalidArgumentError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        self.pretrained_cfg = {**self.pretrained_cfg, "num_classes": num_classes}
        if isinstance(self.classifier, nn.Linear):
            self.num_features = self.classifier.in_features  # pruning may have narrowed it
        if num_classes == 0:
            self.classifier = nn.Identity()
            return
        self.classifier = nn.Linear(self.num_features, num_classes)
        _init_linear(self.classifier)


def _init_linear(m: nn.Linear) -> None:
    nn.init.normal_(m.weight, 0, 0.01)
    nn.init.zeros_(m.bias)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            _init_linear(m)


def _scaled(chs: int, width: float, divisor: int, scaling: Scaling) -> int:
    if scaling == "fixed":
        return chs
    if scaling == "no_shrink":
        width = max(1.0, width)
    return make_divisible(chs * width, divisor)


def _small_input_strides(spec: ArchSpec) -> tuple[int, bool, list[list[int]]]:
    """Remove the earliest stride-2 reductions until the network's total stride is 8."""
    stem_stride, stem_pool = spec.stem_stride, spec.stem_pool
    row_strides = [[row.stride for row in stage] for stage in spec.stages]
    total = stem_stride * (2 if stem_pool else 1) * math.prod(math.prod(s) for s in row_strides)
    while total > SMALL_INPUT_STRIDE:
        if stem_stride > 1:
            stem_stride, total = 1, total // spec.stem_stride
            continue
        if stem_pool:
            stem_pool, total = False, total // 2
            continue
        for strides in row_strides:
            idx = next((i for i, s in enumerate(strides) if s > 1), None)
            if idx is not None:
                total //= strides[idx]
                strides[idx] = 1
                break
    return stem_stride, stem_pool, row_strides


def build_network(
    spec: ArchSpec,
    *,
    num_classes: int | None = None,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    in_chans: int = 3,
    small_input: bool = False,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
) -> SlimNet:
    """Build a :class:`SlimNet` from ``spec``.

    Args:
        spec: the family's table and choices.
        num_classes: classifier outputs (default: the spec's; 0: no classifier, ``forward``
            returns pooled features).
        width_mult, depth_mult: multiply the spec's own coefficients.
        in_chans: input channels (1 for grayscale).
        small_input: adapt to 28-32 px images: stem kernel 3, and the earliest stride-2
            reductions (stem, max pool, first stages) removed until the total stride is 8.
        drop_rate, drop_path_rate: override the spec's dropout / stochastic depth.
    """
    num_classes = spec.num_classes if num_classes is None else num_classes
    if num_classes < 0 or in_chans < 1:
        raise InvalidArgumentError(
            f"num_classes must be >= 0 and in_chans >= 1, got {num_classes} and {in_chans}"
        )
    if width_mult <= 0 or depth_mult <= 0:
        raise InvalidArgumentError(
            f"width_mult and depth_mult must be > 0, got {width_mult} and {depth_mult}"
        )
    width = spec.width_mult * width_mult
    depth = spec.depth_mult * depth_mult
    drop_rate = spec.drop_rate if drop_rate is None else drop_rate
    drop_path_rate = spec.drop_path_rate if drop_path_rate is None else drop_path_rate
    if not 0.0 <= drop_rate < 1.0:
        raise InvalidArgumentError(f"drop_rate must be in [0, 1), got {drop_rate}")

    norm = batchnorm(spec.norm_eps, spec.norm_momentum)
    div = spec.divisor
    stem_kernel = 3 if small_input else spec.stem_kernel
    if small_input:
        stem_stride, stem_pool, row_strides = _small_input_strides(spec)
    else:
        stem_stride, stem_pool = spec.stem_stride, spec.stem_pool
        row_strides = [[row.stride for row in stage] for stage in spec.stages]

    stem_chs = make_divisible(spec.stem_chs * width, div)
    stem_layers: list[nn.Module] = [
        ConvNormAct(in_chans, stem_chs, stem_kernel, stem_stride, norm_layer=norm,
                    act_layer=get_act_layer(spec.stem_act or spec.act))
    ]
    if stem_pool:
        stem_layers.append(nn.MaxPool2d(3, 2, 1))
    stem = nn.Sequential(*stem_layers)
    reduction = stem_stride * (2 if stem_pool else 1)
    feature_info: list[dict[str, Any]] = [
        {"module": "stem", "num_chs": stem_chs, "reduction": reduction}
    ]

    repeats = [[math.ceil(row.repeats * depth) for row in stage] for stage in spec.stages]
    total_blocks = sum(sum(r) for r in repeats)
    block_idx = 0
    in_chs = stem_chs
    stages: list[nn.Module] = []
    for s_idx, stage in enumerate(spec.stages):
        blocks: list[nn.Module] = []
        for r_idx, row in enumerate(stage):
            if row.kind not in BLOCK_KINDS:
                raise InvalidArgumentError(
                    f"unknown block kind {row.kind!r}; choose one of {sorted(BLOCK_KINDS)}."
                    + suggest(row.kind, BLOCK_KINDS)
                )
            out_chs = make_divisible(row.out_chs * width, div)
            ctx = BlockContext(
                act=get_act_layer(row.act or spec.act), norm=norm, se_act=spec.se_act,
                se_gate=spec.se_gate, ds_pw_act=spec.ds_pw_act,
            )
            for i in range(repeats[s_idx][r_idx]):
                stride = row_strides[s_idx][r_idx] if i == 0 else 1
                if row.mid_chs is not None:
                    mid = make_divisible(row.mid_chs * width, div)
                elif row.expand == 1.0:
                    mid = in_chs
                else:
                    mid = make_divisible(in_chs * row.expand, div)
                se = _se_channels(spec, row.se, in_chs, mid)
                dpr = drop_path_rate * block_idx / total_blocks if total_blocks else 0.0
                blocks.append(BLOCK_KINDS[row.kind](in_chs, out_chs, mid, se, stride, row, ctx,
                                                    dpr))
                in_chs = out_chs
                block_idx += 1
                reduction *= stride
        stages.append(nn.Sequential(*blocks))
        feature_info.append({"module": f"stages.{s_idx}", "num_chs": in_chs,
                             "reduction": reduction})

    head_conv: nn.Module = nn.Identity()
    if spec.head_chs is not None:
        head_chs = _scaled(spec.head_chs, width, div, spec.head_scaling)
        head_conv = ConvNormAct(in_chs, head_chs, 1, norm_layer=norm,
                                act_layer=get_act_layer(spec.head_act or spec.act))
        in_chs = head_chs
        feature_info[-1] = {**feature_info[-1], "module": "head_conv", "num_chs": head_chs}

    pre_logits: nn.Module = nn.Identity()
    if spec.pre_logits_chs is not None:
        pl_chs = _scaled(spec.pre_logits_chs, width, div, spec.pre_logits_scaling)
        pre_logits = nn.Sequential(
            nn.Linear(in_chs, pl_chs), create_act(spec.pre_logits_act or spec.act)
        )
        in_chs = pl_chs

    input_size = 32 if small_input else spec.input_size
    cfg = {
        "input_size": (in_chans, input_size, input_size),
        "mean": spec.mean,
        "std": spec.std,
        "num_classes": num_classes,
        "small_input": small_input,
    }
    return SlimNet(stem, nn.Sequential(*stages), head_conv, pre_logits, in_chs, num_classes,
                   drop_rate, feature_info, cfg)


def _se_channels(spec: ArchSpec, ratio: float, in_chs: int, mid_chs: int) -> int:
    if ratio <= 0:
        return 0
    base = in_chs if spec.se_base == "in" else mid_chs
    if spec.se_divisor is None:
        return max(1, int(base * ratio))
    return make_divisible(base * ratio, spec.se_divisor)


def stage(*rows: BlockRow) -> tuple[BlockRow, ...]:
    """Group rows into one stage (one ``feature_info`` entry)."""
    return tuple(rows)



def register_spec(
    name: str,
    spec: ArchSpec,
    *,
    family: str,
    description: str,
    published: PublishedFigures | None = None,
    aliases: tuple[str, ...] = (),
) -> None:
    """Register a table-defined variant: ``create_model(name, **kw)`` calls
    ``build_network(spec, **kw)``."""
    register_model(
        name,
        functools.partial(build_network, spec),
        family=family,
        input_size=spec.input_size,
        description=description,
        published=published,
        aliases=aliases,
    )
