"""``slimkit demo``: the main job on the embedded default (scikit-learn's digits).

Trains a small-input MobileNetV2 on digits, evaluates it on the held-out test split, and
shows where its parameters, MACs and latency go. Later stages (pruning, distillation, INT8,
export, report) join as they land.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import typer

from slimkit.cli._output import console, fmt_bytes, fmt_count, print_json, table


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        model: str = typer.Option("mobilenet_v2", "--model", help="Zoo model to train."),
        data: str = typer.Option("digits", "--data", help="Dataset spec."),
        epochs: int = typer.Option(8, "--epochs", min=1, help="Training epochs."),
        batch_size: int = typer.Option(64, "--batch-size", min=1),
        threads: int = typer.Option(2, "--threads", min=1, help="Threads for the latency runs."),
        out: Path = typer.Option(None, "--out", help="Run directory (default runs/demo-<time>)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Train a small-input MobileNetV2 on digits and show accuracy and costs."""
        from slimkit.analysis import stage_breakdown
        from slimkit.train import TrainConfig
        from slimkit.train.api import train_model

        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = out or Path("runs") / f"demo-{stamp}"
        t0 = time.perf_counter()
        result = train_model(model, data, TrainConfig(epochs=epochs, batch_size=batch_size),
                             out_dir=out_dir, progress=None if not as_json else False)
        minutes = (time.perf_counter() - t0) / 60
        trained = result.model.eval()
        prof, parts = stage_breakdown(trained, threads=threads, runs=20)
        test = result.test
        assert test is not None
        if as_json:
            print_json({"model": model, "data": data, "epochs": epochs,
                        "test": test.to_dict(False), "checkpoint": str(result.checkpoint),
                        "profile": {k: v for k, v in prof.to_dict().items() if k != "layers"},
                        "parts": [p.to_dict() for p in parts], "minutes": minutes})
            return
        summary = table(f"{model} on {data}", [("", "left"), ("", "right")])
        summary.add_row("test top-1 / top-5", f"{test.top1:.2f} % / {test.top5:.2f} %")
        summary.add_row("parameters", f"{prof.params:,}")
        summary.add_row("MACs per image", f"{fmt_count(prof.macs)} at {prof.input_shape[-1]} px")
        summary.add_row("weights fp32 / int8", f"{fmt_bytes(prof.weight_bytes_fp32)} / "
                        f"{fmt_bytes(prof.weight_bytes_int8)}")
        summary.add_row("energy estimate", f"{prof.energy_fp32_mj:.3f} mJ per image (fp32)")
        summary.add_row("training", f"{epochs} epochs, {result.train_samples_per_s:.0f} "
                        f"images/s, {minutes:.1f} min")
        console.print(summary)
        total_ms = sum(r.latency_ms for r in parts) or 1.0
        t2 = table("where the costs go (batch 1, torch eager)", [
            ("part", "left"), ("params", "right"), ("% params", "right"), ("MACs", "right"),
            ("% MACs", "right"), ("latency", "right"), ("% latency", "right")])
        for r in parts:
            t2.add_row(r.name, fmt_count(r.params), f"{100 * r.params / prof.params:.0f} %",
                       fmt_count(r.macs), f"{100 * r.macs / max(prof.macs, 1):.0f} %",
                       f"{r.latency_ms:.2f} ms", f"{100 * r.latency_ms / total_ms:.0f} %")
        console.print(t2)
        console.print(f"run directory: {out_dir} (model.safetensors, metrics.json, log.jsonl, "
                      "confusion.png)")
        console.print(f"[bold]{model} on {data}: {test.top1:.2f} % test top-1, "
                      f"{fmt_count(prof.params)} params, {fmt_count(prof.macs)} MACs[/bold]")
