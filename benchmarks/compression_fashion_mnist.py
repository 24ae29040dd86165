"""Benchmark: distillation, decomposition, conv->separable and storage on Fashion-MNIST.

Parts (each writes its own key into benchmarks/results/compression_fashion_mnist.json):

- ``kd``: a small-input ResNet-18 teacher trained on a Fashion-MNIST subset; a small-input
  MobileNetV2 x0.5 student trained alone and with each distillation method (logit, FitNets
  features, attention transfer) for the same epochs, 3 seeds; and, at 4x fewer MACs, the
  pruned student recovered by plain fine-tuning vs by distillation from the unpruned model.
- ``restructure``: the ResNet-18 teacher decomposed (Tucker-2, energy 0.8) and rewritten with
  depthwise-separable convolutions, each fine-tuned for the same budget: MACs, params,
  ONNX Runtime latency (interleaved with the original), accuracy.
- ``storage``: the trained MobileNetV2 of train_fashion_mnist.py stored dense fp32, INT8
  (ONNX Runtime QDQ), 50 % unstructured + zlib, and 16-cluster codebook: bytes and accuracy.

    python benchmarks/compression_fashion_mnist.py kd restructure storage
    # seeds in parallel, one process per core, then merged:
    python benchmarks/compression_fashion_mnist.py kd --seeds 0 1 --results /tmp/a.json
    python benchmarks/compression_fashion_mnist.py kd --seeds 2 --results /tmp/b.json
    python benchmarks/compression_fashion_mnist.py merge-kd --from /tmp/a.json /tmp/b.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import torch

from slimkit.analysis.latency import cpu_info, measure_callables, ort_runner
from slimkit.analysis.profile import count_macs, count_params
from slimkit.compress.distill import AttentionTransfer, FeatureDistillation, LogitDistillation
from slimkit.data import load_dataset
from slimkit.data.base import TensorImageDataset
from slimkit.deploy import export_onnx, ort_session
from slimkit.models import create_model
from slimkit.train import TrainConfig, evaluate, fit, load_checkpoint

RESULTS = Path(__file__).resolve().parent / "results" / "compression_fashion_mnist.json"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def subset(n_train: int, seed: int = 0):  # type: ignore[no-untyped-def]
    data = load_dataset("fashion-mnist")
    g = torch.Generator().manual_seed(1000 + seed)
    idx = torch.randperm(len(data.train), generator=g)[:n_train]
    return dataclasses.replace(data, train=TensorImageDataset(data.train.images[idx],
                                                              data.train.labels[idx]))


def _fail(msg: str) -> None:
    print(msg, file=sys.stderr)
    raise SystemExit(2)


def _student(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("mobilenet_v2", num_classes=10, in_chans=1, small_input=True,
                        width_mult=0.5)


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def teacher_model(data, epochs: int, out: Path):  # type: ignore[no-untyped-def]
    path = out / "teacher.safetensors"
    if path.exists():
        return load_checkpoint(path).model
    torch.manual_seed(0)
    teacher = create_model("resnet18", num_classes=10, in_chans=1, small_input=True)
    fit(teacher, data, TrainConfig(epochs=epochs, batch_size=128, lr=0.1, label_smoothing=0.1),
        progress=False)
    from slimkit.train import save_checkpoint

    save_checkpoint(path, teacher, overwrite=True)
    return teacher


def part_kd(args: argparse.Namespace, workdir: Path) -> dict:
    from slimkit.compress.pruning import prune

    data = subset(args.train_samples)
    t0 = time.perf_counter()
    teacher = teacher_model(data, args.teacher_epochs, workdir)
    teacher_top1 = evaluate(teacher, data).top1
    _log(f"teacher resnet18: {teacher_top1:.2f} % ({time.perf_counter() - t0:.0f} s)")
    cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.1, label_smoothing=0.0)
    methods = {
        "alone": lambda: [],
        "logit": lambda: [LogitDistillation(teacher)],
        "feature": lambda: [FeatureDistillation(teacher, [("stages.3", "stages.2")])],
        "at": lambda: [AttentionTransfer(teacher, [("stages.2", "stages.1"),
                                                   ("stages.4", "stages.3")])],
    }
    scores: dict[str, list[float]] = {m: [] for m in methods}
    recovery: dict[str, list[float]] = {"pruned+finetune": [], "pruned+distill": []}
    for seed in args.seeds:
        for name, make in methods.items():
            student = _student(seed)
            res = fit(student, data, dataclasses.replace(cfg, seed=seed), callbacks=make(),
                      progress=False)
            scores[name].append(res.test.top1)
            _log(f"seed {seed} {name}: {res.test.top1:.2f} %")
            if name == "alone":
                base_student = student
        x = torch.zeros(1, 1, 28, 28)
        pruned = prune(base_student.eval(), x, target_macs=0.25).model
        for name, cbs in (("pruned+finetune", []),
                          ("pruned+distill", [LogitDistillation(copy.deepcopy(base_student))])):
            m = copy.deepcopy(pruned)
            res = fit(m, data, TrainConfig(epochs=args.recovery_epochs, batch_size=128, lr=0.02,
                                           warmup_epochs=0, seed=seed), callbacks=cbs,
                      progress=False)
            recovery[name].append(res.test.top1)
            _log(f"seed {seed} {name}: {res.test.top1:.2f} %")
    return kd_summary({"teacher": "resnet18 small input", "teacher_top1": teacher_top1,
                       "student": "mobilenet_v2 x0.5 small input",
                       "train_samples": args.train_samples, "epochs": args.epochs,
                       "seeds": args.seeds, "top1": scores, "recovery_top1": recovery,
                       "recovery_epochs": args.recovery_epochs})


def kd_summary(kd: dict) -> dict:
    """Means, stds and gains of a ``kd`` result from its per-seed lists (``top1``,
    ``recovery_top1``)."""
    summary = {k: _mean_std(v) for k, v in kd["top1"].items()}
    alone = summary["alone"]
    kd["summary"] = summary
    kd["gain_vs_alone"] = {k: v["mean"] - alone["mean"] for k, v in summary.items()
                           if k != "alone"}
    kd["gain_exceeds_seed_std"] = {
        k: v["mean"] - alone["mean"] > max(v["std"], alone["std"])
        for k, v in summary.items() if k != "alone"}
    kd["recovery_at_4x"] = {k: _mean_std(v) for k, v in kd["recovery_top1"].items()}
    return kd


def merge_kd(files: list[Path]) -> dict:
    """One ``kd`` result from runs of disjoint seeds (e.g. two processes, one per core)."""
    parts = [json.loads(f.read_text())["kd"] for f in files]
    keys = ("teacher_top1", "train_samples", "epochs", "recovery_epochs")
    for p in parts[1:]:
        if any(p[k] != parts[0][k] for k in keys):
            _fail(f"error: the kd runs differ in {keys}; cannot merge them")
    seeds = [s for p in parts for s in p["seeds"]]
    if len(set(seeds)) != len(seeds):
        _fail(f"error: a seed appears twice in the kd runs: {seeds}")
    merged = {k: v for k, v in parts[0].items() if k not in ("summary", "gain_vs_alone")}
    merged["seeds"] = seeds
    merged["top1"] = {m: [x for p in parts for x in p["top1"][m]] for m in parts[0]["top1"]}
    merged["recovery_top1"] = {m: [x for p in parts for x in p["recovery_top1"][m]]
                               for m in parts[0]["recovery_top1"]}
    return kd_summary(merged)


def _ort_ms(models: dict[str, torch.nn.Module], x: torch.Tensor, workdir: Path,
            runs: int) -> dict[str, float]:
    fns, labels = {}, {}
    for k, m in models.items():
        path = export_onnx(m, x, workdir / f"{k}.onnx", exporter="legacy", overwrite=True).path
        fns[k] = ort_runner(ort_session(path, 2), x)
        labels[k] = "onnxruntime"
    stats = measure_callables(fns, labels, batch_size=1, threads=2, warmup=10, runs=runs)
    return {k: v.median_ms for k, v in stats.items()}


def part_restructure(args: argparse.Namespace, workdir: Path) -> dict:
    from slimkit.compress.decompose import decompose
    from slimkit.compress.fuse import to_separable

    data = subset(args.train_samples)
    teacher = teacher_model(data, args.teacher_epochs, workdir).eval()
    x = torch.zeros(1, 1, 28, 28)
    variants = {
        "original": teacher,
        "tucker2 energy 0.8": decompose(teacher, energy=0.8, example_inputs=x).model,
        "depthwise separable": to_separable(teacher, x).model,
    }
    rows = {}
    for name, model in variants.items():
        if name != "original":
            fit(model, data, TrainConfig(epochs=args.recovery_epochs, batch_size=128, lr=0.02,
                                         warmup_epochs=0),
                callbacks=[LogitDistillation(copy.deepcopy(teacher))], progress=False)
        rows[name] = {"macs": count_macs(model.eval(), x), "params": count_params(model),
                      "top1": evaluate(model, data).top1}
        _log(f"{name}: {rows[name]}")
    lat = _ort_ms(variants, x, workdir, args.runs)
    for name in rows:
        rows[name]["ort_ms"] = lat[name]
    return {"model": "resnet18 small input", "finetune_epochs": args.recovery_epochs,
            "finetune": "distillation from the original", "rows": rows}


def part_storage(args: argparse.Namespace, workdir: Path) -> dict:
    from slimkit.compress.pruning.unstructured import MaskCallback, prune_unstructured
    from slimkit.compress.quantization import onnx_accuracy, quantize_onnx
    from slimkit.compress.quantization.api import calibration_arrays, evaluation_arrays
    from slimkit.compress.sparsity import ClusterCallback, cluster_weights, storage_report

    loaded = load_checkpoint(args.checkpoint)
    model = loaded.model.eval()
    data = load_dataset("fashion-mnist")
    x = torch.zeros(1, 1, 28, 28)
    small = subset(args.train_samples)  # fine-tuning budget for the constrained variants
    rows = {}
    dense = storage_report(model)
    rows["dense fp32"] = {"bytes": dense["safetensors_bytes"],
                          "zlib_bytes": dense["zlib_bytes"], "top1": evaluate(model, data).top1}
    fp32 = export_onnx(model, x, workdir / "fp32.onnx", exporter="legacy", overwrite=True).path
    q = quantize_onnx(fp32, workdir / "int8.onnx", calibration_arrays(data, 512)).path
    blob = q.read_bytes()
    rows["int8 (ORT QDQ per-channel)"] = {"bytes": len(blob),
                                          "zlib_bytes": len(zlib.compress(blob, 9)),
                                          "top1": onnx_accuracy(q, evaluation_arrays(data))}
    ures = prune_unstructured(model, 0.5)
    fit(ures.model, small, TrainConfig(epochs=1, batch_size=128, lr=0.005, warmup_epochs=0),
        callbacks=[MaskCallback(ures.masks)], progress=False)
    sp = storage_report(ures.model)
    rows["50 % unstructured (+1 epoch, masks kept)"] = {
        "bytes": sp["safetensors_bytes"], "zlib_bytes": sp["zlib_bytes"],
        "bitmap_bytes": sp.get("bitmap_bytes"), "top1": evaluate(ures.model, data).top1}
    cres = cluster_weights(model, n_clusters=16)
    fit(cres.model, small, TrainConfig(epochs=1, batch_size=128, lr=0.002, warmup_epochs=0,
                                       channels_last=False),
        callbacks=[ClusterCallback(cres)], progress=False)
    cl = storage_report(cres.model)
    rows["16 clusters (+1 epoch)"] = {"bytes": cl["safetensors_bytes"],
                                      "zlib_bytes": cl["zlib_bytes"],
                                      "codebook_bytes": cl.get("codebook_bytes"),
                                      "top1": evaluate(cres.model, data).top1}
    for k, v in rows.items():
        _log(f"{k}: {v}")
    return {"model": "mobilenet_v2 x0.5 small input (train_fashion_mnist.py)",
            "checkpoint": str(args.checkpoint), "rows": rows,
            "note": "bytes: the file as stored; zlib: level 9 over it; bitmap/codebook: "
                    "exact sizes of those encodings (storage_report)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("parts", nargs="+", choices=["kd", "restructure", "storage", "merge-kd"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-samples", type=int, default=6000)
    ap.add_argument("--teacher-epochs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--recovery-epochs", type=int, default=2)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", type=Path,
                    default=Path("runs/bench/fmnist_mobilenet_v2_050/model.safetensors"))
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench/compression"))
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="the JSON file to update (runs of different seeds in parallel "
                         "processes each write their own, then `merge-kd FILE...`)")
    ap.add_argument("--from", dest="merge_from", type=Path, nargs="+", default=[],
                    help="merge-kd: the result files whose kd parts are merged")
    args = ap.parse_args()
    results_path: Path = args.results
    result = json.loads(results_path.read_text()) if results_path.exists() else {}
    if "merge-kd" in args.parts and (args.parts != ["merge-kd"] or not args.merge_from):
        _fail("error: merge-kd runs alone, with --from FILE...")
    if args.parts == ["merge-kd"]:
        result["kd"] = merge_kd(args.merge_from)
        results_path.write_text(json.dumps(result, indent=2) + "\n")
        return
    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    result.update({"benchmark": "compression_fashion_mnist", "machine": cpu_info(),
                   "date": time.strftime("%Y-%m-%d"), "threads": args.threads})
    for part in args.parts:
        fn = {"kd": part_kd, "restructure": part_restructure, "storage": part_storage}[part]
        with tempfile.TemporaryDirectory() as tmp:
            result[part] = fn(args, args.workdir if part != "storage" else Path(tmp))
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
