"""Quantization-aware training that matches ONNX Runtime's INT8 scheme.

:func:`prepare_qat` folds BatchNorms into the convolutions (so training sees the weights
that will be quantized) and wraps every Conv2d / Linear so that its forward uses

- weights fake-quantized per output channel (or per tensor), symmetric signed int8
  (scale = max|w| / 127, or / 64 on ONNX Runtime's reduced range [-64, 64] that slimkit uses
  on x86 CPUs without VNNI: exactly the grid ONNX Runtime's quantizer will use), and
- inputs fake-quantized per tensor, asymmetric signed int8, with ranges observed as an
  exponential moving average during training,

with straight-through gradients. After training, :func:`strip_qat` returns a plain float
model whose weights have adapted to the int8 grid; it is exported and quantized by ONNX
Runtime's static quantizer (QDQ), which reproduces that grid for the weights and calibrates
the activation ranges, and whose QDQ graph ONNX Runtime runs with integer kernels.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from slimkit.compress.fuse import fold_batchnorm

__all__ = ["ActFakeQuant", "QATWrapper", "prepare_qat", "strip_qat", "qat_layers"]


class ActFakeQuant(nn.Module):
    """Per-tensor asymmetric int8 fake quantization with an EMA range observer."""

    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.minimum(self.min_val, torch.zeros(()))
        hi = torch.maximum(self.max_val, torch.zeros(()))
        scale = ((hi - lo) / 255.0).clamp_min(1e-8)
        zero_point = torch.clamp(torch.round(-128 - lo / scale), -128, 127).to(torch.int32)
        return scale.reshape(1), zero_point.reshape(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                lo, hi = x.detach().min(), x.detach().max()
                if not bool(self.initialized):
                    self.min_val.copy_(lo)
                    self.max_val.copy_(hi)
                    self.initialized.fill_(True)
                else:
                    self.min_val.lerp_(lo, self.momentum)
                    self.max_val.lerp_(hi, self.momentum)
        if not bool(self.initialized):
            return x
        scale, zp = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, -128, 127)


def _weight_fake_quant(w: torch.Tensor, per_channel: bool = True, qmax: int = 127
                       ) -> torch.Tensor:
    if per_channel:
        scale = (w.detach().abs().flatten(1).amax(1) / qmax).clamp_min(1e-12)
        zero = torch.zeros(w.shape[0], dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -qmax, qmax)
    scale_t = float((w.detach().abs().max() / qmax).clamp_min(1e-12))
    return torch.fake_quantize_per_tensor_affine(w, scale_t, 0, -qmax, qmax)


class QATWrapper(nn.Module):
    """A Conv2d or Linear computing on fake-quantized inputs and weights.

    ``per_channel`` / ``qmax`` give the weight grid (127: int8, 64: ORT's reduced range).
    """

    def __init__(self, layer: nn.Conv2d | nn.Linear, per_channel: bool = True,
                 qmax: int = 127) -> None:
        super().__init__()
        self.layer = layer
        self.input_quant = ActFakeQuant()
        self.per_channel = per_channel
        self.qmax = qmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quant(x)
        w = _weight_fake_quant(self.layer.weight, self.per_channel, self.qmax)
        if isinstance(self.layer, nn.Conv2d):
            c = self.layer
            return nn.functional.conv2d(x, w, c.bias, c.stride, c.padding, c.dilation, c.groups)
        return nn.functional.linear(x, w, self.layer.bias)


def qat_layers(model: nn.Module) -> list[str]:
    """Names of the wrapped layers of a prepared model."""
    return [n for n, m in model.named_modules() if isinstance(m, QATWrapper)]


def _replace(model: nn.Module, fn) -> nn.Module:  # type: ignore[no-untyped-def]
    for name, child in list(model.named_children()):
        new = fn(child)
        if new is not child:
            setattr(model, name, new)
        else:
            _replace(child, fn)
    return model


def prepare_qat(model: nn.Module, *, per_channel: bool = True,
                reduce_range: bool = False) -> nn.Module:
    """A copy of ``model`` with BatchNorms folded and Conv2d/Linear layers wrapped for QAT.

    Args:
        per_channel, reduce_range: the weight grid the model will be deployed on; pass what
            :func:`quantize_onnx` will use (``resolve_activations`` gives this CPU's
            ``reduce_range``), so training sees the grid ONNX Runtime runs.

    Attributes such as ``slimkit_arch`` and ``pretrained_cfg`` are kept. The wrapped model
    trains with :func:`slimkit.train.fit` like any model.
    """
    from slimkit.compress.quantization.equalize import weight_qmax

    qmax = weight_qmax(reduce_range)
    prepared = fold_batchnorm(copy.deepcopy(model)).model
    _replace(prepared, lambda m: QATWrapper(m, per_channel, qmax)
             if isinstance(m, nn.Conv2d | nn.Linear) else m)
    return prepared


def strip_qat(model: nn.Module) -> nn.Module:
    """A plain float copy of a prepared model (wrappers replaced by their layers)."""
    plain = copy.deepcopy(model)
    _replace(plain, lambda m: m.layer if isinstance(m, QATWrapper) else m)
    return plain.eval()
