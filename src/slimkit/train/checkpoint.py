"""The slimkit checkpoint: one ``.safetensors`` file, tensors plus a JSON metadata header.

Layout of the tensors: ``model.<state-dict key>`` for the weights, and optionally
``state.<name>`` for training state (optimizer moments, EMA weights, RNG states) so a run can
resume exactly. The header's ``slimkit`` entry is JSON::

    {"format": "slimkit-checkpoint", "format_version": 1, "slimkit_version": "...",
     "arch": {"name": "mobilenet_v2_100", "kwargs": {...}} | null,
     "structure": {module name: constructor arguments} | null,   # pruned / resized layers
     "num_classes": 10, "input_size": [1, 32, 32], "mean": [...], "std": [...],
     "class_names": [...], "lineage": [{"stage": "train", "params": {...}, "metrics": {...}}],
     "training": {...} | null}

Nothing is pickled: a checkpoint can be opened from an untrusted source. Writes are atomic
(temporary file + rename) and refuse to replace an existing file unless asked to.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit._version import __version__
from slimkit.errors import FileFormatError, InvalidArgumentError, SlimkitError

__all__ = [
    "FORMAT_VERSION",
    "CheckpointMeta",
    "LoadedCheckpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "atomic_write_bytes",
    "atomic_write_text",
    "module_structure",
    "apply_structure",
    "model_rewrites",
    "apply_rewrites",
    "OutputExistsError",
]

FORMAT = "slimkit-checkpoint"
FORMAT_VERSION = 1
_MODEL = "model."
_STATE = "state."


class OutputExistsError(SlimkitError):
    """An output path that already exists and would be overwritten."""


@dataclass
class CheckpointMeta:
    """What a checkpoint says about its model (everything but the tensors)."""

    arch: dict[str, Any] | None = None
    num_classes: int | None = None
    input_size: list[int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    class_names: list[str] | None = None
    lineage: list[dict[str, Any]] = field(default_factory=list)
    structure: dict[str, dict[str, Any]] | None = None
    training: dict[str, Any] | None = None
    dataset: str | None = None
    rewrites: list[dict[str, Any]] | None = None  # layer replacements (decompose, separable)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "slimkit_version": __version__,
            "arch": self.arch,
            "structure": self.structure,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "mean": self.mean,
            "std": self.std,
            "class_names": self.class_names,
            "dataset": self.dataset,
            "lineage": self.lineage,
            "training": self.training,
            "rewrites": self.rewrites,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckpointMeta:
        return cls(
            arch=data.get("arch"),
            num_classes=data.get("num_classes"),
            input_size=data.get("input_size"),
            mean=data.get("mean"),
            std=data.get("std"),
            class_names=data.get("class_names"),
            lineage=list(data.get("lineage") or []),
            structure=data.get("structure"),
            training=data.get("training"),
            dataset=data.get("dataset"),
            rewrites=data.get("rewrites"),
        )

    def add_stage(self, stage: str, params: Mapping[str, Any] | None = None,
                  metrics: Mapping[str, Any] | None = None) -> None:
        """Append a lineage entry (stage name, its parameters and metrics, a timestamp)."""
        self.lineage.append({
            "stage": stage,
            "params": dict(params or {}),
            "metrics": dict(metrics or {}),
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "slimkit_version": __version__,
        })


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint, its metadata, and any training state tensors."""

    model: nn.Module
    meta: CheckpointMeta
    state: dict[str, torch.Tensor]
    path: Path


def atomic_write_bytes(path: str | Path, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder + rename."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str, *, overwrite: bool = True) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


# Structural (constructor) attributes of layers whose shapes compression may change.
_STRUCT_ATTRS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                "groups", "bias"),
    nn.Conv1d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                "groups", "bias"),
    nn.Linear: ("in_features", "out_features", "bias"),
    nn.BatchNorm2d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.BatchNorm1d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.LayerNorm: ("normalized_shape", "eps", "elementwise_affine"),
    nn.GroupNorm: ("num_groups", "num_channels", "eps", "affine"),
}


def _module_config(m: nn.Module) -> dict[str, Any] | None:
    attrs = _STRUCT_ATTRS.get(type(m))
    if attrs is None:
        return None
    cfg: dict[str, Any] = {"type": type(m).__name__}
    for a in attrs:
        v = getattr(m, a)
        if a == "bias":
            v = v is not None
        elif isinstance(v, tuple):
            v = list(v)
        cfg[a] = v
    return cfg


def module_structure(model: nn.Module, reference: nn.Module | None = None
                     ) -> dict[str, dict[str, Any]]:
    """Constructor arguments of the layers of ``model`` that differ from ``reference``
    (all supported layers when ``reference`` is None)."""
    ref = dict(reference.named_modules()) if reference is not None else {}
    out: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        cfg = _module_config(m)
        if cfg is None:
            continue
        if reference is not None and name in ref and _module_config(ref[name]) == cfg:
            continue
        out[name] = cfg
    return out


def _build_layer(cfg: Mapping[str, Any]) -> nn.Module:
    kind = cfg["type"]
    args = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k != "type"}
    cls = {c.__name__: c for c in _STRUCT_ATTRS}.get(kind)
    if cls is None:
        raise FileFormatError(f"checkpoint structure names an unsupported layer type {kind!r}")
    return cls(**args)


def apply_structure(model: nn.Module, structure: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace the layers of ``model`` whose constructor arguments differ from
    ``structure`` by new, uninitialised ones (in place); the caller then loads the
    checkpoint's weights into them. Layers that already match are kept as they are."""
    modules = dict(model.named_modules())
    for name, cfg in structure.items():
        if name not in modules:
            raise FileFormatError(
                f"checkpoint structure names layer {name!r} that this model does not have; "
                "was it saved from another architecture?"
            )
        if _module_config(modules[name]) == dict(cfg):
            continue  # same layer: keep it (optimizers may already hold its parameters)
        new = _build_layer(cfg)
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        if not child:
            raise FileFormatError("checkpoint structure cannot replace the root module")
        setattr(parent, child, new)
        modules = dict(model.named_modules())


def model_rewrites(model: nn.Module) -> list[dict[str, Any]]:
    """Layer replacements recorded on ``model`` by transforms that change its module tree
    (low-rank decomposition, conv -> separable), in a JSON-able form."""
    rewrites: list[dict[str, Any]] = []
    decomposition = getattr(model, "slimkit_decomposition", None)
    if decomposition:
        rewrites.append({"kind": "decompose", "records": list(decomposition)})
    rewrites.extend(getattr(model, "slimkit_rewrites", None) or [])
    return rewrites


def apply_rewrites(model: nn.Module, rewrites: list[dict[str, Any]] | None) -> None:
    """Replay recorded layer replacements on a freshly built model (before its weights are
    loaded), so the module tree matches the checkpoint's tensors."""
    for entry in rewrites or []:
        kind = entry.get("kind")
        if kind == "decompose":
            from slimkit.compress.decompose import apply_decomposition

            apply_decomposition(model, entry["records"])
        elif kind == "separable":
            from slimkit.compress.fuse import apply_separable

            apply_separable(model, entry["records"])
        else:
            raise FileFormatError(f"checkpoint records an unknown layer rewrite {kind!r}; "
                                  "upgrade slimkit")


def _header(path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise FileFormatError(f"checkpoint {str(path)!r} does not exist; check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("slimkit")
            keys = list(f.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise FileFormatError(
            f"{path} is not a readable checkpoint (truncated or not .safetensors: "
            f"{str(exc).splitlines()[0]}); use a file written by slimkit"
        ) from exc
    if raw is None:
        return None, keys
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path} has corrupt slimkit metadata ({exc.msg})") from exc
    return meta, keys


def read_checkpoint_meta(path: str | Path) -> CheckpointMeta:
    """Read only the metadata header of a checkpoint (fast: no tensors are loaded)."""
    path = Path(path)
    meta, _ = _header(path)
    return _check_meta(path, meta)


def _check_meta(path: Path, meta: dict[str, Any] | None) -> CheckpointMeta:
    if meta is None or meta.get("format") != FORMAT:
        raise FileFormatError(
            f"{path} is a .safetensors file without slimkit metadata; load plain weights with "
            "create_model(NAME, pretrained=PATH)"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FileFormatError(
            f"{path} uses checkpoint format {version}, newer than this slimkit reads "
            f"({FORMAT_VERSION}); upgrade slimkit"
        )
    return CheckpointMeta.from_json(meta)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    meta: CheckpointMeta | None = None,
    *,
    state: Mapping[str, torch.Tensor] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save ``model`` (and optional training ``state`` tensors) to one ``.safetensors`` file.

    ``meta.arch`` defaults to ``model.slimkit_arch`` (set by ``create_model``) and
    ``meta.structure`` records the layers whose shapes differ from a fresh build of that
    architecture (pruned channels), so :func:`load_checkpoint` rebuilds the exact model.
    Models without an architecture record can be saved (with the constructor arguments of
    all their layers); loading them needs ``model=`` (a fresh instance of their class).
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise InvalidArgumentError(f"checkpoints are .safetensors files, got {path.name!r}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --force to overwrite it")
    meta = meta or CheckpointMeta()
    if meta.arch is None:
        meta.arch = getattr(model, "slimkit_arch", None)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if meta.num_classes is None:
        meta.num_classes = getattr(model, "num_classes", cfg.get("num_classes"))
    if meta.input_size is None and cfg.get("input_size"):
        meta.input_size = list(cfg["input_size"])
    if meta.mean is None and cfg.get("mean"):
        meta.mean = list(cfg["mean"])
    if meta.std is None and cfg.get("std"):
        meta.std = list(cfg["std"])
    meta.rewrites = model_rewrites(model) or None
    if meta.arch is not None:
        reference = _fresh(meta.arch, device="meta")
        apply_rewrites(reference, meta.rewrites)
        meta.structure = module_structure(model, reference) or None
    else:  # a user model: record every layer, so a pruned one can be rebuilt from the class
        meta.structure = module_structure(model) or None
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[_MODEL + k] = v.detach().to("cpu").contiguous()
    for k, v in (state or {}).items():
        tensors[_STATE + k] = v.detach().to("cpu").contiguous()
    _dedupe_shared(tensors)
    blob = save(tensors, metadata={"slimkit": json.dumps(meta.to_json())})
    return atomic_write_bytes(path, blob, overwrite=overwrite)


def _dedupe_shared(tensors: dict[str, torch.Tensor]) -> None:
    """safetensors refuses tensors sharing memory (tied weights): store copies."""
    seen: dict[int, str] = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        if ptr in seen and ptr != -1:
            tensors[k] = v.clone()
        else:
            seen[ptr] = k


def _fresh(arch: Mapping[str, Any], device: str | None = None) -> nn.Module:
    from slimkit.models import create_model

    name = arch.get("name")
    kwargs = dict(arch.get("kwargs") or {})
    if device is not None:
        with torch.device(device):
            return create_model(str(name), **kwargs)
    return create_model(str(name), **kwargs)


def load_checkpoint(path: str | Path, *, model: nn.Module | None = None) -> LoadedCheckpoint:
    """Rebuild the model saved at ``path`` in a fresh process.

    Args:
        path: a ``.safetensors`` file written by :func:`save_checkpoint`.
        model: for checkpoints of models outside the registry, an instance of the same
            architecture to load into (its pruned layers are resized from the structure).

    Raises ``FileFormatError`` for missing, truncated or foreign files, and for weights that
    do not fit the architecture (listing the keys).
    """
    from safetensors.torch import load_file

    path = Path(path)
    raw, _ = _header(path)
    meta = _check_meta(path, raw)
    if model is None:
        if not meta.arch:
            raise FileFormatError(
                f"{path} holds a model outside the slimkit registry; pass model=<an instance "
                "of its architecture> to load it"
            )
        try:
            model = _fresh(meta.arch)
        except SlimkitError as exc:
            raise FileFormatError(f"{path}: cannot rebuild its architecture: {exc}") from exc
    apply_rewrites(model, meta.rewrites)
    if meta.structure:
        apply_structure(model, meta.structure)
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises SafetensorError / OSError on damage
        raise FileFormatError(f"{path} is damaged ({exc}); re-create it") from exc
    weights = {k[len(_MODEL):]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    state = {k[len(_STATE):]: v for k, v in tensors.items() if k.startswith(_STATE)}
    _load_strict(model, weights, path)
    if meta.arch and not hasattr(model, "slimkit_arch"):
        model.slimkit_arch = dict(meta.arch)  # type: ignore[assignment]
    return LoadedCheckpoint(model=model, meta=meta, state=state, path=path)


def _load_strict(model: nn.Module, weights: Mapping[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    bad = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or bad:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("shape mismatch", bad)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:4])}"
                             + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""))
        raise FileFormatError(
            f"{path.name} does not fit this architecture ({'; '.join(parts)}); was it saved "
            "from another model?"
        )
    model.load_state_dict(dict(weights), strict=True)
