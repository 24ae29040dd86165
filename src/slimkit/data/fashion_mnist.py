"""``fashion-mnist``: the Fashion-MNIST IDX files (gzip or raw), parsed with numpy.

IDX layout: a big-endian header ``00 00 <type> <ndim>`` (type ``0x08`` = unsigned byte), then
``ndim`` big-endian ``uint32`` sizes, then the data. Images files have magic 2051 (3 dims),
label files 2049 (1 dim).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from slimkit.data.base import DatasetBundle, TensorImageDataset, bundle_from_tensors
from slimkit.errors import FileFormatError

__all__ = ["FASHION_MNIST_CLASSES", "find_fashion_mnist", "load_fashion_mnist", "read_idx"]

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
HOW_TO_GET = (
    "install it with `apt-get install dataset-fashion-mnist`, or pass fashion-mnist:PATH "
    "for a folder holding train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), "
    "t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz)"
)


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzip-compressed or raw) into a ``uint8`` array.

    Raises:
        FileFormatError: unreadable, bad gzip stream, wrong magic number, or a data size that
            does not match the header (a truncated download). The message names the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if data[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise FileFormatError(
                f"{path} is a damaged gzip file ({exc}); it is probably truncated, re-download it"
            ) from exc
    if len(data) < 4:
        raise FileFormatError(f"{path} is truncated ({len(data)} bytes); re-download it")
    magic = int.from_bytes(data[:4], "big")
    if (
        data[0:2] != b"\x00\x00"
        or data[2] != 0x08
        or (expected_magic is not None and magic != expected_magic)
    ):
        want = f" (expected {expected_magic})" if expected_magic is not None else ""
        raise FileFormatError(
            f"{path} is not an unsigned-byte IDX file: magic number {magic}{want}; "
            "check that the right file was given"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise FileFormatError(f"{path} is truncated inside its header; re-download it")
    dims = tuple(int(x) for x in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "longer than its header says"
        raise FileFormatError(
            f"{path} is {what}: header {dims} needs {expected} bytes of data, found {found}; "
            "re-download it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _files_in(folder: Path) -> dict[str, Path] | None:
    """The four files in ``folder`` (raw preferred over .gz), or None when any is missing."""
    found = {}
    for key, base in FILES.items():
        for candidate in (folder / base, folder / f"{base}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def find_fashion_mnist(
    path: str | Path | None = None, download_dir: str | Path | None = None
) -> dict[str, Path]:
    """Locate the four Fashion-MNIST files.

    With ``path``, look only there. Otherwise search ``download_dir`` (and its
    ``fashion-mnist/``), ``$SLIMKIT_DATA`` (and its ``fashion-mnist/``), then
    ``/usr/share/datasets/fashion-mnist``.

    Raises:
        FileFormatError: a one-line message saying where it looked and how to get the files.
    """
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileFormatError(f"fashion-mnist folder {folder} does not exist; {HOW_TO_GET}")
        found = _files_in(folder)
        if found is None:
            missing = [
                f"{b}(.gz)"
                for b in FILES.values()
                if not (folder / b).is_file() and not (folder / f"{b}.gz").is_file()
            ]
            raise FileFormatError(
                f"fashion-mnist files missing in {folder}: {', '.join(missing)}; {HOW_TO_GET}"
            )
        return found
    roots: list[Path] = []
    for base in (download_dir, os.environ.get("SLIMKIT_DATA") or None):
        if base is not None:
            roots += [Path(base).expanduser(), Path(base).expanduser() / "fashion-mnist"]
    roots.append(SYSTEM_DIR)
    for folder in roots:
        if folder.is_dir() and (found := _files_in(folder)) is not None:
            return found
    looked = ", ".join(str(r) for r in roots)
    raise FileFormatError(f"Fashion-MNIST not found (looked in {looked}); {HOW_TO_GET}")


def load_fashion_mnist(
    path: str | Path | None = None,
    *,
    download_dir: str | Path | None = None,
    input_size: int | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: str = "crop_flip",
) -> DatasetBundle:
    """Load Fashion-MNIST: 60000 train (minus ``val_fraction`` for val) and 10000 test images.

    Images are 1-channel 28 px unless ``input_size`` / ``channels`` ask otherwise.
    """
    files = find_fashion_mnist(path, download_dir)
    arrays = {
        key: read_idx(p, IDX_IMAGES_MAGIC if key.endswith("images") else IDX_LABELS_MAGIC)
        for key, p in files.items()
    }
    splits = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or len(images) != len(labels):
            raise FileFormatError(
                f"{files[f'{split}_images']} holds {len(images)} images but "
                f"{files[f'{split}_labels']} holds {len(labels)} labels; the files do not match"
            )
        if len(labels) and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
            raise FileFormatError(
                f"{files[f'{split}_labels']} has label {int(labels.max())}; Fashion-MNIST labels "
                "are 0..9"
            )
        splits[split] = TensorImageDataset(
            torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).to(torch.int64)
        )
    return bundle_from_tensors(
        name="fashion-mnist" if path is None else f"fashion-mnist:{Path(path).expanduser()}",
        train=splits["train"],
        test=splits["test"],
        class_names=FASHION_MNIST_CLASSES,
        augment=augment,
        input_size=input_size,
        channels=channels,
        val_fraction=val_fraction,
        seed=seed,
        extra={"files": {k: str(v) for k, v in files.items()}},
    )
