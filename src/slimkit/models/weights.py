"""Loading weights into a model without unpickling anything.

``.safetensors`` files (plain or slimkit checkpoints) are read with safetensors;
``.pth``/``.pt``/``.bin`` state dicts with ``torch.load(weights_only=True)``, which refuses
arbitrary pickled objects. torchvision and timm state dicts of the same architectures are
mapped by position (documented per family in docs/transfer.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from slimkit.errors import FileFormatError

__all__ = ["read_state_dict", "load_pretrained", "map_by_order", "adapt_input_conv"]

_TORCH_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor mapping from ``.safetensors`` or a torch state-dict file, safely.

    A slimkit checkpoint yields its model weights (the ``model.`` entries).
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"weights file {str(path)!r} does not exist; check the path")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise FileFormatError(
                f"{path} is not a readable .safetensors file ({exc}); re-save or re-download it"
            ) from exc
        if tensors and all(k.startswith(("model.", "state.")) for k in tensors):
            return {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        return tensors
    if path.suffix in _TORCH_SUFFIXES:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
            raise FileFormatError(
                f"{path} is not a plain state dict loadable with weights_only=True "
                f"({type(exc).__name__}); save it with torch.save(model.state_dict(), ...)"
            ) from exc
        for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
            if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        if not isinstance(obj, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in obj.values()
        ):
            raise FileFormatError(f"{path} does not hold a mapping of names to tensors")
        return {str(k).removeprefix("module."): v for k, v in obj.items()}
    raise FileFormatError(
        f"cannot read weights from {path.name!r}: use a .safetensors or .pth/.pt state dict"
    )


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    head = getattr(model, "classifier", None)
    names = [n for n, m in model.named_modules() if head is not None and m is head]
    return tuple(f"{n}." for n in names)


def _compatible(own: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Same shape, or a Linear weight stored as a 1x1 conv (GhostNet's conv_head) or back."""
    if own.shape == theirs.shape:
        return True
    return own.numel() == theirs.numel() and own.squeeze().shape == theirs.squeeze().shape


def map_by_order(own: Mapping[str, torch.Tensor], theirs: Mapping[str, torch.Tensor],
                 head: tuple[str, ...] = ()) -> dict[str, torch.Tensor] | None:
    """Map a foreign state dict (torchvision, timm) onto ours by position.

    Where a family is the same network (slimkit's parameter counts equal torchvision's),
    both state dicts list the same tensors in the same order under other names. The mapping
    is accepted only if every pair has the same kind (``weight``, ``bias``,
    ``running_mean``...) and a compatible shape; classifier pairs may differ in shape (a new
    head). Returns ``None`` when the two do not line up.
    """
    own_items, their_items = list(own.items()), list(theirs.items())
    if len(own_items) != len(their_items):
        return None
    mapped: dict[str, torch.Tensor] = {}
    for (k_own, v_own), (k_their, v_their) in zip(own_items, their_items, strict=True):
        if k_own.rsplit(".", 1)[-1] != k_their.rsplit(".", 1)[-1]:
            return None
        if not _compatible(v_own, v_their):
            if head and k_own.startswith(head) or _is_input_conv(k_own, own, v_own, v_their):
                mapped[k_own] = v_their  # resolved by the caller (new head, new input chans)
                continue
            return None
        mapped[k_own] = v_their.reshape(v_own.shape)
    return mapped


def _is_input_conv(key: str, own: Mapping[str, torch.Tensor], v_own: torch.Tensor,
                   v_their: torch.Tensor) -> bool:
    first = next((k for k, v in own.items() if v.ndim == 4), None)
    return (key == first and v_own.ndim == 4 and v_their.ndim == 4
            and v_own.shape[0] == v_their.shape[0] and v_own.shape[2:] == v_their.shape[2:])


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a first-conv weight ``(O, C, k, k)`` to ``in_chans`` input channels.

    One channel: the sum over C (a grayscale image seen as equal R, G and B gives the same
    response). More channels: C repeated and rescaled by ``C / in_chans`` so the activation
    scale is kept.
    """
    c = weight.shape[1]
    if in_chans == c:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_chans // c)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (c / in_chans)


def load_pretrained(model: nn.Module, path: str | Path) -> list[str]:
    """Copy weights from ``path`` into ``model``.

    Accepts slimkit checkpoints, state dicts with our key names, and torchvision/timm state
    dicts of the same architecture (mapped by position, see :func:`map_by_order`). A
    classifier of another size keeps its fresh initialisation; a first convolution with
    another number of input channels is adapted (:func:`adapt_input_conv`). Anything else
    that does not fit raises ``FileFormatError`` listing the keys.

    Returns the keys left at their fresh initialisation.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    head = _classifier_prefixes(model)
    if set(state) != set(own):
        mapped = map_by_order(own, state, head)
        if mapped is not None:
            state = mapped
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    reinit = [k for k in mismatched if head and k.startswith(head)]
    for k in mismatched:
        if k not in reinit and _is_input_conv(k, own, own[k], state[k]):
            state[k] = adapt_input_conv(state[k], own[k].shape[1])
    bad_shape = [k for k in mismatched if k not in reinit and own[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        def _fmt(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = []
        if missing:
            parts.append(f"missing {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected {_fmt(unexpected)}")
        if bad_shape:
            parts.append(
                "shape mismatch "
                + _fmt([f"{k} {tuple(state[k].shape)}!={tuple(own[k].shape)}" for k in bad_shape])
            )
        hint = "Check the model name and width."
        if Path(path).suffix == ".safetensors" and len(missing) == len(own):
            hint = ("Foreign weights map by position only from .pth/.bin files: .safetensors "
                    "does not keep the tensor order.")
        raise FileFormatError(
            f"weights in {Path(path).name} do not fit this architecture: {'; '.join(parts)}. "
            + hint
        )
    keep = {k: v for k, v in state.items() if k not in reinit}
    model.load_state_dict({**own, **keep}, strict=True)
    return reinit
