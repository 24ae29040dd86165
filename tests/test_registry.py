"""Registry behaviour and loading weights without pickle."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from slimkit.errors import FileFormatError, InvalidArgumentError, UnknownModelError
from slimkit.models import create_model, is_model, list_models, register_model


def test_aliases_resolve_to_canonical_models() -> None:
    assert create_model("mobilenet_v2").slimkit_arch["name"] == "mobilenet_v2_100"
    assert create_model("shufflenet_v2").slimkit_arch["name"] == "shufflenet_v2_x1_0"
    assert is_model("mobilenet_v3_large") and not is_model("mobilenet_v9")


def test_unknown_model_lists_close_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        create_model("mobilenetv2")
    msg = str(info.value)
    assert "mobilenet_v2" in msg and "slimkit models" in msg
    assert "\n" not in msg


def test_list_models_patterns() -> None:
    v3 = list_models("mobilenet_v3*")
    assert v3 == ["mobilenet_v3_large_075", "mobilenet_v3_large_100",
                  "mobilenet_v3_small_075", "mobilenet_v3_small_100"]
    assert list_models("v3") == v3  # bare substrings match anywhere
    assert list_models("efficientnet_b?")[:3] == ["efficientnet_b0", "efficientnet_b1",
                                                  "efficientnet_b2"]
    assert list_models("no-such-thing") == []


def test_create_model_records_arguments() -> None:
    model = create_model("resnet18", num_classes=4, small_input=True)
    assert model.slimkit_arch == {"name": "resnet18",
                                  "kwargs": {"num_classes": 4, "small_input": True}}
    rebuilt = create_model(model.slimkit_arch["name"], **model.slimkit_arch["kwargs"])
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(InvalidArgumentError):
        create_model("mobilenet_v2", width_mult=0)
    with pytest.raises(InvalidArgumentError):
        create_model("mobilenet_v2", drop_rate=1.5)
    with pytest.raises(InvalidArgumentError):
        create_model("mobilenet_v2", no_such_option=3)


def test_register_a_user_model() -> None:
    @register_model("tiny_user_net_for_test", family="custom")
    def tiny_user_net_for_test(num_classes: int = 10) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(12, num_classes))

    model = create_model("tiny_user_net_for_test", num_classes=3)
    assert model(torch.randn(2, 3, 2, 2)).shape == (2, 3)
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_model("tiny_user_net_for_test", tiny_user_net_for_test)


def test_pretrained_safetensors_roundtrip(tmp_path) -> None:
    src = create_model("mobilenet_v3_small_100", num_classes=10).eval()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = create_model("mobilenet_v3_small_100", num_classes=10, pretrained=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_pretrained_pth_with_new_head(tmp_path) -> None:
    src = create_model("resnet20", num_classes=10)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    dst = create_model("resnet20", num_classes=4, pretrained=path)
    assert dst.classifier.out_features == 4
    torch.testing.assert_close(dst.stem[0].conv.weight, src.stem[0].conv.weight)


def test_pretrained_of_another_architecture_lists_keys(tmp_path) -> None:
    src = create_model("resnet20")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    with pytest.raises(FileFormatError) as info:
        create_model("resnet56", pretrained=path)
    assert "missing" in str(info.value) and "stages." in str(info.value)


def test_pretrained_refuses_pickled_objects(tmp_path) -> None:
    class Evil:
        def __reduce__(self):  # would run code on unpickling
            return (print, ("unpickled!",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"weight": Evil()}, f)
    with pytest.raises(FileFormatError, match="weights_only"):
        create_model("resnet20", pretrained=path)


@pytest.mark.parametrize("content,suffix", [(b"not a safetensors file", ".safetensors"),
                                            (b"\x00" * 10, ".pth"), (b"x", ".h5")])
def test_pretrained_corrupt_or_unknown_files(tmp_path, content: bytes, suffix: str) -> None:
    path = tmp_path / f"w{suffix}"
    path.write_bytes(content)
    with pytest.raises(FileFormatError):
        create_model("resnet20", pretrained=path)


def test_pretrained_missing_file(tmp_path) -> None:
    with pytest.raises(FileFormatError, match="does not exist"):
        create_model("resnet20", pretrained=tmp_path / "nope.safetensors")
