"""Batched tensor augmentations: every op takes a float batch ``(B, C, H, W)`` and acts per sample.

Working on whole batches keeps data loading far cheaper than the model step (per-sample PIL
transforms cost more than a small CNN's forward pass). Randomness comes only from the
``torch.Generator`` passed in, so a batch is reproducible from its generator's seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from slimkit.errors import InvalidArgumentError, suggest

__all__ = [
    "AUGMENT_PRESETS",
    "check_augment",
    "normalize",
    "random_crop",
    "random_hflip",
    "resize_batch",
    "to_float",
]

# preset -> (random crop with padding, random horizontal flip)
AUGMENT_PRESETS: dict[str, tuple[bool, bool]] = {
    "none": (False, False),
    "crop": (True, False),
    "flip": (False, True),
    "crop_flip": (True, True),
}


def check_augment(name: str) -> str:
    """Return ``name`` if it is a preset in :data:`AUGMENT_PRESETS`, else raise."""
    if name not in AUGMENT_PRESETS:
        raise InvalidArgumentError(
            f"unknown augmentation preset {name!r}; choose one of "
            f"{', '.join(AUGMENT_PRESETS)}.{suggest(str(name), AUGMENT_PRESETS)}"
        )
    return name


def to_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` 0..255 -> ``float32`` 0..1; float input is taken as already in 0..1."""
    if images.dtype == torch.uint8:
        return images.float().mul_(1.0 / 255.0)
    return images.to(torch.float32, copy=True)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` to ``(B, C, size, size)``: bilinear, antialiased when shrinking."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` pixels on each side, then crop back to ``(H, W)`` at a random offset.

    Each sample gets its own offset in ``[0, 2 * pad]`` on each axis (a shift of up to ``pad``
    pixels in each direction). Works on any dtype (uint8 included: zero is black either way).
    """
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    off_y = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    off_x = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    # One gather over the flattened padded image: index of output pixel (i, j) of sample n is
    # (off_y[n] + i) * padded_width + off_x[n] + j. Cheaper than two gathers or a Python loop.
    width = w + 2 * pad
    window = (torch.arange(h).view(h, 1) * width + torch.arange(w).view(1, w)).view(1, h * w)
    index = window + (off_y * width + off_x).view(b, 1)
    flat = padded.reshape(b, c, -1).gather(2, index.view(b, 1, h * w).expand(b, c, h * w))
    return flat.view(b, c, h, w)


def random_hflip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p``."""
    flip = torch.rand(x.shape[0], generator=generator) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def normalize(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float], *, inplace: bool = False
) -> torch.Tensor:
    """``(x - mean) / std`` per channel; ``mean`` and ``std`` in the units of ``x`` (0..1)."""
    m = torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(m).div_(s) if inplace else (x - m) / s
