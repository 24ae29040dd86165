"""Conv -> depthwise-separable restructuring against the analytic 1/O + 1/k^2 ratio."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimkit.compress.fuse import separable_from_conv, to_separable
from slimkit.errors import InvalidArgumentError
from slimkit.models import create_model
from slimkit.nn.costs import separable_cost_ratio


def test_exactly_separable_weights_are_reproduced() -> None:
    conv = nn.Conv2d(6, 10, 3, padding=1, bias=True)
    with torch.no_grad():  # W[o, c] = p[o, c] * d[c]: a separable convolution in disguise
        conv.weight.copy_(torch.randn(10, 6, 1, 1) * torch.randn(1, 6, 3, 3))
    pair, err = separable_from_conv(conv)
    x = torch.randn(2, 6, 9, 9)
    assert err < 1e-6
    torch.testing.assert_close(pair(x), conv(x), rtol=1e-4, atol=1e-5)
    assert pair[0].groups == 6 and pair[1].kernel_size == (1, 1)


def test_the_fit_is_the_best_rank_one_per_channel() -> None:
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    pair, err = separable_from_conv(conv)
    w = conv.weight.detach()
    approx = pair[1].weight.detach()[:, :, 0, 0, None, None] * pair[0].weight.detach()[:, 0][None]
    assert float((w - approx).norm() / w.norm()) == pytest.approx(err, rel=1e-4)
    # any other rank-1 factorisation of one channel is no better
    c = 0
    alt = torch.outer(torch.randn(8), torch.randn(9))
    assert (w[:, c].reshape(8, 9) - alt).norm() >= (w[:, c] - approx[:, c]).norm()


def test_savings_match_the_analytic_ratio_on_a_zoo_model() -> None:
    model = create_model("resnet18", num_classes=10, small_input=True).eval()
    result = to_separable(model, torch.zeros(1, 3, 32, 32))
    assert len(result.layers) == 17  # every 3x3 conv; the 1x1 shortcuts are skipped
    assert {n for n, _ in result.skipped} == {f"stages.{i}.0.downsample.conv" for i in (1, 2, 3)}
    for layer in result.layers:
        analytic = separable_cost_ratio(layer.out_channels, layer.kernel_size)
        if layer.in_channels == layer.out_channels:  # the ratio is 1/O + 1/k^2 when C = O
            assert layer.macs_after / layer.macs_before == pytest.approx(analytic)
        assert layer.params_after < layer.params_before
    out = result.model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    exported = torch.export.export(result.model, (torch.randn(1, 3, 32, 32),))
    assert exported is not None


def test_layer_selection_and_errors() -> None:
    model = create_model("resnet20", num_classes=10).eval()
    result = to_separable(model, torch.zeros(1, 3, 32, 32), layers=["stages.0.0.conv1.conv"])
    assert [layer.name for layer in result.layers] == ["stages.0.0.conv1.conv"]
    with pytest.raises(InvalidArgumentError, match="not a Conv2d"):
        to_separable(model, torch.zeros(1, 3, 32, 32), layers=["stages.0.0.conv1"])


def test_rewritten_models_save_and_load(tmp_path) -> None:
    """decompose -> prune -> conv-to-separable, saved and rebuilt from the checkpoint alone."""
    from slimkit.compress.decompose import decompose
    from slimkit.compress.pruning import prune
    from slimkit.train import load_checkpoint, save_checkpoint

    x = torch.randn(2, 3, 32, 32)
    model = create_model("resnet20", num_classes=10).eval()
    model = decompose(model, energy=0.8, example_inputs=x[:1]).model.eval()
    model = prune(model, x[:1], ratio=0.25).model.eval()
    model = to_separable(model, x[:1], layers=["stem.0.conv"]).model.eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    loaded = load_checkpoint(path)
    assert [r["kind"] for r in loaded.meta.rewrites] == ["decompose", "separable"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x), model(x), rtol=0, atol=0)
