"""Latency measurement following the protocol in DESIGN.md.

Fixed thread count (reported), warm-up runs, then timed runs; medians and p90 are the
numbers to quote. Several candidates are timed *interleaved* (A, B, A, B, ...) so that
machine noise hits them alike and their ratio is fair.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from slimkit.errors import InvalidArgumentError

__all__ = [
    "LatencyStats",
    "summarize",
    "time_interleaved",
    "torch_runner",
    "measure_torch",
    "per_module_latency",
    "cpu_info",
    "torch_threads",
    "ort_runner",
    "measure_callables",
]


@dataclass
class LatencyStats:
    """Summary of timed runs, in milliseconds per call of ``batch_size`` inputs."""

    name: str
    runtime: str
    batch_size: int
    threads: int
    warmup: int
    runs: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    throughput: float  # inputs per second at the median

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(name: str, times_s: Sequence[float], *, runtime: str, batch_size: int,
              threads: int, warmup: int) -> LatencyStats:
    """Turn raw per-call times (seconds) into :class:`LatencyStats` (milliseconds)."""
    if not times_s:
        raise InvalidArgumentError("no timed runs to summarize; use runs >= 1")
    ms = sorted(t * 1e3 for t in times_s)
    median = statistics.median(ms)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return LatencyStats(
        name=name,
        runtime=runtime,
        batch_size=batch_size,
        threads=threads,
        warmup=warmup,
        runs=len(ms),
        median_ms=median,
        p90_ms=p90,
        mean_ms=statistics.fmean(ms),
        std_ms=statistics.stdev(ms) if len(ms) > 1 else 0.0,
        min_ms=ms[0],
        throughput=batch_size / (median / 1e3) if median > 0 else float("inf"),
    )


def time_interleaved(fns: Mapping[str, Callable[[], Any]], *, warmup: int = 10,
                     runs: int = 100) -> dict[str, list[float]]:
    """Warm each function up, then time them round-robin ``runs`` times each.

    Returns per-name lists of seconds per call.
    """
    if warmup < 0 or runs < 1:
        raise InvalidArgumentError(f"need warmup >= 0 and runs >= 1, got {warmup} and {runs}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Temporarily set PyTorch's intra-op thread count."""
    if threads < 1:
        raise InvalidArgumentError(f"threads must be >= 1, got {threads}")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def torch_runner(model: nn.Module, inputs: torch.Tensor,
                 channels_last: bool = False) -> Callable[[], Any]:
    """A no-grad eval-mode forward of ``model`` on ``inputs`` as a zero-argument callable."""
    model = model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)

    def run() -> Any:
        with torch.inference_mode():
            return model(inputs)

    return run


def measure_torch(
    models: Mapping[str, nn.Module] | nn.Module,
    input_shape: Sequence[int],
    *,
    batch_size: int = 1,
    threads: int = 2,
    warmup: int = 10,
    runs: int = 100,
    channels_last: bool = False,
) -> dict[str, LatencyStats]:
    """Time PyTorch eager inference of one or more models, interleaved.

    Args:
        models: one model or ``{name: model}``.
        input_shape: ``(C, H, W)`` of one input.
        batch_size: inputs per call.
        threads: intra-op threads (restored afterwards).
        warmup, runs: untimed and timed calls per model.
        channels_last: run in NHWC memory format.
    """
    if isinstance(models, nn.Module):
        models = {type(models).__name__: models}
    x = torch.randn(batch_size, *input_shape)
    runtime = "torch-channels_last" if channels_last else "torch"
    with torch_threads(threads):
        fns = {name: torch_runner(m, x, channels_last) for name, m in models.items()}
        times = time_interleaved(fns, warmup=warmup, runs=runs)
    return {
        name: summarize(name, t, runtime=runtime, batch_size=batch_size, threads=threads,
                        warmup=warmup)
        for name, t in times.items()
    }


def per_module_latency(
    model: nn.Module,
    inputs: torch.Tensor,
    module_names: Sequence[str],
    *,
    threads: int = 2,
    warmup: int = 3,
    runs: int = 20,
) -> dict[str, float]:
    """Median milliseconds spent inside each named submodule during eager inference.

    Forward pre/post hooks time the modules; the names must not nest (pick e.g. the stem,
    each stage and the head). The hooks add a few microseconds per module.
    """
    modules = dict(model.named_modules())
    unknown = [n for n in module_names if n not in modules]
    if unknown:
        raise InvalidArgumentError(f"no submodule named {unknown[0]!r} in this model")
    starts: dict[str, float] = {}
    samples: dict[str, list[float]] = {n: [] for n in module_names}
    current: dict[str, float] = {}

    def pre(name: str) -> Callable[..., None]:
        def fn(*_: Any) -> None:
            starts[name] = time.perf_counter()

        return fn

    def post(name: str) -> Callable[..., None]:
        def fn(*_: Any) -> None:
            current[name] = current.get(name, 0.0) + time.perf_counter() - starts[name]

        return fn

    handles = []
    for n in module_names:
        handles.append(modules[n].register_forward_pre_hook(pre(n)))
        handles.append(modules[n].register_forward_hook(post(n)))
    run = torch_runner(model, inputs)
    try:
        with torch_threads(threads):
            for _ in range(warmup):
                run()
            for _ in range(runs):
                current.clear()
                run()
                for n in module_names:
                    samples[n].append(current.get(n, 0.0))
    finally:
        for h in handles:
            h.remove()
    return {n: statistics.median(v) * 1e3 for n, v in samples.items()}


def cpu_info() -> dict[str, Any]:
    """CPU model, ISA flags relevant to inference kernels, and library versions."""
    model_name, flags = platform.processor() or "unknown", set()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model_name in ("unknown", "x86_64", ""):
                    model_name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    interesting = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16",
                   "amx_int8", "avx_vnni"]
    return {
        "cpu": model_name,
        "machine": platform.machine(),
        "isa": [f for f in interesting if f in flags],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def ort_runner(session: Any, inputs: torch.Tensor) -> Callable[[], Any]:
    """A zero-argument callable running an ONNX Runtime session on ``inputs``."""
    name = session.get_inputs()[0].name
    feed = {name: inputs.numpy()}

    def run() -> Any:
        return session.run(None, feed)

    return run


def measure_callables(fns: Mapping[str, Callable[[], Any]], runtimes: Mapping[str, str], *,
                      batch_size: int, threads: int, warmup: int = 10, runs: int = 100
                      ) -> dict[str, LatencyStats]:
    """Time several prepared callables interleaved; ``runtimes`` labels each one."""
    with torch_threads(threads):
        times = time_interleaved(fns, warmup=warmup, runs=runs)
    return {name: summarize(name, t, runtime=runtimes[name], batch_size=batch_size,
                            threads=threads, warmup=warmup) for name, t in times.items()}
