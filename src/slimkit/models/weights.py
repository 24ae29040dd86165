"""Loading weights into a model without unpickling anything.

``.safetensors`` files are read with safetensors; ``.pth``/``.pt``/``.bin`` state dicts with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. A classifier
whose shape differs (another ``num_classes``) keeps its fresh initialisation; any other
mismatch is an error that lists the keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from slimkit.errors import FileFormatError

__all__ = ["read_state_dict", "load_pretrained"]

_TORCH_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor mapping from ``.safetensors`` or a torch state-dict file, safely."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"weights file {str(path)!r} does not exist; check the path")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise FileFormatError(
                f"{path} is not a readable .safetensors file ({exc}); re-save or re-download it"
            ) from exc
    if path.suffix in _TORCH_SUFFIXES:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
            raise FileFormatError(
                f"{path} is not a plain state dict loadable with weights_only=True "
                f"({type(exc).__name__}); save it with torch.save(model.state_dict(), ...)"
            ) from exc
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
        if not isinstance(obj, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in obj.values()
        ):
            raise FileFormatError(f"{path} does not hold a mapping of names to tensors")
        return {str(k).removeprefix("module."): v for k, v in obj.items()}
    raise FileFormatError(
        f"cannot read weights from {path.name!r}: use a .safetensors or .pth/.pt state dict"
    )


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = [n for n, m in model.named_modules() if m is getattr(model, "classifier", None)]
    return tuple(f"{n}." for n in names)


def load_pretrained(model: nn.Module, path: str | Path) -> list[str]:
    """Copy matching tensors from ``path`` into ``model``.

    Returns the keys left at their fresh initialisation (a classifier of another size).
    Raises ``FileFormatError`` listing missing, unexpected or mismatched keys otherwise.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    head = _classifier_prefixes(model)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)
    )
    reinit = [k for k in mismatched if k.startswith(head)] if head else []
    bad_shape = [k for k in mismatched if k not in reinit]
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
        raise FileFormatError(
            f"weights in {Path(path).name} do not fit this architecture: {'; '.join(parts)}. "
            "Check the model name and width."
        )
    keep = {k: v for k, v in state.items() if k not in reinit}
    model.load_state_dict({**own, **keep}, strict=True)
    return reinit
