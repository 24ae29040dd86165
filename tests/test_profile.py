"""The profiler on any nn.Module, checked against hand counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimkit.analysis import HOROWITZ_45NM, count_macs, profile
from slimkit.errors import InvalidArgumentError
from slimkit.models import create_model


class UserNet(nn.Module):
    """A user model, not from the zoo: conv 3->8 (3x3, s1, pad 1), pool, linear 8->5."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def test_user_module_hand_counts() -> None:
    prof = profile(UserNet(), (3, 16, 16))
    conv_macs = 3 * 3 * 3 * 8 * 16 * 16
    fc_macs = 8 * 5
    assert prof.params == (3 * 9 * 8 + 8) + (8 * 5 + 5)
    assert prof.macs == conv_macs + fc_macs
    rows = {r.name: r for r in prof.layers}
    assert rows["conv"].macs == conv_macs and rows["conv"].output_shape == (1, 8, 16, 16)
    assert rows["fc"].macs == fc_macs and rows["relu"].macs == 0
    assert sum(r.macs_share for r in prof.layers) == pytest.approx(1.0)
    # activations: every leaf output once, 4 bytes each
    expected_act = 4 * (8 * 16 * 16 * 2 + 8 + 5)
    assert prof.activation_bytes == expected_act
    assert prof.weight_bytes_fp32 == 4 * prof.params and prof.weight_bytes_int8 == prof.params


def test_batch_scales_macs_not_params() -> None:
    one = profile(UserNet(), 16)
    four = profile(UserNet(), 16, batch_size=4)
    assert four.macs == 4 * one.macs and four.params == one.params


def test_energy_formula_uses_documented_constants() -> None:
    prof = profile(UserNet(), 16)
    e = HOROWITZ_45NM
    expected_pj = prof.macs * e.mac_fp32_pj + (prof.weight_bytes_fp32 + prof.activation_bytes) \
        * e.dram_pj_per_byte
    assert prof.energy_fp32_mj == pytest.approx(expected_pj * 1e-9)
    assert prof.energy_int8_mj < prof.energy_fp32_mj


def test_profile_does_not_touch_the_model() -> None:
    model = create_model("mobilenet_v2_035", num_classes=10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile(model, 64)
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert next(model.parameters()).device.type == "cpu"


def test_meta_and_real_counts_agree() -> None:
    model = create_model("ghostnet_050", num_classes=10)
    meta = profile(model, 64)
    real = profile(model, 64, on_meta=False)
    assert meta.macs == real.macs and meta.activation_bytes == real.activation_bytes
    assert meta.macs == count_macs(model.eval(), torch.randn(1, 3, 64, 64))


def test_default_input_size_comes_from_the_model() -> None:
    prof = profile(create_model("efficientnet_b1"))
    assert prof.input_shape == (1, 3, 240, 240)
    with pytest.raises(InvalidArgumentError, match="input_size"):
        profile(UserNet())


def test_wrong_input_shape_is_a_user_error() -> None:
    with pytest.raises(InvalidArgumentError):
        profile(UserNet(), (1, 2, 3, 4, 5))
    with pytest.raises(InvalidArgumentError, match="cannot run"):
        profile(UserNet(), (5, 16, 16))  # conv expects 3 channels
