"""Benchmark: torch eager vs ONNX Runtime fp32 vs ONNX Runtime INT8 at 224 px.

For each model: export (verified), INT8 static QDQ per-channel quantization (calibrated on
random normal inputs: latency does not depend on the values, accuracy is measured in
quantize_fashion_mnist.py), then batch 1 and batch 32 latency with the three runtimes timed
interleaved at a fixed thread count. Beside each row, the physical floor: the model's FLOPs
(2 x MACs) over this machine's measured fp32 GEMM peak (and int8 GEMM peak where
measurable), so the table says how close each runtime gets.

    python benchmarks/deploy_latency.py --runs 100
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from slimkit.analysis.latency import cpu_info, measure_callables, ort_runner, torch_runner
from slimkit.analysis.profile import count_macs
from slimkit.compress.quantization import int8_node_types, quantize_onnx
from slimkit.deploy import export_onnx, ort_session
from slimkit.models import create_model

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ["mobilenet_v2_100", "mobilenet_v3_large_100", "efficientnet_b0",
          "shufflenet_v2_x1_0", "resnet18"]


def gemm_peak_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """Measured fp32 GEMM throughput of torch.mm (GFLOP/s, best of ``repeats``)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def int8_gemm_peak_gops(threads: int, n: int = 2048, repeats: int = 10) -> float | None:
    """int8 GEMM throughput through ONNX Runtime's MatMulInteger (GOP/s), if it runs."""
    import onnx
    from onnx import TensorProto, helper

    try:
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "mm",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
             helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
            [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        path = Path(tempfile.mkdtemp()) / "mm.onnx"
        onnx.save(model, str(path))
        sess = ort_session(path, threads=threads)
        feed = {"a": np.random.randint(0, 255, (n, n), dtype=np.uint8),
                "b": np.random.randint(-127, 127, (n, n), dtype=np.int8)}
        sess.run(None, feed)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(None, feed)
            best = min(best, time.perf_counter() - t0)
        return 2 * n**3 / best / 1e9
    except Exception as exc:  # noqa: BLE001 - measured where possible, reported otherwise
        print(f"int8 GEMM peak not measurable: {exc}", file=sys.stderr)
        return None


def bench_model(name: str, batch: int, threads: int, warmup: int, runs: int,
                workdir: Path) -> dict:
    model = create_model(name).eval()
    x1 = torch.zeros(1, 3, 224, 224)
    fp32 = workdir / f"{name}.onnx"
    int8 = workdir / f"{name}.int8.onnx"
    if not fp32.exists():
        export_onnx(model, x1, fp32, optimize=False)
        calib = [np.random.default_rng(i).standard_normal((8, 3, 224, 224)).astype(np.float32)
                 for i in range(4)]
        quantize_onnx(fp32, int8, calib)
    x = torch.randn(batch, 3, 224, 224)
    fns = {"torch": torch_runner(model, x),
           "ort-fp32": ort_runner(ort_session(fp32, threads), x),
           "ort-int8": ort_runner(ort_session(int8, threads), x)}
    stats = measure_callables(fns, {k: k for k in fns}, batch_size=batch, threads=threads,
                              warmup=warmup, runs=runs)
    return {"model": name, "batch": batch, "macs_per_image": count_macs(model, x1),
            "int8_kernels": int8_node_types(int8),
            "size_fp32": fp32.stat().st_size, "size_int8": int8.stat().st_size,
            **{k: v.to_dict() for k, v in stats.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--runs-batch32", type=int, default=None,
                    help="timed runs at batch 32 (default: --runs)")
    ap.add_argument("--out", type=Path, default=RESULTS / "deploy_latency.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peak = gemm_peak_gflops(args.threads)
    peak8 = int8_gemm_peak_gops(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for batch in args.batches:
                runs = args.runs_batch32 if batch > 1 and args.runs_batch32 else args.runs
                row = bench_model(name, batch, args.threads, args.warmup, runs, Path(tmp))
                flops = 2 * row["macs_per_image"] * batch
                row["floor_fp32_ms"] = flops / (peak * 1e9) * 1e3
                row["floor_int8_ms"] = flops / (peak8 * 1e9) * 1e3 if peak8 else None
                row["ort_fp32_vs_torch"] = row["torch"]["median_ms"] / row["ort-fp32"]["median_ms"]
                row["ort_int8_vs_fp32"] = row["ort-fp32"]["median_ms"] / row["ort-int8"]["median_ms"]
                rows.append(row)
                print(f"{name} b{batch}: torch {row['torch']['median_ms']:.2f} / ort fp32 "
                      f"{row['ort-fp32']['median_ms']:.2f} / ort int8 "
                      f"{row['ort-int8']['median_ms']:.2f} ms (floor "
                      f"{row['floor_fp32_ms']:.2f} ms)", file=sys.stderr, flush=True)
    result = {"benchmark": "deploy_latency", "machine": cpu_info(),
              "date": time.strftime("%Y-%m-%d"), "threads": args.threads,
              "warmup": args.warmup, "runs": args.runs,
              "runs_batch32": args.runs_batch32 or args.runs,
              "fp32_gemm_peak_gflops": peak, "int8_gemm_peak_gops": peak8, "rows": rows,
              "targets": {"mobilenet_v2 int8 vs ort fp32": 2.0, "ort fp32 vs torch": 2.0}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
