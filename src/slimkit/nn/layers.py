"""Basic layers shared by every block: padding, rounding, activations, ConvNormAct, SE, DropPath."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from slimkit.errors import InvalidArgumentError, suggest

__all__ = [
    "make_divisible",
    "get_padding",
    "get_act_layer",
    "create_act",
    "ConvNormAct",
    "SqueezeExcite",
    "DropPath",
    "ACT_LAYERS",
]

ActSpec = str | type[nn.Module] | Callable[[], nn.Module] | None
NormLayer = Callable[[int], nn.Module] | None


def make_divisible(
    value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9
) -> int:
    """Round a channel count to the nearest multiple of ``divisor``.

    The result never drops below ``round_limit * value`` (so rounding down by more than
    10 % bumps it up one step) nor below ``min_value`` (default: ``divisor``). This is the
    rule of the MobileNet/EfficientNet reference code; hardware kernels prefer such widths.
    """
    if divisor < 1:
        raise InvalidArgumentError(f"divisor must be >= 1, got {divisor}")
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return int(new_value)


def get_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Symmetric padding that keeps the spatial size at stride 1 ('same') for odd kernels.

    ``(kernel_size - 1) // 2 * dilation``; at stride ``s`` the output is ``ceil(H / s)``.
    Even kernels cannot be padded symmetrically to 'same' and are rejected.
    """
    if kernel_size % 2 == 0:
        raise InvalidArgumentError(
            f"kernel_size must be odd for symmetric 'same' padding, got {kernel_size}"
        )
    del stride  # symmetric padding does not depend on stride; kept for a uniform signature
    return (kernel_size - 1) // 2 * dilation


ACT_LAYERS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "hard_swish": nn.Hardswish,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "hardsigmoid": nn.Hardsigmoid,
    "hard_sigmoid": nn.Hardsigmoid,
    "identity": nn.Identity,
}


def get_act_layer(act: ActSpec) -> Callable[[], nn.Module] | None:
    """Resolve an activation spec (name, class, factory or None) to a factory."""
    if act is None:
        return None
    if isinstance(act, str):
        key = act.lower()
        if key not in ACT_LAYERS:
            raise InvalidArgumentError(
                f"unknown activation {act!r}; choose one of {sorted(ACT_LAYERS)}."
                + suggest(key, ACT_LAYERS)
            )
        return ACT_LAYERS[key]
    return act


def create_act(act: ActSpec, inplace: bool = True) -> nn.Module:
    """Instantiate an activation; ``None`` gives ``nn.Identity``."""
    factory = get_act_layer(act)
    if factory is None:
        return nn.Identity()
    if factory in (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.Hardsigmoid):
        return factory(inplace=inplace)  # type: ignore[call-arg]
    return factory()


def batchnorm(eps: float = 1e-5, momentum: float = 0.1) -> Callable[[int], nn.Module]:
    """A BatchNorm2d factory with fixed eps/momentum (families differ: TF ports use 1e-3)."""
    return partial(nn.BatchNorm2d, eps=eps, momentum=momentum)


class ConvNormAct(nn.Module):
    """Conv2d -> norm -> activation with computed 'same' padding.

    Args:
        in_chs, out_chs: channels C and O.
        kernel_size: odd kernel k; padding is ``(k - 1) // 2 * dilation``.
        stride, dilation, groups: as in ``nn.Conv2d`` (``groups=in_chs`` is depthwise).
        norm_layer: factory ``C -> module`` or ``None`` for no norm.
        act_layer: activation spec or ``None``.
        bias: defaults to ``True`` only when there is no norm layer (a bias before a norm
            is redundant).

    Shapes: ``(N, C, H, W) -> (N, O, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm_layer: NormLayer = nn.BatchNorm2d,
        act_layer: ActSpec = nn.ReLU,
        bias: bool | None = None,
    ) -> None:
        super().__init__()
        if in_chs % groups or out_chs % groups:
            raise InvalidArgumentError(
                f"groups={groups} must divide in_chs={in_chs} and out_chs={out_chs}"
            )
        if bias is None:
            bias = norm_layer is None
        self.conv = nn.Conv2d(
            in_chs,
            out_chs,
            kernel_size,
            stride=stride,
            padding=get_padding(kernel_size, stride, dilation),
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        self.bn = norm_layer(out_chs) if norm_layer is not None else nn.Identity()
        self.act = create_act(act_layer)

    def _convs(self) -> list[nn.Conv2d]:
        # ``conv`` may have been replaced by a decomposed/separable sequence of convolutions
        return [m for m in self.conv.modules() if isinstance(m, nn.Conv2d)]

    @property
    def in_channels(self) -> int:
        return self._convs()[0].in_channels

    @property
    def out_channels(self) -> int:
        return self._convs()[-1].out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): channel gates from global context.

    ``x * gate(expand(act(reduce(mean_hw(x)))))``; reduce and expand are 1x1 convs with bias.

    Args:
        in_chs: channels C of the input (and output).
        rd_chs: the bottleneck width; the families differ in how they derive it, so the
            caller passes it (see ``se_channels`` in the builder).
        act_layer: activation between the two convs.
        gate_layer: the gate, ``sigmoid`` or ``hardsigmoid``.
    """

    def __init__(
        self,
        in_chs: int,
        rd_chs: int,
        act_layer: ActSpec = nn.ReLU,
        gate_layer: ActSpec = nn.Sigmoid,
    ) -> None:
        super().__init__()
        if rd_chs < 1:
            raise InvalidArgumentError(f"SE reduced channels must be >= 1, got {rd_chs}")
        self.conv_reduce = nn.Conv2d(in_chs, rd_chs, 1, bias=True)
        self.act = create_act(act_layer)
        self.conv_expand = nn.Conv2d(rd_chs, in_chs, 1, bias=True)
        self.gate = create_act(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(self.act(self.conv_reduce(s)))
        return x * self.gate(s)


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016): drops a residual branch in training.

    Kept samples are scaled by ``1 / (1 - p)`` so the expectation is unchanged; identity in
    eval mode and when ``p == 0``.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise InvalidArgumentError(f"drop_path rate must be in [0, 1), got {drop_prob}")
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"
