"""Inference-time fusions that must not change the function: BatchNorm folding.

``y = gamma * (W * x + b - mean) / sqrt(var + eps) + beta`` is the convolution with weights
``W * s`` and bias ``(b - mean) * s + beta`` where ``s = gamma / sqrt(var + eps)`` per output
channel. After folding, the BatchNorm becomes an identity and a runtime runs one conv
instead of two ops (ONNX Runtime folds them too, but a folded PyTorch model is also what
cross-layer equalization and quantization need).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["FoldResult", "fold_conv_bn", "fold_batchnorm"]


@dataclass
class FoldResult:
    """The folded model and the names of the (conv, norm) pairs folded."""

    model: nn.Module
    folded: list[tuple[str, str]] = field(default_factory=list)


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv computing ``bn(conv(x))`` in eval mode (the inputs are not modified)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded")
    scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(
        bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + shift)
    return fused.to(conv.weight.dtype)


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> FoldResult:
    """Fold every BatchNorm2d that directly follows a Conv2d into it.

    Recognised pairs: attributes ``conv``/``bn`` of one module (slimkit's ``ConvNormAct``,
    timm-style blocks) and consecutive children of an ``nn.Sequential``. Other BatchNorms are
    left as they are. The model is put in eval mode; the function is unchanged (checked by
    the tests to float precision).
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    folded: list[tuple[str, str]] = []
    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) \
                and bn.num_features == conv.out_channels:
            module.conv = fold_conv_bn(conv, bn)
            module.bn = nn.Identity()
            folded.append((f"{prefix}conv", f"{prefix}bn"))
        elif isinstance(conv, nn.Sequential) and len(conv) and isinstance(conv[-1], nn.Conv2d) \
                and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv[-1].out_channels:
            # a decomposed or separable conv: fold into its last convolution
            conv[-1] = fold_conv_bn(conv[-1], bn)
            module.bn = nn.Identity()
            folded.append((f"{prefix}conv.{len(conv) - 1}", f"{prefix}bn"))
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (n1, m1), (n2, m2) in zip(children, children[1:], strict=False):
                if isinstance(m1, nn.Conv2d) and isinstance(m2, nn.BatchNorm2d) \
                        and m2.num_features == m1.out_channels:
                    setattr(module, n1, fold_conv_bn(m1, m2))
                    setattr(module, n2, nn.Identity())
                    folded.append((f"{prefix}{n1}", f"{prefix}{n2}"))
    return FoldResult(model=model, folded=folded)


@dataclass
class SeparableLayer:
    """One replaced convolution: its costs before/after and the analytic ratio."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    analytic_ratio: float  # 1 / O + 1 / k^2
    weight_rel_error: float  # ||W - P D|| / ||W|| of the least-squares initialisation


@dataclass
class SeparableResult:
    model: nn.Module
    layers: list[SeparableLayer] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@torch.no_grad()
def separable_from_conv(conv: nn.Conv2d) -> tuple[nn.Sequential, float]:
    """The depthwise-separable pair closest to ``conv`` in weight space.

    For each input channel ``c`` the slice ``W[:, c]`` (``O x k^2``) is replaced by its best
    rank-1 approximation ``sigma u v^T`` (an SVD: the least-squares optimum): the depthwise
    kernel of channel ``c`` is ``v`` and column ``c`` of the pointwise weights is
    ``sigma u``. Returns the pair and the relative weight error.
    """
    o, c, kh, kw = conv.weight.shape
    w = conv.weight.detach().double().permute(1, 0, 2, 3).reshape(c, o, kh * kw)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (c, o, r), (c, r), (c, r, k^2)
    pw = (u[:, :, 0] * s[:, :1]).T  # (o, c)
    dw = vh[:, 0, :].reshape(c, 1, kh, kw)
    approx = pw.T[:, :, None] * vh[:, 0, None, :]  # (c, o, k^2)
    err = float((w - approx).norm() / w.norm().clamp_min(1e-12))
    depthwise = nn.Conv2d(c, c, (kh, kw), conv.stride, conv.padding, conv.dilation, groups=c,
                          bias=False, padding_mode=conv.padding_mode)
    pointwise = nn.Conv2d(c, o, 1, bias=conv.bias is not None)
    depthwise.weight.copy_(dw.to(conv.weight.dtype))
    pointwise.weight.copy_(pw.reshape(o, c, 1, 1).to(conv.weight.dtype))
    if conv.bias is not None:
        pointwise.bias.copy_(conv.bias)
    return nn.Sequential(depthwise, pointwise), err


def to_separable(model: nn.Module, example_inputs: torch.Tensor, *,
                 layers: list[str] | None = None, min_kernel: int = 3,
                 inplace: bool = False) -> SeparableResult:
    """Replace standard ``k x k`` convolutions (``groups == 1``, ``k >= min_kernel``) by
    depthwise + pointwise pairs initialised by :func:`separable_from_conv`.

    The replacement changes the function (a separable conv is a constrained conv): fine-tune
    afterwards, ideally with the original model as a distillation teacher. The result
    reports, per layer, params and MACs before and after beside the analytic ratio
    ``1 / O + 1 / k^2`` (Howard et al. 2017), and the relative weight error of the fit.
    """
    from slimkit.analysis.profile import profile
    from slimkit.errors import InvalidArgumentError, suggest

    model = model if inplace else copy.deepcopy(model)
    model.eval()
    modules = dict(model.named_modules())
    if layers is not None:
        for n in layers:
            if n not in modules or not isinstance(modules[n], nn.Conv2d):
                raise InvalidArgumentError(
                    f"{n!r} is not a Conv2d of this model."
                    + suggest(n, [k for k, v in modules.items() if isinstance(v, nn.Conv2d)])
                )
    before = {r.name: r for r in profile(model, tuple(example_inputs.shape[1:])).layers}
    result = SeparableResult(model=model)
    targets = layers if layers is not None else [
        n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    records: list[dict[str, object]] = []
    for name in targets:
        conv = modules[name]
        assert isinstance(conv, nn.Conv2d)
        k = conv.kernel_size[0]
        if conv.groups != 1:
            result.skipped.append((name, "already grouped/depthwise"))
            continue
        if k < min_kernel or conv.kernel_size[0] != conv.kernel_size[1]:
            result.skipped.append((name, f"kernel {conv.kernel_size} below {min_kernel}"))
            continue
        pair, err = separable_from_conv(conv)
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, pair)
        records.append({"name": name, "in_channels": conv.in_channels,
                        "out_channels": conv.out_channels, "kernel_size": list(conv.kernel_size),
                        "stride": list(conv.stride), "padding": list(conv.padding)
                        if isinstance(conv.padding, tuple) else conv.padding,
                        "dilation": list(conv.dilation), "bias": conv.bias is not None})
        result.layers.append(SeparableLayer(
            name=name, in_channels=conv.in_channels, out_channels=conv.out_channels,
            kernel_size=k, params_before=conv.weight.numel(),
            params_after=pair[0].weight.numel() + pair[1].weight.numel(),
            macs_before=before[name].macs if name in before else 0, macs_after=0,
            analytic_ratio=1 / conv.out_channels + 1 / k**2, weight_rel_error=err))
    if records:  # let checkpoints rebuild the new module tree
        existing = list(getattr(model, "slimkit_rewrites", None) or [])
        model.slimkit_rewrites = existing + [{"kind": "separable", "records": records}]
    after = {r.name: r for r in profile(model, tuple(example_inputs.shape[1:])).layers}
    for layer in result.layers:
        layer.macs_after = after[f"{layer.name}.0"].macs + after[f"{layer.name}.1"].macs
    return result


def apply_separable(model: nn.Module, records: list[dict[str, object]]) -> nn.Module:
    """Replay :func:`to_separable` on a fresh model from its records (shapes only; the
    weights come from the checkpoint)."""
    modules = dict(model.named_modules())
    for r in records:
        name = str(r["name"])
        if name not in modules:
            from slimkit.errors import FileFormatError

            raise FileFormatError(f"checkpoint rewrites layer {name!r} that this model lacks")
        c, o = int(r["in_channels"]), int(r["out_channels"])  # type: ignore[arg-type]
        k = tuple(r["kernel_size"])  # type: ignore[arg-type]
        pad = r["padding"]
        pair = nn.Sequential(
            nn.Conv2d(c, c, k, tuple(r["stride"]), tuple(pad) if isinstance(pad, list)  # type: ignore[arg-type]
                      else pad, tuple(r["dilation"]), groups=c, bias=False),  # type: ignore[arg-type]
            nn.Conv2d(c, o, 1, bias=bool(r["bias"])))
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, pair)
    model.slimkit_rewrites = list(getattr(model, "slimkit_rewrites", None) or []) + [
        {"kind": "separable", "records": list(records)}]
    return model
