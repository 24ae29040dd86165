"""Benchmark: train a small-input MobileNetV2 on Fashion-MNIST with slimkit's trainer.

Records test accuracy, epochs and wall time, and compares the trainer's throughput with a
plain hand-written PyTorch loop on the same model, batches and optimizer, measured side by
side in one run (rounds interleaved, medians compared).

    python benchmarks/train_fashion_mnist.py --epochs 8 --width 0.5
    python benchmarks/train_fashion_mnist.py --epochs 1 --train-subset 2000 --out /tmp/x.json

Needs the Fashion-MNIST IDX files (`apt-get install dataset-fashion-mnist`, or
SLIMKIT_DATA). Writes benchmarks/results/train_fashion_mnist.json by default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from slimkit.analysis.latency import cpu_info
from slimkit.data import BatchLoader, load_dataset
from slimkit.data.base import TensorImageDataset
from slimkit.models import create_model
from slimkit.train import TrainConfig, fit
from slimkit.train.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results"


def plain_loop_epoch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     batch_size: int, opt: torch.optim.Optimizer, seed: int) -> float:
    """The hand-written baseline: pre-normalized NHWC tensors, a random permutation,
    forward / cross-entropy / backward / step. Returns samples per second."""
    model.train()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=g)
    t0 = time.perf_counter()
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        x = images[idx].contiguous(memory_format=torch.channels_last)
        loss = nn.functional.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(order) / (time.perf_counter() - t0)


def throughput_comparison(model_name: str, width: float, data, batch_size: int, samples: int,
                          rounds: int) -> dict:
    """Interleave slimkit epochs and plain-loop epochs over the same subset."""
    subset = TensorImageDataset(data.train.images[:samples], data.train.labels[:samples])
    bundle = dataclasses.replace(data, train=subset)
    cfg = TrainConfig(epochs=rounds, batch_size=batch_size, lr=0.05, augment="none",
                      channels_last=True)
    torch.manual_seed(0)
    model_a = create_model(model_name, num_classes=10, in_chans=1, small_input=True,
                           width_mult=width)
    torch.manual_seed(0)
    model_b = create_model(model_name, num_classes=10, in_chans=1, small_input=True,
                           width_mult=width).to(memory_format=torch.channels_last)
    trainer = Trainer(model_a, bundle, cfg, progress=False)
    loader = BatchLoader.for_bundle(bundle, "train", samples, shuffle=False, augment="none")
    images, labels = next(iter(loader))  # normalized float, same as the trainer sees
    opt = torch.optim.SGD(model_b.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    # one untimed warm-up round each: oneDNN creates its kernels for new shapes on first use
    trainer.model.train()
    trainer.train_epoch()
    plain_loop_epoch(model_b, images, labels, batch_size, opt, seed=-1)
    ours, plain = [], []
    for r in range(rounds):
        trainer.model.train()
        t0 = time.perf_counter()
        trainer.train_epoch()
        trainer.epoch += 1
        ours.append(samples / (time.perf_counter() - t0))
        plain.append(plain_loop_epoch(model_b, images, labels, batch_size, opt, seed=r))
        print(f"  round {r + 1}: slimkit {ours[-1]:.1f} / plain {plain[-1]:.1f} samples/s",
              file=sys.stderr)
    ratio = statistics.median(ours) / statistics.median(plain)
    return {"samples_per_round": samples, "rounds": rounds, "warmup_rounds": 1,
            "augment": "none",
            "slimkit_samples_per_s": ours, "plain_samples_per_s": plain,
            "median_ratio": ratio, "within_5_percent": ratio >= 0.95}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--model", default="mobilenet_v2_100")
    ap.add_argument("--width", type=float, default=0.5, help="width multiplier")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-subset", type=int, default=0, help="0: all 54k training images")
    ap.add_argument("--throughput-samples", type=int, default=2048)
    ap.add_argument("--throughput-rounds", type=int, default=5)
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "train_fashion_mnist.json")
    ap.add_argument("--run-dir", type=Path, default=Path("runs/bench/fmnist_mobilenet_v2_050"),
                    help="where the trained checkpoint goes (the quantization and pruning "
                         "benchmarks start from it)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--resume", action="store_true",
                    help="continue the interrupted run in --run-dir (same settings; exact)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    data = load_dataset("fashion-mnist")  # 54k train / 6k val / 10k test
    if args.train_subset:
        data.train = TensorImageDataset(data.train.images[: args.train_subset],
                                        data.train.labels[: args.train_subset])
    result: dict = {
        "benchmark": "train_fashion_mnist",
        "model": args.model,
        "width_mult": args.width,
        "small_input": True,
        "dataset": data.name,
        "train_samples": len(data.train),
        "test_samples": len(data.test),
        "threads": args.threads,
        "machine": cpu_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.skip_throughput:
        result["throughput"] = previous.get("throughput")
    else:
        print("throughput: slimkit trainer vs plain loop (interleaved)", file=sys.stderr)
        result["throughput"] = throughput_comparison(
            args.model, args.width, data, args.batch_size, args.throughput_samples,
            args.throughput_rounds)
    if args.skip_training:
        result["training"] = previous.get("training")
    else:
        torch.manual_seed(0)
        model = create_model(args.model, num_classes=10, in_chans=1, small_input=True,
                             width_mult=args.width)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          label_smoothing=0.1, warmup_epochs=1)
        t0 = time.perf_counter()
        resumed_from = None
        if args.resume:
            resumed_from = len((args.run_dir / "log.jsonl").read_text().splitlines())
        fitted = fit(model, data, cfg, progress=False, out_dir=args.run_dir,
                     force=not args.resume, resume=args.resume)
        assert fitted.test is not None
        result["training"] = {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "augment": data.augment,
            "label_smoothing": 0.1,
            "test_top1": fitted.test.top1,
            "test_top5": fitted.test.top5,
            "history": fitted.history,
            "wall_time_s": time.perf_counter() - t0,
            # a resumed run's wall time covers only the epochs after the resume; the
            # history's elapsed_s is the whole run's (contended epochs included)
            "resumed_after_epoch": resumed_from,
            "train_samples_per_s": fitted.train_samples_per_s,
            "target_top1": 93.0,
            "meets_target": fitted.test.top1 >= 93.0,
            "checkpoint": str(fitted.checkpoint),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k in ("throughput", "training")},
                     indent=2, default=str)[:2000])


if __name__ == "__main__":
    main()
