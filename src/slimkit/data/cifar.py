"""``cifar10:PATH``: CIFAR-10 from its python-pickle or binary distribution.

- ``cifar-10-batches-py``: pickled dicts ``data_batch_1..5``, ``test_batch`` (``data``: uint8
  ``(10000, 3072)``, ``labels``: list of int) and ``batches.meta`` (``label_names``). They are
  read with :mod:`slimkit.data.safe_pickle`, which refuses any global but numpy's array
  reconstruction.
- ``cifar-10-batches-bin``: ``data_batch_1..5.bin``, ``test_batch.bin`` (records of 1 label byte
  + 3072 pixel bytes, channel-major) and ``batches.meta.txt`` (one class name per line).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimkit.data.base import DatasetBundle, TensorImageDataset, bundle_from_tensors
from slimkit.data.safe_pickle import safe_load
from slimkit.errors import FileFormatError

__all__ = ["CIFAR10_CLASSES", "find_cifar10", "load_cifar10", "read_cifar10"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_PIXELS = 3 * 32 * 32
_RECORD = 1 + _PIXELS
_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
HOW_TO_GET = (
    "pass cifar10:PATH with PATH the extracted cifar-10-batches-py or cifar-10-batches-bin folder "
    "(from https://www.cs.toronto.edu/~kriz/cifar.html)"
)


def _layout(folder: Path) -> str | None:
    if (folder / "data_batch_1").is_file() or (folder / "test_batch").is_file():
        return "py"
    if (folder / "data_batch_1.bin").is_file() or (folder / "test_batch.bin").is_file():
        return "bin"
    return None


def find_cifar10(
    path: str | Path | None = None, download_dir: str | Path | None = None
) -> tuple[Path, str]:
    """Return ``(folder, "py" | "bin")``; ``path`` may also be the folder above the batches.

    Without ``path``, search ``download_dir`` and ``$SLIMKIT_DATA`` (each, and their
    ``cifar-10-batches-py``, ``cifar-10-batches-bin`` and ``cifar10`` subfolders).
    """
    if path is not None:
        roots = [Path(path).expanduser()]
        if not roots[0].is_dir():
            raise FileFormatError(f"cifar10 folder {roots[0]} does not exist; {HOW_TO_GET}")
    else:
        roots = [
            Path(b).expanduser()
            for b in (download_dir, os.environ.get("SLIMKIT_DATA") or None)
            if b is not None
        ]
    for root in roots:
        for folder in (
            root,
            root / "cifar-10-batches-py",
            root / "cifar-10-batches-bin",
            root / "cifar10",
        ):
            if folder.is_dir() and (layout := _layout(folder)) is not None:
                return folder, layout
    if path is not None:
        raise FileFormatError(
            f"no CIFAR-10 batches (data_batch_1, test_batch or their .bin versions) in "
            f"{roots[0]}; {HOW_TO_GET}"
        )
    looked = ", ".join(str(r) for r in roots) or "nowhere: $SLIMKIT_DATA is not set"
    raise FileFormatError(f"CIFAR-10 not found (looked in {looked}); {HOW_TO_GET}")


def _require(folder: Path, names: list[str]) -> list[Path]:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileFormatError(
            f"CIFAR-10 folder {folder} is incomplete: missing {', '.join(missing)}; {HOW_TO_GET}"
        )
    return [folder / n for n in names]


def _get(batch: dict[Any, Any], key: str) -> Any:
    # Python 2 pickles decode their str keys as str (latin1) or bytes, depending on the encoding
    if key in batch:
        return batch[key]
    return batch.get(key.encode())


def _read_pickle_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_load(path)
    data = _get(batch, "data") if isinstance(batch, dict) else None
    labels = _get(batch, "labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or labels is None:
        raise FileFormatError(
            f"{path} is not a CIFAR-10 batch: expected a dict with 'data' (array) and 'labels'"
        )
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise FileFormatError(
            f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, {_PIXELS})"
        )
    labels_arr = np.asarray(labels, dtype=np.int64)
    if labels_arr.shape != (len(data),):
        raise FileFormatError(f"{path}: {len(data)} images but {labels_arr.size} labels")
    return data.reshape(-1, 3, 32, 32), labels_arr


def _read_bin_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise FileFormatError(
            f"{path} is truncated or not a CIFAR-10 binary batch: {raw.size} bytes is not a "
            f"multiple of the {_RECORD}-byte record; re-download it"
        )
    records = raw.reshape(-1, _RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), records[:, 0].astype(np.int64)


def _class_names(folder: Path, layout: str) -> list[str]:
    if layout == "py":
        meta_path = folder / "batches.meta"
        if not meta_path.is_file():
            return list(CIFAR10_CLASSES)
        meta = safe_load(meta_path)
        names = _get(meta, "label_names") if isinstance(meta, dict) else None
        if not isinstance(names, list) or not names:
            raise FileFormatError(f"{meta_path} has no 'label_names' list")
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    meta_path = folder / "batches.meta.txt"
    if not meta_path.is_file():
        return list(CIFAR10_CLASSES)
    names = [line.strip() for line in meta_path.read_text(errors="replace").splitlines()]
    return [n for n in names if n]


def read_cifar10(
    folder: Path, layout: str
) -> tuple[TensorImageDataset, TensorImageDataset, list[str]]:
    """Read all batches: ``(train (50000 images), test (10000), class_names)`` for the full set."""
    suffix = ".bin" if layout == "bin" else ""
    read = _read_bin_batch if layout == "bin" else _read_pickle_batch
    paths = _require(folder, [f"{n}{suffix}" for n in [*_TRAIN_BATCHES, "test_batch"]])
    names = _class_names(folder, layout)
    parts = [read(p) for p in paths]
    for p, (_, labels) in zip(paths, parts):
        if labels.size and int(labels.max()) >= len(names):
            raise FileFormatError(
                f"{p} has label {int(labels.max())} but there are {len(names)} class names"
            )

    def to_dataset(chunks: list[tuple[np.ndarray, np.ndarray]]) -> TensorImageDataset:
        images = torch.from_numpy(np.concatenate([c[0] for c in chunks]))
        labels = torch.from_numpy(np.concatenate([c[1] for c in chunks]))
        return TensorImageDataset(images, labels)

    return to_dataset(parts[:-1]), to_dataset(parts[-1:]), names


def load_cifar10(
    path: str | Path | None = None,
    *,
    download_dir: str | Path | None = None,
    input_size: int | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: str = "crop_flip",
) -> DatasetBundle:
    """Load CIFAR-10 (3-channel 32 px unless ``input_size`` / ``channels`` ask otherwise)."""
    folder, layout = find_cifar10(path, download_dir)
    train, test, names = read_cifar10(folder, layout)
    return bundle_from_tensors(
        name=f"cifar10:{folder.resolve()}",
        train=train,
        test=test,
        class_names=names,
        augment=augment,
        input_size=input_size,
        channels=channels,
        val_fraction=val_fraction,
        seed=seed,
        extra={"folder": str(folder), "layout": layout},
    )
