"""``BatchLoader``: shuffled, augmented, normalized batches that can resume mid-epoch exactly.

Everything random is a pure function of seeds: the sample order of an epoch comes from
``(seed, epoch)``, the augmentation of batch ``b`` from ``(seed, epoch, rank, b)``. Skipping the
first ``k`` batches (``set_start_batch(k)``) therefore changes nothing about the batches after
them, which is what an exact resume after Ctrl-C needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from slimkit.data.base import make_generator
from slimkit.data.transforms import (
    AUGMENT_PRESETS,
    check_augment,
    random_crop,
    random_hflip,
    resize_batch,
)
from slimkit.errors import InvalidArgumentError

if TYPE_CHECKING:
    from slimkit.data.base import DatasetBundle

__all__ = ["BatchLoader"]


def _in_memory_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    images = getattr(dataset, "images", None)
    labels = getattr(dataset, "labels", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor) and images.ndim == 4:
        return images, labels
    return None


class BatchLoader:
    """Iterate over ``(images, labels)`` batches of a dataset.

    Yields ``images``: ``float32 (B, C, S, S)``, normalized with ``mean`` / ``std``; ``labels``:
    ``int64 (B,)``. Datasets that hold their images in memory (``.images`` uint8 ``(N, C, H, W)``
    and ``.labels``, as :class:`~slimkit.data.TensorImageDataset`) are batched by indexing;
    other datasets are indexed item by item (``dataset[i] -> (uint8 (C, H, W), label)``) and
    stacked. Augmentation runs on the whole batch.

    Args:
        dataset: the dataset to batch.
        batch_size: samples per batch (per rank).
        shuffle: draw a new order each epoch from ``(seed, epoch)``; else dataset order.
        seed: seeds the order and the augmentation.
        augment: ``"none"``, ``"crop"`` (zero-pad by ``pad`` then random crop), ``"flip"``
            (random horizontal flip) or ``"crop_flip"``.
        mean, std: per-channel normalization in 0..1 units (e.g. ``bundle.mean``).
        input_size: resize batches to this side length (bilinear) when the images differ;
            ``None`` keeps the dataset's size.
        pad: crop padding in pixels.
        drop_last: drop the last incomplete batch (and, with ``world_size > 1``, the samples
            that do not divide evenly among ranks instead of repeating some).
        rank, world_size: this process's share of the data under ``torch.distributed``; every
            rank uses the same permutation and takes every ``world_size``-th sample from
            position ``rank``, so the ranks are disjoint (apart from the padding) and all yield
            ``len(loader)`` batches.

    Resuming: ``set_start_batch(k)`` (or the ``start_batch`` attribute) makes the next
    iteration skip the first ``k`` batches of the epoch; the rest are identical to a full pass.
    The offset is consumed by that iteration, so a later pass is full again. ``state_dict()``
    records ``epoch`` and, during or after an iteration, the number of batches handed out so
    far, i.e. where to resume.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        augment: str = "none",
        mean: Sequence[float],
        std: Sequence[float],
        input_size: int | None = None,
        pad: int = 4,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(world_size, int) or world_size < 1:
            raise InvalidArgumentError(f"world_size must be a positive int, got {world_size!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise InvalidArgumentError(
                f"rank must be in [0, world_size={world_size}), got {rank!r}"
            )
        if not isinstance(pad, int) or pad < 0:
            raise InvalidArgumentError(f"pad must be a non-negative int (pixels), got {pad!r}")
        if input_size is not None and (not isinstance(input_size, int) or input_size < 1):
            raise InvalidArgumentError(f"input_size must be a positive int, got {input_size!r}")
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if len(mean_t) != len(std_t) or len(mean_t) == 0 or bool((std_t <= 0).any()):
            raise InvalidArgumentError(
                f"mean and std need one value per channel and std > 0, got mean={list(mean)} "
                f"std={list(std)}; pass bundle.mean and bundle.std"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.augment = check_augment(augment)
        self.mean = tuple(float(m) for m in mean_t)
        self.std = tuple(float(s) for s in std_t)
        self.input_size = input_size
        self.pad = pad
        self.drop_last = bool(drop_last)
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0
        self._position: int | None = None  # batches handed out in the current iteration
        self.last_indices: torch.Tensor | None = None  # dataset indices of the last batch
        self._tensors = _in_memory_tensors(dataset)
        if self._tensors is not None:
            self._check_channels(self._tensors[0].shape[1])
        self._scale_255 = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1)
        self._scale_1 = (1.0 / std_t).view(1, -1, 1, 1)
        self._shift = (mean_t / std_t).view(1, -1, 1, 1)

    @classmethod
    def for_bundle(
        cls,
        bundle: DatasetBundle,
        split: str,
        batch_size: int,
        *,
        shuffle: bool | None = None,
        augment: str | None = None,
        **kwargs: Any,
    ) -> BatchLoader:
        """A loader over ``bundle.<split>`` with the bundle's normalization.

        ``shuffle`` defaults to ``split == "train"``; ``augment`` to ``bundle.augment`` for the
        train split and ``"none"`` otherwise. Other keywords go to :class:`BatchLoader`.
        """
        if split not in ("train", "val", "test"):
            raise InvalidArgumentError(f"split must be train, val or test, got {split!r}")
        train = split == "train"
        return cls(
            getattr(bundle, split),
            batch_size,
            shuffle=train if shuffle is None else shuffle,
            augment=(bundle.augment if train else "none") if augment is None else augment,
            mean=bundle.mean,
            std=bundle.std,
            **kwargs,
        )

    def _check_channels(self, channels: int) -> None:
        if channels != len(self.mean):
            raise InvalidArgumentError(
                f"the dataset has {channels}-channel images but mean/std have {len(self.mean)} "
                "values; pass the bundle's mean and std"
            )

    # -- epoch bookkeeping ------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration produces.

        Moving to a different epoch clears a pending ``start_batch``; setting the current
        epoch again keeps it (so ``load_state_dict`` followed by ``set_epoch`` resumes).
        """
        epoch = int(epoch)
        if epoch != self.epoch:
            self.start_batch = 0
        self.epoch = epoch
        self._position = None

    def set_start_batch(self, k: int) -> None:
        """Make the next iteration skip the first ``k`` batches of the epoch."""
        if not isinstance(k, int) or k < 0:
            raise InvalidArgumentError(f"start batch must be a non-negative int, got {k!r}")
        self.start_batch = k
        self._position = None

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "start_batch", "batch_size", "world_size"}``: enough to resume exactly."""
        position = self._position if self._position is not None else self.start_batch
        return {
            "epoch": self.epoch,
            "start_batch": int(position),
            "batch_size": self.batch_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore ``epoch`` and ``start_batch`` (checks batch_size / world_size if recorded)."""
        for key in ("batch_size", "world_size"):
            if key in state and int(state[key]) != getattr(self, key):
                raise InvalidArgumentError(
                    f"cannot resume exactly: the saved loader used {key}={state[key]}, this one "
                    f"uses {getattr(self, key)}; resume with the same {key}"
                )
        self.epoch = int(state.get("epoch", 0))
        self.set_start_batch(int(state.get("start_batch", 0)))

    # -- sampling -----------------------------------------------------------------------------

    def _samples_per_rank(self) -> int:
        n = len(self.dataset)
        if self.world_size == 1:
            return n
        if self.drop_last:
            return n // self.world_size
        return (n + self.world_size - 1) // self.world_size

    def __len__(self) -> int:
        """Batches this rank yields in a full epoch (whatever ``start_batch`` is)."""
        per_rank = self._samples_per_rank()
        if self.drop_last:
            return per_rank // self.batch_size
        return (per_rank + self.batch_size - 1) // self.batch_size

    def rank_indices(self) -> torch.Tensor:
        """The dataset indices this rank visits in the current epoch, in order (``int64``)."""
        n = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(n, generator=make_generator(self.seed, self.epoch))
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            total = self._samples_per_rank() * self.world_size
            if total <= n:
                order = order[:total]
            elif n > 0:  # repeat from the start so every rank gets as many samples
                order = order.repeat(-(-total // n))[:total]
            order = order[self.rank :: self.world_size]
        return order

    # -- batches ------------------------------------------------------------------------------

    def _gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels at ``idx``; the images are always a new tensor (never a view)."""
        if self._tensors is not None:
            images, labels = self._tensors
            return images[idx], labels[idx]
        items = [self.dataset[i] for i in idx.tolist()]
        images = torch.stack([torch.as_tensor(img) for img, _ in items])
        labels = torch.tensor([int(lbl) for _, lbl in items], dtype=torch.int64)
        self._check_channels(images.shape[1])
        return images, labels

    def make_batch(self, batch_index: int, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Build batch ``batch_index`` of the current epoch from dataset indices ``idx``."""
        x, labels = self._gather(idx)
        # Stay in raw pixel units (0..255 for uint8) until the end: resizing, zero-padding and
        # flipping commute with the scaling, so normalization folds into one multiply-subtract,
        # and crop / flip move uint8 (4x less memory traffic) when no resize is needed.
        is_uint8 = x.dtype == torch.uint8
        if self.input_size is not None and x.shape[-2:] != (self.input_size, self.input_size):
            x = resize_batch(x.float(), self.input_size)
        crop, flip = AUGMENT_PRESETS[self.augment]
        if crop or flip:
            gen = make_generator(self.seed, self.epoch, self.rank, batch_index)
            if crop:
                x = random_crop(x, self.pad, gen)
            if flip:
                x = random_hflip(x, gen)
        x = x.float()  # _gather returns a fresh tensor, so scaling in place is safe
        x.mul_(self._scale_255 if is_uint8 else self._scale_1).sub_(self._shift)
        return x, labels.to(torch.int64)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.rank_indices()
        n_batches = len(self)
        start = self.start_batch
        self.start_batch = 0  # the offset applies to this one iteration
        self._position = min(start, n_batches)
        bs = self.batch_size
        for b in range(start, n_batches):
            self.last_indices = order[b * bs : (b + 1) * bs]  # for per-sample caches
            batch = self.make_batch(b, self.last_indices)
            self._position = b + 1
            yield batch

    def __repr__(self) -> str:
        return (
            f"BatchLoader(n={len(self.dataset)}, batch_size={self.batch_size}, "
            f"batches={len(self)}, shuffle={self.shuffle}, augment={self.augment!r}, "
            f"rank={self.rank}/{self.world_size})"
        )
