"""Property tests of the building blocks in ``slimkit.nn`` (layers and blocks).

Small tensors only (8-16 channels, 5-33 px): these tests check structure and arithmetic,
not accuracy or speed.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimkit.errors import InvalidArgumentError
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
from slimkit.nn.costs import separable_conv_params
from slimkit.nn.layers import ConvNormAct, DropPath, SqueezeExcite, get_padding, make_divisible


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize_bn(module: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running stats (eval is then
    not the identity, so parity checks are meaningful)."""
    g = torch.Generator().manual_seed(1234)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return module


def silence_bn(bn: nn.Module) -> None:
    """Make a BatchNorm output exactly zero (gamma = beta = 0), whatever its input."""
    assert isinstance(bn, nn.BatchNorm2d)
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.zero_()


def out_hw(h: int, w: int, stride: int) -> tuple[int, int]:
    return math.ceil(h / stride), math.ceil(w / stride)


# --------------------------------------------------------------------------------------
# make_divisible
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "divisor", "expected"),
    [
        (32 * 0.35, 8, 16),  # 11.2 rounds to 8 < 0.9 * 11.2, so it is bumped to 16
        (1280 * 1.1, 8, 1408),
        (18, 8, 24),  # 16 < 0.9 * 18 = 16.2 -> bumped
        (116, 4, 116),
        (32, 8, 32),
        (12, 8, 16),  # ties round up
        (3, 8, 8),  # never below the divisor (default min_value)
        (0, 8, 8),
        (96 * 0.75, 8, 72),
        (1.0, 1, 1),
    ],
)
def test_make_divisible_known_values(value: float, divisor: int, expected: int) -> None:
    assert make_divisible(value, divisor) == expected


def test_make_divisible_properties_on_a_dense_grid() -> None:
    # every integer and quarter value up to 2048 for the divisors used in practice: an
    # exhaustive grid is both cheaper and stronger than sampling here
    values = [i / 4 for i in range(1, 4 * 2048)]
    for divisor in (1, 2, 3, 4, 8, 16, 32):
        for value in values:
            r = make_divisible(value, divisor)
            assert isinstance(r, int)
            assert r % divisor == 0, (value, divisor, r)
            assert r >= 0.9 * value, (value, divisor, r)
            assert r >= divisor, (value, divisor, r)
            # never more than one step above the value
            assert r < max(value, divisor) + divisor, (value, divisor, r)


@pytest.mark.parametrize("divisor", [4, 8])
@pytest.mark.parametrize("min_value", [16, 64])
def test_make_divisible_min_value(divisor: int, min_value: int) -> None:
    for value in range(1, 200):
        r = make_divisible(value, divisor, min_value=min_value)
        assert r >= min_value
        assert r % divisor == 0
        assert r >= 0.9 * value


def test_make_divisible_is_idempotent_on_multiples() -> None:
    for divisor in (1, 4, 8, 16):
        for k in range(1, 100):
            assert make_divisible(k * divisor, divisor) == k * divisor
            r = make_divisible(k * divisor * 1.37, divisor)
            assert make_divisible(r, divisor) == r


def test_make_divisible_round_limit() -> None:
    # with round_limit=0 rounding down is never bumped back up
    assert make_divisible(18, 8, round_limit=0.0) == 16
    assert make_divisible(18, 8) == 24


def test_make_divisible_rejects_bad_divisor() -> None:
    with pytest.raises(InvalidArgumentError):
        make_divisible(32, 0)


# --------------------------------------------------------------------------------------
# ConvNormAct and get_padding
# --------------------------------------------------------------------------------------

C = 8  # channels used by most tests


@pytest.mark.parametrize("groups", [1, C], ids=["dense", "depthwise"])
@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
def test_conv_norm_act_output_size_is_ceil(kernel: int, stride: int, dilation: int,
                                           groups: int) -> None:
    block = ConvNormAct(C, C, kernel, stride, dilation, groups=groups).eval()
    assert block.conv.padding == ((kernel - 1) // 2 * dilation,) * 2
    assert get_padding(kernel, stride, dilation) == (kernel - 1) // 2 * dilation
    assert block.conv.groups == groups
    # odd and even sizes, non-square
    for h, w in [(9, 10), (16, 17), (11, 11), (12, 12)]:
        with torch.no_grad():
            y = block(torch.randn(1, C, h, w))
        assert y.shape == (1, C, *out_hw(h, w, stride)), (h, w)


def test_conv_norm_act_in_out_channels_and_order() -> None:
    block = randomize_bn(ConvNormAct(C, 16, 3, act_layer="relu6")).eval()
    assert (block.in_channels, block.out_channels) == (C, 16)
    x = torch.randn(2, C, 9, 9)
    with torch.no_grad():
        expected = F.relu6(block.bn(block.conv(x)))
        torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("norm", [nn.BatchNorm2d, None], ids=["bn", "no-norm"])
def test_conv_norm_act_bias_only_without_norm(norm: type[nn.Module] | None) -> None:
    block = ConvNormAct(C, 16, 3, norm_layer=norm)
    assert (block.conv.bias is not None) == (norm is None)
    if norm is None:
        assert isinstance(block.bn, nn.Identity)
        assert n_params(block) == 9 * C * 16 + 16
    else:
        assert isinstance(block.bn, nn.BatchNorm2d)
        assert n_params(block) == 9 * C * 16 + 2 * 16


@pytest.mark.parametrize("norm", [nn.BatchNorm2d, None], ids=["bn", "no-norm"])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_norm_act_bias_override(norm: type[nn.Module] | None, bias: bool) -> None:
    block = ConvNormAct(C, 16, 3, norm_layer=norm, bias=bias)
    assert (block.conv.bias is not None) == bias


@pytest.mark.parametrize("kernel", [2, 4, 6])
def test_even_kernels_are_rejected(kernel: int) -> None:
    with pytest.raises(InvalidArgumentError, match="odd"):
        ConvNormAct(C, C, kernel)
    with pytest.raises(InvalidArgumentError):
        get_padding(kernel)


@pytest.mark.parametrize(("in_chs", "out_chs", "groups"), [(8, 8, 3), (8, 12, 8), (6, 8, 4)])
def test_groups_must_divide_channels(in_chs: int, out_chs: int, groups: int) -> None:
    with pytest.raises(InvalidArgumentError, match="groups"):
        ConvNormAct(in_chs, out_chs, 3, groups=groups)


def test_unknown_activation_name_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="relu"):
        ConvNormAct(C, C, 3, act_layer="rleu")


# --------------------------------------------------------------------------------------
# DepthwiseSeparableConv
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_separable_conv_keeps_spatial_size(kernel: int) -> None:
    block = DepthwiseSeparableConv(C, 16, kernel).eval()
    with torch.no_grad():
        y = block(torch.randn(1, C, 32, 32))
    assert y.shape == (1, 16, 32, 32)
    assert block.conv_dw.conv.padding == ((kernel - 1) // 2,) * 2


def test_fixed_padding_one_would_shrink_at_k5() -> None:
    # the trap REFERENCE_NUMBERS.md describes: a hard-coded padding=1 shrinks 32 -> 30 at k=5
    fixed = nn.Conv2d(C, C, 5, padding=1, groups=C)
    ours = DepthwiseSeparableConv(C, C, 5).eval()
    x = torch.randn(1, C, 32, 32)
    with torch.no_grad():
        assert fixed(x).shape[-2:] == (30, 30)
        assert ours(x).shape[-2:] == (32, 32)


@pytest.mark.parametrize("stride", [1, 2])
def test_separable_conv_strided_shapes(stride: int) -> None:
    block = DepthwiseSeparableConv(C, 16, 3, stride=stride).eval()
    with torch.no_grad():
        y = block(torch.randn(2, C, 17, 16))
    assert y.shape == (2, 16, *out_hw(17, 16, stride))
    assert block.conv_dw.conv.stride == (stride, stride)
    assert block.conv_pw.conv.stride == (1, 1)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("pw_act", [True, False])
def test_separable_conv_is_a_composition(kernel: int, pw_act: bool) -> None:
    """Y = PW(DW(X)): numerical parity with the two ConvNormActs applied by hand and with
    plain functional ops on the same weights (and *not* an element-wise product)."""
    block = randomize_bn(DepthwiseSeparableConv(C, 16, kernel, pw_act=pw_act)).eval()
    x = torch.randn(2, C, 13, 12)
    with torch.no_grad():
        y = block(x)
        # the block's own sub-modules, applied one after the other
        torch.testing.assert_close(y, block.conv_pw(block.conv_dw(x)))

        # and from first principles
        def bn(t: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
            return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias,
                                training=False, eps=m.eps)

        dw, pw = block.conv_dw, block.conv_pw
        t = F.relu(bn(F.conv2d(x, dw.conv.weight, padding=kernel // 2, groups=C), dw.bn))
        t = bn(F.conv2d(t, pw.conv.weight), pw.bn)
        if pw_act:
            t = F.relu(t)
        torch.testing.assert_close(y, t, rtol=1e-5, atol=1e-5)
    assert dw.conv.groups == C == dw.conv.in_channels == dw.conv.out_channels
    assert dw.conv.weight.shape == (C, 1, kernel, kernel)
    assert pw.conv.weight.shape == (16, C, 1, 1)
    assert pw.conv.groups == 1


@pytest.mark.parametrize(("in_chs", "out_chs", "kernel"), [(8, 16, 3), (16, 8, 5), (12, 12, 7)])
def test_separable_conv_param_count(in_chs: int, out_chs: int, kernel: int) -> None:
    block = DepthwiseSeparableConv(in_chs, out_chs, kernel)
    bn_params = 2 * in_chs + 2 * out_chs  # gamma and beta of the two norms
    assert n_params(block) == separable_conv_params(in_chs, out_chs, kernel) + bn_params
    no_norm = DepthwiseSeparableConv(in_chs, out_chs, kernel, norm_layer=None)
    # without norms the convs carry a bias instead
    assert n_params(no_norm) == separable_conv_params(in_chs, out_chs, kernel) + in_chs + out_chs


def test_separable_conv_skip_and_se() -> None:
    assert DepthwiseSeparableConv(C, C, skip=True).has_skip
    assert not DepthwiseSeparableConv(C, C, skip=False).has_skip
    assert not DepthwiseSeparableConv(C, C, stride=2, skip=True).has_skip
    assert not DepthwiseSeparableConv(C, 16, skip=True).has_skip
    block = randomize_bn(DepthwiseSeparableConv(C, C, se_chs=4, skip=True, pw_act=False)).eval()
    assert isinstance(block.se, SqueezeExcite)
    assert block.se.conv_reduce.out_channels == 4
    silence_bn(block.conv_pw.bn)
    x = torch.randn(2, C, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)


# --------------------------------------------------------------------------------------
# InvertedResidual
# --------------------------------------------------------------------------------------


def test_inverted_residual_skips_expansion_at_ratio_one() -> None:
    same = InvertedResidual(C, 16, mid_chs=C)
    assert isinstance(same.conv_pw, nn.Identity)
    assert same.conv_dw.conv.in_channels == C
    expanded = InvertedResidual(C, 16, mid_chs=6 * C)
    assert isinstance(expanded.conv_pw, ConvNormAct)
    assert expanded.conv_pw.conv.weight.shape == (6 * C, C, 1, 1)
    assert expanded.conv_dw.conv.groups == 6 * C
    # the projection is linear
    assert isinstance(expanded.conv_pwl.act, nn.Identity)
    assert expanded.conv_pwl.conv.weight.shape == (16, 6 * C, 1, 1)


@pytest.mark.parametrize(
    ("stride", "in_chs", "out_chs", "noskip"),
    list(itertools.product([1, 2], [8, 16], [8, 16], [False, True])),
)
def test_inverted_residual_skip_iff_shapes_match(stride: int, in_chs: int, out_chs: int,
                                                 noskip: bool) -> None:
    block = randomize_bn(InvertedResidual(in_chs, out_chs, mid_chs=32, stride=stride,
                                          noskip=noskip)).eval()
    expect_skip = stride == 1 and in_chs == out_chs and not noskip
    assert block.has_skip == expect_skip
    x = torch.randn(2, in_chs, 11, 10)
    with torch.no_grad():
        y = block(x)
        assert y.shape == (2, out_chs, *out_hw(11, 10, stride))
        branch = block.conv_pwl(block.conv_dw(block.conv_pw(x)))
        # with the skip the block adds exactly its input to the branch
        torch.testing.assert_close(y - x if expect_skip else y, branch)
        assert not torch.allclose(branch, torch.zeros_like(branch))
        # silence the branch: the last BN (after the linear projection) outputs 0, so the
        # block is the identity with a skip and exactly zero without one
        silence_bn(block.conv_pwl.bn)
        y0 = block(x)
    if expect_skip:
        torch.testing.assert_close(y0, x, rtol=0, atol=0)
    else:
        assert torch.count_nonzero(y0) == 0


@pytest.mark.parametrize("se_chs", [0, 4])
def test_inverted_residual_se(se_chs: int) -> None:
    block = InvertedResidual(C, C, mid_chs=24, se_chs=se_chs, se_gate="hardsigmoid")
    if se_chs:
        assert isinstance(block.se, SqueezeExcite)
        assert block.se.conv_reduce.weight.shape == (se_chs, 24, 1, 1)
        assert block.se.conv_expand.weight.shape == (24, se_chs, 1, 1)
        assert isinstance(block.se.gate, nn.Hardsigmoid)
        assert n_params(block) == n_params(InvertedResidual(C, C, mid_chs=24)) + (
            24 * se_chs + se_chs + se_chs * 24 + 24)
    else:
        assert isinstance(block.se, nn.Identity)
    with torch.no_grad():
        assert block.eval()(torch.randn(1, C, 9, 9)).shape == (1, C, 9, 9)


def test_drop_path_is_identity_in_eval() -> None:
    with_dp = randomize_bn(InvertedResidual(C, C, mid_chs=16, drop_path_rate=0.9))
    without = InvertedResidual(C, C, mid_chs=16)
    without.load_state_dict(with_dp.state_dict())
    assert isinstance(with_dp.drop_path, DropPath)
    x = torch.randn(4, C, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(with_dp.eval()(x), without.eval()(x), rtol=0, atol=0)


def test_drop_path_drops_whole_samples_in_training() -> None:
    p, n = 0.9, 400
    block = InvertedResidual(C, C, mid_chs=16, drop_path_rate=p).train()
    torch.manual_seed(7)
    x = torch.randn(n, C, 5, 5)
    with torch.no_grad():
        y = block(x)
        # the branch in train mode depends only on the batch, so recomputing it is exact
        branch = block.conv_pwl(block.conv_dw(block.conv_pw(x)))
    delta = (y - x).flatten(1)
    dropped = delta.abs().amax(dim=1) == 0
    kept = ~dropped
    # dropped samples are exactly the input; kept ones are input + branch / (1 - p), over
    # the whole sample (not element-wise dropout)
    assert torch.equal(y[dropped], x[dropped])
    torch.testing.assert_close(y[kept] - x[kept], branch[kept] / (1 - p), rtol=1e-4, atol=1e-4)
    assert (delta[kept] != 0).float().mean() > 0.9
    # Binomial(400, 0.9): mean 360, std 6; allow 5 std
    assert abs(int(dropped.sum()) - p * n) < 5 * math.sqrt(n * p * (1 - p))
    assert int(kept.sum()) > 0


def test_drop_path_module() -> None:
    torch.manual_seed(3)
    dp = DropPath(0.5).train()
    x = torch.ones(2000, 3, 2, 2)
    y = dp(x)
    per_sample = y.flatten(1)
    # every sample is all-zero or all-scaled by 1 / (1 - p)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 2.0).all(1))
    assert abs(float(y.mean()) - 1.0) < 0.1  # the expectation is unchanged
    assert torch.equal(DropPath(0.0).train()(x), x)
    assert torch.equal(dp.eval()(x), x)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(InvalidArgumentError):
            DropPath(bad)


# --------------------------------------------------------------------------------------
# FusedMBConv
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize(("in_chs", "out_chs"), [(8, 8), (8, 16)])
@pytest.mark.parametrize("project", [False, True], ids=["no-projection", "projection"])
def test_fused_mbconv(stride: int, in_chs: int, out_chs: int, project: bool) -> None:
    mid = 4 * in_chs if project else in_chs
    block = randomize_bn(FusedMBConv(in_chs, out_chs, mid, kernel_size=3, stride=stride)).eval()
    if project:
        assert block.conv_exp.conv.weight.shape == (mid, in_chs, 3, 3)
        assert isinstance(block.conv_pwl, ConvNormAct)
        assert block.conv_pwl.conv.weight.shape == (out_chs, mid, 1, 1)
        assert isinstance(block.conv_pwl.act, nn.Identity)
        last_bn = block.conv_pwl.bn
    else:
        # expansion ratio 1: a single k x k ConvNormAct straight to out_chs
        assert block.conv_exp.conv.weight.shape == (out_chs, in_chs, 3, 3)
        assert isinstance(block.conv_pwl, nn.Identity)
        last_bn = block.conv_exp.bn
    assert block.conv_exp.conv.stride == (stride, stride)
    expect_skip = stride == 1 and in_chs == out_chs
    assert block.has_skip == expect_skip
    x = torch.randn(2, in_chs, 12, 11)
    with torch.no_grad():
        y = block(x)
        assert y.shape == (2, out_chs, *out_hw(12, 11, stride))
        silence_bn(last_bn)  # SiLU(0) = 0 too, so the branch is exactly zero
        y0 = block(x)
    if expect_skip:
        torch.testing.assert_close(y0, x, rtol=0, atol=0)
    else:
        assert torch.count_nonzero(y0) == 0


def test_fused_mbconv_se_width() -> None:
    assert FusedMBConv(C, 16, 32, se_chs=4).se.conv_reduce.in_channels == 32
    assert FusedMBConv(C, 16, C, se_chs=4).se.conv_reduce.in_channels == 16
    assert not FusedMBConv(C, C, 32, noskip=True).has_skip


# --------------------------------------------------------------------------------------
# SqueezeExcite
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("gate", ["sigmoid", "hardsigmoid"])
@pytest.mark.parametrize("scale", [1.0, 50.0], ids=["normal", "saturated"])
def test_squeeze_excite_gates_channels(gate: str, scale: float) -> None:
    se = SqueezeExcite(16, 4, gate_layer=gate).eval()
    with torch.no_grad():
        se.conv_expand.weight.mul_(scale)
        se.conv_expand.bias.mul_(scale)
    x = torch.rand(3, 16, 9, 10) + 0.1  # positive, so out / x is the gate
    with torch.no_grad():
        y = se(x)
        s = x.mean((2, 3), keepdim=True)
        g = se.gate(se.conv_expand(se.act(se.conv_reduce(s))))
    assert y.shape == x.shape
    assert g.shape == (3, 16, 1, 1)
    torch.testing.assert_close(y, x * g)
    ratio = y / x
    # one gate per (sample, channel), constant over the spatial positions, in [0, 1]
    torch.testing.assert_close(ratio, ratio[..., :1, :1].expand_as(ratio))
    assert float(ratio.min()) >= 0.0
    assert float(ratio.max()) <= 1.0 + 1e-6
    if scale > 1 and gate == "hardsigmoid":
        # hardsigmoid saturates at exactly 0 and 1
        assert bool((g == 0).any()) and bool((g == 1).any())


def test_squeeze_excite_rejects_zero_width() -> None:
    with pytest.raises(InvalidArgumentError):
        SqueezeExcite(16, 0)


# --------------------------------------------------------------------------------------
# Ghost modules
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("ratio", [2, 3])
@pytest.mark.parametrize("out_chs", [7, 8, 15, 16])
def test_ghost_module_channels(out_chs: int, ratio: int, stride: int) -> None:
    gm = randomize_bn(GhostModule(C, out_chs, ratio=ratio, stride=stride)).eval()
    init = math.ceil(out_chs / ratio)
    assert gm.primary_conv.conv.out_channels == init
    assert gm.cheap_operation.conv.out_channels == init * (ratio - 1)
    assert gm.cheap_operation.conv.groups == init  # cheap = depthwise-style
    x = torch.randn(2, C, 11, 12)
    with torch.no_grad():
        y = gm(x)
        intrinsic = gm.primary_conv(x)
    assert y.shape == (2, out_chs, *out_hw(11, 12, stride))
    # the intrinsic maps come first, then the ghosts
    torch.testing.assert_close(y[:, :init], intrinsic)


def test_ghost_module_rejects_ratio_one() -> None:
    with pytest.raises(InvalidArgumentError):
        GhostModule(C, 16, ratio=1)


@pytest.mark.parametrize(
    ("in_chs", "out_chs", "stride"), [(8, 8, 1), (8, 16, 1), (8, 8, 2), (16, 8, 2)]
)
def test_ghost_bottleneck(in_chs: int, out_chs: int, stride: int) -> None:
    block = randomize_bn(GhostBottleneck(in_chs, out_chs, 24, stride=stride, se_chs=4)).eval()
    identity = stride == 1 and in_chs == out_chs
    assert block.identity_shortcut == identity
    assert isinstance(block.shortcut, nn.Identity) == identity
    assert isinstance(block.conv_dw, nn.Identity) == (stride == 1)
    if stride > 1:
        assert block.conv_dw.conv.stride == (stride, stride)
        assert block.conv_dw.conv.groups == 24
    x = torch.randn(2, in_chs, 13, 12)
    with torch.no_grad():
        y = block(x)
        assert y.shape == (2, out_chs, *out_hw(13, 12, stride))
        # silence ghost2 (no activation there): the block reduces to its shortcut
        silence_bn(block.ghost2.primary_conv.bn)
        silence_bn(block.ghost2.cheap_operation.bn)
        y0 = block(x)
        if identity:
            torch.testing.assert_close(y0, x, rtol=0, atol=0)
        else:
            short = block.shortcut(x)
            assert short.shape == y.shape
            assert not torch.allclose(short, torch.zeros_like(short))
            torch.testing.assert_close(y0, short)


def test_ghost_bottleneck_noskip_removes_the_shortcut() -> None:
    block = GhostBottleneck(C, C, 24, noskip=True).eval()
    silence_bn(block.ghost2.primary_conv.bn)
    silence_bn(block.ghost2.cheap_operation.bn)
    x = torch.randn(2, C, 9, 9)
    with torch.no_grad():
        y = block(x)
    # like InvertedResidual(noskip=True): no residual, so a silenced branch gives zero
    assert torch.count_nonzero(y) == 0


# --------------------------------------------------------------------------------------
# channel_shuffle and ShuffleUnit
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("channels", "groups"), [(6, 2), (6, 3), (8, 2), (12, 4), (16, 8)])
def test_channel_shuffle_is_an_invertible_permutation(channels: int, groups: int) -> None:
    x = torch.randn(2, channels, 3, 4)
    y = channel_shuffle(x, groups)
    assert y.shape == x.shape
    # a permutation of whole channels: same multiset of channel maps
    assert torch.equal(y.sort(dim=1).values, x.sort(dim=1).values)
    ids = torch.arange(channels, dtype=torch.float32).view(1, -1, 1, 1).expand(1, -1, 3, 4)
    perm = channel_shuffle(ids, groups)[0, :, 0, 0].long()
    assert sorted(perm.tolist()) == list(range(channels))
    torch.testing.assert_close(y, x[:, perm], rtol=0, atol=0)
    # the inverse of a shuffle with g groups is a shuffle with C / g groups
    torch.testing.assert_close(channel_shuffle(y, channels // groups), x, rtol=0, atol=0)


def test_channel_shuffle_groups_two_interleaves() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]


def test_shuffle_unit_stride_one() -> None:
    unit = randomize_bn(ShuffleUnit(16, 16, stride=1)).eval()
    x = torch.randn(2, 16, 11, 10)
    with torch.no_grad():
        y = unit(x)
    assert y.shape == x.shape
    # the untouched half lands on the even channels after the 2-group shuffle
    torch.testing.assert_close(y[:, 0::2], x[:, :8], rtol=0, atol=0)
    assert not torch.allclose(y[:, 1::2], x[:, 8:])


@pytest.mark.parametrize(("in_chs", "out_chs"), [(16, 24), (24, 16)])
def test_shuffle_unit_stride_one_needs_equal_width(in_chs: int, out_chs: int) -> None:
    with pytest.raises(InvalidArgumentError, match="in_chs"):
        ShuffleUnit(in_chs, out_chs, stride=1)


def test_shuffle_unit_needs_even_width() -> None:
    with pytest.raises(InvalidArgumentError, match="even"):
        ShuffleUnit(8, 15, stride=2)


@pytest.mark.parametrize(("in_chs", "out_chs"), [(8, 16), (16, 16), (3, 8)])
@pytest.mark.parametrize(("h", "w"), [(16, 16), (15, 17)])
def test_shuffle_unit_stride_two(in_chs: int, out_chs: int, h: int, w: int) -> None:
    unit = ShuffleUnit(in_chs, out_chs, stride=2).eval()
    with torch.no_grad():
        y = unit(torch.randn(2, in_chs, h, w))
    assert y.shape == (2, out_chs, *out_hw(h, w, 2))


# --------------------------------------------------------------------------------------
# ResNet blocks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("in_chs", "out_chs", "stride"), [(8, 8, 1), (8, 16, 1), (8, 16, 2),
                                                           (16, 16, 2)])
@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
def test_resnet_blocks(kind: str, in_chs: int, out_chs: int, stride: int) -> None:
    if kind == "basic":
        block = BasicBlock(in_chs, out_chs, stride=stride)
        last_bn = block.conv2.bn
        assert block.conv1.conv.stride == (stride, stride)
    else:
        block = Bottleneck(in_chs, out_chs, mid_chs=4, stride=stride)
        last_bn = block.conv3.bn
        # V1.5: the stride sits on the 3x3 conv
        assert block.conv1.conv.stride == (1, 1)
        assert block.conv2.conv.stride == (stride, stride)
        assert block.conv2.conv.kernel_size == (3, 3)
    block = randomize_bn(block).eval()
    projected = not (stride == 1 and in_chs == out_chs)
    if projected:
        assert isinstance(block.downsample, ConvNormAct)
        assert block.downsample.conv.weight.shape == (out_chs, in_chs, 1, 1)
        assert block.downsample.conv.stride == (stride, stride)
    else:
        assert isinstance(block.downsample, nn.Identity)
    x = torch.randn(2, in_chs, 11, 12)
    with torch.no_grad():
        y = block(x)
        assert y.shape == (2, out_chs, *out_hw(11, 12, stride))
        assert float(y.min()) >= 0  # ReLU after the addition
        silence_bn(last_bn)
        y0 = block(x)
        torch.testing.assert_close(y0, F.relu(block.downsample(x)), rtol=0, atol=0)
