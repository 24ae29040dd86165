"""The model registry: ``register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import fnmatch
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from slimkit.errors import InvalidArgumentError, UnknownModelError, suggest

__all__ = [
    "PublishedFigures",
    "ModelEntry",
    "register_model",
    "create_model",
    "list_models",
    "get_model_entry",
    "is_model",
]

ModelFn = TypeVar("ModelFn", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class PublishedFigures:
    """Published size and cost of a model (``../shared/REFERENCE_NUMBERS.md``), as data.

    ``macs`` are multiply-accumulates at ``input_size`` for ``num_classes`` outputs; ``top1`` is the
    ImageNet accuracy of the reference weights (we ship none; it is context, not a claim).
    """

    params: int
    macs: int
    input_size: int
    source: str
    top1: float | None = None
    num_classes: int = 1000


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its factory and metadata."""

    name: str
    fn: Callable[..., nn.Module]
    family: str
    input_size: int
    description: str = ""
    published: PublishedFigures | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    builtin: bool = False  # part of slimkit's zoo (not registered by user code)


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register_model(
    name: str | None = None,
    fn: Callable[..., nn.Module] | None = None,
    *,
    family: str = "custom",
    input_size: int = 224,
    description: str = "",
    published: PublishedFigures | None = None,
    aliases: tuple[str, ...] = (),
) -> Any:
    """Register a model factory under ``name``.

    Use as a decorator (``@register_model()`` or ``@register_model("name", family=...)``,
    the name defaulting to the function's) or call directly with ``fn``. The factory takes
    keyword arguments (``num_classes``, ``width_mult``, ``in_chans``, ``small_input``,
    ``drop_rate``, ``drop_path_rate``) and returns an ``nn.Module``.
    """

    def add(f: ModelFn) -> ModelFn:
        key = name or f.__name__
        if key in _REGISTRY or key in _ALIASES:
            raise InvalidArgumentError(f"model {key!r} is already registered; pick another name")
        doc = description or (inspect.getdoc(f) or "").split("\n")[0]
        _REGISTRY[key] = ModelEntry(key, f, family, input_size, doc, published, tuple(aliases),
                                    builtin=_called_from_zoo())
        for alias in aliases:
            _ALIASES[alias] = key
        return f

    if fn is not None:
        return add(fn)  # type: ignore[type-var]
    return add


def _resolve(name: str) -> str:
    _ensure_zoo()
    if name in _REGISTRY:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise UnknownModelError(
        f"unknown model {name!r}; run `slimkit models` to list them."
        + suggest(name, list(_REGISTRY) + list(_ALIASES))
    )


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name`` (aliases resolved); raises ``UnknownModelError``."""
    return _REGISTRY[_resolve(name)]


def is_model(name: str) -> bool:
    """Whether ``name`` (or an alias) is registered."""
    _ensure_zoo()
    return name in _REGISTRY or name in _ALIASES


def list_models(pattern: str = "*", family: str | None = None,
                builtin_only: bool = False) -> list[str]:
    """Sorted registered names matching a shell-style ``pattern`` (``*`` is added around a
    pattern without wildcards, so ``list_models("v3")`` finds every MobileNetV3);
    ``builtin_only`` leaves out models registered by user code."""
    _ensure_zoo()
    if not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    names = [
        n for n, e in _REGISTRY.items()
        if fnmatch.fnmatch(n, pattern) and (family is None or e.family == family)
        and (e.builtin or not builtin_only)
    ]
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    width_mult: float | None = None,
    in_chans: int | None = None,
    small_input: bool | None = None,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    pretrained: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Instantiate a registered model.

    Args:
        name: a name from :func:`list_models` or an alias (``mobilenet_v2``).
        num_classes: classifier outputs (default 1000; 0 for a feature extractor).
        width_mult: multiplies the variant's width (channels rounded to multiples of 8).
        in_chans: input channels (default 3).
        small_input: adapt the stem and early strides to 28-32 px images.
        drop_rate: dropout before the classifier (default: the family's).
        drop_path_rate: stochastic depth at the last block (default: the family's).
        pretrained: path to weights (``.safetensors``, or a ``.pth``/``.pt`` state dict read
            with ``weights_only=True``); a head of another size is re-initialised.

    Only the arguments given are passed to the factory, so user factories need not accept
    them all. The returned model carries ``slimkit_arch = {"name", "kwargs"}`` to rebuild it.
    """
    key = _resolve(name)
    entry = _REGISTRY[key]
    given = {
        "num_classes": num_classes,
        "width_mult": width_mult,
        "in_chans": in_chans,
        "small_input": small_input,
        "drop_rate": drop_rate,
        "drop_path_rate": drop_path_rate,
    }
    call_kwargs = {k: v for k, v in given.items() if v is not None}
    call_kwargs.update(kwargs)
    try:
        model = entry.fn(**call_kwargs)
    except TypeError as exc:
        raise InvalidArgumentError(f"model {key!r} does not accept these arguments: {exc}") from exc
    model.slimkit_arch = {"name": key, "kwargs": call_kwargs}  # type: ignore[assignment]
    if pretrained is not None:
        from slimkit.models.weights import load_pretrained

        load_pretrained(model, pretrained)
    return model


_ZOO_LOADED = False
_HELPERS = ("slimkit.models.registry", "slimkit.models.builder")


def _called_from_zoo() -> bool:
    """Whether the registering code lives in one of slimkit's family modules."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module not in _HELPERS:
            return module.startswith("slimkit.models.")
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _ensure_zoo() -> None:
    """Import the family modules once so their ``register_model`` calls run."""
    global _ZOO_LOADED
    if not _ZOO_LOADED:
        _ZOO_LOADED = True
        import slimkit.models.zoo  # noqa: F401
