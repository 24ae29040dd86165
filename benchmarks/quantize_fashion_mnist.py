"""Benchmark: INT8 accuracy on Fashion-MNIST (full 10k test set).

Starts from the small-input MobileNetV2 (x0.5) trained by train_fashion_mnist.py and
compares, all through ONNX Runtime: fp32, PTQ per-channel (MinMax, Entropy, Percentile),
PTQ per-tensor (the known depthwise collapse), per-tensor after cross-layer equalization and
bias correction (its repair), and QAT followed by per-channel quantization.

    python benchmarks/quantize_fashion_mnist.py --checkpoint runs/bench/fmnist_mobilenet_v2_050/model.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from slimkit.analysis.latency import cpu_info
from slimkit.compress.quantization import int8_node_types, onnx_accuracy, quantize_onnx
from slimkit.compress.quantization.api import calibration_arrays, evaluation_arrays
from slimkit.compress.quantization.equalize import bias_correct, equalize
from slimkit.compress.quantization.qat import prepare_qat, strip_qat
from slimkit.data import load_dataset
from slimkit.deploy import export_onnx
from slimkit.train import TrainConfig, evaluate, fit, load_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path,
                    default=Path("runs/bench/fmnist_mobilenet_v2_050/model.safetensors"))
    ap.add_argument("--calib-samples", type=int, default=512)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "quantize_fashion_mnist.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.checkpoint)
    model = loaded.model.eval()
    data = load_dataset("fashion-mnist")
    calib = calibration_arrays(data, args.calib_samples)
    calib_t = [torch.from_numpy(a) for a in calib]
    evaluation = evaluation_arrays(data)
    x = torch.zeros(1, data.in_chans, data.input_size, data.input_size)
    rows = []

    def record(name: str, fp32_path: Path, int8_path: Path | None, **extra: object) -> None:
        acc = onnx_accuracy(int8_path or fp32_path, evaluation)
        row = {"variant": name, "top1": acc, **extra}
        if int8_path is not None:
            row["int8_kernels"] = int8_node_types(int8_path)
            row["size_bytes"] = int8_path.stat().st_size
        else:
            row["size_bytes"] = fp32_path.stat().st_size
        rows.append(row)
        print(f"{name}: {acc:.2f} %", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        torch_top1 = evaluate(model, data).top1
        fp32 = export_onnx(model, x, t / "fp32.onnx", optimize=False).path
        record("ort fp32", fp32, None, torch_top1=torch_top1)
        for method in ("minmax", "entropy", "percentile"):
            q = quantize_onnx(fp32, t / f"pc_{method}.onnx", calib, method=method).path
            record(f"ptq per-channel {method}", fp32, q)
        q = quantize_onnx(fp32, t / "pt.onnx", calib, per_channel=False).path
        record("ptq per-tensor minmax", fp32, q)
        eq = equalize(model, relu6_to_relu=True)
        fp32_relu = export_onnx(eq.model, x, t / "eq.onnx", optimize=False).path
        record("fp32 after equalization (ReLU6 -> ReLU)", fp32_relu, None,
               pairs=len(eq.pairs))
        q = quantize_onnx(fp32_relu, t / "eq_pt.onnx", calib, per_channel=False).path
        record("ptq per-tensor + equalization", fp32_relu, q)
        bc = eq.model
        bias_correct(bc, calib_t, per_channel=False)
        fp32_bc = export_onnx(bc, x, t / "bc.onnx", optimize=False).path
        q = quantize_onnx(fp32_bc, t / "bc_pt.onnx", calib, per_channel=False).path
        record("ptq per-tensor + equalization + bias correction", fp32_bc, q)
        q = quantize_onnx(fp32_relu, t / "eq_pc.onnx", calib).path
        record("ptq per-channel + equalization", fp32_relu, q)
        prepared = prepare_qat(model)
        t0 = time.perf_counter()
        ft = fit(prepared, data, TrainConfig(epochs=args.qat_epochs, batch_size=128, lr=0.005,
                                            warmup_epochs=0, channels_last=False),
                 progress=False)
        qat_model = strip_qat(prepared)
        fp32_qat = export_onnx(qat_model, x, t / "qat.onnx", optimize=False).path
        q = quantize_onnx(fp32_qat, t / "qat_pc.onnx", calib).path
        record(f"qat {args.qat_epochs} epochs + per-channel", fp32_qat, q,
               fake_quant_top1=ft.test.top1 if ft.test else None,
               qat_seconds=time.perf_counter() - t0)
    result = {"benchmark": "quantize_fashion_mnist", "machine": cpu_info(),
              "date": time.strftime("%Y-%m-%d"), "checkpoint": str(args.checkpoint),
              "model": "mobilenet_v2 x0.5 small input", "threads": args.threads, "calib_samples": args.calib_samples,
              "test_samples": 10000, "rows": rows,
              "targets": {"per-channel PTQ drop (pt)": 0.5, "QAT >= PTQ": True}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
