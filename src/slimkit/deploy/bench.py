"""``slimkit bench``'s engine: load models from names, checkpoints or ONNX files, prepare
them for each runtime, and time them all interleaved (DESIGN.md's protocol)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.analysis.latency import (
    LatencyStats,
    cpu_info,
    measure_callables,
    ort_runner,
    torch_runner,
)
from slimkit.errors import InvalidArgumentError

__all__ = ["BenchEntry", "load_for_bench", "run_bench", "RUNTIMES"]

RUNTIMES = ("torch", "torch-channels_last", "torch-compile", "onnxruntime")


@dataclass
class BenchEntry:
    """One thing to time: a PyTorch model and/or an ONNX file, and its input shape."""

    label: str
    model: nn.Module | None
    onnx_path: Path | None
    input_shape: tuple[int, int, int]
    macs: int | None = None


def load_for_bench(spec: str, input_size: int | None = None) -> BenchEntry:
    """A zoo model name, a ``.safetensors`` checkpoint or an ``.onnx`` file."""
    from slimkit.analysis.profile import count_macs
    from slimkit.models import create_model, is_model

    path = Path(spec)
    if path.suffix == ".onnx":
        from slimkit.deploy.onnx_export import ort_session, read_onnx_metadata

        meta = read_onnx_metadata(path)
        session = ort_session(path, threads=1)
        dims = session.get_inputs()[0].shape
        shape = meta.get("input_size") or [d if isinstance(d, int) else None for d in dims[1:]]
        if input_size:
            shape = [shape[0] or 3, input_size, input_size]
        if not shape or any(d is None for d in shape):
            raise InvalidArgumentError(f"{path.name} has no fixed input size; pass --input-size")
        return BenchEntry(path.name, None, path, tuple(int(d) for d in shape))  # type: ignore
    if path.suffix == ".safetensors":
        from slimkit.train.checkpoint import load_checkpoint

        loaded = load_checkpoint(path)
        model = loaded.model.eval()
        shape = list(loaded.meta.input_size or [3, 224, 224])
        label = path.parent.name + "/" + path.name if path.parent.name else path.name
    elif is_model(spec):
        model = create_model(spec).eval()
        shape = list(model.pretrained_cfg["input_size"])
        label = spec
    else:
        # an unknown name: let create_model raise its "did you mean" error
        create_model(spec)
        raise AssertionError("unreachable")
    if input_size:
        shape = [shape[0], input_size, input_size]
    macs = count_macs(model, torch.zeros(1, *shape))
    return BenchEntry(label, model, None, tuple(shape), macs)  # type: ignore[arg-type]


def run_bench(entries: list[BenchEntry], runtimes: list[str], *, batch_size: int = 1,
              threads: int = 2, warmup: int = 10, runs: int = 100,
              workdir: str | Path | None = None) -> dict[str, Any]:
    """Prepare every (entry, runtime) pair and time all of them interleaved.

    Models are exported to ONNX (with the parity check) for the ``onnxruntime`` runtime;
    ONNX files run only there. Returns rows in entry-then-runtime order plus machine info.
    """
    from slimkit.deploy.onnx_export import export_onnx, ort_session

    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise InvalidArgumentError(f"unknown runtime {unknown[0]!r}; choose from {RUNTIMES}")
    tmp = Path(workdir or tempfile.mkdtemp(prefix="slimkit-bench-"))
    fns: dict[str, Any] = {}
    labels: dict[str, str] = {}
    meta: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for i, e in enumerate(entries):
        x = torch.randn(batch_size, *e.input_shape)
        for rt in runtimes:
            key = f"{e.label} [{rt}]"
            if rt.startswith("torch"):
                if e.model is None:
                    skipped.append(f"{e.label}: an ONNX file runs only in onnxruntime")
                    continue
                if rt == "torch-compile":
                    try:
                        compiled = torch.compile(e.model)
                        torch_runner(compiled, x)()
                    except Exception as exc:  # compile needs a C++ toolchain and may fail
                        skipped.append(f"{e.label}: torch.compile failed "
                                       f"({type(exc).__name__})")
                        continue
                    fns[key] = torch_runner(compiled, x)
                else:
                    fns[key] = torch_runner(e.model, x, channels_last=rt.endswith("last"))
            else:
                path = e.onnx_path
                if path is None:
                    assert e.model is not None
                    path = export_onnx(e.model, torch.zeros(1, *e.input_shape),
                                       tmp / f"{i}.onnx", overwrite=True).path
                fns[key] = ort_runner(ort_session(path, threads=threads), x)
            labels[key] = rt
            meta[key] = {"model": e.label, "runtime": rt, "macs": e.macs,
                         "input_shape": list(e.input_shape)}
    if not fns:
        raise InvalidArgumentError("nothing to time: " + "; ".join(skipped))
    stats: dict[str, LatencyStats] = measure_callables(fns, labels, batch_size=batch_size,
                                                       threads=threads, warmup=warmup, runs=runs)
    first = next(iter(stats.values())).median_ms
    rows = []
    for key, s in stats.items():
        row = {**meta[key], **s.to_dict(), "speedup_vs_first": first / s.median_ms}
        rows.append(row)
    return {"rows": rows, "skipped": skipped, "machine": cpu_info(), "batch_size": batch_size,
            "threads": threads, "warmup": warmup, "runs": runs}
