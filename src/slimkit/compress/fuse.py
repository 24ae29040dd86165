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
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (n1, m1), (n2, m2) in zip(children, children[1:], strict=False):
                if isinstance(m1, nn.Conv2d) and isinstance(m2, nn.BatchNorm2d) \
                        and m2.num_features == m1.out_channels:
                    setattr(module, n1, fold_conv_bn(m1, m2))
                    setattr(module, n2, nn.Identity())
                    folded.append((f"{prefix}{n1}", f"{prefix}{n2}"))
    return FoldResult(model=model, folded=folded)
