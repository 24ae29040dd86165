"""Foreign state dicts (torchvision / timm naming) map onto slimkit models by position.

torchvision and timm do not import beside this torch build, so the foreign files are made
here: our weights renamed with the other library's naming rules (ResNet and MobileNetV2 as
torchvision names them, GhostNet's 1x1-conv head as timm stores it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from slimkit.errors import FileFormatError
from slimkit.models import create_model


def torchvision_resnet_name(key: str) -> str:
    key = key.replace("stem.0.conv.", "conv1.").replace("stem.0.bn.", "bn1.")
    key = re.sub(r"^stages\.(\d+)\.", lambda m: f"layer{int(m.group(1)) + 1}.", key)
    key = re.sub(r"\.conv(\d)\.conv\.", r".conv\1.", key)
    key = re.sub(r"\.conv(\d)\.bn\.", r".bn\1.", key)
    key = key.replace(".downsample.conv.", ".downsample.0.").replace(".downsample.bn.",
                                                                     ".downsample.1.")
    return key.replace("classifier.", "fc.")


def torchvision_mobilenet_v2_names(model: torch.nn.Module) -> list[str]:
    """features.0 stem, features.1..17 blocks (conv.0 = expand/dw ...), features.18 head."""
    names = []
    for key in model.state_dict():
        if key.startswith("stem.0."):
            names.append(key.replace("stem.0.conv.", "features.0.0.")
                         .replace("stem.0.bn.", "features.0.1."))
        elif key.startswith("head_conv."):
            names.append(key.replace("head_conv.conv.", "features.18.0.")
                         .replace("head_conv.bn.", "features.18.1."))
        elif key.startswith("classifier."):
            names.append(key.replace("classifier.", "classifier.1."))
        else:
            names.append(f"features.x.{key}")  # block internals: position is what matters
    # number the blocks as torchvision does (1..17), keeping the tensor kind suffix
    out, block_ids = [], {}
    for n in names:
        m = re.match(r"features\.x\.stages\.(\d+)\.(\d+)\.(.*)", n)
        if m:
            bid = block_ids.setdefault((m.group(1), m.group(2)), len(block_ids) + 1)
            out.append(f"features.{bid}.conv.{m.group(3).replace('.', '_', 1)}")
        else:
            out.append(n)
    return out


def _save(tmp_path: Path, tensors: dict[str, torch.Tensor], name: str) -> Path:
    """torchvision and timm distribute .pth/.bin state dicts, which keep the tensor order."""
    path = tmp_path / name
    torch.save(dict(tensors), path)
    return path


def _check_same_function(a: torch.nn.Module, b: torch.nn.Module, size: int) -> None:
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_torchvision_resnet_names(tmp_path: Path) -> None:
    src = create_model("resnet18")
    foreign = {torchvision_resnet_name(k): v for k, v in src.state_dict().items()}
    assert "layer4.1.bn2.running_var" in foreign and "fc.weight" in foreign
    dst = create_model("resnet18", pretrained=_save(tmp_path, foreign, "tv.pth"))
    _check_same_function(src, dst, 64)


def test_torchvision_mobilenet_v2_with_a_new_head(tmp_path: Path) -> None:
    src = create_model("mobilenet_v2")
    names = torchvision_mobilenet_v2_names(src)
    foreign = dict(zip(names, src.state_dict().values(), strict=True))
    path = _save(tmp_path, foreign, "tv_mbv2.pth")
    dst = create_model("mobilenet_v2", num_classes=5, pretrained=path)
    assert dst.classifier.out_features == 5
    src.reset_classifier(0)
    dst.reset_classifier(0)
    _check_same_function(src, dst, 64)  # the whole backbone came over


def test_timm_ghostnet_conv_head(tmp_path: Path) -> None:
    src = create_model("ghostnet_100")
    foreign = {}
    for i, (k, v) in enumerate(src.state_dict().items()):
        if k == "pre_logits.0.weight":
            v = v[:, :, None, None]  # timm: conv_head is a 1x1 Conv2d with bias
        foreign[f"t{i:04d}.{k.rsplit('.', 1)[-1]}"] = v
    dst = create_model("ghostnet_100", pretrained=_save(tmp_path, foreign, "timm.bin"))
    _check_same_function(src, dst, 64)


def test_misaligned_foreign_weights_are_refused(tmp_path: Path) -> None:
    src = create_model("resnet18")
    items = list(src.state_dict().items())
    items[0], items[5] = items[5], items[0]  # a different order: no silent mapping
    foreign = {f"other.{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(items)}
    with pytest.raises(FileFormatError, match="do not fit"):
        create_model("resnet18", pretrained=_save(tmp_path, foreign, "bad.pth"))


def test_grayscale_input_from_rgb_weights(tmp_path: Path) -> None:
    src = create_model("resnet18")
    foreign = {torchvision_resnet_name(k): v for k, v in src.state_dict().items()}
    dst = create_model("resnet18", in_chans=1,
                       pretrained=_save(tmp_path, foreign, "tv.pth")).eval()
    gray = torch.randn(1, 1, 64, 64)
    with torch.no_grad():  # a gray image seen as equal R, G, B gives the same logits
        torch.testing.assert_close(dst(gray), src.eval()(gray.expand(1, 3, 64, 64)),
                                   rtol=1e-4, atol=1e-4)


def test_foreign_safetensors_cannot_be_mapped_by_position(tmp_path: Path) -> None:
    """safetensors stores tensors sorted by name, so the position mapping is impossible; the
    error says so instead of guessing."""
    src = create_model("resnet18")
    foreign = {torchvision_resnet_name(k): v.contiguous() for k, v in src.state_dict().items()}
    path = tmp_path / "tv.safetensors"
    save_file(foreign, str(path))
    with pytest.raises(FileFormatError, match="order"):
        create_model("resnet18", pretrained=path)
