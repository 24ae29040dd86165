"""Low-rank decomposition of Conv2d and Linear layers: truncated SVD, Tucker-2 and CP.

:func:`decompose` replaces each selected layer by an ``nn.Sequential`` of smaller ordinary
layers computing (an approximation of) the same linear map:

- ``Linear(in, out)`` -> ``Linear(in, r, bias=False)``, ``Linear(r, out)`` (truncated SVD,
  ``W ~ U_r S_r V_r^T``, with ``sqrt(S_r)`` given to each factor so both have the same
  scale, which suits quantization).
- 1x1 ``Conv2d(C, O)`` -> 1x1 ``Conv2d(C, r)`` (with the stride and padding), 1x1
  ``Conv2d(r, O)`` (SVD of the ``O x C`` matrix, as for Linear).
- kxk ``Conv2d(C, O)``, ``method="tucker2"`` -> 1x1 ``Conv2d(C, r_in)``, kxk
  ``Conv2d(r_in, r_out)`` (same stride, padding, dilation, padding mode), 1x1
  ``Conv2d(r_out, O)`` with the original bias (Kim et al., ICLR 2016). The factors come from
  HOSVD: ``U_out`` and ``U_in`` are the leading left singular vectors of the mode-0
  (``O x C*kh*kw``) and mode-1 (``C x O*kh*kw``) unfoldings of the weight, and the core is
  ``G = W x_0 U_out^T x_1 U_in^T``. At full ranks ``U_out``/``U_in`` span the unfoldings'
  column spaces and ``W = G x_0 U_out x_1 U_in`` exactly.
- kxk ``Conv2d(C, O)``, ``method="cp"`` -> 1x1 ``Conv2d(C, R)``, depthwise ``kh x 1``, depthwise
  ``1 x kw``, 1x1 ``Conv2d(R, O)`` (Lebedev et al., ICLR 2015), from a rank-``R`` CP
  decomposition ``W[o,c,i,j] ~ sum_r A_o[o,r] A_c[c,r] A_h[i,r] A_w[j,r]`` fitted by
  alternating least squares (HOSVD start, ``cp_iterations`` sweeps, float64). CP is an
  approximation at every rank (the record gives its relative error) and usually needs
  fine-tuning; Linear and 1x1 layers use the SVD under both methods.

The new layers are plain ``nn.Conv2d``/``nn.Linear`` in a plain ``nn.Sequential``: the
model still prunes, exports and quantizes. Grouped and depthwise convolutions are skipped
(their weight has no low-rank structure to exploit across channels), as are layers with
fewer than ``min_channels`` input or output channels.

Ranks
-----
Exactly one criterion picks the ranks of every selected layer (``ranks`` can override
individual layers, or be used alone):

- ``rank_ratio``: ``ceil(ratio * full)`` per mode, ``full`` the rank of the unfolding
  (``min(O, C)`` for SVD; ``min(O, C*kh*kw)`` and ``min(C, O*kh*kw)`` for Tucker-2).
- ``energy``: the smallest rank per mode keeping that fraction of the sum of squared
  singular values (``energy=1.0`` is the exact rank). The level is per mode: truncating
  both modes of a Tucker-2 layer to ``e`` bounds its relative weight error by
  ``sqrt(2 (1 - e))`` (0.45 at 0.9, against ``sqrt(1 - e)`` = 0.32 for an SVD layer), so
  Tucker-2 layers need higher levels for the same error; ``LayerDecomposition.rel_error``
  gives the actual value.
- ``target_macs``: the fraction of the model's MACs to keep. One common energy level is
  found by bisection so that the model's MACs are at most ``target_macs`` of the original
  (the ranks, and so the MACs, grow monotonically with the energy); needs
  ``example_inputs``. The MACs are computed per layer from the shapes seen on the example
  input and the final model is measured with :func:`slimkit.analysis.profile.count_macs`.

For CP, the rank ``R`` is the larger of the two Tucker-2 mode ranks at the same criterion.

A decomposed layer that would not cost fewer MACs than the original (fewer parameters when
no example input is given) is left as it is and reported in ``DecomposeResult.skipped``,
unless ``only_if_cheaper=False`` (which the full-rank parity tests use). Layers named in
``ranks`` are always decomposed at the given ranks.

Saving and loading
------------------
A decomposed layer is a new ``nn.Sequential``: a structural change that a fresh build of
the architecture does not have. Every decomposition is recorded, as JSON-able dicts, in
``DecomposeResult.records`` and appended to the model's ``slimkit_decomposition``
attribute; :func:`apply_decomposition` re-creates the (uninitialised) structure on a fresh
model and :func:`restructure_from_state_dict` does that and loads the weights. Records are
self-contained (the original layer's constructor arguments and the ranks), so they apply in
order after structured pruning too.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from slimkit.analysis.profile import count_macs, count_params
from slimkit.errors import (
    FileFormatError,
    InvalidArgumentError,
    UnsupportedModuleError,
    suggest,
)

__all__ = [
    "METHODS",
    "DecomposeResult",
    "LayerDecomposition",
    "apply_decomposition",
    "decompose",
    "decompose_layer",
    "restructure_from_state_dict",
]

#: Decomposition methods for kxk convolutions (Linear and 1x1 layers always use the SVD).
METHODS = ("tucker2", "cp")
#: Attribute of a decomposed model holding its decomposition records, in order.
RECORDS_ATTR = "slimkit_decomposition"
_KINDS = ("svd", "tucker2", "cp")


# -- records -----------------------------------------------------------------------------


@dataclass
class LayerDecomposition:
    """What happened to one layer.

    Attributes:
        name: module name of the replaced layer (now an ``nn.Sequential``).
        kind: ``"svd"`` (Linear, 1x1 conv), ``"tucker2"`` or ``"cp"``.
        layer: constructor arguments of the original layer (``{"type": "Conv2d", ...}``).
        original_shape: the original weight's shape.
        ranks: ``(r,)`` for SVD and CP, ``(r_out, r_in)`` for Tucker-2.
        full_ranks: the exact ranks of the modes (CP: the larger Tucker-2 one).
        energy: per mode, the fraction of squared singular values kept (CP: of the
            Tucker-2 modes at the CP rank).
        rel_error: ``||W - W_approx||_F / ||W||_F`` of the weight (0 at full rank,
            up to float64 rounding).
        params_before / params_after: parameters of the layer and of its replacement.
        macs_before / macs_after: MACs of the layer over the example input (all calls
            summed), ``None`` without ``example_inputs``.
    """

    name: str
    kind: str
    layer: dict[str, Any]
    original_shape: tuple[int, ...]
    ranks: tuple[int, ...]
    full_ranks: tuple[int, ...]
    energy: tuple[float, ...]
    rel_error: float
    params_before: int
    params_after: int
    macs_before: int | None = None
    macs_after: int | None = None

    def to_record(self) -> dict[str, Any]:
        """The JSON-able record :func:`apply_decomposition` needs (name, kind, layer, ranks)."""
        return {"name": self.name, "kind": self.kind, "layer": dict(self.layer),
                "ranks": list(self.ranks)}


@dataclass
class DecomposeResult:
    """What :func:`decompose` did.

    Attributes:
        model: the decomposed model (a deep copy unless ``inplace``), in the training mode
            it was given in.
        layers: one :class:`LayerDecomposition` per replaced layer, in module order.
        skipped: module name -> reason, for Conv2d/Linear layers considered but left as
            they are (grouped, too few channels, not cheaper, already a factor).
        method: ``"tucker2"`` or ``"cp"``.
        criterion: the rank criterion as given, e.g. ``{"energy": 0.9}``.
        energy_level: the common energy level used (the one bisection found for
            ``target_macs``; the given one for ``energy``; ``None`` otherwise).
        params_before / params_after: parameters of the whole model.
        macs_before / macs_after: MACs of the whole model on the example input (measured
            with ``count_macs``), ``None`` without ``example_inputs``.
    """

    model: nn.Module
    layers: list[LayerDecomposition]
    skipped: dict[str, str]
    method: str
    criterion: dict[str, Any]
    energy_level: float | None
    params_before: int
    params_after: int
    macs_before: int | None = None
    macs_after: int | None = None

    @property
    def records(self) -> list[dict[str, Any]]:
        """JSON-able records of this decomposition (see :func:`apply_decomposition`)."""
        return [layer.to_record() for layer in self.layers]

    @property
    def macs_ratio(self) -> float | None:
        """``macs_after / macs_before`` (``None`` without an example input)."""
        if self.macs_before is None or self.macs_after is None or not self.macs_before:
            return None
        return self.macs_after / self.macs_before

    def summary(self) -> dict[str, Any]:
        """JSON-ready record for lineage and reports (no model)."""
        return {"method": self.method, "criterion": dict(self.criterion),
                "energy_level": self.energy_level,
                "params_before": self.params_before, "params_after": self.params_after,
                "macs_before": self.macs_before, "macs_after": self.macs_after,
                "layers": [asdict(layer) for layer in self.layers],
                "skipped": dict(self.skipped)}


# -- building the factor layers ----------------------------------------------------------


def _layer_config(m: nn.Module) -> dict[str, Any]:
    """Constructor arguments of a Conv2d/Linear, JSON-able."""
    if isinstance(m, nn.Linear):
        return {"type": "Linear", "in_features": m.in_features,
                "out_features": m.out_features, "bias": m.bias is not None}
    assert isinstance(m, nn.Conv2d)
    padding = m.padding if isinstance(m.padding, str) else list(m.padding)
    return {"type": "Conv2d", "in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel_size": list(m.kernel_size), "stride": list(m.stride), "padding": padding,
            "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None,
            "padding_mode": m.padding_mode}


def _kind_of(cfg: Mapping[str, Any], method: str) -> str:
    if cfg["type"] == "Linear" or tuple(cfg["kernel_size"]) == (1, 1):
        return "svd"
    return method


def _weight_shape(cfg: Mapping[str, Any]) -> tuple[int, ...]:
    if cfg["type"] == "Linear":
        return (cfg["out_features"], cfg["in_features"])
    return (cfg["out_channels"], cfg["in_channels"] // cfg["groups"], *cfg["kernel_size"])


def _build_factors(kind: str, cfg: Mapping[str, Any], ranks: Sequence[int]) -> nn.Sequential:
    """The (uninitialised) ``nn.Sequential`` replacing a layer with constructor ``cfg``."""
    bias = bool(cfg["bias"])
    if cfg["type"] == "Linear":
        (r,) = ranks
        return nn.Sequential(nn.Linear(cfg["in_features"], r, bias=False),
                             nn.Linear(r, cfg["out_features"], bias=bias))
    c, o = cfg["in_channels"], cfg["out_channels"]
    kh, kw = cfg["kernel_size"]
    stride, dilation = tuple(cfg["stride"]), tuple(cfg["dilation"])
    padding = cfg["padding"] if isinstance(cfg["padding"], str) else tuple(cfg["padding"])
    mode = cfg.get("padding_mode", "zeros")
    if kind == "svd":  # 1x1: stride and padding on the first factor (it is pointwise)
        (r,) = ranks
        return nn.Sequential(
            nn.Conv2d(c, r, 1, stride=stride, padding=padding, bias=False, padding_mode=mode),
            nn.Conv2d(r, o, 1, bias=bias))
    if kind == "tucker2":
        r_out, r_in = ranks
        return nn.Sequential(
            nn.Conv2d(c, r_in, 1, bias=False),
            nn.Conv2d(r_in, r_out, (kh, kw), stride=stride, padding=padding,
                      dilation=dilation, bias=False, padding_mode=mode),
            nn.Conv2d(r_out, o, 1, bias=bias))
    if kind == "cp":
        (r,) = ranks
        pad_h: Any = padding if isinstance(padding, str) else (padding[0], 0)
        pad_w: Any = padding if isinstance(padding, str) else (0, padding[1])
        return nn.Sequential(
            nn.Conv2d(c, r, 1, bias=False),
            nn.Conv2d(r, r, (kh, 1), stride=(stride[0], 1), padding=pad_h,
                      dilation=(dilation[0], 1), groups=r, bias=False, padding_mode=mode),
            nn.Conv2d(r, r, (1, kw), stride=(1, stride[1]), padding=pad_w,
                      dilation=(1, dilation[1]), groups=r, bias=False, padding_mode=mode),
            nn.Conv2d(r, o, 1, bias=bias))
    raise InvalidArgumentError(f"unknown decomposition kind {kind!r}; use one of {_KINDS}")


def _max_ranks(kind: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The largest meaningful ranks per mode of a weight of ``shape``."""
    o, rest = shape[0], math.prod(shape[1:])
    if kind == "svd":
        return (min(o, rest),)
    c, k = shape[1], math.prod(shape[2:])
    if kind == "tucker2":
        return (min(o, c * k), min(c, o * k))
    # CP: a tensor's rank is at most the product of all its dimensions but the largest
    dims = sorted(shape)
    return (math.prod(dims[:-1]),)


# -- costs -------------------------------------------------------------------------------

_Call = tuple[tuple[int, ...], tuple[int, ...]]  # (input shape, output shape) of one call


def _layer_macs(kind: str | None, cfg: Mapping[str, Any], ranks: Sequence[int],
                calls: Sequence[_Call]) -> int:
    """MACs of the original layer (``kind=None``) or of its replacement, over ``calls``;
    equal to what FlopCounterMode counts for the same layers."""
    total = 0
    for in_shape, out_shape in calls:
        if cfg["type"] == "Linear":
            i, o = cfg["in_features"], cfg["out_features"]
            rows = math.prod(in_shape) // max(i, 1)
            total += rows * (i * o if kind is None else ranks[0] * (i + o))
            continue
        c, o = cfg["in_channels"], cfg["out_channels"]
        kh, kw = cfg["kernel_size"]
        n = math.prod(in_shape[:-3]) if len(in_shape) > 3 else 1
        h, w = in_shape[-2:]
        ho, wo = out_shape[-2:]
        if kind is None:
            total += n * ho * wo * o * (c // cfg["groups"]) * kh * kw
        elif kind == "svd":
            total += n * ho * wo * ranks[0] * (c + o)
        elif kind == "tucker2":
            r_out, r_in = ranks
            total += n * (h * w * c * r_in + ho * wo * (r_in * r_out * kh * kw + r_out * o))
        else:  # cp: the kh x 1 conv is strided in H only and keeps the input width
            (r,) = ranks
            total += n * (h * w * c * r + ho * w * r * kh + ho * wo * r * (kw + o))
    return total


def _layer_params(kind: str | None, cfg: Mapping[str, Any], ranks: Sequence[int]) -> int:
    shape = _weight_shape(cfg)
    bias = (shape[0] if cfg["bias"] else 0)
    if kind is None:
        return math.prod(shape) + bias
    o, c = shape[0], shape[1]
    k = math.prod(shape[2:])
    if kind == "svd":
        return ranks[0] * (o + c) + bias
    if kind == "tucker2":
        r_out, r_in = ranks
        return c * r_in + r_in * r_out * k + r_out * o + bias
    (r,) = ranks
    return r * (c + sum(shape[2:]) + o) + bias


# -- factorisations ----------------------------------------------------------------------


def _unfold(w: torch.Tensor, mode: int) -> torch.Tensor:
    return w.movedim(mode, 0).reshape(w.shape[mode], -1)


def _energy_kept(s: torch.Tensor, r: int) -> float:
    e = s.double() ** 2
    total = float(e.sum())
    return float(e[:r].sum()) / total if total > 0 else 1.0


def _rank_at_energy(s: torch.Tensor, energy: float) -> int:
    """Smallest ``r`` with ``sum(s[:r]^2) >= energy * sum(s^2)`` (at least 1)."""
    e = s.double() ** 2
    cum = torch.cumsum(e, 0)
    if float(cum[-1]) <= 0:
        return 1
    frac = cum / cum[-1]  # frac[-1] is exactly 1, so energy=1.0 gives the exact rank
    idx = int(torch.searchsorted(frac, torch.tensor([energy], dtype=frac.dtype)).item())
    return max(1, min(idx + 1, s.numel()))


def _cp_als(x: torch.Tensor, rank: int, iterations: int) -> list[torch.Tensor]:
    """Rank-``rank`` CP factors of the 4-way float64 tensor ``x`` (ALS from an HOSVD start);
    the scale is spread evenly over the four factors."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    factors = []
    for mode in range(x.ndim):
        u = torch.linalg.svd(_unfold(x, mode), full_matrices=False).U[:, :rank]
        if u.shape[1] < rank:  # more components than the mode has dimensions
            extra = torch.randn(x.shape[mode], rank - u.shape[1], generator=gen,
                                dtype=x.dtype).to(x.device)
            u = torch.cat([u, extra / math.sqrt(x.shape[mode])], 1)
        factors.append(u)
    letters = "abcd"
    weights = torch.ones(rank, dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        for mode in range(x.ndim):
            others = [m for m in range(x.ndim) if m != mode]
            gram = torch.ones(rank, rank, dtype=x.dtype, device=x.device)
            for m in others:
                gram = gram * (factors[m].T @ factors[m])
            spec = "abcd," + ",".join(f"{letters[m]}r" for m in others) + f"->{letters[mode]}r"
            mttkrp = torch.einsum(spec, x, *[factors[m] for m in others])
            a = mttkrp @ torch.linalg.pinv(gram, hermitian=True)
            weights = a.norm(dim=0).clamp_min(1e-30)
            factors[mode] = a / weights
    scale = weights ** 0.25
    return [f * scale for f in factors]


def _factorise(kind: str, w: torch.Tensor, ranks: Sequence[int], cp_iterations: int
               ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Factor weights (in the order of the Sequential's layers, shaped for them) and the
    reconstructed weight, all float64."""
    if kind == "svd":
        (r,) = ranks
        mat = w.reshape(w.shape[0], -1)
        u, s, vh = torch.linalg.svd(mat, full_matrices=False)
        root = s[:r].sqrt()
        first = root[:, None] * vh[:r]           # (r, C)
        second = u[:, :r] * root                 # (O, r)
        approx = (second @ first).reshape(w.shape)
        if w.ndim == 4:
            first, second = first[:, :, None, None], second[:, :, None, None]
        return [first, second], approx
    if kind == "tucker2":
        r_out, r_in = ranks
        u_out = torch.linalg.svd(_unfold(w, 0), full_matrices=False).U[:, :r_out]
        u_in = torch.linalg.svd(_unfold(w, 1), full_matrices=False).U[:, :r_in]
        core = torch.einsum("ocij,or,cs->rsij", w, u_out, u_in)
        approx = torch.einsum("rsij,or,cs->ocij", core, u_out, u_in)
        return [u_in.T[:, :, None, None], core, u_out[:, :, None, None]], approx
    (r,) = ranks
    a_o, a_c, a_h, a_w = _cp_als(w, r, cp_iterations)
    approx = torch.einsum("or,cr,ir,jr->ocij", a_o, a_c, a_h, a_w)
    return [a_c.T[:, :, None, None], a_h.T[:, None, :, None], a_w.T[:, None, None, :],
            a_o[:, :, None, None]], approx


@torch.no_grad()
def _fill(seq: nn.Sequential, factors: Sequence[torch.Tensor], bias: torch.Tensor | None,
          like: torch.Tensor) -> None:
    layers = [m for m in seq if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer, f in zip(layers, factors):
        layer.weight.copy_(f.to(layer.weight.dtype))
    if bias is not None:
        layers[-1].bias.copy_(bias)
    seq.to(device=like.device, dtype=like.dtype)


def decompose_layer(layer: nn.Module, ranks: Sequence[int] | int,
                    method: Literal["tucker2", "cp"] = "tucker2", *,
                    cp_iterations: int = 50) -> nn.Sequential:
    """The ``nn.Sequential`` replacing one ``nn.Linear``/``nn.Conv2d`` (groups 1) at ``ranks``.

    ``ranks``: ``r`` for Linear, 1x1 convs and CP, ``(r_out, r_in)`` (or one int for both)
    for Tucker-2. The layer itself is not modified.
    """
    cfg = _eligible_config("layer", layer)
    kind = _kind_of(cfg, _check_method(method))
    w = layer.weight.detach()
    ranks_t = _check_ranks("layer", kind, w.shape, ranks)
    factors, _ = _factorise(kind, w.double(), ranks_t, cp_iterations)
    seq = _build_factors(kind, cfg, ranks_t)
    _fill(seq, factors, layer.bias.detach() if layer.bias is not None else None, w)
    return seq


# -- validation --------------------------------------------------------------------------


def _check_method(method: Any) -> str:
    if method not in METHODS:
        raise InvalidArgumentError(f"method must be one of {METHODS}, got {method!r}."
                                   + suggest(str(method), METHODS))
    return str(method)


def _check_fraction(name: str, value: Any, hint: str) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and 0.0 < float(value) <= 1.0:
        return float(value)
    raise InvalidArgumentError(f"{name} must be in (0, 1], got {value!r}; {hint}")


def _check_ranks(name: str, kind: str, shape: Sequence[int], value: Any) -> tuple[int, ...]:
    if isinstance(value, bool) or not isinstance(value, (int, Sequence)) \
            or isinstance(value, str):
        raise InvalidArgumentError(f"ranks[{name!r}] must be an int or a tuple of ints, "
                                   f"got {value!r}")
    n_modes = 2 if kind == "tucker2" else 1
    vals = (value,) * n_modes if isinstance(value, int) else tuple(value)
    if len(vals) != n_modes or any(isinstance(v, bool) or not isinstance(v, int)
                                   for v in vals):
        form = "(r_out, r_in) or one int" if kind == "tucker2" else "one int"
        raise InvalidArgumentError(f"ranks[{name!r}] for a {kind} decomposition must be "
                                   f"{form}, got {value!r}")
    limits = _max_ranks(kind, shape)
    for v, lim in zip(vals, limits):
        if v < 1 or v > lim:
            raise InvalidArgumentError(
                f"ranks[{name!r}]={value!r} is outside what layer {name!r} (weight "
                f"{'x'.join(map(str, shape))}) allows: 1..{'/'.join(map(str, limits))} "
                f"for {kind}; lower it")
    return vals


def _overrides_forward(m: nn.Module) -> bool:
    base = nn.Linear if isinstance(m, nn.Linear) else nn.Conv2d
    return type(m).forward is not base.forward


def _eligible_config(name: str, m: nn.Module) -> dict[str, Any]:
    if not isinstance(m, (nn.Linear, nn.Conv2d)) or _overrides_forward(m):
        raise UnsupportedModuleError(
            f"{name!r} is a {type(m).__name__}; only nn.Linear and nn.Conv2d are decomposed")
    if not isinstance(m.weight, nn.Parameter):
        raise UnsupportedModuleError(
            f"layer {name!r} has a reparametrised weight (torch.nn.utils.prune or "
            "parametrize); remove it first (prune.remove / remove_parametrizations)")
    if isinstance(m, nn.Conv2d) and m.groups != 1:
        raise UnsupportedModuleError(
            f"layer {name!r} is a grouped convolution (groups={m.groups}); only groups=1 "
            "convolutions are decomposed")
    return _layer_config(m)


# -- the transform -----------------------------------------------------------------------


@dataclass
class _Candidate:
    name: str
    aliases: list[str]
    module: nn.Module
    kind: str
    cfg: dict[str, Any]
    weight: torch.Tensor  # float64 copy
    svals: list[torch.Tensor]  # per Tucker/SVD mode, descending
    full: tuple[int, ...]
    calls: list[_Call] = field(default_factory=list)
    explicit: tuple[int, ...] | None = None

    def ranks_for(self, criterion: str, value: float) -> tuple[int, ...]:
        if self.explicit is not None:
            return self.explicit
        if criterion == "rank_ratio":
            per_mode = tuple(max(1, min(len(s), math.ceil(value * len(s) - 1e-9)))
                             for s in self.svals)
        else:
            per_mode = tuple(_rank_at_energy(s, value) for s in self.svals)
        return (max(per_mode),) if self.kind == "cp" else per_mode

    def cost(self, ranks: Sequence[int] | None) -> tuple[int, int | None]:
        """(params, MACs or None) of the layer (``ranks=None``) or its replacement."""
        kind = None if ranks is None else self.kind
        macs = _layer_macs(kind, self.cfg, ranks or (), self.calls) if self.calls else None
        return _layer_params(kind, self.cfg, ranks or ()), macs

    def cheaper(self, ranks: Sequence[int]) -> bool:
        p0, m0 = self.cost(None)
        p1, m1 = self.cost(ranks)
        return m1 < m0 if m0 is not None and m1 is not None else p1 < p0


def _as_example(example_inputs: Any, model: nn.Module) -> torch.Tensor | None:
    if example_inputs is None:
        return None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if isinstance(example_inputs, torch.Tensor):
        return example_inputs.to(device)
    if isinstance(example_inputs, Sequence) and example_inputs and all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in example_inputs):
        return torch.zeros(tuple(example_inputs), device=device)
    raise InvalidArgumentError(
        f"example_inputs must be a tensor or a full input shape such as (1, 3, 32, 32), "
        f"got {example_inputs!r}")


def _measure(model: nn.Module, x: torch.Tensor, hooked: Mapping[nn.Module, _Candidate]
             ) -> int:
    """MACs of ``model(x)`` in eval mode, recording the shapes each candidate sees."""
    def hook(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        cand = hooked[m]
        if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            cand.calls.append((tuple(args[0].shape), tuple(out.shape)))

    handles = [m.register_forward_hook(hook) for m in hooked]
    was_training = model.training
    model.eval()
    try:
        return count_macs(model, x)
    except (RuntimeError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InvalidArgumentError(
            f"the model cannot run on example_inputs of shape {tuple(x.shape)} ({first}); "
            "pass an input the model accepts") from exc
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def _total_macs(cands: Sequence[_Candidate], plan: Mapping[str, tuple[int, ...]],
                base: int) -> int:
    total = base
    for c in cands:
        if c.name in plan:
            total += (c.cost(plan[c.name])[1] or 0) - (c.cost(None)[1] or 0)
    return total


def _plan(cands: Sequence[_Candidate], criterion: str | None, value: float,
          only_if_cheaper: bool) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    plan: dict[str, tuple[int, ...]] = {}
    skipped: dict[str, str] = {}
    for c in cands:
        if c.explicit is None and criterion is None:
            continue
        ranks = c.ranks_for(criterion or "", value)
        if c.explicit is None and only_if_cheaper and not c.cheaper(ranks):
            p0, m0 = c.cost(None)
            p1, m1 = c.cost(ranks)
            what = f"MACs {m0} -> {m1}" if m0 is not None else f"params {p0} -> {p1}"
            skipped[c.name] = (f"not cheaper at ranks {list(ranks)} ({what}); "
                               "kept as it is")
            continue
        plan[c.name] = ranks
    return plan, skipped


def decompose(
    model: nn.Module,
    *,
    rank_ratio: float | None = None,
    energy: float | None = None,
    target_macs: float | None = None,
    ranks: Mapping[str, int | Sequence[int]] | None = None,
    example_inputs: torch.Tensor | Sequence[int] | None = None,
    layers: Sequence[str] | None = None,
    min_channels: int = 8,
    method: Literal["tucker2", "cp"] = "tucker2",
    only_if_cheaper: bool = True,
    cp_iterations: int = 50,
    inplace: bool = False,
) -> DecomposeResult:
    """Replace the Linear and Conv2d layers of ``model`` by low-rank factorisations.

    Args:
        model: any ``nn.Module`` (zoo or user model).
        rank_ratio: fraction of the full rank kept per mode, in (0, 1].
        energy: fraction of the squared singular values kept per mode, in (0, 1].
        target_macs: fraction of the model's MACs to keep, in (0, 1] (needs
            ``example_inputs``); the result has at most that many MACs.
        ranks: explicit ranks per layer name: ``r`` for Linear/1x1/CP, ``(r_out, r_in)`` or
            one int for Tucker-2. They override the criterion for those layers (always
            decomposed); alone, only those layers are decomposed. A rank larger than the
            layer allows raises :class:`InvalidArgumentError` naming the layer.
        example_inputs: an input tensor or a full input shape, e.g. ``(1, 3, 32, 32)``:
            enables per-layer MACs and MAC-based decisions.
        layers: module names to consider (a container name covers every layer inside);
            default: all Conv2d/Linear layers.
        min_channels: layers with fewer input or output channels (features) than this are
            skipped (e.g. the stem conv on RGB input).
        method: ``"tucker2"`` or ``"cp"`` for kxk convolutions.
        only_if_cheaper: leave a layer whose factorisation would not save MACs (params
            without an example input) as it is; False decomposes it anyway.
        cp_iterations: ALS sweeps of the CP fit.
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        a :class:`DecomposeResult`; ``result.model`` carries the records in its
        ``slimkit_decomposition`` attribute.

    Raises:
        InvalidArgumentError: no or several criteria, values outside (0, 1], bad ranks,
            unknown layer names, a ``target_macs`` that cannot be reached, non-finite
            weights.
        UnsupportedModuleError: a layer in ``ranks`` that cannot be decomposed.
    """
    method = _check_method(method)
    given = {k: v for k, v in (("rank_ratio", rank_ratio), ("energy", energy),
                               ("target_macs", target_macs)) if v is not None}
    if len(given) > 1:
        raise InvalidArgumentError(
            f"give one of rank_ratio, energy or target_macs, not {' and '.join(given)}")
    if not given and not ranks:
        raise InvalidArgumentError(
            "give one of rank_ratio, energy or target_macs (or explicit ranks), e.g. "
            "energy=0.9")
    criterion, value = (next(iter(given.items())) if given else (None, 1.0))
    if criterion is not None:
        hint = {"rank_ratio": "e.g. 0.5 keeps half the rank of each layer",
                "energy": "e.g. 0.9 keeps 90 % of the squared singular values",
                "target_macs": "e.g. 0.5 keeps half the model's MACs"}[criterion]
        value = _check_fraction(criterion, value, hint)
    if isinstance(min_channels, bool) or not isinstance(min_channels, int) or min_channels < 1:
        raise InvalidArgumentError(f"min_channels must be an integer >= 1, got {min_channels!r}")
    if isinstance(cp_iterations, bool) or not isinstance(cp_iterations, int) \
            or cp_iterations < 1:
        raise InvalidArgumentError(f"cp_iterations must be an integer >= 1, "
                                   f"got {cp_iterations!r}")
    if criterion == "target_macs" and example_inputs is None:
        raise InvalidArgumentError(
            "target_macs needs example_inputs to count MACs; pass e.g. "
            "example_inputs=(1, 3, 32, 32)")
    if isinstance(layers, str):
        layers = (layers,)
    ranks = dict(ranks or {})

    for name, m in model.named_modules():  # before the copy: parametrised weights do not copy
        if isinstance(m, (nn.Linear, nn.Conv2d)) and not isinstance(m.weight, nn.Parameter):
            raise UnsupportedModuleError(
                f"layer {name!r} has a reparametrised weight (torch.nn.utils.prune or "
                "parametrize); remove it first (prune.remove / remove_parametrizations)")
    if not inplace:
        model = copy.deepcopy(model)
    x = _as_example(example_inputs, model)
    params_before = count_params(model)

    modules = dict(model.named_modules())
    aliases: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        aliases.setdefault(id(m), []).append(name)
    factor_names = _factor_names(getattr(model, RECORDS_ATTR, None) or [], modules)

    selected: set[str] | None = None
    if layers is not None:
        selected = set()
        for prefix in layers:
            if prefix not in modules:
                raise InvalidArgumentError(
                    f"layers names no module {prefix!r} of this model; give module names "
                    "(see `slimkit profile --per-layer`)." + suggest(prefix, [n for n in modules
                                                                          if n]))
            selected.update(n for n in modules
                            if n == prefix or not prefix or n.startswith(prefix + "."))
    for name in ranks:
        if name not in modules:
            raise InvalidArgumentError(f"ranks names no module {name!r} of this model."
                                       + suggest(name, [n for n in modules if n]))

    cands: list[_Candidate] = []
    skipped: dict[str, str] = {}
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)) or not name:
            continue
        explicit = name in ranks
        if not explicit and selected is not None and name not in selected:
            continue
        reason = None
        if name in factor_names:
            reason = "already a low-rank factor of an earlier decomposition"
        elif _overrides_forward(m):
            reason = f"{type(m).__name__} has its own forward"
        elif isinstance(m, nn.Conv2d) and m.groups != 1:
            reason = f"grouped convolution (groups={m.groups})"
        else:
            cfg = _layer_config(m)
            shape = _weight_shape(cfg)
            if min(shape[0], shape[1]) < min_channels and not explicit:
                reason = f"fewer than min_channels={min_channels} input or output channels"
        if reason is not None:
            if explicit:
                raise UnsupportedModuleError(f"ranks names layer {name!r}, which cannot be "
                                             f"decomposed: {reason}")
            skipped[name] = reason
            continue
        w = m.weight.detach().double()
        if not bool(torch.isfinite(w).all()):
            raise InvalidArgumentError(f"{name}.weight has NaN/inf values; fix the model "
                                       "before decomposing it")
        kind = _kind_of(cfg, method)
        svd_modes = (0,) if kind == "svd" else (0, 1)
        flat = w.reshape(w.shape[0], -1) if kind == "svd" else w
        svals = [torch.linalg.svdvals(_unfold(flat, mode)) for mode in svd_modes]
        full = tuple(len(s) for s in svals)
        cand = _Candidate(name=name, aliases=aliases[id(m)], module=m, kind=kind, cfg=cfg,
                          weight=w, svals=svals, full=(max(full),) if kind == "cp" else full)
        if explicit:
            cand.explicit = _check_ranks(name, kind, w.shape, ranks[name])
        cands.append(cand)

    macs_before = None
    if x is not None:
        macs_before = _measure(model, x, {c.module: c for c in cands})
        for c in cands:
            if not c.calls and c.explicit is None:
                skipped[c.name] = "not called by the forward pass on example_inputs"
        cands = [c for c in cands if c.calls or c.explicit is not None]

    energy_level: float | None = value if criterion == "energy" else None
    if criterion == "target_macs":
        assert macs_before is not None
        budget = value * macs_before
        crit = "energy"
        plan, plan_skipped = _plan(cands, crit, 1.0, only_if_cheaper)
        if _total_macs(cands, plan, macs_before) <= budget:
            level = 1.0
        else:
            low_plan, _ = _plan(cands, crit, 1e-12, only_if_cheaper)
            lowest = _total_macs(cands, low_plan, macs_before)
            if lowest > budget:
                raise InvalidArgumentError(
                    f"target_macs={value:g} cannot be reached: decomposing at rank 1 "
                    f"keeps {lowest / macs_before:.3f} of the MACs; raise target_macs or "
                    "widen layers")
            lo, hi = 0.0, 1.0  # total(lo) <= budget < total(hi)
            for _ in range(50):
                mid = (lo + hi) / 2
                mid_plan, _ = _plan(cands, crit, mid, only_if_cheaper)
                if _total_macs(cands, mid_plan, macs_before) <= budget:
                    lo = mid
                else:
                    hi = mid
                if hi - lo < 1e-7:
                    break
            level = max(lo, 1e-12)
        plan, plan_skipped = _plan(cands, crit, level, only_if_cheaper)
        energy_level = level
    else:
        plan, plan_skipped = _plan(cands, criterion, value, only_if_cheaper)
    skipped.update(plan_skipped)

    done: list[LayerDecomposition] = []
    for c in cands:
        if c.name not in plan:
            continue
        r = plan[c.name]
        factors, approx = _factorise(c.kind, c.weight, r, cp_iterations)
        seq = _build_factors(c.kind, c.cfg, r)
        bias = c.module.bias.detach() if c.module.bias is not None else None
        _fill(seq, factors, bias, c.module.weight)
        seq.train(c.module.training)
        for alias in c.aliases:  # a module registered under several names: replace all
            _set_module(model, alias, seq)
        norm = float(c.weight.norm())
        rel = float((c.weight - approx).norm()) / norm if norm > 0 else 0.0
        if c.kind == "cp":
            r_out = min(r[0], len(c.svals[0]))
            r_in = min(r[0], len(c.svals[1]))
            kept = (_energy_kept(c.svals[0], r_out), _energy_kept(c.svals[1], r_in))
        else:
            kept = tuple(_energy_kept(s, k) for s, k in zip(c.svals, r))
        p0, m0 = c.cost(None)
        p1, m1 = c.cost(r)
        done.append(LayerDecomposition(
            name=c.name, kind=c.kind, layer=c.cfg, original_shape=tuple(c.weight.shape),
            ranks=tuple(r), full_ranks=c.full, energy=kept, rel_error=rel,
            params_before=p0, params_after=p1, macs_before=m0, macs_after=m1))

    records = list(getattr(model, RECORDS_ATTR, None) or [])
    records.extend(d.to_record() for d in done)
    if records:
        setattr(model, RECORDS_ATTR, records)
    macs_after = None
    if x is not None:
        macs_after = _measure(model, x, {})
    crit_record: dict[str, Any] = dict(given)
    if ranks:
        crit_record["ranks"] = {k: list(v) if isinstance(v, Sequence) else v
                                for k, v in ranks.items()}
    return DecomposeResult(
        model=model, layers=done, skipped=skipped, method=method, criterion=crit_record,
        energy_level=energy_level, params_before=params_before,
        params_after=count_params(model), macs_before=macs_before, macs_after=macs_after)


def _factor_names(records: Sequence[Mapping[str, Any]], modules: Mapping[str, nn.Module]
                  ) -> set[str]:
    """Names of the layers inside already decomposed blocks."""
    out: set[str] = set()
    for rec in records:
        prefix = str(rec.get("name", ""))
        if prefix in modules:
            out.update(n for n in modules if n.startswith(prefix + "."))
    return out


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


# -- saving and loading ------------------------------------------------------------------


def apply_decomposition(model: nn.Module, records: Sequence[Mapping[str, Any]]) -> nn.Module:
    """Re-create the structure of a decomposition on ``model`` (in place) and return it.

    Each record (``DecomposeResult.records``, or the model's ``slimkit_decomposition``
    attribute, e.g. stored in a checkpoint header) replaces the layer it names by an
    *uninitialised* ``nn.Sequential`` of the recorded ranks; load the weights afterwards
    (:func:`restructure_from_state_dict` does both). Records apply in order, and are
    self-contained, so a layer pruned before its decomposition is rebuilt at its pruned
    size; layers resized after it (structured pruning of the factors) are resized by the
    checkpoint's ``structure`` afterwards. The records are stored on the model.

    Raises:
        FileFormatError: a malformed record, or one naming a layer the model lacks.
    """
    applied: list[dict[str, Any]] = []
    for rec in records:
        try:
            name, kind = str(rec["name"]), str(rec["kind"])
            cfg = dict(rec["layer"])
            ranks = tuple(int(r) for r in rec["ranks"])
            if kind not in _KINDS or cfg.get("type") not in ("Linear", "Conv2d"):
                raise ValueError(kind)
            seq = _build_factors(kind, cfg, ranks)
        except (KeyError, TypeError, ValueError, InvalidArgumentError) as exc:
            raise FileFormatError(f"malformed decomposition record {dict(rec)!r} ({exc!r}); "
                                  "re-create the checkpoint") from exc
        try:
            old = model.get_submodule(name)
        except AttributeError:
            old = None
        if old is None or not name:
            raise FileFormatError(
                f"decomposition record names layer {name!r} that this model does not have; "
                "was it saved from another architecture?")
        ref = next(iter(old.parameters()), None)
        if ref is not None:
            seq.to(device=ref.device, dtype=ref.dtype)
        seq.train(old.training)
        names = [n for n, m in model.named_modules(remove_duplicate=False) if m is old]
        for alias in names:
            _set_module(model, alias, seq)
        applied.append({"name": name, "kind": kind, "layer": cfg, "ranks": list(ranks)})
    existing = list(getattr(model, RECORDS_ATTR, None) or [])
    setattr(model, RECORDS_ATTR, existing + applied)
    return model


def restructure_from_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                                records: Sequence[Mapping[str, Any]]) -> nn.Module:
    """Apply ``records`` to a fresh ``model`` and load ``state_dict`` (strict); returns it.

    The load path of a decomposed model: ``model`` is a fresh build of the original
    architecture (e.g. ``create_model(name, **kwargs)``), ``state_dict`` the decomposed
    model's weights and ``records`` its ``DecomposeResult.records`` / ``slimkit_decomposition``.

    Raises:
        FileFormatError: malformed records, or weights that do not fit (keys listed).
    """
    apply_decomposition(model, records)
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    bad = sorted(k for k in set(own) & set(state_dict)
                 if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or bad:
        parts = [f"{label}: {', '.join(keys[:4])}" + (f" (+{len(keys) - 4} more)"
                                                       if len(keys) > 4 else "")
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("shape mismatch", bad)) if keys]
        raise FileFormatError(f"the weights do not fit the decomposed model "
                              f"({'; '.join(parts)}); were they saved with these records?")
    model.load_state_dict(dict(state_dict), strict=True)
    return model
