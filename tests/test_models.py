"""One suite over every registered model (new models join by registering)."""

from __future__ import annotations

import math

import pytest
import torch

from slimkit.analysis import count_macs, count_params
from slimkit.models import create_model, get_model_entry, list_models

ALL_MODELS = list_models()
PUBLISHED = [n for n in ALL_MODELS if get_model_entry(n).published is not None]
# big models get a smaller test image: their structure, not their resolution, is under test
TEST_SIZE = 64


def test_zoo_is_large_enough() -> None:
    assert len(ALL_MODELS) >= 25
    families = {get_model_entry(n).family for n in ALL_MODELS}
    assert {"mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "efficientnet", "shufflenet_v2",
            "ghostnet", "resnet"} <= families


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward(name: str) -> None:
    model = create_model(name, num_classes=7)
    model.train()
    x = torch.randn(2, 3, TEST_SIZE, TEST_SIZE)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    nonfinite = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not nonfinite


@pytest.mark.parametrize("name", ALL_MODELS)
def test_features_head_and_feature_info(name: str) -> None:
    model = create_model(name, num_classes=5).eval()
    x = torch.randn(1, 3, TEST_SIZE, TEST_SIZE)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        pre = model.forward_head(feats, pre_logits=True)
        torch.testing.assert_close(logits, model(x))
    info = model.feature_info
    assert feats.shape[1] == info[-1]["num_chs"]
    assert feats.shape[-1] == math.ceil(TEST_SIZE / info[-1]["reduction"])
    assert pre.shape == (1, model.num_features)
    reductions = [f["reduction"] for f in info]
    assert reductions == sorted(reductions)
    modules = dict(model.named_modules())
    for f in info:
        assert f["module"] in modules
    # each listed stage really outputs num_chs channels at its reduction
    seen: dict[str, torch.Tensor] = {}
    hooks = [modules[f["module"]].register_forward_hook(
        lambda m, a, o, key=f["module"]: seen.__setitem__(key, o)) for f in info]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for f in info:
        out = seen[f["module"]]
        assert out.shape[1] == f["num_chs"], f
        assert out.shape[-1] == math.ceil(TEST_SIZE / f["reduction"]), f


@pytest.mark.parametrize("name", ALL_MODELS)
def test_reset_classifier(name: str) -> None:
    model = create_model(name, num_classes=10).eval()
    model.reset_classifier(3)
    x = torch.randn(1, 3, TEST_SIZE, TEST_SIZE)
    assert model(x).shape == (1, 3)
    model.reset_classifier(0)
    assert model(x).shape == (1, model.num_features)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_small_input_variant(name: str) -> None:
    model = create_model(name, num_classes=10, small_input=True, in_chans=1).eval()
    assert model.pretrained_cfg["input_size"] == (1, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 1, 28, 28))
        out = model.forward_head(feats)
    assert out.shape == (2, 10)
    # a 28-32 px input keeps a spatial map of at least 4x4 (total stride <= 8)
    assert feats.shape[-1] >= 4
    assert model.feature_info[-1]["reduction"] <= 8


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_params_and_macs(name: str) -> None:
    pub = get_model_entry(name).published
    assert pub is not None
    with torch.device("meta"):
        model = create_model(name, num_classes=pub.num_classes).eval()
        x = torch.zeros(1, 3, pub.input_size, pub.input_size)
    params = count_params(model)
    macs = count_macs(model, x)
    assert abs(params / pub.params - 1) <= 0.01, (params, pub.params)
    assert abs(macs / pub.macs - 1) <= 0.05, (macs, pub.macs)


EXACT_TORCHVISION_PARAMS = {
    "mobilenet_v2_100": 3_504_872,
    "mobilenet_v3_large_100": 5_483_032,
    "mobilenet_v3_small_100": 2_542_856,
    "efficientnet_b0": 5_288_548,
    "efficientnet_b3": 12_233_232,
    "shufflenet_v2_x1_0": 2_278_604,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
}


@pytest.mark.parametrize("name", sorted(EXACT_TORCHVISION_PARAMS))
def test_param_count_is_exact_where_torchvision_publishes_it(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    assert count_params(model) == EXACT_TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_torch_export(name: str) -> None:
    model = create_model(name, num_classes=10).eval()
    x = torch.randn(1, 3, TEST_SIZE, TEST_SIZE)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-5)


def test_efficientnet_compound_scaling_is_data() -> None:
    from slimkit.models.efficientnet import COMPOUND

    for variant, c in COMPOUND.items():
        model = create_model(f"efficientnet_{variant}")
        assert model.pretrained_cfg["input_size"][-1] == c.resolution
        assert model.drop_rate == c.dropout
    b0 = create_model("efficientnet_b0")
    b7 = create_model("efficientnet_b7")
    n_b0 = sum(len(s) for s in b0.stages)
    n_b7 = sum(len(s) for s in b7.stages)
    assert n_b0 == 16
    assert n_b7 == 55  # ceil(n * 3.1) per row: 4+7+7+10+10+13+4
    assert b7.num_features == 2560


def test_width_multiplier_rounds_channels() -> None:
    model = create_model("mobilenet_v2_100", width_mult=0.5)
    half = create_model("mobilenet_v2_050")
    assert count_params(model) == count_params(half)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.out_channels not in (1000,):
            assert m.out_channels % 8 == 0


def test_small_input_mobilenet_v2_matches_the_cifar_port() -> None:
    """REFERENCE_NUMBERS: chenyaofo mobilenetv2_x1_0 on CIFAR-10 has 2.24 M params, 88 M MACs
    (stem stride 1 and the second stage's stride 1)."""
    model = create_model("mobilenet_v2", num_classes=10, small_input=True).eval()
    params = count_params(model)
    macs = count_macs(model, torch.zeros(1, 3, 32, 32))
    assert abs(params / 2.24e6 - 1) < 0.01
    assert abs(macs / 88e6 - 1) < 0.05
    strides = [m.conv_dw.conv.stride[0] for s in model.stages for m in s]
    assert model.stem[0].conv.stride == (1, 1)
    assert strides[:2] == [1, 1]  # the 24-channel stage keeps stride 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_at_default_resolution(name: str) -> None:
    """Real compute at each model's published resolution (up to 600 px for B7)."""
    model = create_model(name).eval()
    size = model.pretrained_cfg["input_size"]
    with torch.no_grad():
        out = model(torch.randn(1, *size))
    assert out.shape == (1, model.num_classes) and torch.isfinite(out).all()
