"""Benchmark: structured pruning criteria on Fashion-MNIST, and pruned-model latency.

Part 1 (``accuracy``): a small-input model trained on Fashion-MNIST, pruned to 2x and 4x
fewer MACs with each criterion, fine-tuned for the same budget on a subset, evaluated on the
full 10k test set; 3 seeds. With ``--base CHECKPOINT`` every seed starts from that trained
model (the seed changes the fine-tuning subset, its order and the random/Taylor criteria);
without it each seed trains its own base (``--model``) on the subset for ``--base-epochs``.
Rows: slimkit with each criterion (uniform ratio found by bisection), Torch-Pruning used
directly with the same uniform ratio (the baseline), and slimkit with sensitivity-allocated
ratios.

Part 2 (``latency``): mobilenet_v2 at 224 px pruned to half the MACs (L2), exported to
ONNX, ONNX Runtime batch-1 latency at 2 threads, original and pruned interleaved.

    python benchmarks/prune_fashion_mnist.py latency
    python benchmarks/prune_fashion_mnist.py accuracy --seeds 0 1 2 \
        --base runs/bench/fmnist_mobilenet_v2_050/model.safetensors
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
import warnings
from pathlib import Path

import torch

from slimkit.analysis.latency import cpu_info, summarize, time_interleaved
from slimkit.analysis.profile import count_macs, count_params
from slimkit.compress.pruning import (
    prune,
    prune_to_target,
    sensitivity_analysis,
)
from slimkit.compress.pruning.schedules import calibration_batches
from slimkit.compress.pruning.sensitivity import load_table, save_table
from slimkit.data import load_dataset
from slimkit.data.base import TensorImageDataset
from slimkit.errors import InvalidArgumentError
from slimkit.models import create_model
from slimkit.train import TrainConfig, evaluate, fit, load_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"
CRITERIA = ("l1", "l2", "fpgm", "taylor", "bn", "random")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- part 2: latency ---------------------------------------------------------------------


def ort_session(model: torch.nn.Module, size: int, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    path = Path(tempfile.mkdtemp()) / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, 3, size, size),), str(path),
                          input_names=["input"], output_names=["logits"], dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def latency(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    model = create_model("mobilenet_v2", num_classes=1000).eval()
    x = torch.randn(1, 3, 224, 224)
    result = prune(model, x, target_macs=0.5, method="l2")
    pruned = result.model.eval()
    sessions = {"original": ort_session(model, 224, args.threads),
                "pruned": ort_session(pruned, 224, args.threads)}
    feed = {"input": x.numpy()}
    fns = {k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}
    times = time_interleaved(fns, warmup=args.warmup, runs=args.runs)
    stats = {k: summarize(k, v, runtime="onnxruntime", batch_size=1, threads=args.threads,
                          warmup=args.warmup).to_dict() for k, v in times.items()}
    # the same for torch eager, to show why speed-ups are measured in a runtime
    with torch.inference_mode():
        tfns = {"original": lambda: model(x), "pruned": lambda: pruned(x)}
        ttimes = time_interleaved(tfns, warmup=args.warmup, runs=args.runs)
    tstats = {k: summarize(k, v, runtime="torch", batch_size=1, threads=args.threads,
                           warmup=args.warmup).to_dict() for k, v in ttimes.items()}
    speedup = stats["original"]["median_ms"] / stats["pruned"]["median_ms"]
    return {
        "benchmark": "prune_latency_mobilenet_v2_224",
        "machine": cpu_info(), "date": time.strftime("%Y-%m-%d"), "threads": args.threads,
        "macs": {"original": result.macs_before, "pruned": result.macs_after},
        "params": {"original": result.params_before, "pruned": result.params_after},
        "ratio": result.ratio,
        "onnxruntime": stats, "torch": tstats,
        "ort_speedup": speedup,
        "torch_speedup": tstats["original"]["median_ms"] / tstats["pruned"]["median_ms"],
        "target_speedup": 1.8, "meets_target": speedup >= 1.8,
    }


# -- part 1: accuracy --------------------------------------------------------------------


def subset_bundle(n_train: int, n_val: int, seed: int, n_test: int = 10000):  # type: ignore[no-untyped-def]
    """Train/val subsets drawn per seed; the test set is its first ``n_test`` images (the
    same for every seed, so seeds differ only in what they train on)."""
    data = load_dataset("fashion-mnist", seed=seed)
    g = torch.Generator().manual_seed(1000 + seed)
    idx = torch.randperm(len(data.train), generator=g)
    tr = idx[:n_train]
    va = idx[n_train:n_train + n_val]
    train = TensorImageDataset(data.train.images[tr], data.train.labels[tr])
    val = TensorImageDataset(data.train.images[va], data.train.labels[va])
    test = data.test
    if n_test < len(test):
        test = TensorImageDataset(test.images[:n_test], test.labels[:n_test])
    return dataclasses.replace(data, train=train, val=val, test=test)


def tp_direct(model: torch.nn.Module, x: torch.Tensor, ratio: float) -> torch.nn.Module:
    """Torch-Pruning used directly: BasePruner, L2 group magnitude, uniform ratio."""
    import torch_pruning as tp

    m = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.BasePruner(m, x, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=ratio, round_to=8,
                                      ignored_layers=[m.classifier])
        pruner.step()
    return m


def accuracy(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    sens = None
    base_name = None
    for seed in args.seeds:
        if rows:  # what is done survives an interrupted run
            _write(args.out or "prune_fashion_mnist.json", _result(args, rows, base_name))
        data = subset_bundle(args.train_samples, args.val_samples, seed, args.test_samples)
        x = torch.zeros(1, data.in_chans, data.input_size, data.input_size)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        if args.base is not None:
            loaded = load_checkpoint(args.base)
            base = loaded.model
            base_top1 = evaluate(base, data).top1
            arch = loaded.meta.arch or {}
            base_name = f"{arch.get('name', type(base).__name__)} {arch.get('kwargs', {})}"
        else:
            kw = {"width_mult": 0.5} if args.model == "mobilenet_v2" else {}
            base = create_model(args.model, num_classes=10, in_chans=1, small_input=True, **kw)
            fitted = fit(base, data, TrainConfig(epochs=args.base_epochs, batch_size=128,
                                                 lr=0.1, label_smoothing=0.1, seed=seed),
                         progress=False)
            base_top1 = fitted.test.top1
        base_macs = count_macs(base.eval(), x)
        _log(f"seed {seed}: base {base_top1:.2f} % ({time.perf_counter() - t0:.0f} s)")
        rows.append({"seed": seed, "method": "unpruned", "target": 1.0, "top1": base_top1,
                     "macs": base_macs, "params": count_params(base)})
        # ratios up to 0.85 so the allocation can reach 4x fewer MACs (with 0.7 at most it
        # could not: the run of 2026-12-04 stopped there)
        if sens is None and args.base is not None and args.sensitivity \
                and args.sensitivity.exists():  # the same base analysed by another process
            sens = load_table(args.sensitivity)
            _log(f"seed {seed}: sensitivity table from {args.sensitivity}")
        if sens is None or args.base is None:  # one trained base: one analysis for all seeds
            t1 = time.perf_counter()
            sens = sensitivity_analysis(base, data, ratios=(0.3, 0.5, 0.7, 0.85),
                                        samples=args.sens_samples)
            _log(f"seed {seed}: sensitivity analysis ({time.perf_counter() - t1:.0f} s)")
            if args.base is not None and args.sensitivity:
                save_table(sens, args.sensitivity)
        calib = calibration_batches(data)
        ft_cfg = TrainConfig(epochs=args.finetune_epochs, batch_size=128, lr=0.02,
                             warmup_epochs=0, label_smoothing=0.1, seed=seed)
        for target in args.targets:
            candidates = {}
            ratio_l2 = None
            for method in CRITERIA:
                res = prune(base, x, target_macs=target, method=method, calibration=calib,
                            seed=seed)
                candidates[f"slimkit-{method}"] = res.model
                if method == "l2":
                    ratio_l2 = res.ratio
            candidates["torch-pruning-direct-l2"] = tp_direct(base, x, ratio_l2 or 0.5)
            try:
                candidates["slimkit-sensitivity-l2"] = prune_to_target(base, sens, target)[0].model
            except InvalidArgumentError as exc:  # recorded, not fatal to the other rows
                rows.append({"seed": seed, "method": "slimkit-sensitivity-l2",
                             "target": target, "error": str(exc)})
                _log(f"seed {seed} target {target} slimkit-sensitivity-l2: {exc}")
            for name, model in candidates.items():
                t0 = time.perf_counter()
                before = evaluate(model, data).top1
                ft = fit(model, data, ft_cfg, progress=False)
                row = {"seed": seed, "method": name, "target": target,
                       "top1_before_finetune": before, "top1": ft.test.top1,
                       "macs": count_macs(model.eval(), x), "params": count_params(model),
                       "macs_ratio": count_macs(model.eval(), x) / base_macs,
                       "drop_pt": base_top1 - ft.test.top1}
                rows.append(row)
                _log(f"seed {seed} target {target} {name}: {row['top1']:.2f} % "
                     f"(x{row['macs_ratio']:.3f} MACs, {time.perf_counter() - t0:.0f} s)")
    return _result(args, rows, base_name)


def summarize_rows(rows: list[dict], targets: list[float]) -> dict:
    """Mean/std of top-1 and mean drop per ``method@target`` over the seeds in ``rows``."""
    summary = {}
    for target in [1.0, *targets]:
        for method in sorted({r["method"] for r in rows if r["target"] == target}):
            done = [r for r in rows if r["target"] == target and r["method"] == method
                    and "top1" in r]
            if not done:
                continue
            vals = [r["top1"] for r in done]
            drops = [r.get("drop_pt", 0.0) for r in done]
            summary[f"{method}@{target}"] = {
                "top1_mean": statistics.fmean(vals),
                "top1_std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "drop_mean_pt": statistics.fmean(drops), "seeds": len(vals)}
    return summary


def _result(args: argparse.Namespace, rows: list[dict], base_name: str | None) -> dict:
    model_name = (base_name if args.base else
                  f"{args.model}{' x0.5' if args.model == 'mobilenet_v2' else ''}, small input")
    return {"benchmark": "prune_fashion_mnist", "machine": cpu_info(),
            "date": time.strftime("%Y-%m-%d"), "threads": args.threads,
            "model": model_name, "base": str(args.base) if args.base else None,
            "train_samples": args.train_samples,
            "val_samples": args.val_samples, "test_samples": args.test_samples,
            "base_epochs": None if args.base else args.base_epochs,
            "finetune_epochs": args.finetune_epochs,
            "targets_macs_kept": args.targets, "seeds": sorted({r["seed"] for r in rows}),
            "rows": rows, "summary": summarize_rows(rows, args.targets),
            "sensitivity": ("one analysis (adaptive BN) of the base on the first seed's "
                            "validation subset, used by every seed" if args.base else
                            "one analysis per seed's base") + f", {args.sens_samples} images"}


def merge(files: list[Path]) -> dict:
    """One result from runs of disjoint seeds (e.g. one process per seed)."""
    parts = [json.loads(f.read_text()) for f in files]
    keys = ("model", "base", "train_samples", "val_samples", "test_samples", "finetune_epochs",
            "targets_macs_kept", "sensitivity")
    for q in parts[1:]:
        bad = [k for k in keys if q.get(k) != parts[0].get(k)]
        if bad:
            _fail(f"error: the runs differ in {bad}; cannot merge them")
    rows = [r for q in parts for r in q["rows"]]
    seeds = [sd for q in parts for sd in q.get("seeds", sorted({r["seed"] for r in q["rows"]}))]
    if len(set(seeds)) != len(seeds):
        _fail(f"error: a seed appears in two runs: {seeds}")
    merged = dict(parts[0])
    merged.update(rows=sorted(rows, key=lambda r: (r["seed"], -r["target"])),
                  seeds=sorted(seeds), summary=summarize_rows(rows, parts[0]["targets_macs_kept"]))
    return merged


def _write(name: str, result: dict) -> None:
    path = RESULTS / name if not Path(name).is_absolute() else Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def _fail(msg: str) -> None:
    print(msg, file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="part", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--threads", type=int, default=2)
    lat.add_argument("--warmup", type=int, default=10)
    lat.add_argument("--runs", type=int, default=100)
    acc = sub.add_parser("accuracy")
    acc.add_argument("--threads", type=int, default=2)
    acc.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    acc.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.25])
    acc.add_argument("--train-samples", type=int, default=4000)
    acc.add_argument("--val-samples", type=int, default=1000)
    acc.add_argument("--test-samples", type=int, default=10000,
                     help="evaluate on the first N test images (default: all 10,000)")
    acc.add_argument("--sens-samples", type=int, default=500)
    acc.add_argument("--base-epochs", type=int, default=6)
    acc.add_argument("--finetune-epochs", type=int, default=2)
    acc.add_argument("--base", type=Path, default=None,
                     help="a trained checkpoint every seed starts from (else: train one)")
    acc.add_argument("--model", default="mobilenet_v2", choices=["mobilenet_v2", "resnet18"],
                     help="the model trained per seed when --base is not given")
    acc.add_argument("--out", default=None,
                     help="result file name under benchmarks/results (default: "
                          "prune_fashion_mnist.json)")
    acc.add_argument("--sensitivity", type=Path, default=None,
                     help="with --base: read the sensitivity table from this file if it "
                          "exists, else write it there (processes running other seeds share it)")
    mrg = sub.add_parser("merge", help="merge accuracy runs of disjoint seeds")
    mrg.add_argument("--from", dest="merge_from", type=Path, nargs="+", required=True)
    mrg.add_argument("--out", default="prune_fashion_mnist.json")
    args = ap.parse_args()
    if args.part == "merge":
        result = merge(args.merge_from)
    else:
        result = latency(args) if args.part == "latency" else accuracy(args)
    name = ("prune_latency_mobilenet_v2.json" if args.part == "latency"
            else args.out or "prune_fashion_mnist.json")
    _write(name, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("rows", "machine")},
                     indent=2)[:3000])


if __name__ == "__main__":
    main()
