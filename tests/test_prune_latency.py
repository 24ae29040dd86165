"""Latency-aware pruning allocation: the ONNX Runtime probe, the latency lookup table in the
sensitivity analysis, the allocation that spends accuracy per measured millisecond, and
pruning to a latency fraction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimkit.analysis import count_macs
from slimkit.compress.pruning import (
    OrtLatencyProbe,
    SensitivityResult,
    allocation_path,
    prune_to_target,
    sensitivity_analysis,
)
from slimkit.data import load_dataset
from slimkit.errors import InvalidArgumentError
from slimkit.models import create_model


def _convnet(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)).eval()


def test_probe_times_models_against_the_reference() -> None:
    """A 16x narrower network (256x fewer MACs in the middle conv) keeps far less than the
    reference's latency; the reference against itself keeps about all of it. The margins
    are wide on purpose: this checks the probe's wiring, not a speed target."""
    x = torch.randn(1, 3, 64, 64)
    with OrtLatencyProbe(_convnet(64), x, threads=1, runs=15, warmup=2) as probe:
        assert probe.reference_ms > 0 and not probe.int8
        assert probe.describe()["runtime"] == "onnxruntime"
        assert probe.kept(_convnet(4)) < 0.5
        assert 0.5 < probe.kept(_convnet(64)) < 2.0


def test_probe_quantizes_when_given_calibration() -> None:
    x = torch.randn(1, 3, 32, 32)
    calib = [torch.randn(4, 3, 32, 32).numpy()]
    with OrtLatencyProbe(_convnet(16), x, threads=1, runs=3, warmup=1,
                         calibration=calib) as probe:
        assert probe.int8 and probe.describe()["int8"] is True
        assert probe.kept(_convnet(8)) > 0


def test_probe_rejects_bad_settings() -> None:
    with pytest.raises(InvalidArgumentError, match=r"\(1, C, H, W\)"):
        OrtLatencyProbe(_convnet(4), torch.randn(2, 3, 8, 8))
    with pytest.raises(InvalidArgumentError, match="runs"):
        OrtLatencyProbe(_convnet(4), torch.randn(1, 3, 8, 8), runs=0)
    with pytest.raises(InvalidArgumentError, match="quantile"):
        OrtLatencyProbe(_convnet(4), torch.randn(1, 3, 8, 8), quantile=1.0)


def _table(rows: list[tuple[str, float, float, float, float]]) -> SensitivityResult:
    return SensitivityResult(base_top1=90.0, base_macs=1000, ratios=[0.3, 0.5, 0.7], rows=[
        {"layer": layer, "ratio": r, "top1": 90.0 - d, "drop": d, "macs_saved": m,
         "latency_saved": t} for layer, r, d, m, t in rows])


def test_latency_allocation_spends_accuracy_where_time_is_saved() -> None:
    # "wide" saves many MACs but no measured time (overhead-bound); "slow" saves time
    table = _table([
        ("wide", 0.3, 0.1, 0.20, 0.00), ("wide", 0.5, 0.2, 0.30, -0.01),
        ("wide", 0.7, 0.4, 0.40, 0.00),
        ("slow", 0.3, 0.5, 0.05, 0.10), ("slow", 0.5, 1.0, 0.08, 0.20),
        ("slow", 0.7, 3.0, 0.10, 0.30),
        ("noisy", 0.3, 0.2, 0.05, -0.02), ("noisy", 0.5, 0.3, 0.08, 0.05),
        ("noisy", 0.7, 0.6, 0.10, 0.04),
    ])
    by_macs = allocation_path(table, by="macs")
    assert by_macs[0][0] == {"wide": 0.3}  # cheapest per MAC
    by_time = allocation_path(table, by="latency")
    layers_used = set().union(*(set(r) for r, _ in by_time))
    assert "wide" not in layers_used  # buys no time: never pruned
    # "noisy" measured no saving at 0.3: stepped over to 0.5 (cost 0.3/0.05 = 6), which is
    # dearer than "slow" 0.3 (0.5/0.10 = 5) -> slow first, then slow 0.5 (5), then noisy
    assert [r for r, _ in by_time][:3] == [{"slow": 0.3}, {"slow": 0.5},
                                           {"slow": 0.5, "noisy": 0.5}]
    assert [round(s, 3) for _, s in by_time[:3]] == [0.1, 0.2, 0.25]
    # 0.7 of "noisy" saves less than 0.5 did: never taken
    assert all(r.get("noisy") != 0.7 for r, _ in by_time)


def test_latency_allocation_needs_measured_latency() -> None:
    table = SensitivityResult(base_top1=90.0, base_macs=10, ratios=[0.5], rows=[
        {"layer": "a", "ratio": 0.5, "top1": 80.0, "drop": 10.0, "macs_saved": 0.2}])
    with pytest.raises(InvalidArgumentError, match="latency probe"):
        allocation_path(table, by="latency")
    with pytest.raises(InvalidArgumentError, match="allocate by"):
        allocation_path(table, by="energy")
    with pytest.raises(InvalidArgumentError, match="latency probe"):
        prune_to_target(nn.Linear(2, 2), table, 0.5, by="latency")


class _FakeProbe:
    """Deterministic 'latency': a fixed overhead plus a part proportional to MACs."""

    def __init__(self, reference: nn.Module, x: torch.Tensor) -> None:
        self.x = x
        self.macs0 = count_macs(reference.eval(), x)
        self.calls = 0

    def describe(self) -> dict:
        return {"runtime": "fake"}

    def kept(self, model: nn.Module) -> float:
        self.calls += 1
        return 0.4 + 0.6 * count_macs(model.eval(), self.x) / self.macs0


def test_sensitivity_records_latency_and_prunes_to_a_latency_fraction() -> None:
    data = load_dataset("shapes:n_train=64,n_test=32,size=16", seed=0)
    model = create_model("resnet20", num_classes=data.num_classes, in_chans=3).eval()
    x = torch.zeros(1, 3, 16, 16)
    probe = _FakeProbe(model, x)
    result = sensitivity_analysis(model, data, ratios=(0.5, 0.8), samples=32,
                                  latency_probe=probe)  # type: ignore[arg-type]
    assert all("latency_saved" in r for r in result.rows)
    for r in result.rows:  # what the probe said, per row
        assert r["latency_saved"] == pytest.approx(0.6 * r["macs_saved"])
    res, ratios = prune_to_target(model, result, 0.7, by="latency",
                                  probe=probe)  # type: ignore[arg-type]
    assert probe.kept(res.model) <= 0.7 and ratios
    assert res.model(torch.randn(2, 3, 16, 16)).shape == (2, data.num_classes)
    # the overhead (0.4) cannot be pruned away: a clear error, not a wrong model
    with pytest.raises(InvalidArgumentError, match="cannot reach"):
        prune_to_target(model, result, 0.3, by="latency", probe=probe)  # type: ignore[arg-type]


def test_sensitivity_with_a_real_probe() -> None:
    data = load_dataset("shapes:n_train=64,n_test=32,size=16", seed=0)
    model = create_model("resnet20", num_classes=data.num_classes, in_chans=3).eval()
    x = torch.zeros(1, 3, 16, 16)
    with OrtLatencyProbe(model, x, threads=1, runs=3, warmup=1) as probe:
        layer = sensitivity_analysis(model, data, ratios=(0.5,), samples=32).rows[0]["layer"]
        result = sensitivity_analysis(model, data, ratios=(0.5,), samples=32, layers=[layer],
                                      latency_probe=probe)
    assert result.latency is not None and result.latency["threads"] == 1
    assert len(result.rows) == 1 and isinstance(result.rows[0]["latency_saved"], float)
    # a table saved without latency loads and still allocates by MACs
    again = SensitivityResult(**{k: v for k, v in result.to_dict().items() if k != "latency"})
    assert allocation_path(again, by="macs")
