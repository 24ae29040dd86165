"""Dataset spec strings: ``digits``, ``shapes[:key=value,...]``, ``fashion-mnist[:PATH]``,
``cifar10[:PATH]``, or a path to an image folder; :func:`load_dataset` turns one into a
:class:`~slimkit.data.DatasetBundle`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.data.base import TEST_FRACTION, DatasetBundle, check_common_args
from slimkit.data.transforms import check_augment
from slimkit.errors import FileFormatError, InvalidArgumentError, suggest

__all__ = ["describe_dataset_kinds", "list_dataset_kinds", "load_dataset"]


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value)


def _to_classes(value: Any) -> int | list[str]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return int(value) if value.strip().isdigit() else value.split("+")
    return [str(v) for v in value]


_CONVERTERS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "int": (_to_int, "an integer"),
    "float": (float, "a number"),
    "bool": (_to_bool, "true or false"),
    "str": (str, "a string"),
    "classes": (_to_classes, "a count or shape names joined by '+'"),
}


@dataclass(frozen=True)
class _Kind:
    name: str
    usage: str
    summary: str
    takes_path: bool
    options: dict[str, str]  # option -> converter key
    defaults: dict[str, Any] = field(default_factory=dict)


_COMMON = {"augment": "str"}
KINDS: dict[str, _Kind] = {
    k.name: k
    for k in (
        _Kind(
            "digits",
            "digits",
            "scikit-learn's 8x8 handwritten digits, 1797 grey images, 10 classes (offline)",
            False,
            {**_COMMON, "test_fraction": "float"},
            {"test_fraction": TEST_FRACTION},
        ),
        _Kind(
            "shapes",
            "shapes[:key=value,...]",
            "procedural RGB geometric shapes; options classes, n_train, n_test, size, "
            "difficulty (0..1), seed",
            False,
            {
                **_COMMON,
                "classes": "classes",
                "n_train": "int",
                "n_test": "int",
                "size": "int",
                "difficulty": "float",
                "seed": "int",
            },
            {"classes": 4, "n_train": 2000, "n_test": 500, "difficulty": 0.3, "seed": 0},
        ),
        _Kind(
            "fashion-mnist",
            "fashion-mnist[:PATH]",
            "Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist), 70000 grey 28 px "
            "images, 10 classes",
            True,
            dict(_COMMON),
        ),
        _Kind(
            "cifar10",
            "cifar10:PATH",
            "CIFAR-10 python or binary batches folder, 60000 RGB 32 px images, 10 classes",
            True,
            dict(_COMMON),
        ),
    )
}
_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
}
_FOLDER_OPTIONS = {**_COMMON, "test_fraction": "float", "in_memory": "bool"}
_USAGE = ", ".join(k.usage for k in KINDS.values()) + ", or a path to an image folder"


def list_dataset_kinds() -> list[str]:
    """The dataset kinds a spec may start with (any other spec is an image-folder path)."""
    return list(KINDS)


def describe_dataset_kinds() -> dict[str, str]:
    """``{usage: one-line description}`` for every kind, plus the image-folder form (CLI help)."""
    described = {k.usage: k.summary for k in KINDS.values()}
    described["PATH"] = (
        "an image folder: PATH/<class>/* or PATH/train/<class>/* with val/ and/or test/"
    )
    return described


def _parse_options(kind: str, text: str | None) -> dict[str, str]:
    if not text:
        return {}
    parsed = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidArgumentError(
                f"cannot parse {item!r} in dataset spec {kind}:{text}; options are written "
                f"{kind}:key=value,key=value (e.g. shapes:classes=6,difficulty=0.5)"
            )
        parsed[key.strip()] = value.strip()
    return parsed


def _convert_options(where: str, allowed: dict[str, str], given: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in given.items():
        if key not in allowed:
            raise InvalidArgumentError(
                f"unknown option {key!r} for dataset {where}; valid options: "
                f"{', '.join(sorted(allowed)) or 'none'}.{suggest(key, allowed)}"
            )
        convert, expected = _CONVERTERS[allowed[key]]
        try:
            out[key] = convert(value)
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"option {key}={value!r} of dataset {where} must be {expected}"
            ) from None
    return out


def _canonical(kind: str, options: dict[str, Any], defaults: dict[str, Any]) -> str:
    """``kind`` plus the data-defining options that differ from the defaults, sorted."""
    parts = []
    for key in sorted(options):
        value = options[key]
        if key in ("augment", "in_memory") or defaults.get(key) == value:
            continue
        if isinstance(value, (list, tuple)):
            value = "+".join(value)
        parts.append(f"{key}={value}")
    return kind + (":" + ",".join(parts) if parts else "")


def _check_kind_options(opts: dict[str, Any]) -> None:
    if "augment" in opts:
        check_augment(opts["augment"])
    if "test_fraction" in opts and not 0.0 <= opts["test_fraction"] < 1.0:
        raise InvalidArgumentError(
            f"test_fraction must be in [0, 1), got {opts['test_fraction']}; e.g. test_fraction=0.2"
        )


def _looks_like_path(spec: str) -> bool:
    return any(ch in spec for ch in "/\\") or spec.startswith((".", "~"))


def load_dataset(
    spec: str | os.PathLike[str],
    *,
    input_size: int | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    download_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> DatasetBundle:
    """Load a dataset from its spec string, split into train / val / test.

    Specs (all offline):

    - ``digits``: scikit-learn's 8x8 digits, 1 channel, resized to ``input_size`` (default 32).
    - ``shapes[:key=value,...]``: procedural RGB shapes; options ``classes`` (2..8 or names
      joined by ``+``), ``n_train`` (2000), ``n_test`` (500), ``size`` (``input_size`` or 32),
      ``difficulty`` (0..1, 0.3), ``seed`` (0, seeds the images).
    - ``fashion-mnist[:PATH]``: the IDX files in PATH, else in ``download_dir``,
      ``$SLIMKIT_DATA`` or ``/usr/share/datasets/fashion-mnist``.
    - ``cifar10[:PATH]``: a ``cifar-10-batches-py`` or ``cifar-10-batches-bin`` folder.
    - anything else: a path to an image folder (see :func:`slimkit.data.folder.load_image_folder`).

    Args:
        spec: the spec string (a ``Path`` object is always an image folder). Options may also
            be passed as keywords (``**options``), which win over the same option in the
            string. Every kind accepts ``augment`` (the preset stored in the bundle); digits and
            folders accept ``test_fraction`` (0.2); folders ``in_memory`` (auto).
        input_size: side length in pixels to deliver images at; ``None`` keeps the native size.
        channels: 1 (grey) or 3 (RGB) to convert to; ``None`` keeps the native channels.
        val_fraction: share of the training images held out for validation (per class), [0, 1).
        seed: seeds the train/val split. Test splits never depend on it, so runs with
            different seeds are evaluated on the same images.
        download_dir: a folder searched first for fashion-mnist / cifar10 files. Nothing is
            downloaded: slimkit works offline.

    Returns:
        a :class:`DatasetBundle` whose ``name`` is the canonical spec.

    Raises:
        InvalidArgumentError: unknown kind or option, or a bad argument value.
        FileFormatError: missing, incomplete, corrupt or inconsistent files.
    """
    from_path = isinstance(spec, os.PathLike)
    if from_path:
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgumentError(f"dataset spec must be a non-empty string; use one of {_USAGE}")
    spec = spec.strip()
    check_common_args(input_size, channels, val_fraction)
    common = {
        "input_size": input_size,
        "channels": channels,
        "val_fraction": float(val_fraction),
        "seed": int(seed),
    }
    head, sep, rest = spec.partition(":")
    kind_name = _ALIASES.get(head.strip().lower(), head.strip().lower())
    kind = None if from_path else KINDS.get(kind_name)

    if kind is None:
        path = Path(spec).expanduser()
        if not path.exists():
            if _looks_like_path(spec):
                raise FileFormatError(
                    f"dataset folder {spec} does not exist; pass an existing image folder or "
                    f"one of {_USAGE}"
                )
            raise InvalidArgumentError(
                f"unknown dataset {spec!r}: not a dataset kind nor an existing folder; use one "
                f"of {_USAGE}.{suggest(head.lower(), KINDS)}"
            )
        if path.is_file() and path.suffix.lower() in (".zip", ".tar", ".gz", ".tgz", ".xz"):
            raise FileFormatError(f"{path} is an archive; extract it and pass the folder")
        opts = _convert_options(f"folder {spec}", _FOLDER_OPTIONS, options)
        _check_kind_options(opts)
        from slimkit.data.folder import load_image_folder

        return load_image_folder(path, **common, **opts)

    raw: dict[str, Any] = {}
    path_arg: str | None = None
    if kind.takes_path:
        path_arg = (rest.strip() or None) if sep else None
    else:
        raw = _parse_options(kind.name, rest if sep else None)
    raw.update(options)
    opts = _convert_options(kind.name, kind.options, raw)
    _check_kind_options(opts)

    if kind.name == "digits":
        from slimkit.data.digits import load_digits

        bundle = load_digits(**common, **opts)
        bundle.name = _canonical("digits", opts, kind.defaults)
        return bundle
    if kind.name == "shapes":
        from slimkit.data.shapes import load_shapes, resolve_shape_classes

        shape_opts = dict(opts)
        if "seed" in shape_opts:
            shape_opts["generator_seed"] = shape_opts.pop("seed")
        for key, low, high in (("n_train", 1, None), ("n_test", 1, None), ("size", 8, 1024)):
            value = shape_opts.get(key)
            if value is not None and (value < low or (high is not None and value > high)):
                limit = f"{low}..{high}" if high else f">= {low}"
                raise InvalidArgumentError(f"shapes option {key}={value} must be {limit}")
        if not 0.0 <= shape_opts.get("difficulty", 0.0) <= 1.0:
            raise InvalidArgumentError(
                f"shapes option difficulty={shape_opts['difficulty']} must be in 0..1"
            )
        if "classes" in opts:
            opts["classes"] = resolve_shape_classes(opts["classes"])
            if opts["classes"] == resolve_shape_classes(len(opts["classes"])):
                opts["classes"] = len(opts["classes"])  # canonical: a count when it is one
        name = _canonical("shapes", opts, kind.defaults)
        return load_shapes(**common, **shape_opts, name=name)
    if kind.name == "fashion-mnist":
        from slimkit.data.fashion_mnist import load_fashion_mnist

        bundle = load_fashion_mnist(path_arg, download_dir=download_dir, **common, **opts)
        if path_arg is not None:
            bundle.name = f"fashion-mnist:{Path(path_arg).expanduser().resolve()}"
        else:
            bundle.name = "fashion-mnist"
        return bundle
    from slimkit.data.cifar import load_cifar10

    return load_cifar10(path_arg, download_dir=download_dir, **common, **opts)
