"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, offline)."""

from __future__ import annotations

import torch

from slimkit.data.base import (
    TEST_SPLIT_SEED,
    DatasetBundle,
    TensorImageDataset,
    bundle_from_tensors,
    resize_uint8,
    stratified_split,
)

__all__ = ["load_digits"]

DEFAULT_INPUT_SIZE = 32


def load_digits(
    *,
    input_size: int | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    test_fraction: float = 0.2,
    augment: str = "crop",
) -> DatasetBundle:
    """Load the digits set as uint8 images of ``input_size`` pixels (default 32).

    Pixel values 0..16 are scaled to 0..255. The test split (``test_fraction`` of each class) is
    fixed; ``seed`` chooses the val split (``val_fraction`` of the rest). The default augmentation
    is ``"crop"``: digits are not mirror-symmetric, so no flip.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    raw = sk_load_digits()
    pixels = torch.from_numpy(raw.images).to(torch.float32)  # (1797, 8, 8), 0..16
    images = (pixels * (255.0 / 16.0)).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(1)
    images = resize_uint8(images, input_size or DEFAULT_INPUT_SIZE)
    labels = torch.from_numpy(raw.target).to(torch.int64)
    full = TensorImageDataset(images, labels)
    kept, held = stratified_split(labels, test_fraction, TEST_SPLIT_SEED)
    return bundle_from_tensors(
        name="digits",
        train=full.subset(kept),
        test=full.subset(held),
        class_names=[str(d) for d in range(10)],
        augment=augment,
        input_size=None,  # already resized above
        channels=channels,
        val_fraction=val_fraction,
        seed=seed,
    )
