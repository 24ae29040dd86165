"""BatchNorm re-calibration of pruned models (adaptive BN)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from slimkit.compress.pruning import prune, recalibrate_bn


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Dropout(0.5), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))


def test_statistics_are_the_exact_average_over_the_batches() -> None:
    net = _net().eval()
    batches = [(torch.randn(5, 3, 6, 6) * 2 + 1, torch.zeros(5)) for _ in range(3)]
    feats = torch.cat([net[0](x) for x, _ in batches])  # BN1's input, all images
    recalibrate_bn(net, batches)
    bn = net[1]
    assert torch.allclose(bn.running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    # PyTorch keeps the unbiased per-batch variance; the cumulative average is over batches
    per_batch = torch.stack([net[0](x).var(dim=(0, 2, 3), unbiased=True) for x, _ in batches])
    assert torch.allclose(bn.running_var, per_batch.mean(0), atol=1e-4)
    assert bn.momentum == 0.1  # restored
    assert not any(m.training for m in net.modules())  # eval mode restored


def test_weights_untouched_and_train_mode_kept() -> None:
    net = _net().train()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k
              and "num_batches" not in k}
    recalibrate_bn(net, [torch.randn(4, 3, 6, 6)])
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert all(m.training for m in net.modules())


def test_failure_restores_the_old_statistics() -> None:
    net = _net().eval()
    mean = net[1].running_mean.clone()
    with pytest.raises(RuntimeError):
        recalibrate_bn(net, [torch.randn(2, 5, 6, 6)])  # wrong channel count
    assert torch.equal(net[1].running_mean, mean)
    assert net[1].momentum == 0.1


def test_recovers_a_pruned_model_whose_statistics_no_longer_match() -> None:
    """A trained BN model pruned hard: re-estimated statistics bring its outputs back
    towards the unpruned model's (the test fails if recalibration does nothing)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))
    data = [torch.randn(16, 3, 8, 8) for _ in range(8)]
    recalibrate_bn(model, data)  # statistics that match the unpruned model
    model.eval()
    x = torch.randn(1, 3, 8, 8)
    pruned = prune(model, x, ratio=0.6, ignore=["8"]).model.eval()
    stale = copy.deepcopy(pruned)
    recalibrate_bn(pruned, data)
    bn = pruned[4]
    fresh_input = torch.cat([pruned[:4](d) for d in data])
    true_mean = fresh_input.mean(dim=(0, 2, 3))
    err_stale = (stale[4].running_mean - true_mean).abs().mean()
    err_fresh = (bn.running_mean - true_mean).abs().mean()
    assert err_fresh < 1e-4 < err_stale
