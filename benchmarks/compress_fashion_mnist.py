"""Benchmark: ``slimkit compress`` against a hand-made pipeline of the best peers.

Part ``search``: on the small-input MobileNetV2 (x0.5) trained by train_fashion_mnist.py,
``slimkit compress --max-acc-drop 0.5`` (fastest model on ONNX Runtime within half a point,
per-layer ratios allocated by measured INT8 latency) vs Torch-Pruning used directly
(uniform 50 % of the channels, L2) + the same fine-tuning + ONNX Runtime PTQ (per-channel
QDQ); then ``slimkit compress`` again with the budget set to the accuracy the peers lost
(the equal-accuracy comparison; ``--reuse``: the first search's sensitivity table and the
candidates it already recovered are reused, quantized and measured again). Accuracy on
the full test set (every candidate), latency interleaved (medians, batch 1, 2 threads).

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
    """Median ORT latency (ms), batch 1, 2 threads, all models interleaved."""
    fns, labels = {}, {}
    for k, p in paths.items():
        s = ort_session(p, 2)
        dims = [d if isinstance(d, int) else 1 for d in s.get_inputs()[0].shape]
        fns[k] = ort_runner(s, torch.randn(*dims))
        labels[k] = "onnxruntime"
    stats = measure_callables(fns, labels, batch_size=1, threads=2, warmup=10, runs=runs)
    return {k: v.median_ms for k, v in stats.items()}


def _peers(args: argparse.Namespace, workdir: Path) -> dict:
    """Torch-Pruning uniform 50 % (L2) + the same fine-tuning + ORT PTQ (per-channel QDQ)."""
    import torch_pruning as tp

    model = load_checkpoint(args.checkpoint).model.eval()
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
    workdir.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(peer, x, workdir / "peers.fp32.onnx", exporter="legacy",
                       overwrite=True).path
    peer_q = quantize_onnx(fp32, workdir / "peers.int8.onnx", calibration_arrays(data, 256)).path
    return {"pipeline": "Torch-Pruning uniform 50 % (L2) + fine-tune + ORT PTQ",
            "test_top1": onnx_accuracy(peer_q, evaluation_arrays(data)),
            "size_bytes": peer_q.stat().st_size, "onnx": str(peer_q)}


def _search(args: argparse.Namespace, out: Path, max_acc_drop: float,
            reuse: Path | None) -> dict:
    t0 = time.perf_counter()
    # target_macs=1.0: no constraint besides accuracy, the fastest candidate wins
    result = compress_checkpoint(args.checkpoint, "fashion-mnist", out,
                                 max_acc_drop=max_acc_drop, target_macs=1.0,
                                 fractions=tuple(args.fractions), allocate=args.allocate,
                                 finetune_epochs=args.finetune_epochs,
                                 refine_steps=args.refine_steps, reuse=reuse,
                                 force=True, log=_log)
    best = result.best
    assert best is not None
    test = evaluation_arrays(load_dataset("fashion-mnist"))
    candidates = []
    for c in result.candidates:  # the trade-off curve on the test set (the search used val)
        row = c.row()
        row["test_top1"] = onnx_accuracy(c.onnx, test)
        row["onnx"] = c.onnx
        candidates.append(row)
    return {"max_acc_drop": max_acc_drop, "choice": best.name, "test_top1": best.test_top1,
            "size_bytes": best.size_bytes, "macs": best.macs, "onnx": best.onnx,
            "search_minutes": (time.perf_counter() - t0) / 60, "stopped": result.stopped,
            "baseline": result.baseline, "candidates": candidates}


def part_search(args: argparse.Namespace) -> dict:
    """Peers; ``slimkit compress --max-acc-drop`` (0.5); ``slimkit compress`` with the budget
    set to what the peers lost on the test set (the equal-accuracy comparison), reusing the
    first search's table and recovered candidates; then every model's latency, interleaved."""
    work = Path(args.workdir)
    partial = RESULTS.with_suffix(".partial.json")
    state = json.loads(partial.read_text()) if partial.exists() and args.resume else {}
    if "peers" not in state:
        state["peers"] = _peers(args, work / "peers")
        partial.write_text(json.dumps(state, indent=2, default=str))
    _log(f"peers: {state['peers']['test_top1']:.2f} %")
    if "slimkit" not in state:
        state["slimkit"] = _search(args, work / "compress", args.max_acc_drop,
                                   work / "compress" if args.reuse_first else None)
        partial.write_text(json.dumps(state, indent=2, default=str))
    base_test = state["slimkit"]["baseline"]["test_top1"]
    peer_drop = round(base_test - state["peers"]["test_top1"], 2)
    if "slimkit_equal_accuracy" not in state and peer_drop > args.max_acc_drop:
        eq_args = argparse.Namespace(**{**vars(args), "fractions": args.equal_fractions,
                                        "refine_steps": args.equal_refine_steps})
        own = work / "compress_equal"
        reuse = own if args.reuse_first and (own / "sensitivity.json").is_file() else \
            work / "compress"
        state["slimkit_equal_accuracy"] = _search(eq_args, own, peer_drop, reuse)
        state["slimkit_equal_accuracy"].update(fractions=args.equal_fractions,
                                               refine_steps=args.equal_refine_steps)
        partial.write_text(json.dumps(state, indent=2, default=str))
    paths = {"baseline fp32": work / "compress" / "baseline.fp32.onnx",
             "peers": Path(state["peers"]["onnx"]), "slimkit": Path(state["slimkit"]["onnx"])}
    if "slimkit_equal_accuracy" in state:
        paths["slimkit equal accuracy"] = Path(state["slimkit_equal_accuracy"]["onnx"])
    _log("final latency measurement ...")
    lat = _latency(paths, args.runs)
    _log("final latency measured")
    state["baseline"] = {"test_top1": base_test, "ort_ms": lat["baseline fp32"],
                         "size_bytes": state["slimkit"]["baseline"]["size_bytes"]}
    state["peers"]["ort_ms"] = lat["peers"]
    state["slimkit"]["ort_ms"] = lat["slimkit"]
    if "slimkit equal accuracy" in lat:
        state["slimkit_equal_accuracy"]["ort_ms"] = lat["slimkit equal accuracy"]
    state.update(finetune_epochs=args.finetune_epochs, fractions=args.fractions,
                 refine_steps=args.refine_steps, allocate=args.allocate, runs=args.runs,
                 max_acc_drop=args.max_acc_drop, peers_test_drop=peer_drop)
    partial.unlink(missing_ok=True)
    return state


def part_remeasure(args: argparse.Namespace) -> dict:
    """Time the search part's models again, interleaved (e.g. once the machine is quiet: a
    busy neighbour on one of the 2 cores inflates 2-thread ORT latency several-fold)."""
    state = json.loads(RESULTS.read_text())["search"]
    work = Path(args.workdir)
    paths = {"baseline fp32": work / "compress" / "baseline.fp32.onnx",
             "peers": Path(state["peers"]["onnx"]), "slimkit": Path(state["slimkit"]["onnx"])}
    if "slimkit_equal_accuracy" in state:
        paths["slimkit equal accuracy"] = Path(state["slimkit_equal_accuracy"]["onnx"])
    lat = _latency(paths, args.runs)
    state["baseline"]["ort_ms"] = lat["baseline fp32"]
    state["peers"]["ort_ms"] = lat["peers"]
    state["slimkit"]["ort_ms"] = lat["slimkit"]
    if "slimkit equal accuracy" in lat:
        state["slimkit_equal_accuracy"]["ort_ms"] = lat["slimkit equal accuracy"]
    state["runs"] = args.runs
    state["latency_remeasured"] = time.strftime("%Y-%m-%d %H:%M")
    return state


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
    ap.add_argument("parts", nargs="+", choices=["search", "remeasure", "latency224"])
    ap.add_argument("--checkpoint", type=Path,
                    default=Path("runs/bench/fmnist_mobilenet_v2_050/model.safetensors"))
    ap.add_argument("--max-acc-drop", type=float, default=0.5)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.75, 0.5, 0.35])
    ap.add_argument("--allocate", choices=["latency", "macs"], default="latency")
    ap.add_argument("--equal-fractions", type=float, nargs="+", default=[0.75, 0.5],
                    help="fractions of the equal-accuracy search (its candidates that the "
                         "first search recovered are reused)")
    ap.add_argument("--equal-refine-steps", type=int, default=1)
    ap.add_argument("--reuse-first", action="store_true",
                    help="each search reuses its own earlier run's table and recovered "
                         "candidates (re-measures and re-decides without fine-tuning again)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the parts of an interrupted search run that finished")
    ap.add_argument("--refine-steps", type=int, default=2)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result.update({"benchmark": "compress_fashion_mnist", "machine": cpu_info(),
                   "date": time.strftime("%Y-%m-%d"), "threads": args.threads})
    for part in args.parts:
        if part == "remeasure":
            result["search"] = part_remeasure(args)
        else:
            result[part] = part_search(args) if part == "search" else part_latency224(args)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
