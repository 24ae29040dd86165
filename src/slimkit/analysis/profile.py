"""What a model costs: parameters, MACs, activation memory, size, an energy estimate.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (its FLOP total / 2), which
counts the matrix products of convolutions and linear layers (and matmuls) only; norms,
activations, pooling and element-wise adds are not MACs. The count runs on the ``meta``
device by default, so even EfficientNet-B7 at 600 px is profiled in a second without
computing anything.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimkit.errors import InvalidArgumentError

__all__ = ["LayerProfile", "ModelProfile", "profile", "EnergyModel", "HOROWITZ_45NM",
           "count_params", "count_macs"]


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation, in picojoules, for a first-order estimate per inference.

    ``energy = MACs * mac_pj + (weight bytes + activation bytes) * dram_pj_per_byte``: each
    weight and each activation is assumed to cross DRAM once (no on-chip reuse), which is a
    pessimistic but comparable bound; what matters is how techniques move it.
    """

    name: str
    mac_fp32_pj: float
    mac_int8_pj: float
    dram_pj_per_byte: float
    source: str


#: Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm, 0.9 V: fp32 multiply 3.7 pJ +
#: add 0.9 pJ; int8 multiply 0.2 pJ + add 0.03 pJ; 64-bit DRAM access 1.3-2.6 nJ, i.e. about
#: 640 pJ per 32-bit word = 160 pJ/byte.
HOROWITZ_45NM = EnergyModel(
    name="horowitz-45nm",
    mac_fp32_pj=3.7 + 0.9,
    mac_int8_pj=0.2 + 0.03,
    dram_pj_per_byte=640.0 / 4,
    source="Horowitz, ISSCC 2014 (45 nm): fp32 mul 3.7 pJ + add 0.9 pJ; int8 mul 0.2 + add "
    "0.03 pJ; DRAM 640 pJ per 32-bit access",
)


@dataclass
class LayerProfile:
    """One leaf module: its output shape, own parameters, MACs and share of the total."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    macs_share: float = 0.0
    activation_bytes: int = 0


@dataclass
class ModelProfile:
    """Costs of one model at one input size (batch 1 unless profiled otherwise).

    Attributes:
        params: trainable and frozen parameters (not buffers).
        macs: multiply-accumulates of one forward pass of the whole batch.
        activation_bytes: fp32 bytes of the leaf-module outputs that allocate memory (views,
            identities, dropout and in-place activations excluded): a memory-traffic bound.
        peak_activation_bytes: the largest input + output of one leaf module, fp32
            (a lower bound of the activation memory a runtime needs).
        weight_bytes_fp32 / weight_bytes_int8: parameters at 4 and 1 bytes each.
        energy_fp32_mj / energy_int8_mj: the :class:`EnergyModel` estimate in millijoules.
        layers: per-leaf rows (see :class:`LayerProfile`).
    """

    input_shape: tuple[int, ...]
    params: int
    macs: int
    activation_bytes: int
    peak_activation_bytes: int
    weight_bytes_fp32: int
    weight_bytes_int8: int
    buffer_bytes: int
    energy_fp32_mj: float
    energy_int8_mj: float
    energy_model: str
    layers: list[LayerProfile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return asdict(self)


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def _as_inputs(input_size: int | Sequence[int], model: nn.Module, batch_size: int,
               device: torch.device) -> torch.Tensor:
    if isinstance(input_size, int):
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        chans = (cfg.get("input_size") or (3,))[0]
        shape: tuple[int, ...] = (batch_size, chans, input_size, input_size)
    else:
        dims = tuple(int(d) for d in input_size)
        if len(dims) == 2:
            cfg = getattr(model, "pretrained_cfg", {}) or {}
            dims = ((cfg.get("input_size") or (3,))[0], *dims)
        if len(dims) != 3:
            raise InvalidArgumentError(
                f"input_size must be N, (H, W) or (C, H, W), got {tuple(input_size)}"
            )
        shape = (batch_size, *dims)
    if any(d < 1 for d in shape):
        raise InvalidArgumentError(f"input shape must be positive, got {shape}")
    return torch.zeros(shape, device=device)


_VIEW_MODULES = (nn.Identity, nn.Flatten, nn.Dropout, nn.Unflatten)


def _writes_nothing(m: nn.Module) -> bool:
    """Leaves whose output is a view or the input overwritten in place (no new activation)."""
    return isinstance(m, _VIEW_MODULES) or bool(getattr(m, "inplace", False))


def count_macs(model: nn.Module, inputs: torch.Tensor) -> int:
    """MACs of ``model(inputs)`` (FlopCounterMode FLOPs / 2), in the model's current mode."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(inputs)
    return counter.get_total_flops() // 2


def _meta_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` on the meta device (no memory, no compute)."""
    try:
        return copy.deepcopy(model).to("meta")
    except Exception:  # modules with custom __deepcopy__ or non-tensor state
        return model


def profile(
    model: nn.Module,
    input_size: int | Sequence[int] | None = None,
    *,
    batch_size: int = 1,
    energy_model: EnergyModel = HOROWITZ_45NM,
    on_meta: bool = True,
) -> ModelProfile:
    """Profile any ``nn.Module`` taking one image tensor.

    Args:
        model: the network (left untouched: a meta-device copy is profiled).
        input_size: ``N`` (square), ``(H, W)`` or ``(C, H, W)``; default: the model's
            ``pretrained_cfg["input_size"]``.
        batch_size: inputs per forward pass; MACs and activations scale with it.
        energy_model: constants of the energy estimate (default Horowitz 45 nm).
        on_meta: count on a meta copy (fast, no memory); set False for modules whose
            forward needs real values (data-dependent control flow).

    Returns:
        A :class:`ModelProfile` with a per-leaf-module table.
    """
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None)
        if not cfg or "input_size" not in cfg:
            raise InvalidArgumentError(
                "this model has no default input size; pass input_size (e.g. 224)"
            )
        input_size = tuple(cfg["input_size"])
    target = _meta_copy(model) if on_meta else model
    device = next((p.device for p in target.parameters()), torch.device("cpu"))
    was_training = target.training
    target.eval()
    x = _as_inputs(input_size, target, batch_size, device)

    leaves = {name: m for name, m in target.named_modules() if not list(m.children())}
    out_shapes: dict[str, tuple[int, ...]] = {}
    in_bytes: dict[str, int] = {}
    out_bytes: dict[str, int] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def fn(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if isinstance(out, torch.Tensor):
                out_shapes[name] = tuple(out.shape)
                if not _writes_nothing(m):
                    out_bytes[name] = out_bytes.get(name, 0) + out.numel() * 4
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            in_bytes[name] = max(in_bytes.get(name, 0), sum(t.numel() * 4 for t in tensors))

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in leaves.items()]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            target(x)
    except RuntimeError as exc:
        raise InvalidArgumentError(
            f"the model cannot run on input {tuple(x.shape)}: {exc}".split("\n")[0]
        ) from exc
    finally:
        for h in handles:
            h.remove()
        target.train(was_training)

    flops = counter.get_flop_counts()
    root = next((k for k in flops if k != "Global" and "." not in k), None)
    total_macs = counter.get_total_flops() // 2
    layers: list[LayerProfile] = []
    for name, m in leaves.items():
        if name not in out_shapes:
            continue  # not called in forward (e.g. an unused branch)
        key = (f"{root}.{name}" if name else root) if root else name
        macs = sum(flops.get(key, {}).values()) // 2
        params = sum(p.numel() for p in m.parameters(recurse=False))
        layers.append(LayerProfile(
            name=name,
            type=type(m).__name__,
            output_shape=out_shapes[name],
            params=params,
            macs=macs,
            macs_share=macs / total_macs if total_macs else 0.0,
            activation_bytes=out_bytes.get(name, 0),
        ))

    params = count_params(model)
    act_bytes = sum(out_bytes.values())
    peak = max((in_bytes.get(n, 0) + out_bytes.get(n, 0) for n in out_shapes), default=0)
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    w32, w8 = params * 4, params
    e32 = total_macs * energy_model.mac_fp32_pj + (w32 + act_bytes) * energy_model.dram_pj_per_byte
    e8 = total_macs * energy_model.mac_int8_pj + (w8 + act_bytes // 4) * energy_model.dram_pj_per_byte
    return ModelProfile(
        input_shape=tuple(x.shape),
        params=params,
        macs=total_macs,
        activation_bytes=act_bytes,
        peak_activation_bytes=peak,
        weight_bytes_fp32=w32,
        weight_bytes_int8=w8,
        buffer_bytes=buffer_bytes,
        energy_fp32_mj=e32 * 1e-9,
        energy_int8_mj=e8 * 1e-9,
        energy_model=energy_model.name,
        layers=layers,
    )
