"""Every dataset spec kind on tiny generated files, and every user error they can raise."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slimkit.data import (
    DatasetBundle,
    ImageFolderDataset,
    TensorImageDataset,
    describe_dataset_kinds,
    list_dataset_kinds,
    load_dataset,
)
from slimkit.data import fashion_mnist as fmnist_module
from slimkit.errors import FileFormatError, InvalidArgumentError, SlimkitError

# --------------------------------------------------------------------------- helpers


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


def check_bundle(bundle: DatasetBundle) -> None:
    """The contract every kind must honour."""
    assert len(bundle.train) > 0 and len(bundle.test) > 0
    for split in (bundle.train, bundle.val, bundle.test):
        if len(split) == 0:
            continue
        image, label = split[0]
        assert image.dtype == torch.uint8
        assert tuple(image.shape) == (bundle.in_chans, bundle.input_size, bundle.input_size)
        assert isinstance(label, int) and 0 <= label < bundle.num_classes
        assert split.labels.dtype == torch.int64 and len(split.labels) == len(split)
    assert len(bundle.class_names) == bundle.num_classes
    assert len(bundle.mean) == len(bundle.std) == bundle.in_chans
    assert all(0 < s for s in bundle.std)
    meta = bundle.to_metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert set(meta) == {
        "name",
        "num_classes",
        "class_names",
        "in_chans",
        "input_size",
        "mean",
        "std",
    }


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> None:
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def make_fashion(folder: Path, *, gz: bool, n_train: int = 50, n_test: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            folder / f"{split}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), gz=gz
        )
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz=gz)


def cifar_arrays(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [i % 10 for i in range(n)]


def make_cifar_py(folder: Path, *, protocol: int = 2, n: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        data, labels = cifar_arrays(n, i)
        # the real files have bytes keys when read back in Python 3; use both forms
        batch = (
            {b"data": data, b"labels": labels, b"batch_label": b"x"}
            if i % 2
            else {"data": data, "labels": labels, "filenames": ["a.png"] * n}
        )
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    names = [
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
    ]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}, protocol=2))
    return folder


def make_cifar_bin(folder: Path, *, n: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        data, labels = cifar_arrays(n, i)
        records = np.concatenate([np.array(labels, np.uint8)[:, None], data], axis=1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())
    (folder / "batches.meta.txt").write_text("\n".join(f"c{k}" for k in range(10)) + "\n\n")
    return folder


def save_image(path: Path, size: tuple[int, int] = (8, 8), mode: str = "RGB", value: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def make_tree(root: Path, classes=("cat", "dog", "emu"), per_class: int = 10, **kw) -> Path:
    for c in classes:
        for i in range(per_class):
            save_image(root / c / f"{i}.png", value=hash((c, i)) % 1000, **kw)
    return root


# --------------------------------------------------------------------------- kinds


def test_list_and_describe_kinds():
    assert list_dataset_kinds() == ["digits", "shapes", "fashion-mnist", "cifar10"]
    described = describe_dataset_kinds()
    assert "PATH" in described and any(k.startswith("shapes") for k in described)


def test_digits():
    bundle = load_dataset("digits")
    check_bundle(bundle)
    assert bundle.name == "digits" and bundle.augment == "crop"
    assert (bundle.num_classes, bundle.in_chans, bundle.input_size) == (10, 1, 32)
    sizes = bundle.split_sizes()
    assert sum(sizes.values()) == 1797
    assert abs(sizes["test"] - 0.2 * 1797) < 10 and abs(sizes["val"] - 0.1 * 0.8 * 1797) < 10
    assert bundle.train.images.max() > 200  # 0..16 scaled to 0..255
    # stratified: every class in every split
    for split in (bundle.train, bundle.val, bundle.test):
        assert len(torch.unique(split.labels)) == 10
    # the test split does not depend on the seed; val does
    other = load_dataset("digits", seed=1, input_size=16, channels=3)
    assert other.test.images.shape[1:] == (3, 16, 16)
    assert torch.equal(other.test.labels, bundle.test.labels)
    assert not torch.equal(other.val.labels, bundle.val.labels)


def test_shapes_deterministic_and_options():
    a = load_dataset("shapes:n_train=120,n_test=40,classes=5,difficulty=0.7")
    b = load_dataset("shapes", n_train=120, n_test=40, classes=5, difficulty=0.7)
    check_bundle(a)
    assert a.name == b.name == "shapes:classes=5,difficulty=0.7,n_test=40,n_train=120"
    assert torch.equal(a.train.images, b.train.images)
    assert torch.equal(a.test.images, b.test.images)
    assert (a.in_chans, a.input_size, a.num_classes) == (3, 32, 5)
    assert a.class_names[:4] == ["circle", "square", "triangle", "cross"]
    assert len(a.train) + len(a.val) == 120 and len(a.test) == 40
    c = load_dataset("shapes:n_train=120,n_test=40,classes=5,difficulty=0.7,seed=3")
    assert not torch.equal(a.train.images, c.train.images)
    # the canonical name reloads the same data
    assert torch.equal(load_dataset(a.name).train.images, a.train.images)


def test_shapes_named_classes_size_and_default_speed():
    bundle = load_dataset("shapes:classes=ring+star,size=24,n_train=40,n_test=10", channels=1)
    assert bundle.class_names == ["ring", "star"] and bundle.input_size == 24
    assert bundle.in_chans == 1
    assert bundle.name == "shapes:classes=ring+star,n_test=10,n_train=40,size=24"
    full = load_dataset("shapes", input_size=20)
    assert full.split_sizes() == {"train": 1800, "val": 200, "test": 500}
    assert full.input_size == 20 and full.name == "shapes"


def test_shapes_difficulty_changes_images():
    easy = load_dataset("shapes:n_train=50,n_test=10,difficulty=0").train.images.float()
    hard = load_dataset("shapes:n_train=50,n_test=10,difficulty=1").train.images.float()
    # an easy image is white on black: almost every pixel is 0 or 255
    extreme = ((easy == 0) | (easy == 255)).float().mean()
    assert extreme > 0.85
    assert ((hard == 0) | (hard == 255)).float().mean() < extreme


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_tiny_files(tmp_path, gz):
    make_fashion(tmp_path / "fm", gz=gz)
    bundle = load_dataset(f"fashion-mnist:{tmp_path / 'fm'}", val_fraction=0.2)
    check_bundle(bundle)
    assert bundle.split_sizes() == {"train": 40, "val": 10, "test": 20}
    assert bundle.class_names[0] == "T-shirt/top" and bundle.class_names[9] == "Ankle boot"
    assert (bundle.in_chans, bundle.input_size, bundle.augment) == (1, 28, "crop_flip")
    assert bundle.name == f"fashion-mnist:{(tmp_path / 'fm').resolve()}"
    resized = load_dataset(f"fashion-mnist:{tmp_path / 'fm'}", input_size=32, channels=3)
    assert resized.train.images.shape[1:] == (3, 32, 32)


def test_fashion_mnist_search_order(tmp_path, monkeypatch):
    make_fashion(tmp_path / "data" / "fashion-mnist", gz=True)
    monkeypatch.setenv("SLIMKIT_DATA", str(tmp_path / "data"))
    bundle = load_dataset("fashion-mnist")
    assert bundle.name == "fashion-mnist" and len(bundle.test) == 20
    # download_dir comes first
    make_fashion(tmp_path / "dl", gz=False, n_test=30)
    assert len(load_dataset("fmnist", download_dir=tmp_path / "dl").test) == 30


def test_fashion_mnist_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMKIT_DATA", str(tmp_path / "nothing"))
    monkeypatch.setattr(fmnist_module, "SYSTEM_DIR", tmp_path / "no-system-copy")
    with pytest.raises(FileFormatError) as exc:
        load_dataset("fashion-mnist")
    message = one_line(exc)
    assert "apt-get install dataset-fashion-mnist" in message and "fashion-mnist:PATH" in message
    (tmp_path / "partial").mkdir()
    with pytest.raises(FileFormatError, match="t10k-labels-idx1-ubyte"):
        load_dataset(f"fashion-mnist:{tmp_path / 'partial'}")


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_truncated_file_is_named(tmp_path, gz):
    folder = tmp_path / "fm"
    make_fashion(folder, gz=gz)
    victim = folder / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    victim.write_bytes(victim.read_bytes()[: -300 if not gz else len(victim.read_bytes()) // 2])
    with pytest.raises(FileFormatError) as exc:
        load_dataset(f"fashion-mnist:{folder}")
    message = one_line(exc)
    assert str(victim) in message and "re-download" in message


def test_fashion_mnist_wrong_magic_and_mismatch(tmp_path):
    folder = tmp_path / "fm"
    make_fashion(folder, gz=False)
    # a labels file where an images file should be
    (folder / "t10k-images-idx3-ubyte").write_bytes(
        (folder / "t10k-labels-idx1-ubyte").read_bytes()
    )
    with pytest.raises(FileFormatError, match="magic number 2049 \\(expected 2051\\)"):
        load_dataset(f"fashion-mnist:{folder}")
    make_fashion(folder, gz=False)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(7), gz=False)
    with pytest.raises(FileFormatError, match="do not match"):
        load_dataset(f"fashion-mnist:{folder}")


REAL_FASHION = [
    p
    for p in (
        os.environ.get("SLIMKIT_DATA", "") and Path(os.environ["SLIMKIT_DATA"]) / "fashion-mnist",
        Path("/usr/share/datasets/fashion-mnist"),
    )
    if p and (p / "t10k-labels-idx1-ubyte.gz").exists()
]


@pytest.mark.skipif(
    not REAL_FASHION, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"
)
def test_fashion_mnist_real_files():
    bundle = load_dataset(f"fashion-mnist:{REAL_FASHION[0]}")
    check_bundle(bundle)
    assert bundle.split_sizes() == {"train": 54000, "val": 6000, "test": 10000}
    assert torch.bincount(bundle.test.labels).tolist() == [1000] * 10
    assert torch.bincount(bundle.val.labels).tolist() == [600] * 10
    assert abs(bundle.mean[0] - 0.286) < 0.01 and abs(bundle.std[0] - 0.353) < 0.01


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_python_batches(tmp_path, protocol):
    folder = make_cifar_py(tmp_path / "cifar-10-batches-py", protocol=protocol)
    bundle = load_dataset(f"cifar10:{folder}", val_fraction=0.2)
    check_bundle(bundle)
    assert bundle.split_sizes() == {"train": 40, "val": 10, "test": 10}
    assert (bundle.in_chans, bundle.input_size, bundle.class_names[1]) == (3, 32, "automobile")
    # pixels are channel-major: the first 1024 values are the red plane
    data, _ = cifar_arrays(10, 5)
    assert torch.equal(bundle.test.images[0, 0].flatten(), torch.from_numpy(data[0, :1024]))
    # the parent folder works too
    assert load_dataset(f"cifar10:{tmp_path}").name == f"cifar10:{folder.resolve()}"


def test_cifar10_numpy1_spelling_is_allowed(tmp_path):
    folder = make_cifar_py(tmp_path / "c", protocol=2)
    for path in folder.glob("*_batch*"):
        data = path.read_bytes()
        # Python 2 / numpy 1 pickles name numpy.core, numpy 2 writes numpy._core
        path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in (folder / "test_batch").read_bytes()
    assert len(load_dataset(f"cifar10:{folder}").test) == 10


def test_cifar10_binary_batches(tmp_path):
    folder = make_cifar_bin(tmp_path / "cifar-10-batches-bin")
    bundle = load_dataset(f"cifar10:{folder}")
    check_bundle(bundle)
    assert bundle.class_names == [f"c{k}" for k in range(10)]
    assert len(bundle.test) == 10 and len(bundle.train) + len(bundle.val) == 50
    data, labels = cifar_arrays(10, 5)
    assert bundle.test.labels.tolist() == labels
    assert torch.equal(bundle.test.images[3].flatten(), torch.from_numpy(data[3]))


def test_cifar10_errors(tmp_path):
    folder = make_cifar_bin(tmp_path / "bin")
    victim = folder / "data_batch_3.bin"
    victim.write_bytes(victim.read_bytes()[:-5])
    with pytest.raises(FileFormatError) as exc:
        load_dataset(f"cifar10:{folder}")
    assert str(victim) in one_line(exc)
    (folder / "test_batch.bin").unlink()
    with pytest.raises(FileFormatError, match="missing test_batch.bin"):
        load_dataset(f"cifar10:{folder}")
    with pytest.raises(FileFormatError, match="cifar-10-batches-py"):
        load_dataset(f"cifar10:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileFormatError, match="no CIFAR-10 batches"):
        load_dataset(f"cifar10:{tmp_path / 'empty'}")


def test_cifar10_refuses_malicious_pickle(tmp_path):
    folder = make_cifar_py(tmp_path / "c")
    marker = tmp_path / "pwned"
    # protocol 0: GLOBAL os.system, then call it with a shell command
    (folder / "data_batch_2").write_bytes(
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    )
    with pytest.raises(FileFormatError) as exc:
        load_dataset(f"cifar10:{folder}")
    message = one_line(exc)
    assert "refusing to load" in message and "os.system" in message
    assert str(folder / "data_batch_2") in message
    assert not marker.exists()


# --------------------------------------------------------------------------- image folders


def test_folder_single_tree(tmp_path):
    root = make_tree(tmp_path / "pets", per_class=10)
    (root / "cat" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "dog" / ".hidden").mkdir()
    (root / "dog" / ".hidden" / "x.png").write_bytes(b"junk")
    (root / "README.md").write_text("not a class")
    bundle = load_dataset(str(root))
    check_bundle(bundle)
    assert bundle.class_names == ["cat", "dog", "emu"]
    assert bundle.name == str(root.resolve())
    assert sum(bundle.split_sizes().values()) == 30
    assert bundle.split_sizes()["test"] == 6  # 20 % of each class
    assert (bundle.in_chans, bundle.input_size) == (3, 8)
    assert isinstance(bundle.train, TensorImageDataset)
    again = load_dataset(str(root), seed=5)
    assert torch.equal(again.test.images, bundle.test.images)  # fixed test split


def test_folder_pixels_match_files(tmp_path):
    root = make_tree(tmp_path / "t", classes=("a", "b"), per_class=3, mode="L")
    bundle = load_dataset(str(root), val_fraction=0.0, test_fraction=0.0)
    assert len(bundle.train) == 6 and len(bundle.val) == 0
    expected = np.array(Image.open(root / "a" / "0.png"))
    assert torch.equal(bundle.train.images[0, 0], torch.from_numpy(expected))


def test_folder_split_layouts(tmp_path):
    root = tmp_path / "ds"
    make_tree(root / "train", per_class=6)
    make_tree(root / "val", per_class=2)
    make_tree(root / "test", classes=("cat", "emu"), per_class=3)
    bundle = load_dataset(str(root))
    assert bundle.split_sizes() == {"train": 18, "val": 6, "test": 6}
    assert set(bundle.test.labels.tolist()) == {0, 2}
    # only one held-out folder: it is the test split, val comes out of train
    only_test = tmp_path / "ds2"
    make_tree(only_test / "train", per_class=10)
    make_tree(only_test / "val", per_class=2)
    bundle = load_dataset(str(only_test), val_fraction=0.2)
    assert bundle.split_sizes() == {"train": 24, "val": 6, "test": 6}


def test_folder_lazy_matches_in_memory(tmp_path):
    root = make_tree(tmp_path / "t", per_class=4)
    eager = load_dataset(str(root), in_memory=True)
    lazy = load_dataset(str(root), in_memory=False)
    assert isinstance(lazy.train, ImageFolderDataset)
    assert lazy.split_sizes() == eager.split_sizes()
    image, label = lazy.train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 8)
    assert torch.equal(image, eager.train.images[0]) and label == eager.train.labels[0]
    assert torch.equal(lazy.train.labels, eager.train.labels)
    assert len(lazy.mean) == 3


def test_folder_resize_and_convert(tmp_path):
    root = tmp_path / "mixed"
    save_image(root / "a" / "big.png", size=(20, 12))
    save_image(root / "a" / "small.png", size=(8, 8))
    save_image(root / "b" / "grey.png", size=(8, 8), mode="L")
    save_image(root / "b" / "grey2.png", size=(8, 8), mode="L")
    with pytest.raises(FileFormatError) as exc:
        load_dataset(str(root), channels=3)
    message = one_line(exc)
    assert "big.png is 20x12" in message and "8x8" in message and "input_size" in message
    with pytest.raises(FileFormatError) as exc:
        load_dataset(str(root), input_size=8)
    message = one_line(exc)
    assert "grey" in message and "channels=1 or channels=3" in message
    assert "is L" in message and "is RGB" in message
    bundle = load_dataset(str(root), input_size=8, channels=1, val_fraction=0, test_fraction=0)
    assert bundle.train.images.shape == (4, 1, 8, 8)


def test_folder_not_square(tmp_path):
    root = tmp_path / "wide"
    for c in ("a", "b"):
        save_image(root / c / "x.png", size=(12, 8))
    with pytest.raises(FileFormatError, match="not square; pass input_size"):
        load_dataset(str(root))
    assert load_dataset(str(root), input_size=6, val_fraction=0).input_size == 6


def test_folder_corrupt_files_are_listed(tmp_path):
    root = make_tree(tmp_path / "t", classes=("a", "b"), per_class=3)
    bad = [root / "a" / f"bad{i}.png" for i in range(6)] + [root / "b" / "notes.txt"]
    for p in bad:
        p.write_bytes(b"this is not an image")
    with pytest.raises(FileFormatError) as exc:
        load_dataset(str(root))
    message = one_line(exc)
    assert "7 file(s)" in message and "and 2 more" in message
    assert sum(str(p) in message for p in bad) == 5


def test_folder_bad_files_in_several_splits_are_all_listed(tmp_path):
    root = tmp_path / "s"
    make_tree(root / "train", classes=("a", "b"), per_class=2)
    make_tree(root / "test", classes=("a", "b"), per_class=1)
    bad = [root / "train" / "a" / "0.png", root / "test" / "b" / "0.png"]
    for p in bad:
        p.write_bytes(p.read_bytes()[:60])  # valid header, truncated pixel data
    with pytest.raises(FileFormatError) as exc:
        load_dataset(str(root))
    message = one_line(exc)
    assert "2 file(s)" in message and all(str(p) in message for p in bad)


def test_folder_symlink_loop_terminates(tmp_path):
    root = make_tree(tmp_path / "t", classes=("a", "b"), per_class=2)
    (root / "a" / "loop").symlink_to(root / "a", target_is_directory=True)
    assert sum(load_dataset(str(root), val_fraction=0).split_sizes().values()) == 4


def test_folder_truncated_image_is_named(tmp_path):
    root = tmp_path / "t"
    for c in ("a", "b"):
        for i in range(2):
            save_image(root / c / f"{i}.png", size=(64, 64), value=i)
    victim = root / "b" / "1.png"
    victim.write_bytes(victim.read_bytes()[:200])  # header intact, pixel data cut
    with pytest.raises(FileFormatError) as exc:
        load_dataset(str(root), val_fraction=0, test_fraction=0)
    assert str(victim) in one_line(exc)
    lazy = ImageFolderDataset([victim], torch.tensor([1]), input_size=64, channels=3)
    with pytest.raises(FileFormatError, match="cannot decode .*1.png"):
        lazy[0]


def test_folder_structure_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileFormatError, match="no class folders") as exc:
        load_dataset(str(tmp_path / "empty"))
    one_line(exc)
    make_tree(tmp_path / "one", classes=("only",), per_class=2)
    with pytest.raises(FileFormatError, match="only one class folder \\(only\\).*at least 2"):
        load_dataset(str(tmp_path / "one"))
    root = make_tree(tmp_path / "e", classes=("a", "b"), per_class=2)
    (root / "c").mkdir()
    with pytest.raises(FileFormatError, match="holds no files"):
        load_dataset(str(root))
    split = tmp_path / "s"
    make_tree(split / "train", classes=("a", "b"), per_class=2)
    make_tree(split / "test", classes=("a", "zebra"), per_class=1)
    with pytest.raises(FileFormatError, match="zebra has no counterpart"):
        load_dataset(str(split))
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(FileFormatError, match="is a file"):
        load_dataset(str(tmp_path / "file.png"))


# --------------------------------------------------------------------------- spec errors


@pytest.mark.parametrize(
    ("spec", "kwargs", "error", "fix"),
    [
        ("digts", {}, InvalidArgumentError, "Did you mean: digits"),
        ("cifar", {}, InvalidArgumentError, "cifar10"),
        ("./no/such/folder", {}, FileFormatError, "does not exist"),
        ("shapes:colour=3", {}, InvalidArgumentError, "valid options: augment, classes"),
        ("shapes:n_train=lots", {}, InvalidArgumentError, "must be an integer"),
        ("shapes:classes", {}, InvalidArgumentError, "key=value"),
        ("shapes:classes=circle+blob", {}, InvalidArgumentError, "unknown shape 'blob'"),
        ("shapes:classes=9", {}, InvalidArgumentError, "2..8"),
        ("shapes:difficulty=2", {}, InvalidArgumentError, "0..1"),
        ("shapes", {"augment": "crop-flip"}, InvalidArgumentError, "Did you mean: crop_flip"),
        ("digits", {"val_fraction": 1.5}, InvalidArgumentError, "val_fraction=0.1"),
        ("digits:test_fraction=1", {}, InvalidArgumentError, "test_fraction=0.2"),
        ("digits", {"channels": 2}, InvalidArgumentError, "1 (grey) or 3 (RGB)"),
        ("digits", {"input_size": 0}, InvalidArgumentError, "positive int"),
        ("", {}, InvalidArgumentError, "digits"),
    ],
)
def test_spec_errors_name_the_fix(spec, kwargs, error, fix):
    with pytest.raises(error) as exc:
        load_dataset(spec, **kwargs)
    assert isinstance(exc.value, SlimkitError)
    message = one_line(exc)
    assert fix in message, message


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(InvalidArgumentError) as exc:
        load_dataset("fashion")
    message = one_line(exc)
    for kind in list_dataset_kinds():
        assert kind in message
    assert "image folder" in message and "Did you mean: fashion-mnist" in message
