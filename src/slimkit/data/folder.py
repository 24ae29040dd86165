"""Image-folder datasets: ``PATH/<class>/*`` or ``PATH/train/<class>/*`` + ``val/`` / ``test/``.

Every file is checked before training starts: unreadable or non-image files, a mix of grey and
colour images, or a mix of sizes are reported with example paths, so a bad file never silently
becomes a black training image. Hidden files and folders (``.DS_Store``, ``.git``...), ``__MACOSX``
folders, ``Thumbs.db`` and ``desktop.ini`` are skipped. Files directly in ``PATH`` (a README, a
LICENSE) belong to no class and are ignored too.

Small sets (decoded size up to :data:`IN_MEMORY_LIMIT_BYTES`) are decoded once into a
:class:`~slimkit.data.TensorImageDataset`; larger ones stay on disk as an
:class:`ImageFolderDataset` that decodes on access.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from slimkit.data.base import (
    TEST_FRACTION,
    TEST_SPLIT_SEED,
    DatasetBundle,
    TensorImageDataset,
    bundle_from_tensors,
    channel_stats,
    make_generator,
    stratified_split,
)
from slimkit.errors import FileFormatError

__all__ = ["IN_MEMORY_LIMIT_BYTES", "ImageFolderDataset", "load_image_folder"]

IN_MEMORY_LIMIT_BYTES = 2 * 1024**3
STATS_SAMPLE = 1000  # images decoded to estimate mean/std of a dataset kept on disk
_IGNORED_NAMES = {"Thumbs.db", "desktop.ini", "__MACOSX"}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
_MAX_LISTED = 5

T = TypeVar("T")


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_NAMES


def _mode_channels(mode: str) -> int:
    return 1 if mode in _GREY_MODES else 3


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _skipped(p.name))


def _files_under(folder: Path) -> list[Path]:
    found = []
    visited = set()  # real paths, so a symlink loop cannot recurse forever
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
        found += [Path(dirpath) / f for f in sorted(filenames) if not _skipped(f)]
    return found


def _to_mode(im: Image.Image, channels: int) -> Image.Image:
    """Convert a PIL image to ``L`` (channels=1) or ``RGB`` (channels=3)."""
    if im.mode in _HIGH_DEPTH_MODES:  # 16-bit grey: scale to 8 bits instead of clipping
        arr = np.asarray(im, dtype=np.float64)
        if arr.max(initial=0) > 255:
            arr = arr / 257.0
        im = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "L")
    elif im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    target = "L" if channels == 1 else "RGB"
    return im if im.mode == target else im.convert(target)


def _resize_cover(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bilinear, antialiased), then centre-crop a square."""
    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def decode_image(path: Path, *, channels: int, size: int) -> torch.Tensor:
    """Decode one file into a ``uint8 (channels, size, size)`` tensor (raises on bad files)."""
    with Image.open(path) as im:
        im = _resize_cover(_to_mode(im, channels), size)
        arr = np.array(im, dtype=np.uint8)
    t = torch.from_numpy(arr)
    return t.unsqueeze(0) if channels == 1 else t.permute(2, 0, 1).contiguous()


def _describe_bad(root: Path, bad: list[tuple[Path, str]]) -> str:
    listed = "; ".join(f"{p} ({why})" for p, why in bad[:_MAX_LISTED])
    more = f"; and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    return (
        f"{len(bad)} file(s) under {root} are not readable images: {listed}{more}; "
        "delete or replace them"
    )


class ImageFolderDataset(Dataset):
    """Images on disk, decoded with PIL on access.

    ``dataset[i]`` returns ``(uint8 (channels, input_size, input_size) tensor, int label)``;
    images of another size are resized (shorter side, bilinear) and centre-cropped, and
    converted to grey (``channels=1``) or RGB (``channels=3``).
    """

    def __init__(
        self, paths: Sequence[Path], labels: torch.Tensor, *, input_size: int, channels: int
    ) -> None:
        self.paths = list(paths)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.input_size = int(input_size)
        self.channels = int(channels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        try:
            image = decode_image(path, channels=self.channels, size=self.input_size)
        except Exception as exc:
            raise FileFormatError(
                f"cannot decode {path} ({type(exc).__name__}: {exc}); delete or replace it"
            ) from exc
        return image, int(self.labels[index])

    def subset(self, indices: torch.Tensor) -> ImageFolderDataset:
        """The rows ``indices`` as a new dataset (shares nothing mutable)."""
        idx = torch.as_tensor(indices, dtype=torch.int64).tolist()
        return ImageFolderDataset(
            [self.paths[i] for i in idx],
            self.labels[idx],
            input_size=self.input_size,
            channels=self.channels,
        )

    def load_all(self) -> TensorImageDataset:
        """Decode every image into memory, reporting every file that fails (up to 5 named)."""

        def attempt(path: Path) -> torch.Tensor | str:
            try:
                return decode_image(path, channels=self.channels, size=self.input_size)
            except Exception as exc:  # noqa: BLE001 - PIL raises many types; all mean a bad file
                return f"{type(exc).__name__}: {exc}"

        results = [attempt(p) for p in self.paths]
        bad = [(p, r) for p, r in zip(self.paths, results) if isinstance(r, str)]
        if bad:
            root = Path(os.path.commonpath([str(p.parent) for p in self.paths]))
            raise FileFormatError(_describe_bad(root, bad))
        empty = torch.empty((0, self.channels, self.input_size, self.input_size), dtype=torch.uint8)
        images = torch.stack(results) if results else empty  # type: ignore[arg-type]
        return TensorImageDataset(images, self.labels)

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(n={len(self)}, shape=({self.channels}, {self.input_size}, "
            f"{self.input_size}))"
        )


@dataclass
class _Scan:
    class_names: list[str]
    splits: dict[str, tuple[list[Path], list[int]]]  # "train" / "val" / "test" -> files, labels


def _scan(root: Path) -> _Scan:
    train_dir = root / "train"
    split_layout = train_dir.is_dir() and bool(_class_dirs(train_dir))
    class_root = train_dir if split_layout else root
    classes = _class_dirs(class_root)
    where = "train/<class>/<image>" if split_layout else "<class>/<image>"
    if not classes:
        raise FileFormatError(
            f"no class folders in {root}; expected {root}/<class>/<image> "
            f"or {root}/train/<class>/<image> (+ val/ or test/)"
        )
    if len(classes) < 2:
        raise FileFormatError(
            f"{class_root} has only one class folder ({classes[0].name}); a classifier needs at "
            f"least 2: add another {where} folder"
        )
    class_names = [c.name for c in classes]
    index = {name: i for i, name in enumerate(class_names)}

    def collect(folder: Path, *, require_all: bool) -> tuple[list[Path], list[int]]:
        paths: list[Path] = []
        labels: list[int] = []
        for cdir in _class_dirs(folder):
            if cdir.name not in index:
                raise FileFormatError(
                    f"class folder {cdir} has no counterpart in {class_root}; add "
                    f"{class_root / cdir.name} or remove it"
                )
            files = _files_under(cdir)
            if not files and require_all:
                raise FileFormatError(
                    f"class folder {cdir} holds no files; add images or remove it"
                )
            paths += files
            labels += [index[cdir.name]] * len(files)
        return paths, labels

    splits = {"train": collect(class_root, require_all=True)}
    if split_layout:
        for held in ("val", "test"):
            if (root / held).is_dir():
                splits[held] = collect(root / held, require_all=False)
    return _Scan(class_names, splits)


def _probe(path: Path) -> tuple[tuple[int, int], str] | str:
    try:
        with Image.open(path) as im:
            return im.size, im.mode
    except Exception as exc:  # noqa: BLE001 - UnidentifiedImageError, OSError, DecompressionBomb...
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _first_of_each(items: Iterable[tuple[Path, T]]) -> dict[T, Path]:
    seen: dict[T, Path] = {}
    for path, key in items:
        seen.setdefault(key, path)
    return seen


def load_image_folder(
    path: str | Path,
    *,
    input_size: int | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
    augment: str = "crop_flip",
    in_memory: bool | None = None,
) -> DatasetBundle:
    """Load an image-folder tree.

    Layouts: ``PATH/train/<class>/*`` with ``PATH/val/<class>/*`` and/or ``PATH/test/<class>/*``
    (with only one of them, it is the test split and val is carved from train), or a single
    ``PATH/<class>/*`` tree whose test split (``test_fraction`` per class, fixed seed) and val
    split (``val_fraction`` of the rest, ``seed``) are drawn here.

    Args:
        input_size: side length to deliver; required when the images differ in size.
        channels: 1 or 3; required when grey and colour images are mixed.
        in_memory: decode everything up front (``True``), decode on access (``False``), or
            decide by size (``None``: in memory up to :data:`IN_MEMORY_LIMIT_BYTES`).

    Raises:
        FileFormatError: missing or empty folder, fewer than 2 classes, unreadable files,
            mixed sizes without ``input_size``, mixed grey/colour without ``channels``.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise FileFormatError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise FileFormatError(f"{root} is a file; an image-folder dataset needs a folder")
    scan = _scan(root)
    all_paths = [p for paths, _ in scan.splits.values() for p in paths]

    probes = [_probe(p) for p in all_paths]
    bad = [(p, r) for p, r in zip(all_paths, probes) if isinstance(r, str)]
    if bad:
        raise FileFormatError(_describe_bad(root, bad))
    infos = [(p, r) for p, r in zip(all_paths, probes) if not isinstance(r, str)]

    if channels is None:
        by_channels = _first_of_each((p, _mode_channels(mode)) for p, (_, mode) in infos)
        if len(by_channels) > 1:
            grey, colour = by_channels[1], by_channels[3]
            modes = dict(infos)
            raise FileFormatError(
                f"images under {root} mix grey and colour: {grey} is {modes[grey][1]}, {colour} "
                f"is {modes[colour][1]}; pass channels=1 or channels=3 to convert them all"
            )
        channels = next(iter(by_channels))
    if input_size is None:
        by_size = _first_of_each((p, size) for p, (size, _) in infos)
        if len(by_size) > 1:
            (s1, p1), (s2, p2) = list(by_size.items())[:2]
            raise FileFormatError(
                f"images under {root} have different sizes: {p1} is {s1[0]}x{s1[1]}, {p2} is "
                f"{s2[0]}x{s2[1]} ({len(by_size)} sizes in all); pass input_size=N to resize "
                "them all to N x N"
            )
        (w, h), example = next(iter(by_size.items()))
        if w != h:
            raise FileFormatError(
                f"images under {root} are {w}x{h} (e.g. {example}), not square; pass "
                "input_size=N to resize the shorter side to N and centre-crop"
            )
        input_size = w

    def as_dataset(split: str) -> ImageFolderDataset:
        paths, labels = scan.splits[split]
        return ImageFolderDataset(
            paths,
            torch.tensor(labels, dtype=torch.int64),
            input_size=input_size,
            channels=channels,
        )

    datasets = {split: as_dataset(split) for split in scan.splits}
    train = datasets["train"]
    if "val" in datasets and "test" in datasets:
        val, test = datasets["val"], datasets["test"]
    elif "val" in datasets or "test" in datasets:  # the held-out folder is the test split
        test = datasets.get("test", datasets.get("val"))
        val = None
    else:
        kept, held = stratified_split(train.labels, test_fraction, TEST_SPLIT_SEED)
        train, test, val = train.subset(kept), train.subset(held), None
    if val is None:
        kept, held = stratified_split(train.labels, val_fraction, seed)
        train, val = train.subset(kept), train.subset(held)

    name = str(root.resolve())
    n_total = len(train) + len(val) + len(test)
    if in_memory is None:
        in_memory = n_total * channels * input_size**2 <= IN_MEMORY_LIMIT_BYTES
    if in_memory:
        # decode all splits in one pass so one error message lists every bad file
        everything = ImageFolderDataset(
            train.paths + val.paths + test.paths,
            torch.cat([train.labels, val.labels, test.labels]),
            input_size=input_size,
            channels=channels,
        ).load_all()
        n_train, n_val = len(train), len(val)
        images, labels = everything.images, everything.labels
        return bundle_from_tensors(
            name=name,
            train=TensorImageDataset(images[:n_train], labels[:n_train]),
            val=TensorImageDataset(
                images[n_train : n_train + n_val], labels[n_train : n_train + n_val]
            ),
            test=TensorImageDataset(images[n_train + n_val :], labels[n_train + n_val :]),
            class_names=scan.class_names,
            augment=augment,
            input_size=None,
            channels=None,
            val_fraction=val_fraction,
            seed=seed,
            extra={"root": str(root), "in_memory": True},
        )
    sample = torch.randperm(len(train), generator=make_generator(TEST_SPLIT_SEED))[:STATS_SAMPLE]
    mean, std = channel_stats(train.subset(sample).load_all().images)
    return DatasetBundle(
        name=name,
        train=train,
        val=val,
        test=test,
        num_classes=len(scan.class_names),
        class_names=scan.class_names,
        in_chans=channels,
        input_size=input_size,
        mean=mean,
        std=std,
        augment=augment,
        extra={"root": str(root), "in_memory": False},
    )
