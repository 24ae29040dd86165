"""Building blocks of lightweight networks and their analytic costs."""

from slimkit.nn.blocks import (
    BasicBlock,
    Bottleneck,
    DepthwiseSeparableConv,
    FusedMBConv,
    GhostBottleneck,
    GhostModule,
    InvertedResidual,
    ShuffleUnit,
    channel_shuffle,
)
from slimkit.nn.costs import (
    conv2d_macs,
    conv2d_params,
    conv_output_size,
    separable_conv_macs,
    separable_conv_params,
    separable_cost_ratio,
)
from slimkit.nn.layers import (
    ConvNormAct,
    DropPath,
    SqueezeExcite,
    create_act,
    get_act_layer,
    get_padding,
    make_divisible,
)

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ConvNormAct",
    "DepthwiseSeparableConv",
    "DropPath",
    "FusedMBConv",
    "GhostBottleneck",
    "GhostModule",
    "InvertedResidual",
    "ShuffleUnit",
    "SqueezeExcite",
    "channel_shuffle",
    "conv2d_macs",
    "conv2d_params",
    "conv_output_size",
    "create_act",
    "get_act_layer",
    "get_padding",
    "make_divisible",
    "separable_conv_macs",
    "separable_conv_params",
    "separable_cost_ratio",
]
