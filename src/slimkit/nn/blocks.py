"""The blocks of lightweight networks (and the ResNet reference blocks).

Every block takes ``(N, C_in, H, W)`` and returns ``(N, C_out, ceil(H / s), ceil(W / s))``
for its stride ``s``; padding is always computed, never hard-coded.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from slimkit.errors import InvalidArgumentError
from slimkit.nn.layers import ActSpec, ConvNormAct, DropPath, NormLayer, SqueezeExcite, create_act

__all__ = [
    "DepthwiseSeparableConv",
    "InvertedResidual",
    "FusedMBConv",
    "GhostModule",
    "GhostBottleneck",
    "ShuffleUnit",
    "channel_shuffle",
    "BasicBlock",
    "Bottleneck",
]


def _residual(
    x: torch.Tensor, shortcut: torch.Tensor, drop_path: nn.Module, has_skip: bool
) -> torch.Tensor:
    return drop_path(x) + shortcut if has_skip else x


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k conv followed by a pointwise 1 x 1 conv (Howard et al. 2017).

    ``Y = PW(DW(X))`` is a composition of two convolutions, which costs
    ``k^2 C HW + C O HW`` MACs instead of ``k^2 C O HW``: a ratio of ``1/O + 1/k^2``.

    Args:
        in_chs, out_chs: C and O.
        kernel_size: odd depthwise kernel k ('same' padding at stride 1).
        stride, dilation: of the depthwise conv.
        se_chs: reduced channels of an optional SE block between the two convs (0: none).
        act_layer: activation after the depthwise conv.
        pw_act: whether the pointwise conv is followed by ``act_layer`` (MobileNetV1: yes).
        skip: add the input when ``stride == 1`` and ``in_chs == out_chs``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        se_chs: int = 0,
        act_layer: ActSpec = nn.ReLU,
        pw_act: bool = True,
        norm_layer: NormLayer = nn.BatchNorm2d,
        se_act: ActSpec = nn.ReLU,
        se_gate: ActSpec = nn.Sigmoid,
        skip: bool = False,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv_dw = ConvNormAct(
            in_chs, in_chs, kernel_size, stride, dilation, groups=in_chs,
            norm_layer=norm_layer, act_layer=act_layer,
        )
        self.se = SqueezeExcite(in_chs, se_chs, se_act, se_gate) if se_chs else nn.Identity()
        self.conv_pw = ConvNormAct(
            in_chs, out_chs, 1, norm_layer=norm_layer, act_layer=act_layer if pw_act else None
        )
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path_rate) if self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pw(self.se(self.conv_dw(x)))
        return _residual(out, x, self.drop_path, self.has_skip)


class InvertedResidual(nn.Module):
    """MBConv (Sandler et al. 2018): expand 1x1 -> depthwise k x k -> [SE] -> project 1x1.

    The projection is linear (no activation). The expansion is skipped when
    ``mid_chs == in_chs`` (expansion ratio 1). The input is added back when the shapes
    allow (``stride == 1`` and ``in_chs == out_chs``), through stochastic depth.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        mid_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        se_chs: int = 0,
        act_layer: ActSpec = nn.ReLU6,
        norm_layer: NormLayer = nn.BatchNorm2d,
        se_act: ActSpec = nn.ReLU,
        se_gate: ActSpec = nn.Sigmoid,
        noskip: bool = False,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv_pw = (
            ConvNormAct(in_chs, mid_chs, 1, norm_layer=norm_layer, act_layer=act_layer)
            if mid_chs != in_chs
            else nn.Identity()
        )
        self.conv_dw = ConvNormAct(
            mid_chs, mid_chs, kernel_size, stride, dilation, groups=mid_chs,
            norm_layer=norm_layer, act_layer=act_layer,
        )
        self.se = SqueezeExcite(mid_chs, se_chs, se_act, se_gate) if se_chs else nn.Identity()
        self.conv_pwl = ConvNormAct(mid_chs, out_chs, 1, norm_layer=norm_layer, act_layer=None)
        self.has_skip = not noskip and stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path_rate) if self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x))))
        return _residual(out, x, self.drop_path, self.has_skip)


class FusedMBConv(nn.Module):
    """Fused-MBConv (EfficientNetV2): one k x k conv replaces expand + depthwise.

    With expansion ratio 1 (``mid_chs == in_chs``) the block is a single k x k ConvNormAct
    (C -> O) and optional SE; otherwise ``k x k (C -> mid) -> [SE] -> 1x1 project (mid -> O)``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        mid_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        se_chs: int = 0,
        act_layer: ActSpec = nn.SiLU,
        norm_layer: NormLayer = nn.BatchNorm2d,
        se_act: ActSpec = nn.SiLU,
        se_gate: ActSpec = nn.Sigmoid,
        noskip: bool = False,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        project = mid_chs != in_chs
        self.conv_exp = ConvNormAct(
            in_chs, mid_chs if project else out_chs, kernel_size, stride, dilation,
            norm_layer=norm_layer, act_layer=act_layer,
        )
        se_in = mid_chs if project else out_chs
        self.se = SqueezeExcite(se_in, se_chs, se_act, se_gate) if se_chs else nn.Identity()
        self.conv_pwl = (
            ConvNormAct(mid_chs, out_chs, 1, norm_layer=norm_layer, act_layer=None)
            if project
            else nn.Identity()
        )
        self.has_skip = not noskip and stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path_rate) if self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.se(self.conv_exp(x)))
        return _residual(out, x, self.drop_path, self.has_skip)


class GhostModule(nn.Module):
    """Ghost module (Han et al. 2020): a few 'intrinsic' maps from a 1x1 conv, the rest
    from a cheap depthwise conv on them, concatenated and cut to ``out_chs``.

    ``init = ceil(out / ratio)`` intrinsic channels, ``init * (ratio - 1)`` ghost channels.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        ratio: int = 2,
        dw_size: int = 3,
        stride: int = 1,
        use_act: bool = True,
        act_layer: ActSpec = nn.ReLU,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if ratio < 2:
            raise InvalidArgumentError(f"GhostModule ratio must be >= 2, got {ratio}")
        self.out_chs = out_chs
        init_chs = math.ceil(out_chs / ratio)
        new_chs = init_chs * (ratio - 1)
        act = act_layer if use_act else None
        self.primary_conv = ConvNormAct(
            in_chs, init_chs, kernel_size, stride, norm_layer=norm_layer, act_layer=act
        )
        self.cheap_operation = ConvNormAct(
            init_chs, new_chs, dw_size, 1, groups=init_chs, norm_layer=norm_layer, act_layer=act
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        out = torch.cat([x1, x2], dim=1)
        return out if out.shape[1] == self.out_chs else out[:, : self.out_chs]


class GhostBottleneck(nn.Module):
    """GhostNet bottleneck: ghost (expand) -> [depthwise stride] -> [SE] -> ghost (project).

    The shortcut is the identity when shapes match, otherwise depthwise k x k (stride) +
    pointwise 1x1, as in the reference implementation; ``noskip`` removes it.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        mid_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        se_chs: int = 0,
        act_layer: ActSpec = nn.ReLU,
        norm_layer: NormLayer = nn.BatchNorm2d,
        se_act: ActSpec = nn.ReLU,
        se_gate: ActSpec = nn.Hardsigmoid,
        noskip: bool = False,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.ghost1 = GhostModule(in_chs, mid_chs, use_act=True, act_layer=act_layer,
                                  norm_layer=norm_layer)
        self.conv_dw = (
            ConvNormAct(mid_chs, mid_chs, kernel_size, stride, dilation, groups=mid_chs,
                        norm_layer=norm_layer, act_layer=None)
            if stride > 1
            else nn.Identity()
        )
        self.se = SqueezeExcite(mid_chs, se_chs, se_act, se_gate) if se_chs else nn.Identity()
        self.ghost2 = GhostModule(mid_chs, out_chs, use_act=False, norm_layer=norm_layer)
        self.identity_shortcut = in_chs == out_chs and stride == 1
        self.has_skip = not noskip
        if not self.has_skip or self.identity_shortcut:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                ConvNormAct(in_chs, in_chs, kernel_size, stride, dilation, groups=in_chs,
                            norm_layer=norm_layer, act_layer=None),
                ConvNormAct(in_chs, out_chs, 1, norm_layer=norm_layer, act_layer=None),
            )
        self.drop_path = (
            DropPath(drop_path_rate) if self.identity_shortcut and self.has_skip
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ghost2(self.se(self.conv_dw(self.ghost1(x))))
        return _residual(out, self.shortcut(x), self.drop_path, self.has_skip)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups: ``(N, g*c, H, W)`` -> same shape."""
    n, c, h, w = x.shape
    if c % groups:
        raise InvalidArgumentError(f"{c} channels cannot be shuffled in {groups} groups")
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (Ma et al. 2018).

    Stride 1: split the channels in half, transform one half (1x1, depthwise 3x3, 1x1),
    concatenate and shuffle; requires ``in_chs == out_chs`` (even). Stride 2: both branches
    see the whole input and each produces ``out_chs / 2`` channels.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act_layer: ActSpec = nn.ReLU,
        norm_layer: NormLayer = nn.BatchNorm2d,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if out_chs % 2:
            raise InvalidArgumentError(f"ShuffleUnit needs even out_chs, got {out_chs}")
        if stride == 1 and in_chs != out_chs:
            raise InvalidArgumentError(
                f"a stride-1 ShuffleUnit keeps its width: in_chs={in_chs} != out_chs={out_chs}"
            )
        self.stride = stride
        branch = out_chs // 2
        if stride > 1:
            self.branch1: nn.Module = nn.Sequential(
                ConvNormAct(in_chs, in_chs, kernel_size, stride, dilation, groups=in_chs,
                            norm_layer=norm_layer, act_layer=None),
                ConvNormAct(in_chs, branch, 1, norm_layer=norm_layer, act_layer=act_layer),
            )
        else:
            self.branch1 = nn.Identity()
        self.branch2 = nn.Sequential(
            ConvNormAct(in_chs if stride > 1 else branch, branch, 1, norm_layer=norm_layer,
                        act_layer=act_layer),
            ConvNormAct(branch, branch, kernel_size, stride, dilation, groups=branch,
                        norm_layer=norm_layer, act_layer=None),
            ConvNormAct(branch, branch, 1, norm_layer=norm_layer, act_layer=act_layer),
        )
        self.drop_path = DropPath(drop_path_rate) if stride == 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat([x1, self.drop_path(self.branch2(x2))], dim=1)
        else:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        return channel_shuffle(out, 2)


class BasicBlock(nn.Module):
    """ResNet basic block: 3x3 -> 3x3, plus a (projected when shapes change) shortcut."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act_layer: ActSpec = nn.ReLU,
        norm_layer: NormLayer = nn.BatchNorm2d,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_chs, out_chs, kernel_size, stride, dilation,
                                 norm_layer=norm_layer, act_layer=act_layer)
        self.conv2 = ConvNormAct(out_chs, out_chs, kernel_size, 1, dilation,
                                 norm_layer=norm_layer, act_layer=None)
        self.downsample = _projection(in_chs, out_chs, stride, norm_layer)
        self.act = create_act(act_layer)
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop_path(self.conv2(self.conv1(x))) + self.downsample(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck (V1.5, stride on the 3x3): 1x1 -> 3x3 -> 1x1 (x4 expansion)."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        mid_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        act_layer: ActSpec = nn.ReLU,
        norm_layer: NormLayer = nn.BatchNorm2d,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_chs, mid_chs, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.conv2 = ConvNormAct(mid_chs, mid_chs, kernel_size, stride, dilation,
                                 norm_layer=norm_layer, act_layer=act_layer)
        self.conv3 = ConvNormAct(mid_chs, out_chs, 1, norm_layer=norm_layer, act_layer=None)
        self.downsample = _projection(in_chs, out_chs, stride, norm_layer)
        self.act = create_act(act_layer)
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.conv2(self.conv1(x)))
        return self.act(self.drop_path(out) + self.downsample(x))


def _projection(in_chs: int, out_chs: int, stride: int, norm_layer: NormLayer) -> nn.Module:
    if stride == 1 and in_chs == out_chs:
        return nn.Identity()
    return ConvNormAct(in_chs, out_chs, 1, stride, norm_layer=norm_layer, act_layer=None)
