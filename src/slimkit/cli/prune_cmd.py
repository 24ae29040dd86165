"""``slimkit prune`` and ``slimkit sensitivity``."""

from __future__ import annotations

from pathlib import Path

import typer

from slimkit.cli._output import console, fmt_bytes, fmt_count, print_json, table


def _default_out(checkpoint: Path, suffix: str) -> Path:
    return Path("runs") / f"{checkpoint.parent.name or checkpoint.stem}-{suffix}"


def register(app: typer.Typer) -> None:
    @app.command("prune")
    def prune_command(
        checkpoint: Path = typer.Argument(..., help="A slimkit checkpoint (.safetensors)."),
        data: str = typer.Option(..., "--data", "-d", help="Dataset spec (for accuracy and "
                                 "fine-tuning)."),
        ratio: float = typer.Option(None, "--ratio", help="Fraction of channels to remove."),
        target_macs: float = typer.Option(None, "--target-macs",
                                          help="Fraction of MACs to keep (0.5 = half)."),
        target_params: float = typer.Option(None, "--target-params",
                                            help="Fraction of parameters to keep."),
        method: str = typer.Option("l2", "--method",
                                   help="l1, l2, bn, taylor, fpgm or random."),
        global_pruning: bool = typer.Option(False, "--global",
                                            help="Rank channels across layers."),
        round_to: int = typer.Option(8, "--round-to", min=1,
                                     help="Keep channel counts multiples of N."),
        ignore: list[str] = typer.Option([], "--ignore", help="Layer to keep whole (repeat)."),
        steps: int = typer.Option(1, "--steps", min=1, help="Iterative pruning steps."),
        finetune_epochs: int = typer.Option(0, "--finetune-epochs", min=0),
        finetune_lr: float = typer.Option(0.01, "--finetune-lr"),
        batch_size: int = typer.Option(64, "--batch-size", min=1),
        sensitivity: Path = typer.Option(None, "--sensitivity",
                                         help="sensitivity.json: allocate per-layer ratios "
                                              "(with --target-macs)."),
        unstructured: bool = typer.Option(False, "--unstructured",
                                          help="Zero weights by magnitude instead."),
        sparsity: float = typer.Option(None, "--sparsity",
                                       help="Fraction of zeros for --unstructured."),
        latency_runs: int = typer.Option(30, "--latency-runs", min=0),
        seed: int = typer.Option(0, "--seed"),
        distill: bool = typer.Option(False, "--distill",
                                     help="Fine-tune with the unpruned model as teacher."),
        out: Path = typer.Option(None, "--out", help="Output directory."),
        force: bool = typer.Option(False, "--force", help="Replace an existing output."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Prune a checkpoint: remove channels (or zero weights), fine-tune, compare."""
        from slimkit.compress.pruning.api import prune_checkpoint

        out_dir = out or _default_out(checkpoint, "pruned")
        run = prune_checkpoint(
            checkpoint, data, out_dir, ratio=ratio, target_macs=target_macs,
            target_params=target_params, method=method, global_pruning=global_pruning,
            round_to=round_to, ignore=tuple(ignore), steps=steps,
            finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, batch_size=batch_size,
            sensitivity=sensitivity, unstructured=unstructured, sparsity=sparsity,
            latency_runs=latency_runs, force=force, seed=seed, distill=distill)
        b, a = run.before, run.after
        if as_json:
            print_json({"checkpoint": str(run.checkpoint), "before": b.to_dict(),
                        "after": a.to_dict(), "record": run.record})
            return
        t = table(f"pruning {checkpoint.name} ({run.record.get('kind')}, {method})",
                  [("", "left"), ("before", "right"), ("after", "right"), ("ratio", "right")])
        t.add_row("parameters", fmt_count(b.params), fmt_count(a.params),
                  f"{a.params / max(b.params, 1):.2f}x")
        t.add_row("MACs", fmt_count(b.macs), fmt_count(a.macs), f"{a.macs / max(b.macs, 1):.2f}x")
        t.add_row("fp32 weights", fmt_bytes(b.size_bytes), fmt_bytes(a.size_bytes),
                  f"{a.size_bytes / max(b.size_bytes, 1):.2f}x")
        if b.top1 is not None and a.top1 is not None:
            t.add_row("test top-1", f"{b.top1:.2f} %", f"{a.top1:.2f} %",
                      f"{a.top1 - b.top1:+.2f} pt")
        if b.latency_ms and a.latency_ms:
            t.add_row("latency (torch eager, batch 1)", f"{b.latency_ms:.2f} ms",
                      f"{a.latency_ms:.2f} ms", f"{b.latency_ms / a.latency_ms:.2f}x faster")
        sizes = run.record.get("compressed_sizes")
        if sizes:
            t.add_row("zlib-compressed file", fmt_bytes(sizes["before"]["zlib_bytes"]),
                      fmt_bytes(sizes["after"]["zlib_bytes"]),
                      f"{sizes['after']['zlib_bytes'] / max(sizes['before']['zlib_bytes'], 1):.2f}x")
        console.print(t)
        for layer, reason in run.record.get("excluded", []) or []:
            console.print(f"kept whole: {layer} ({reason})")
        console.print(f"checkpoint: {run.checkpoint}")

    @app.command("sensitivity")
    def sensitivity_command(
        checkpoint: Path = typer.Argument(..., help="A slimkit checkpoint (.safetensors)."),
        data: str = typer.Option(..., "--data", "-d", help="Dataset spec."),
        ratios: str = typer.Option("0.25,0.5,0.75", "--ratios",
                                   help="Comma-separated channel ratios to try."),
        method: str = typer.Option("l2", "--method"),
        samples: int = typer.Option(512, "--samples", min=1,
                                    help="Validation images per measurement."),
        round_to: int = typer.Option(8, "--round-to", min=1),
        ignore: list[str] = typer.Option([], "--ignore"),
        out: Path = typer.Option(None, "--out", help="Output directory."),
        force: bool = typer.Option(False, "--force"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Prune each layer group alone at several ratios and measure the accuracy drop."""
        from slimkit.compress.pruning.api import sensitivity_checkpoint
        from slimkit.errors import InvalidArgumentError

        try:
            values = tuple(float(v) for v in ratios.split(",") if v.strip())
        except ValueError as exc:
            raise InvalidArgumentError(f"--ratios must be numbers like 0.25,0.5, got "
                                       f"{ratios!r}") from exc
        out_dir = out or _default_out(checkpoint, "sensitivity")
        result = sensitivity_checkpoint(checkpoint, data, out_dir, ratios=values,
                                        method=method, samples=samples, round_to=round_to,
                                        ignore=tuple(ignore), force=force)
        if as_json:
            print_json(result.to_dict())
            return
        t = table(f"sensitivity ({result.samples} images, unpruned {result.base_top1:.2f} %)",
                  [("layer group", "left")] + [(f"drop @ {r:g}", "right")
                                               for r in result.ratios])
        for layer in result.layers():
            rows = {r["ratio"]: r for r in result.rows if r["layer"] == layer}
            t.add_row(layer, *[f"{rows[r]['drop']:+.2f}" for r in result.ratios])
        console.print(t)
        console.print(f"table: {out_dir / 'sensitivity.json'}  plot: "
                      f"{out_dir / 'sensitivity.png'}")
