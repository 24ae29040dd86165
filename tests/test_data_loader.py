"""BatchLoader: determinism, exact resume, distributed split, batched augmentation."""

from __future__ import annotations

import pytest
import torch

from slimkit.data import BatchLoader, TensorImageDataset, load_dataset
from slimkit.data.folder import ImageFolderDataset
from slimkit.data.transforms import random_crop
from slimkit.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def bundle():
    return load_dataset("shapes:n_train=230,n_test=50,size=16")


def make_loader(dataset, batch_size=32, **kw):
    kw.setdefault("shuffle", True)
    kw.setdefault("seed", 7)
    kw.setdefault("augment", "crop_flip")
    channels = dataset.images.shape[1] if hasattr(dataset, "images") else 3
    kw.setdefault("mean", [0.5] * channels)
    kw.setdefault("std", [0.25] * channels)
    return BatchLoader(dataset, batch_size, **kw)


def batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def same(a, b):
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b)
    )


def test_batches_shapes_dtypes_and_len(bundle):
    loader = make_loader(bundle.train)
    out = batches(loader)
    assert len(out) == len(loader) == -(-len(bundle.train) // 32)
    x, y = out[0]
    assert x.dtype == torch.float32 and x.shape == (32, 3, 16, 16)
    assert y.dtype == torch.int64 and y.shape == (32,)
    assert sum(len(y) for _, y in out) == len(bundle.train)
    assert len(make_loader(bundle.train, drop_last=True)) == len(bundle.train) // 32


def test_normalization_without_augmentation(bundle):
    loader = BatchLoader.for_bundle(bundle, "val", 16)
    assert not loader.shuffle and loader.augment == "none"
    x, y = next(iter(loader))
    mean = torch.tensor(bundle.mean).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std).view(1, 3, 1, 1)
    expected = (bundle.val.images[:16].float() / 255 - mean) / std
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, bundle.val.labels[:16])
    # the dataset's own storage is never modified
    before = bundle.val.images.clone()
    list(loader)
    assert torch.equal(before, bundle.val.images)


def test_same_seed_same_batches_and_epochs_differ(bundle):
    a, b = make_loader(bundle.train), make_loader(bundle.train)
    first = batches(a)
    assert same(first, batches(b))
    assert same(first, batches(a))  # iterating again replays the epoch
    a.set_epoch(1)
    second = batches(a)
    assert not torch.equal(first[0][1], second[0][1]) or not torch.equal(first[0][0], second[0][0])
    order0 = make_loader(bundle.train).rank_indices()
    a.set_epoch(1)
    order1 = a.rank_indices()
    assert not torch.equal(order0, order1)
    assert torch.equal(order0.sort().values, torch.arange(len(bundle.train)))
    other_seed = make_loader(bundle.train, seed=8)
    assert not torch.equal(other_seed.rank_indices(), order0)


def test_no_shuffle_keeps_dataset_order(bundle):
    loader = make_loader(bundle.train, shuffle=False, augment="none")
    labels = torch.cat([y for _, y in loader])
    assert torch.equal(labels, bundle.train.labels)


@pytest.mark.parametrize("k", [0, 1, 3, 7, 8, 20])
def test_start_batch_skips_without_changing_the_rest(bundle, k):
    full = make_loader(bundle.train)
    full.set_epoch(2)
    reference = batches(full)
    resumed = make_loader(bundle.train)
    resumed.set_epoch(2)
    resumed.set_start_batch(k)
    assert same(batches(resumed), reference[k:])
    # the offset is consumed: the next pass is a full epoch again
    assert same(batches(resumed), reference)


def test_state_dict_round_trip_mid_epoch(bundle):
    loader = make_loader(bundle.train)
    loader.set_epoch(3)
    reference = batches(loader)
    it = iter(loader)
    for _ in range(4):
        next(it)
    state = loader.state_dict()
    assert state["epoch"] == 3 and state["start_batch"] == 4
    fresh = make_loader(bundle.train)
    fresh.load_state_dict(state)
    fresh.set_epoch(3)  # the usual epoch loop calls this again: it must keep the offset
    assert same(batches(fresh), reference[4:])
    assert fresh.state_dict()["start_batch"] == len(fresh)  # the epoch is done
    fresh.set_epoch(4)
    assert fresh.state_dict() == {**state, "epoch": 4, "start_batch": 0}
    # a start batch attribute set directly works too
    direct = make_loader(bundle.train)
    direct.set_epoch(3)
    direct.start_batch = 2
    assert same(batches(direct), reference[2:])


def test_state_dict_refuses_other_batch_size(bundle):
    state = make_loader(bundle.train).state_dict()
    with pytest.raises(InvalidArgumentError, match="same batch_size"):
        make_loader(bundle.train, batch_size=16).load_state_dict(state)


@pytest.mark.parametrize("n", [230, 231, 5])
def test_two_ranks_cover_the_dataset(n):
    dataset = TensorImageDataset(torch.zeros((n, 1, 4, 4), dtype=torch.uint8), torch.arange(n) % 3)
    loaders = [
        make_loader(dataset, batch_size=8, rank=r, world_size=2, mean=[0.0], std=[1.0])
        for r in range(2)
    ]
    parts = [lo.rank_indices() for lo in loaders]
    assert len(parts[0]) == len(parts[1]) == -(-n // 2)
    assert len(loaders[0]) == len(loaders[1])
    assert set(torch.cat(parts).tolist()) == set(range(n))
    overlap = set(parts[0].tolist()) & set(parts[1].tolist())
    assert len(overlap) == (n % 2)  # only the padding repeats
    for lo, part in zip(loaders, parts):
        assert sum(len(y) for _, y in lo) == len(part)
    dropped = [
        make_loader(
            dataset, batch_size=8, rank=r, world_size=2, drop_last=True, mean=[0.0], std=[1.0]
        ).rank_indices()
        for r in range(2)
    ]
    assert not set(dropped[0].tolist()) & set(dropped[1].tolist())
    assert len(dropped[0]) == len(dropped[1]) == n // 2


def test_ranks_augment_differently_but_reproducibly(bundle):
    def first_batch(rank):
        return next(iter(make_loader(bundle.train, rank=rank, world_size=2, shuffle=False)))[0]

    assert torch.equal(first_batch(0), first_batch(0))
    assert not torch.equal(first_batch(0)[:4], first_batch(1)[:4])


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` moved by (dy, dx) pixels with zeros coming in."""
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        ..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def test_random_crop_shifts_content():
    torch.manual_seed(0)
    x = torch.rand(64, 2, 10, 12) + 0.1  # no zeros, so padding is visible
    out = random_crop(x, 3, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    shifts = []
    for i in range(len(x)):
        found = [
            (dy, dx)
            for dy in range(-3, 4)
            for dx in range(-3, 4)
            if torch.equal(out[i], shifted(x[i], dy, dx))
        ]
        assert len(found) == 1, f"sample {i} is not a shifted copy"
        shifts.append(found[0])
    assert len(set(shifts)) > 10 and any(s != (0, 0) for s in shifts)
    # uint8 gives the same result as float
    x8 = (x * 200).to(torch.uint8)
    torch.testing.assert_close(
        random_crop(x8, 3, torch.Generator().manual_seed(1)).float(),
        random_crop(x8.float(), 3, torch.Generator().manual_seed(1)),
    )


def test_loader_crop_and_flip_presets():
    n = 64
    images = torch.zeros((n, 1, 8, 8), dtype=torch.uint8)
    images[:, 0, 2, 1] = 255  # one bright pixel left of centre
    dataset = TensorImageDataset(images, torch.zeros(n, dtype=torch.int64))
    kw = {"shuffle": False, "mean": [0.0], "std": [1.0], "batch_size": n}

    def bright_positions(augment, pad=2):
        x, _ = next(iter(make_loader(dataset, augment=augment, pad=pad, **kw)))
        assert x.shape == (n, 1, 8, 8)
        flat = x.view(n, -1)
        assert torch.all(flat.max(1).values <= 1.0)
        return {(int(i) // 8, int(i) % 8) for i in flat.argmax(1)}

    assert bright_positions("none") == {(2, 1)}
    flips = bright_positions("flip")
    assert flips == {(2, 1), (2, 6)}
    crops = bright_positions("crop")
    assert len(crops) > 5 and all(abs(r - 2) <= 2 and abs(c - 1) <= 2 for r, c in crops)
    assert any(c > 4 for _, c in bright_positions("crop_flip"))


def test_loader_resizes_to_input_size(bundle):
    loader = make_loader(bundle.train, input_size=24)
    x, _ = next(iter(loader))
    assert x.shape == (32, 3, 24, 24)


def test_lazy_dataset_batches_match_in_memory(tmp_path):
    from PIL import Image

    paths, labels = [], []
    for i in range(12):
        p = tmp_path / f"{i}.png"
        Image.fromarray(torch.randint(0, 256, (8, 8, 3), dtype=torch.uint8).numpy()).save(p)
        paths.append(p)
        labels.append(i % 2)
    lazy = ImageFolderDataset(paths, torch.tensor(labels), input_size=8, channels=3)
    eager = lazy.load_all()
    assert same(batches(make_loader(lazy, batch_size=5)), batches(make_loader(eager, batch_size=5)))


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"augment": "crop-flip"}, "Did you mean: crop_flip"),
        ({"mean": [0.5], "std": [0.2]}, "pass the bundle's mean and std"),
        ({"std": [0.2, 0.0, 0.1]}, "std > 0"),
        ({"rank": 2, "world_size": 2}, "rank must be in"),
        ({"batch_size": 0}, "positive int"),
        ({"pad": -1}, "non-negative"),
    ],
)
def test_loader_argument_errors(bundle, kwargs, fix):
    with pytest.raises(InvalidArgumentError, match=fix):
        make_loader(bundle.train, **kwargs)
