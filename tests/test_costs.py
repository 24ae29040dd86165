"""The analytic cost formulas of ``slimkit.nn.costs`` against the profiler on real modules.

``docs/costs.md`` derives the formulas; this file is what keeps that page honest.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from slimkit.analysis.profile import HOROWITZ_45NM, count_macs, profile
from slimkit.errors import InvalidArgumentError
from slimkit.nn.blocks import DepthwiseSeparableConv
from slimkit.nn.costs import (
    conv2d_macs,
    conv2d_params,
    conv_output_size,
    separable_conv_macs,
    separable_conv_params,
    separable_cost_ratio,
)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# (C, O, k, (H, W), stride, groups): dense, grouped and depthwise convs, odd/even/non-square
# maps, strides 1-3
CONV_GRID = [
    (3, 16, 3, (32, 32), 2, 1),
    (8, 8, 1, (9, 9), 1, 1),
    (8, 16, 3, (9, 10), 1, 1),
    (8, 16, 5, (17, 16), 2, 1),
    (16, 8, 7, (33, 33), 3, 1),
    (8, 8, 3, (16, 15), 1, 8),  # depthwise
    (16, 16, 5, (11, 12), 2, 16),  # depthwise, strided
    (16, 32, 3, (14, 14), 1, 16),  # depthwise with channel multiplier 2
    (12, 24, 3, (10, 13), 1, 4),  # grouped
    (12, 6, 1, (9, 9), 2, 3),  # grouped pointwise
    (24, 24, 7, (12, 12), 1, 24),
]


def _conv_id(case: tuple) -> str:
    c, o, k, (h, w), s, g = case
    return f"C{c}-O{o}-k{k}-{h}x{w}-s{s}-g{g}"


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("case", CONV_GRID, ids=_conv_id)
def test_conv2d_formulas_match_the_profiler(case: tuple, bias: bool) -> None:
    c, o, k, (h, w), stride, groups = case
    pad = (k - 1) // 2
    conv = nn.Conv2d(c, o, k, stride=stride, padding=pad, groups=groups, bias=bias)
    out_h = conv_output_size(h, k, stride, pad)
    out_w = conv_output_size(w, k, stride, pad)
    # conv_output_size is nn.Conv2d's own formula
    assert conv(torch.zeros(1, c, h, w)).shape == (1, o, out_h, out_w)
    assert (out_h, out_w) == (math.ceil(h / stride), math.ceil(w / stride))

    assert conv2d_params(c, o, k, groups, bias=bias) == n_params(conv)
    # wrap it so the profiler sees a normal (non-leaf) model
    prof = profile(nn.Sequential(conv), (c, h, w))
    assert prof.params == n_params(conv)
    expected = conv2d_macs(c, o, k, out_h, out_w, groups)
    assert prof.macs == expected  # bias adds are not MACs
    assert expected == k * k * (c // groups) * o * out_h * out_w
    assert count_macs(conv, torch.zeros(1, c, h, w)) == expected
    # MACs scale linearly with the batch
    assert profile(nn.Sequential(conv), (c, h, w), batch_size=3).macs == 3 * expected


def test_profile_layer_rows_of_a_bare_conv() -> None:
    conv = nn.Conv2d(8, 16, 3, padding=1)
    prof = profile(conv, (8, 9, 9))
    assert prof.macs == conv2d_macs(8, 16, 3, 9, 9)
    assert sum(layer.macs for layer in prof.layers) == prof.macs


# (C, O, k, H, stride)
SEPARABLE_GRID = [
    (8, 16, 3, 9, 1),
    (8, 16, 3, 16, 2),
    (16, 8, 5, 17, 1),
    (16, 32, 7, 12, 1),
    (12, 12, 5, 33, 3),
    (32, 64, 3, 14, 2),
]


def _separable(c: int, o: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c, c, k, stride=stride, padding=(k - 1) // 2, groups=c, bias=False),
        nn.Conv2d(c, o, 1, bias=False),
    )


@pytest.mark.parametrize(("c", "o", "k", "h", "stride"), SEPARABLE_GRID)
def test_separable_formulas_match_the_profiler(c: int, o: int, k: int, h: int,
                                               stride: int) -> None:
    model = _separable(c, o, k, stride)
    out = math.ceil(h / stride)
    prof = profile(model, (c, h, h))
    assert separable_conv_params(c, o, k) == n_params(model) == prof.params
    assert separable_conv_macs(c, o, k, out, out) == prof.macs
    # per-layer rows: depthwise k^2 C HW, pointwise C O HW
    rows = {layer.name: layer for layer in prof.layers}
    assert rows["0"].macs == k * k * c * out * out
    assert rows["1"].macs == c * o * out * out
    assert rows["0"].params == k * k * c and rows["1"].params == c * o
    assert sum(layer.macs for layer in prof.layers) == prof.macs


@pytest.mark.parametrize(("c", "o", "k", "h", "stride"), SEPARABLE_GRID)
def test_separable_over_standard_ratio_is_exact(c: int, o: int, k: int, h: int,
                                                stride: int) -> None:
    standard = nn.Sequential(nn.Conv2d(c, o, k, stride=stride, padding=(k - 1) // 2, bias=False))
    std_macs = profile(standard, (c, h, h)).macs
    sep_macs = profile(_separable(c, o, k, stride), (c, h, h)).macs
    exact = Fraction(1, o) + Fraction(1, k * k)
    # measured MACs and weights: the ratio is 1/O + 1/k^2, independent of C, H and W
    assert Fraction(sep_macs, std_macs) == exact
    assert Fraction(separable_conv_params(c, o, k), conv2d_params(c, o, k)) == exact
    assert math.isclose(separable_cost_ratio(o, k), float(exact), rel_tol=1e-12)
    assert math.isclose(separable_cost_ratio(o, k), sep_macs / std_macs, rel_tol=1e-12)


@pytest.mark.parametrize(("o", "k"), [(1, 1), (1, 3), (16, 3), (256, 3), (1024, 7), (7, 5)])
def test_separable_cost_ratio_values(o: int, k: int) -> None:
    assert math.isclose(separable_cost_ratio(o, k), 1 / o + 1 / k**2, rel_tol=1e-12)
    # with a 1x1 "depthwise" kernel separable costs more than standard: 1 + 1/O > 1
    if k == 1:
        assert separable_cost_ratio(o, k) > 1


@pytest.mark.parametrize(("c", "o", "k", "h", "stride"), SEPARABLE_GRID)
@pytest.mark.parametrize("norm", [nn.BatchNorm2d, None], ids=["bn", "no-norm"])
def test_depthwise_separable_block_costs(c: int, o: int, k: int, h: int, stride: int,
                                         norm: type[nn.Module] | None) -> None:
    block = DepthwiseSeparableConv(c, o, k, stride=stride, norm_layer=norm)
    out = math.ceil(h / stride)
    prof = profile(block, (c, h, h))
    # BatchNorm and ReLU add parameters (or the convs get biases) but no MACs
    assert prof.macs == separable_conv_macs(c, o, k, out, out)
    extra = 2 * c + 2 * o if norm is not None else c + o
    assert prof.params == separable_conv_params(c, o, k) + extra
    assert prof.layers and all(
        layer.macs == 0 for layer in prof.layers if not isinstance(
            dict(block.named_modules())[layer.name], nn.Conv2d)
    )


def test_squeeze_excite_macs_are_counted() -> None:
    c, o, rd, h = 16, 24, 4, 10
    block = DepthwiseSeparableConv(c, o, 3, se_chs=rd)
    # SE: two 1x1 convs on a 1x1 map (the mean and the gate multiply are not MACs)
    assert profile(block, (c, h, h)).macs == separable_conv_macs(c, o, 3, h, h) + 2 * c * rd


def test_profile_energy_follows_the_horowitz_formula() -> None:
    model = _separable(16, 32, 3, 1)
    prof = profile(model, (16, 12, 12))
    e = HOROWITZ_45NM
    assert math.isclose(e.mac_fp32_pj, 3.7 + 0.9)
    assert math.isclose(e.mac_int8_pj, 0.2 + 0.03)
    assert math.isclose(e.dram_pj_per_byte, 160.0)
    assert "Horowitz" in e.source and "45 nm" in e.source
    w32 = prof.params * 4
    expected_fp32 = (prof.macs * e.mac_fp32_pj + (w32 + prof.activation_bytes)
                     * e.dram_pj_per_byte) * 1e-9
    expected_int8 = (prof.macs * e.mac_int8_pj + (prof.params + prof.activation_bytes // 4)
                     * e.dram_pj_per_byte) * 1e-9
    assert math.isclose(prof.energy_fp32_mj, expected_fp32, rel_tol=1e-12)
    assert math.isclose(prof.energy_int8_mj, expected_int8, rel_tol=1e-12)
    # activation bytes are the fp32 outputs of the two convs
    assert prof.activation_bytes == 4 * (16 * 144 + 32 * 144)


# --------------------------------------------------------------------------------------
# invalid inputs
# --------------------------------------------------------------------------------------


def _param_id(value: object) -> str:
    if callable(value):
        return value.__name__
    if isinstance(value, dict):
        return "-".join(f"{k}={v}" for k, v in value.items()) or "default"
    return "-".join(map(str, value))  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("func", "args", "kwargs"),
    [
        (conv2d_params, (0, 8, 3), {}),
        (conv2d_params, (8, 0, 3), {}),
        (conv2d_params, (8, 8, 0), {}),
        (conv2d_params, (8, 8, 3), {"groups": 0}),
        (conv2d_params, (8, 8, 3), {"groups": 3}),  # 3 does not divide C = 8
        (conv2d_macs, (0, 8, 3, 4, 4), {}),
        (conv2d_macs, (8, 8, 3, 0, 4), {}),
        (conv2d_macs, (8, 8, 3, 4, -1), {}),
        (conv2d_macs, (8, 8, 3, 4, 4), {"groups": 5}),
        (separable_conv_params, (0, 8, 3), {}),
        (separable_conv_params, (8, 0, 3), {}),
        (separable_conv_params, (8, 8, 0), {}),
        (separable_conv_macs, (0, 8, 3, 4, 4), {}),
        (separable_cost_ratio, (0, 3), {}),
        (separable_cost_ratio, (8, 0), {}),
    ],
    ids=_param_id,
)
def test_invalid_inputs_raise(func: object, args: tuple, kwargs: dict) -> None:
    with pytest.raises(InvalidArgumentError):
        func(*args, **kwargs)  # type: ignore[operator]


def test_groups_must_divide_out_channels() -> None:
    with pytest.raises(ValueError):
        nn.Conv2d(8, 6, 3, groups=4)  # what torch says about this shape
    with pytest.raises(InvalidArgumentError):
        conv2d_params(8, 6, 3, groups=4)


@pytest.mark.parametrize(("out_h", "out_w"), [(0, 5), (-1, 5), (5, 0)])
def test_separable_conv_macs_rejects_empty_maps(out_h: int, out_w: int) -> None:
    with pytest.raises(InvalidArgumentError):
        separable_conv_macs(8, 16, 3, out_h, out_w)
