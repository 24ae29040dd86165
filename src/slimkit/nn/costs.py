"""Analytic parameter and MAC counts of convolutions.

A MAC is one multiply-accumulate. For a conv producing an ``H x W`` output map:

- standard ``k x k`` conv, C -> O channels, ``groups`` g: ``k^2 * (C / g) * O * H * W`` MACs,
  ``k^2 * (C / g) * O`` weights (+ O with a bias);
- depthwise separable (depthwise ``k x k`` on C channels, then pointwise ``1 x 1`` C -> O):
  ``k^2 * C * H * W + C * O * H * W`` MACs, ``k^2 * C + C * O`` weights.

Their ratio is ``1 / O + 1 / k^2`` (Howard et al. 2017, eq. 5) for MACs and, without biases,
for weights. ``docs/costs.md`` derives these and the tests check them against the profiler.
"""

from __future__ import annotations

from slimkit.errors import InvalidArgumentError

__all__ = [
    "conv2d_params",
    "conv2d_macs",
    "separable_conv_params",
    "separable_conv_macs",
    "separable_cost_ratio",
    "conv_output_size",
]


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if v < 1:
            raise InvalidArgumentError(f"{name} must be >= 1, got {v}")


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0,
                     dilation: int = 1) -> int:
    """Output length of a convolution along one axis (the ``nn.Conv2d`` formula)."""
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def conv2d_params(in_chs: int, out_chs: int, kernel_size: int, groups: int = 1,
                  bias: bool = False) -> int:
    """Number of parameters of a ``k x k`` conv: ``k^2 * (C / groups) * O (+ O)``."""
    _check_positive(in_chs=in_chs, out_chs=out_chs, kernel_size=kernel_size, groups=groups)
    if in_chs % groups or out_chs % groups:
        raise InvalidArgumentError(
            f"groups={groups} must divide in_chs={in_chs} and out_chs={out_chs}"
        )
    return kernel_size * kernel_size * (in_chs // groups) * out_chs + (out_chs if bias else 0)


def conv2d_macs(in_chs: int, out_chs: int, kernel_size: int, out_h: int, out_w: int,
                groups: int = 1) -> int:
    """MACs of a ``k x k`` conv producing an ``out_h x out_w`` map (bias adds are not MACs)."""
    _check_positive(out_h=out_h, out_w=out_w)
    return conv2d_params(in_chs, out_chs, kernel_size, groups) * out_h * out_w


def separable_conv_params(in_chs: int, out_chs: int, kernel_size: int) -> int:
    """Weights of depthwise ``k x k`` + pointwise ``1 x 1``: ``k^2 C + C O`` (no bias, no norm)."""
    return conv2d_params(in_chs, in_chs, kernel_size, groups=in_chs) + conv2d_params(
        in_chs, out_chs, 1
    )


def separable_conv_macs(in_chs: int, out_chs: int, kernel_size: int, out_h: int,
                        out_w: int) -> int:
    """MACs of depthwise ``k x k`` + pointwise ``1 x 1``: ``(k^2 C + C O) * H * W``."""
    _check_positive(out_h=out_h, out_w=out_w)
    return separable_conv_params(in_chs, out_chs, kernel_size) * out_h * out_w


def separable_cost_ratio(out_chs: int, kernel_size: int) -> float:
    """Separable / standard cost: ``1 / O + 1 / k^2`` (independent of C, H and W)."""
    _check_positive(out_chs=out_chs, kernel_size=kernel_size)
    return 1.0 / out_chs + 1.0 / kernel_size**2
