"""The latency harness: statistics, interleaving, per-module attribution (no speed asserts)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimkit.analysis.latency import (
    cpu_info,
    measure_torch,
    per_module_latency,
    summarize,
    time_interleaved,
)
from slimkit.errors import InvalidArgumentError


def test_summarize_statistics() -> None:
    times = [i / 1000 for i in range(1, 11)]  # 1..10 ms
    s = summarize("m", times, runtime="torch", batch_size=4, threads=2, warmup=0)
    assert s.median_ms == pytest.approx(5.5)
    assert s.p90_ms == pytest.approx(9.0) and s.min_ms == pytest.approx(1.0)
    assert s.mean_ms == pytest.approx(5.5)
    assert s.throughput == pytest.approx(4 / 0.0055)
    with pytest.raises(InvalidArgumentError):
        summarize("m", [], runtime="torch", batch_size=1, threads=1, warmup=0)


def test_interleaving_order() -> None:
    calls: list[str] = []
    times = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                             warmup=2, runs=3)
    assert calls == ["a", "a", "b", "b", "a", "b", "a", "b", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}


def test_measure_torch_records_protocol_fields() -> None:
    models = {"small": nn.Conv2d(3, 4, 3), "big": nn.Conv2d(3, 64, 3)}
    threads_before = torch.get_num_threads()
    stats = measure_torch(models, (3, 16, 16), batch_size=2, threads=1, warmup=1, runs=5)
    assert set(stats) == {"small", "big"}
    for s in stats.values():
        assert s.runs == 5 and s.batch_size == 2 and s.threads == 1 and s.median_ms > 0
        assert s.min_ms <= s.median_ms <= s.p90_ms
    assert torch.get_num_threads() == threads_before


def test_per_module_latency_names() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    times = per_module_latency(model, torch.randn(1, 3, 16, 16), ["0", "2"], threads=1,
                               warmup=1, runs=3)
    assert set(times) == {"0", "2"} and all(t > 0 for t in times.values())
    with pytest.raises(InvalidArgumentError, match="no submodule"):
        per_module_latency(model, torch.randn(1, 3, 16, 16), ["9"])


def test_cpu_info_fields() -> None:
    info = cpu_info()
    assert info["torch"] == torch.__version__ and isinstance(info["isa"], list)
