"""``shapes``: a procedural RGB dataset of geometric shapes, generated in a few vectorised ops.

Each image shows one shape whose class is its label. ``difficulty`` (0..1) scales every nuisance
factor together: the range of sizes, the position jitter, a small rotation, foreground and
background colour variation, low-frequency background clutter, distractor dots and pixel noise.
At 0 the task is a white centred shape on black; at 1 a small CNN still learns it, but not
in one epoch. Generation is deterministic for a given ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from slimkit.data.base import DatasetBundle, TensorImageDataset, bundle_from_tensors, derive_seed
from slimkit.errors import InvalidArgumentError, suggest

__all__ = ["SHAPE_NAMES", "generate_shapes", "load_shapes", "resolve_shape_classes"]

SHAPE_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "diamond",
    "star",
    "crescent",
)

_N_DOTS = 2  # distractor dots per image (faded in with difficulty)


def _signed_distance(name: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance to the shape, in shape radii (negative inside).

    ``(u, v)`` are coordinates in shape radii: ``u`` to the right, ``v`` downwards. Every shape
    fits the unit disc, so sizes are comparable across classes.
    """
    if name == "circle":
        return torch.hypot(u, v) - 0.95
    if name == "square":
        return torch.maximum(u.abs(), v.abs()) - 0.8
    if name == "triangle":  # pointing up, inradius 0.55, centred on its bounding box
        p = v - 0.2
        return torch.stack([p, 0.866 * u - 0.5 * p, -0.866 * u - 0.5 * p]).amax(0) - 0.5
    if name == "cross":  # an upright plus
        arm, half = 0.95, 0.3
        a, b = u.abs(), v.abs()
        return torch.minimum(torch.maximum(a - arm, b - half), torch.maximum(a - half, b - arm))
    if name == "ring":
        return (torch.hypot(u, v) - 0.72).abs() - 0.22
    if name == "diamond":
        return (u.abs() + v.abs() - 1.05) / math.sqrt(2.0)
    if name == "star":  # five points, one up
        angle = torch.atan2(v, u)
        radius = 0.62 + 0.33 * torch.cos(5.0 * (angle + math.pi / 2))
        return 0.7 * (torch.hypot(u, v) - radius)
    if name == "crescent":  # a disc with a disc bitten out on the right
        outer = torch.hypot(u, v) - 0.95
        inner = torch.hypot(u - 0.45, v + 0.1) - 0.75
        return torch.maximum(outer, -inner)
    raise KeyError(name)


def generate_shapes(
    n: int,
    *,
    classes: Sequence[str] = SHAPE_NAMES[:4],
    size: int = 32,
    difficulty: float = 0.3,
    seed: int = 0,
) -> TensorImageDataset:
    """Render ``n`` RGB images ``uint8 (n, 3, size, size)`` with balanced labels.

    Args:
        n: number of images.
        classes: shape names from :data:`SHAPE_NAMES`; label ``i`` is ``classes[i]``.
        size: side length in pixels.
        difficulty: 0..1, how strong the nuisance factors are (see the module docstring).
        seed: the whole set is a pure function of ``(n, classes, size, difficulty, seed)``.
    """
    gen = torch.Generator().manual_seed(derive_seed(seed, 0x5AAE5))
    k, d, s = len(classes), float(difficulty), int(size)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=gen)

    labels = (torch.arange(n) % k)[torch.randperm(n, generator=gen)]
    # Draw every random quantity up front, in a fixed order, whatever the difficulty.
    r_unit, jx, jy, rot = rand(n), rand(n), rand(n), rand(n)
    fg_var, bg_var = rand(n, 3), rand(n, 3)
    clutter = rand(n, 3, 4, 4)
    dots = rand(n, _N_DOTS, 6)  # x, y, radius, r, g, b
    noise = torch.randn((n, 3, s, s), generator=gen)

    # Shape radius in pixels: a narrow range when easy, a wide one when hard.
    r_lo, r_hi = s * (0.30 - 0.14 * d), s * (0.36 + 0.06 * d)
    radius = r_lo + (r_hi - r_lo) * r_unit
    max_shift = (s / 2 - radius - 1).clamp(min=0) * d
    cx = s / 2 + (2 * jx - 1) * max_shift
    cy = s / 2 + (2 * jy - 1) * max_shift
    # at most +-20 degrees, so a square never turns into a diamond
    angle = (2 * rot - 1) * (math.pi / 9) * d

    grid = torch.arange(s, dtype=torch.float32) + 0.5  # pixel centres
    dx = grid.view(1, 1, s) - cx.view(n, 1, 1)
    dy = grid.view(1, s, 1) - cy.view(n, 1, 1)
    cos, sin = angle.cos().view(n, 1, 1), angle.sin().view(n, 1, 1)
    r = radius.view(n, 1, 1)
    u = (cos * dx + sin * dy) / r
    v = (-sin * dx + cos * dy) / r

    sdf = torch.empty((n, s, s))
    for i, name in enumerate(classes):
        mask = labels == i
        sdf[mask] = _signed_distance(name, u[mask], v[mask])
    alpha = (0.5 - sdf * r).clamp_(0, 1).unsqueeze(1)  # a one-pixel antialiased edge

    fg = (1.0 - 0.5 * d * fg_var).view(n, 3, 1, 1)
    bg = (0.35 * d * bg_var).view(n, 3, 1, 1)
    # bilinear 4x4 -> s x s upsampling as two small matrix products (much faster than interpolate)
    basis = F.interpolate(torch.eye(4).unsqueeze(0), size=s, mode="linear")[0]  # (4, s)
    texture = torch.einsum("ncij,iy,jx->ncyx", clutter, basis, basis)
    # in-place ops throughout: the image tensor is the only large one
    img = texture.sub_(0.5).mul_(0.25 * d).add_(bg)
    if d > 0:
        for j in range(_N_DOTS):
            px, py, pr = (dots[:, j, m].view(n, 1, 1) for m in range(3))
            dist = torch.hypot(grid.view(1, 1, s) - px * s, grid.view(1, s, 1) - py * s)
            dot = dist.sub_((0.04 + 0.05 * pr) * s).neg_().add_(0.5).clamp_(0, 1).mul_(d)
            img.lerp_(dots[:, j, 3:].view(n, 3, 1, 1).expand_as(img), dot.unsqueeze(1))
    img.lerp_(fg.expand_as(img), alpha)
    if d > 0:
        img.add_(noise, alpha=0.12 * d)
    images = img.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    return TensorImageDataset(images, labels.to(torch.int64))


def load_shapes(
    *,
    classes: int | Sequence[str] = 4,
    n_train: int = 2000,
    n_test: int = 500,
    size: int | None = None,
    difficulty: float = 0.3,
    generator_seed: int = 0,
    input_size: int | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: str = "crop_flip",
    name: str = "shapes",
) -> DatasetBundle:
    """Generate the shapes dataset: ``n_train`` images (minus ``val_fraction`` for val), ``n_test``.

    Args:
        classes: how many of :data:`SHAPE_NAMES` to use (2..8, in that order), or their names.
        size: side length the shapes are drawn at; defaults to ``input_size``, else 32. With
            both given and different, images are drawn at ``size`` and resized to ``input_size``.
        difficulty: 0..1, strength of the nuisance factors.
        generator_seed: seeds the images (train and test from separate streams); the ``seed``
            argument only seeds the train/val split, so the test set is the same for all runs.
    """
    names = resolve_shape_classes(classes)
    if size is None:
        size = input_size or 32
    train = generate_shapes(
        n_train,
        classes=names,
        size=size,
        difficulty=difficulty,
        seed=derive_seed(generator_seed, 1),
    )
    test = generate_shapes(
        n_test,
        classes=names,
        size=size,
        difficulty=difficulty,
        seed=derive_seed(generator_seed, 2),
    )
    return bundle_from_tensors(
        name=name,
        train=train,
        test=test,
        class_names=names,
        augment=augment,
        input_size=input_size,
        channels=channels,
        val_fraction=val_fraction,
        seed=seed,
    )


def resolve_shape_classes(classes: int | str | Sequence[str]) -> list[str]:
    """``4`` -> the first four of :data:`SHAPE_NAMES`; ``"circle+ring"`` or a list: those names."""
    if isinstance(classes, str):
        classes = int(classes) if classes.strip().isdigit() else classes.split("+")
    if isinstance(classes, int):
        if not 2 <= classes <= len(SHAPE_NAMES):
            raise InvalidArgumentError(
                f"shapes classes={classes}: choose 2..{len(SHAPE_NAMES)} classes, or name them "
                f"joined by '+' from {'+'.join(SHAPE_NAMES)}"
            )
        return list(SHAPE_NAMES[:classes])
    names = [str(c).strip() for c in classes]
    for n in names:
        if n not in SHAPE_NAMES:
            raise InvalidArgumentError(
                f"unknown shape {n!r}; shapes are {', '.join(SHAPE_NAMES)}."
                + suggest(n, SHAPE_NAMES)
            )
    if len(set(names)) != len(names) or len(names) < 2:
        raise InvalidArgumentError(
            f"shapes classes={'+'.join(names)}: name at least 2 different shapes, e.g. "
            "classes=circle+square"
        )
    return names
