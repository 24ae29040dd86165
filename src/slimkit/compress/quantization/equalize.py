"""Cross-layer equalization and bias correction (Nagel et al. 2019, "Data-Free
Quantization Through Weight Equalization and Bias Correction").

Depthwise convolutions have per-channel weight ranges that differ by orders of magnitude;
one per-tensor int8 scale then wipes out the small channels (MobileNetV2 collapses to
~0 % top-1 in the paper). For two consecutive layers ``y = W2 f(W1 x + b1)`` with a
positively homogeneous ``f`` (ReLU: ``f(x / s) = f(x) / s``), scaling output channel ``i``
of layer 1 by ``1 / s_i`` and input channel ``i`` of layer 2 by ``s_i`` leaves the function
unchanged; ``s_i = sqrt(r1_i * r2_i) / r2_i`` (``r`` = the channel's weight range) makes the
two ranges equal. ReLU6 is not homogeneous (it clips at 6); as in the paper it may be
replaced by ReLU first (``relu6_to_relu``), which changes the function slightly — the
measured fp32 accuracy is reported.

Bias correction: quantizing weights shifts the expected output of a layer by
``(Q(W) - W) E[x]``; measuring ``E[x]`` per input channel on calibration data and subtracting
that shift from the bias removes the biased part of the quantization error.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from slimkit.compress.fuse import fold_batchnorm
from slimkit.nn.blocks import DepthwiseSeparableConv, FusedMBConv, InvertedResidual
from slimkit.nn.layers import ConvNormAct

__all__ = ["EqualizeResult", "bias_correct", "equalize", "find_pairs", "quantize_weight",
           "weight_qmax"]


@dataclass
class EqualizeResult:
    """The equalized (BN-folded) model, the pairs scaled, and the ReLU6 layers replaced."""

    model: nn.Module
    pairs: list[tuple[str, str]] = field(default_factory=list)
    relu6_replaced: list[str] = field(default_factory=list)
    iterations: int = 0


def _homogeneous(act: nn.Module) -> bool:
    return isinstance(act, nn.ReLU | nn.Identity | nn.LeakyReLU | nn.PReLU)


def find_pairs(model: nn.Module) -> list[tuple[str, str, str]]:
    """Consecutive ``(conv1, activation, conv2)`` names inside slimkit's blocks where the
    activation between them is the only op (no SE, no residual in between)."""
    pairs = []
    for name, m in model.named_modules():
        p = f"{name}." if name else ""
        if isinstance(m, InvertedResidual):
            if isinstance(m.conv_pw, ConvNormAct):
                pairs.append((f"{p}conv_pw", f"{p}conv_dw"))
            if isinstance(m.se, nn.Identity):
                pairs.append((f"{p}conv_dw", f"{p}conv_pwl"))
        elif isinstance(m, DepthwiseSeparableConv):
            if isinstance(m.se, nn.Identity):
                pairs.append((f"{p}conv_dw", f"{p}conv_pw"))
        elif isinstance(m, FusedMBConv) and isinstance(m.conv_pwl, ConvNormAct) \
                and isinstance(m.se, nn.Identity):
            pairs.append((f"{p}conv_exp", f"{p}conv_pwl"))
    return [(a, f"{a}.act", b) for a, b in pairs]


def _weight_range(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Max |w| per channel along ``dim``."""
    return w.abs().transpose(0, dim).flatten(1).amax(1)


@torch.no_grad()
def equalize(model: nn.Module, *, iterations: int = 20, relu6_to_relu: bool = False,
             tolerance: float = 1e-4) -> EqualizeResult:
    """Fold BatchNorms and equalize the weight ranges of consecutive layer pairs.

    Pairs whose activation is not positively homogeneous are skipped unless it is a ReLU6
    and ``relu6_to_relu`` is set. Sweeps repeat until the scales change less than
    ``tolerance`` (or ``iterations``). The input model is not modified.
    """
    folded = fold_batchnorm(copy.deepcopy(model)).model
    modules = dict(folded.named_modules())
    result = EqualizeResult(model=folded)
    usable = []
    for a, act_name, b in find_pairs(folded):
        act = modules.get(act_name)
        if act is None:
            continue
        if isinstance(act, nn.ReLU6) and relu6_to_relu:
            parent, _, child = act_name.rpartition(".")
            setattr(modules[parent], child, nn.ReLU(inplace=True))
            result.relu6_replaced.append(act_name)
        elif not _homogeneous(act):
            continue
        usable.append((a, b))
    modules = dict(folded.named_modules())
    for it in range(iterations):
        largest_change = 0.0
        for a, b in usable:
            c1, c2 = modules[a].conv, modules[b].conv
            r1 = _weight_range(c1.weight, 0)
            depthwise2 = c2.groups == c2.in_channels and c2.groups > 1
            r2 = _weight_range(c2.weight, 0 if depthwise2 else 1)
            s = torch.sqrt(r1 * r2).clamp_min(1e-12) / r2.clamp_min(1e-12)
            s = torch.where((r1 > 0) & (r2 > 0), s, torch.ones_like(s))
            c1.weight.div_(s.view(-1, 1, 1, 1))
            if c1.bias is not None:
                c1.bias.div_(s)
            if depthwise2:
                c2.weight.mul_(s.view(-1, 1, 1, 1))
            else:
                c2.weight.mul_(s.view(1, -1, 1, 1))
            largest_change = max(largest_change, float((s - 1).abs().max()))
        result.iterations = it + 1
        if largest_change < tolerance:
            break
    result.pairs = usable
    return result


def weight_qmax(reduce_range: bool = False, bits: int = 8) -> int:
    """The largest weight level of ONNX Runtime's symmetric signed grid: 127 for int8, 64
    with ``reduce_range`` (ORT's reduced int8 range is [-64, 64], scale = max|w| / 64)."""
    return 64 if reduce_range and bits == 8 else 2 ** (bits - 1) - 1


def quantize_weight(w: torch.Tensor, per_channel: bool = True, bits: int = 8,
                    reduce_range: bool = False) -> torch.Tensor:
    """Symmetric signed quantize-dequantize of a conv/linear weight (ORT's weight scheme:
    scale = max|w| / 127, or / 64 with ``reduce_range``; per output channel or per tensor)."""
    q = weight_qmax(reduce_range, bits)
    if per_channel:
        scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / q
        scale = scale.view(-1, *([1] * (w.ndim - 1)))
    else:
        scale = w.abs().max().clamp_min(1e-12) / q
    return torch.clamp(torch.round(w / scale), -q, q) * scale


@torch.no_grad()
def bias_correct(model: nn.Module, calibration: Iterable[torch.Tensor], *,
                 per_channel: bool = True, max_batches: int = 8,
                 reduce_range: bool = False) -> list[str]:
    """Empirical bias correction in place: for every Conv2d/Linear, subtract
    ``(Q(W) - W) E[x]`` from its bias (adding a bias where there is none).

    ``calibration``: input batches ``(N, C, H, W)`` of the model. Returns the layers changed.
    """
    model.eval()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = dict.fromkeys(layers, 0)

    def hook(name: str):  # type: ignore[no-untyped-def]
        def fn(_m: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            x = args[0]
            dims = [0, 2, 3] if x.ndim == 4 else [0]
            mean = x.float().mean(dims)
            sums[name] = sums.get(name, 0) + mean * x.shape[0]  # type: ignore[operator]
            counts[name] += x.shape[0]

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        for i, x in enumerate(calibration):
            if i >= max_batches:
                break
            model(x)
    finally:
        for h in handles:
            h.remove()
    changed = []
    for name, layer in layers.items():
        if not counts.get(name):
            continue
        ex = sums[name] / counts[name]  # E[x] per input channel
        w = layer.weight
        dw = quantize_weight(w, per_channel, reduce_range=reduce_range) - w
        if isinstance(layer, nn.Conv2d):
            g = layer.groups
            per_out = dw.sum((2, 3))  # (O, C / g): padding ignored, as in the paper
            cin = per_out.shape[1]
            ex_g = ex.view(g, cin)  # input channels of each group
            shift = (per_out.view(g, -1, cin) * ex_g[:, None, :]).sum(2).flatten()
        else:
            shift = dw @ ex
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype))
        layer.bias.sub_(shift.to(layer.bias.dtype))
        changed.append(name)
    return changed
