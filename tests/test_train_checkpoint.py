"""Checkpoints: safetensors + JSON metadata, rebuilt in a fresh process, never unpickled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from slimkit.errors import FileFormatError, InvalidArgumentError
from slimkit.models import create_model
from slimkit.train import CheckpointMeta, load_checkpoint, read_checkpoint_meta, save_checkpoint
from slimkit.train.checkpoint import OutputExistsError, module_structure


def _zoo(tmp_path: Path) -> tuple[nn.Module, Path]:
    model = create_model("mobilenet_v3_small_100", num_classes=5, in_chans=1, small_input=True)
    model.eval()
    meta = CheckpointMeta(class_names=list("abcde"))
    meta.add_stage("train", params={"epochs": 1}, metrics={"test_top1": 12.5})
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    return model, path


def test_roundtrip_in_a_fresh_process(tmp_path: Path) -> None:
    model, path = _zoo(tmp_path)
    x = torch.randn(2, 1, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        expected = model(x)
    code = (
        "import sys, torch, slimkit\n"
        "from slimkit.train import load_checkpoint\n"
        f"ck = load_checkpoint({str(path)!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)\n"
        "with torch.no_grad(): y = ck.model.eval()(x)\n"
        f"torch.save(y, {str(tmp_path / 'y.pt')!r})\n"
        "print(ck.meta.class_names, ck.meta.lineage[0]['stage'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, check=True).stdout
    assert "['a', 'b', 'c', 'd', 'e'] train" in out
    got = torch.load(tmp_path / "y.pt", weights_only=True)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)  # thread count may differ


def test_metadata_contents(tmp_path: Path) -> None:
    _, path = _zoo(tmp_path)
    meta = read_checkpoint_meta(path)
    assert meta.arch == {"name": "mobilenet_v3_small_100",
                         "kwargs": {"num_classes": 5, "in_chans": 1, "small_input": True}}
    assert meta.num_classes == 5 and meta.input_size == [1, 32, 32]
    assert meta.lineage[0]["metrics"]["test_top1"] == 12.5
    assert meta.structure is None  # nothing differs from a fresh build


def test_no_overwrite_without_force(tmp_path: Path) -> None:
    model, path = _zoo(tmp_path)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="--force"):
        save_checkpoint(path, model)
    assert path.read_bytes() == before
    save_checkpoint(path, model, overwrite=True)
    assert list(tmp_path.glob(".*tmp")) == []  # no temporary files left behind


def test_truncated_checkpoint(tmp_path: Path) -> None:
    _, path = _zoo(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="truncated|damaged"):
        load_checkpoint(bad)


def test_foreign_and_missing_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(FileFormatError, match="pretrained=PATH"):
        load_checkpoint(plain)
    with pytest.raises(FileFormatError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(InvalidArgumentError, match=".safetensors"):
        save_checkpoint(tmp_path / "m.pth", nn.Linear(2, 2))


def test_newer_format_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save

    blob = save({"model.w": torch.zeros(1)},
                metadata={"slimkit": json.dumps({"format": "slimkit-checkpoint",
                                                 "format_version": 99})})
    path = tmp_path / "future.safetensors"
    path.write_bytes(blob)
    with pytest.raises(FileFormatError, match="upgrade slimkit"):
        load_checkpoint(path)


def test_checkpoint_of_another_architecture(tmp_path: Path) -> None:
    _, path = _zoo(tmp_path)
    other = create_model("resnet20", num_classes=5)
    with pytest.raises(FileFormatError, match="does not fit"):
        load_checkpoint(path, model=other)


class UserNet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_user_model_needs_an_instance(tmp_path: Path) -> None:
    model = UserNet()
    path = save_checkpoint(tmp_path / "u.safetensors", model)
    with pytest.raises(FileFormatError, match="model="):
        load_checkpoint(path)
    loaded = load_checkpoint(path, model=UserNet())
    x = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(loaded.model.eval()(x), model.eval()(x))


def test_resized_layers_are_rebuilt_from_the_structure(tmp_path: Path) -> None:
    """A model whose channels were changed (as pruning does) reloads from arch + structure."""
    model = create_model("resnet20", num_classes=4).eval()
    block = model.stages[0][0]
    # remove 6 of the 16 hidden channels of the first block, as a pruner would
    keep = torch.arange(10)
    conv1, bn1, conv2 = block.conv1.conv, block.conv1.bn, block.conv2.conv
    new1 = nn.Conv2d(16, 10, 3, padding=1, bias=False)
    new1.weight.data = conv1.weight.data[keep].clone()
    newbn = nn.BatchNorm2d(10)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(newbn, name).data = getattr(bn1, name).data[keep].clone()
    new2 = nn.Conv2d(10, 16, 3, padding=1, bias=False)
    new2.weight.data = conv2.weight.data[:, keep].clone()
    block.conv1.conv, block.conv1.bn, block.conv2.conv = new1, newbn, new2
    model.eval()
    assert set(module_structure(model, create_model("resnet20", num_classes=4))) == {
        "stages.0.0.conv1.conv", "stages.0.0.conv1.bn", "stages.0.0.conv2.conv"}
    path = save_checkpoint(tmp_path / "pruned.safetensors", model)
    loaded = load_checkpoint(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x), model(x))
    assert loaded.model.stages[0][0].conv1.conv.out_channels == 10


def test_training_state_tensors_travel(tmp_path: Path) -> None:
    model = UserNet()
    state = {"optim.0.momentum_buffer": torch.randn(8, 1, 3, 3), "rng.torch":
             torch.get_rng_state()}
    path = save_checkpoint(tmp_path / "s.safetensors", model,
                           CheckpointMeta(training={"epoch": 3}), state=state)
    loaded = load_checkpoint(path, model=UserNet())
    assert loaded.meta.training == {"epoch": 3}
    torch.testing.assert_close(loaded.state["optim.0.momentum_buffer"],
                               state["optim.0.momentum_buffer"])
