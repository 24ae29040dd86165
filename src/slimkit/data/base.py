"""In-memory image datasets, the dataset bundle, and the helpers every dataset kind shares.

Images are kept as ``uint8`` tensors ``(N, C, H, W)`` with values 0..255; conversion to float,
augmentation and normalization happen per batch in :class:`slimkit.data.BatchLoader`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from slimkit.errors import InvalidArgumentError

__all__ = [
    "DatasetBundle",
    "TensorImageDataset",
    "channel_stats",
    "convert_channels",
    "derive_seed",
    "resize_uint8",
    "stratified_split",
]

# Split of the test set when a source has none of its own (digits, a single image-folder tree).
# The seed is fixed on purpose: runs with different ``seed`` values are compared on the same
# held-out images; ``seed`` only changes the train/val split and the training order.
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0


class TensorImageDataset(Dataset):
    """A labelled image set held in memory.

    Args:
        images: ``uint8`` tensor ``(N, C, H, W)``, values 0..255.
        labels: ``int64`` tensor ``(N,)`` of class indices.

    ``dataset[i]`` returns ``(image, label)``: a ``uint8`` ``(C, H, W)`` tensor (a view, not a
    copy) and a Python ``int``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            got = (
                f"{images.dtype} tensor of shape {tuple(images.shape)}"
                if isinstance(images, torch.Tensor)
                else type(images).__name__
            )
            raise InvalidArgumentError(
                f"TensorImageDataset needs images as a uint8 tensor (N, C, H, W), got {got}; "
                "convert with (x * 255).round().clamp(0, 255).to(torch.uint8)"
            )
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.dtype.is_floating_point or len(labels) != len(images):
            raise InvalidArgumentError(
                f"TensorImageDataset needs integer labels of shape ({len(images)},), got "
                f"{labels.dtype} tensor of shape {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def subset(self, indices: torch.Tensor) -> TensorImageDataset:
        """A new dataset holding copies of the rows ``indices`` (``int64`` tensor)."""
        return TensorImageDataset(self.images[indices], self.labels[indices])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return f"TensorImageDataset(n={len(self)}, shape=({c}, {h}, {w}))"


@dataclass
class DatasetBundle:
    """Everything a trainer needs to know about a dataset, with its three splits.

    Attributes:
        name: the canonical spec string; ``load_dataset(name)`` loads the same data again.
        train, val, test: datasets whose items are ``(uint8 (C, H, W) tensor, int label)`` with
            ``H == W == input_size``; each has a ``.labels`` ``int64`` tensor.
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        class_names: one name per class, in label order.
        in_chans: image channels (1 or 3).
        input_size: side length in pixels the images are delivered at.
        mean, std: per-channel normalization in 0..1 units (computed on the train split).
        augment: the training augmentation preset that suits the data
            (``"none"``, ``"crop"``, ``"flip"`` or ``"crop_flip"``).
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    class_names: list[str]
    in_chans: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_metadata(self) -> dict[str, Any]:
        """The JSON-able description a checkpoint stores (no data, no paths to splits)."""
        return {
            "name": self.name,
            "num_classes": int(self.num_classes),
            "class_names": [str(c) for c in self.class_names],
            "in_chans": int(self.in_chans),
            "input_size": int(self.input_size),
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
        }

    def split_sizes(self) -> dict[str, int]:
        """``{"train": n, "val": n, "test": n}``."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.split_sizes().items())
        return (
            f"DatasetBundle(name={self.name!r}, {sizes}, num_classes={self.num_classes}, "
            f"in_chans={self.in_chans}, input_size={self.input_size}, augment={self.augment!r})"
        )


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (well mixed, unlike ``seed + epoch``)."""
    digest = hashlib.blake2b(struct.pack(f"<{len(parts)}q", *parts), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def make_generator(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def stratified_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices so each class holds out its share (``fraction``) of its samples.

    The held-out part has ``floor(fraction * N + 0.5)`` samples in all; per-class counts are
    ``fraction * n_class`` rounded by largest remainder, so small sets still get a val split.
    Returns ``(kept, held_out)``: sorted ``int64`` index tensors that partition ``range(N)``.
    Deterministic for a given ``seed``.
    """
    labels = torch.as_tensor(labels)
    gen = make_generator(seed, 0x5B17)
    classes, counts = torch.unique(labels, return_counts=True)
    quotas = counts.double() * fraction
    n_held = quotas.floor().long()
    missing = int(fraction * len(labels) + 0.5) - int(n_held.sum())
    if missing > 0:  # stable sort: ties go to the lower class index
        order = torch.sort(quotas - n_held, descending=True, stable=True).indices
        n_held[order[:missing]] += 1
    kept, held = [], []
    for cls, n in zip(classes.tolist(), n_held.tolist()):
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        held.append(idx[:n])
        kept.append(idx[n:])
    empty = torch.empty(0, dtype=torch.int64)
    kept_t = torch.cat(kept).sort().values if kept else empty
    held_t = torch.cat(held).sort().values if held else empty
    return kept_t, held_t


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize ``uint8 (N, C, H, W)`` images to ``(N, C, size, size)`` (bilinear, antialiased)."""
    if images.shape[-2:] == (size, size):
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].float()
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out[start : start + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert ``uint8 (N, C, H, W)`` images between 1 (grey) and 3 (RGB) channels.

    Grey to RGB repeats the channel; RGB to grey uses ITU-R 601 luma (as PIL's ``convert("L")``).
    """
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor([299, 587, 114], dtype=torch.int32).view(1, 3, 1, 1)
        grey = ((images.to(torch.int32) * weights).sum(1, keepdim=True) + 500) // 1000
        return grey.clamp_(0, 255).to(torch.uint8)
    raise InvalidArgumentError(f"cannot convert {c}-channel images to {channels} channels")


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std (0..1 units) of ``uint8 (N, C, H, W)`` images."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(round(float(mean), 6))
        # a constant channel would divide by zero when normalizing
        stds.append(round(max(float(var.sqrt()), 1e-3), 6))
    return tuple(means), tuple(stds)


def check_common_args(input_size: int | None, channels: int | None, val_fraction: float) -> None:
    """Validate the arguments every dataset kind shares; raises InvalidArgumentError."""
    if input_size is not None and (not isinstance(input_size, int) or input_size < 1):
        raise InvalidArgumentError(
            f"input_size must be a positive int (pixels), got {input_size!r}"
        )
    if channels is not None and channels not in (1, 3):
        raise InvalidArgumentError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise InvalidArgumentError(
            f"val_fraction must be in [0, 1), got {val_fraction!r}; e.g. val_fraction=0.1"
        )


def bundle_from_tensors(
    *,
    name: str,
    train: TensorImageDataset,
    test: TensorImageDataset,
    class_names: Sequence[str],
    augment: str,
    input_size: int | None,
    channels: int | None,
    val_fraction: float,
    seed: int,
    val: TensorImageDataset | None = None,
    extra: dict[str, Any] | None = None,
) -> DatasetBundle:
    """Resize / convert in-memory splits, carve val from train, compute stats, build the bundle."""
    datasets = {"train": train, "test": test} | ({"val": val} if val is not None else {})
    for key, ds in datasets.items():
        images = ds.images
        if channels is not None:
            images = convert_channels(images, channels)
        if input_size is not None:
            images = resize_uint8(images, input_size)
        datasets[key] = TensorImageDataset(images, ds.labels)
    train, test = datasets["train"], datasets["test"]
    if val is None:
        kept, held = stratified_split(train.labels, val_fraction, seed)
        val = train.subset(held)
        train = train.subset(kept)
    else:
        val = datasets["val"]
    if len(train) == 0:
        raise InvalidArgumentError(f"dataset {name!r} has an empty train split")
    mean, std = channel_stats(train.images)
    return DatasetBundle(
        name=name,
        train=train,
        val=val,
        test=test,
        num_classes=len(class_names),
        class_names=list(class_names),
        in_chans=train.images.shape[1],
        input_size=train.images.shape[-1],
        mean=mean,
        std=std,
        augment=augment,
        extra=dict(extra or {}),
    )
