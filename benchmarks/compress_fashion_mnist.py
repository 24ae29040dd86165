"""Benchmark: ``slimkit compress`` against a hand-made pipeline of the best peers.

Part ``search``: on the small-input MobileNetV2 (x0.5) trained by train_fashion_mnist.py,
``slimkit compress --max-acc-drop 0.5`` (fastest model on ONNX Runtime within half a point)
vs Torch-Pruning used directly (uniform 50 % of the channels, L2) + the same fine-tuning +
ONNX Runtime PTQ (per-channel QDQ). Accuracy on the full test set, latency interleaved.

Part ``latency224``: mobilenet_v2 at 224 px, the full pipeline's model (pruned to half the
MACs + INT8) against ORT fp32 dense, batch 1, interleaved.

    python benchmarks/compress_fashion_mnist.py search latency224
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from slimkit.analysis.latency import cpu_info, measure_callables, ort_runner
from slimkit.compress.quantization import onnx_accuracy, quantize_onnx
from slimkit.compress.quantization.api import calibration_arrays, evaluation_arrays
from slimkit.data import load_dataset
from slimkit.deploy import export_onnx, ort_session
from slimkit.models import create_model
from slimkit.pipeline.search import compress_checkpoint
from slimkit.train import TrainConfig, fit, load_checkpoint

RESULTS = Path(__file__).resolve().parent / "results" / "compress_fashion_mnist.json"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _latency(paths: dict[str, Path], runs: int) -> dict[str, float]:
    fns, labels = {}, {}
    for k, p in paths.items():
        s = ort_session(p, 2)
        dims = [d if isinstance(d, int) else 1 for d in s.get_inputs()[0].shape]
        fns[k] = ort_runner(s, torch.randn(*dims))
        labels[k] = "onnxruntime"
    stats = measure_callables(fns, labels, batch_size=1, threads=2, warmup=10, runs=runs)
    return {k: v.median_ms for k, v in stats.items()}


def part_search(args: argparse.Namespace) -> dict:
    import torch_pruning as tp

    t0 = time.perf_counter()
    out = Path(args.workdir) / "compress"
    result = compress_checkpoint(args.checkpoint, "fashion-mnist", out,
                                 max_acc_drop=args.max_acc_drop, target_macs=1.0,
                                 fractions=tuple(args.fractions),
                                 finetune_epochs=args.finetune_epochs,
                                 refine_steps=args.refine_steps, force=True, log=_log)
    search_s = time.perf_counter() - t0
    best = result.best
    assert best is not None
    # the peers' pipeline
    loaded = load_checkpoint(args.checkpoint)
    model = loaded.model.eval()
    data = load_dataset("fashion-mnist")
    x = torch.zeros(1, 1, 28, 28)
    peer = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.BasePruner(peer, x, importance=tp.importance.GroupMagnitudeImportance(
            p=2), pruning_ratio=0.5, round_to=8, ignored_layers=[peer.classifier])
        pruner.step()
    fit(peer, data, TrainConfig(epochs=args.finetune_epochs, lr=0.01, warmup_epochs=0),
        progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(peer, x, Path(tmp) / "peer.onnx", exporter="legacy").path
        peer_q = quantize_onnx(fp32, Path(tmp) / "peer.int8.onnx",
                               calibration_arrays(data, 256)).path
        test = evaluation_arrays(data)
        peer_top1 = onnx_accuracy(peer_q, test)
        peer_size = peer_q.stat().st_size  # before the temporary folder goes
        base_onnx = out / "baseline.fp32.onnx"
        lat = _latency({"baseline fp32": base_onnx, "peers": peer_q,
                        "slimkit": Path(best.onnx)}, args.runs)
    return {
        "baseline": {"test_top1": result.baseline["test_top1"],
                     "ort_ms": lat["baseline fp32"], "size_bytes": result.baseline["size_bytes"]},
        "slimkit": {"choice": best.name, "test_top1": best.test_top1, "ort_ms": lat["slimkit"],
                    "size_bytes": best.size_bytes, "macs": best.macs,
                    "search_minutes": search_s / 60,
                    "candidates": [c.row() for c in result.candidates]},
        "peers": {"pipeline": "Torch-Pruning uniform 50 % (L2) + fine-tune + ORT PTQ",
                  "test_top1": peer_top1, "ort_ms": lat["peers"],
                  "size_bytes": peer_size},
        "max_acc_drop": args.max_acc_drop, "finetune_epochs": args.finetune_epochs,
        "fractions": args.fractions, "refine_steps": args.refine_steps,
        "stopped": result.stopped,
        "runs": args.runs,
    }


def part_latency224(args: argparse.Namespace) -> dict:
    from slimkit.compress.pruning import prune

    model = create_model("mobilenet_v2").eval()
    x = torch.zeros(1, 3, 224, 224)
    pruned = prune(model, x, target_macs=0.5).model.eval()
    calib = [torch.randn(8, 3, 224, 224).numpy() for _ in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        dense = export_onnx(model, x, t / "dense.onnx", exporter="legacy").path
        dense_q = quantize_onnx(dense, t / "dense.int8.onnx", calib).path
        small = export_onnx(pruned, x, t / "pruned.onnx", exporter="legacy").path
        small_q = quantize_onnx(small, t / "pruned.int8.onnx", calib).path
        lat = _latency({"ort fp32 dense": dense, "ort int8 dense": dense_q,
                        "ort fp32 pruned": small, "ort int8 pruned": small_q}, args.runs)
    base = lat["ort fp32 dense"]
    return {"model": "mobilenet_v2 224 px", "ms": lat,
            "speedup_vs_fp32_dense": {k: base / v for k, v in lat.items()},
            "target": 4.0, "meets_target": base / lat["ort int8 pruned"] >= 4.0,
            "runs": args.runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("parts", nargs="+", choices=["search", "latency224"])
    ap.add_argument("--checkpoint", type=Path,
                    default=Path("runs/bench/fmnist_mobilenet_v2_050/model.safetensors"))
    ap.add_argument("--max-acc-drop", type=float, default=0.5)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.5])
    ap.add_argument("--refine-steps", type=int, default=2)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result.update({"benchmark": "compress_fashion_mnist", "machine": cpu_info(),
                   "date": time.strftime("%Y-%m-%d"), "threads": args.threads})
    for part in args.parts:
        result[part] = part_search(args) if part == "search" else part_latency224(args)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
