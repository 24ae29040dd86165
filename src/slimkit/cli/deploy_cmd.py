"""``slimkit export`` and ``slimkit bench``."""

from __future__ import annotations

from pathlib import Path

import typer

from slimkit.cli._output import console, fmt_count, print_json, table


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_command(
        source: str = typer.Argument(..., help="A checkpoint (.safetensors) or zoo model name."),
        out: Path = typer.Option(..., "--out", "-o", help="Destination .onnx file."),
        input_size: int = typer.Option(None, "--input-size", min=8),
        opset: int = typer.Option(18, "--opset", min=13),
        exporter: str = typer.Option("auto", "--exporter", help="auto, dynamo or legacy."),
        static_batch: bool = typer.Option(False, "--static-batch",
                                          help="Fix the batch dimension to 1."),
        no_fold_bn: bool = typer.Option(False, "--no-fold-bn"),
        rtol: float = typer.Option(1e-3, "--rtol", help="Accepted relative error."),
        force: bool = typer.Option(False, "--force"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Export to ONNX, check it, and verify it against PyTorch in ONNX Runtime."""
        import torch

        from slimkit.deploy import export_onnx
        from slimkit.deploy.bench import load_for_bench

        entry = load_for_bench(source, input_size)
        if entry.model is None:
            from slimkit.errors import InvalidArgumentError

            raise InvalidArgumentError("export takes a checkpoint or a zoo model, not an .onnx")
        extra = {}
        if source.endswith(".safetensors"):
            from slimkit.train import read_checkpoint_meta

            meta = read_checkpoint_meta(source)
            extra = {"class_names": meta.class_names, "mean": meta.mean, "std": meta.std,
                     "input_size": meta.input_size, "dataset": meta.dataset,
                     "lineage": [s["stage"] for s in meta.lineage]}
            if input_size:
                extra["input_size"] = list(entry.input_shape)
        result = export_onnx(entry.model, torch.zeros(1, *entry.input_shape), out,
                             dynamic_batch=not static_batch, opset=opset,
                             fold_bn=not no_fold_bn, exporter=exporter,
                             metadata={k: v for k, v in extra.items() if v is not None},
                             rtol=rtol, overwrite=force)
        if as_json:
            print_json(result.to_dict())
            return
        console.print(f"{result.path}: {result.nodes} nodes, {result.size_bytes / 1e6:.2f} MB, "
                      f"{result.exporter} exporter, opset {result.opset}, "
                      f"{result.folded_batchnorms} BatchNorms folded; ONNX Runtime vs PyTorch "
                      f"relative error {result.rel_err:.1e} on {result.parity_batch} fresh inputs")

    @app.command("bench")
    def bench_command(
        models: list[str] = typer.Argument(..., help="Zoo names, checkpoints or .onnx files."),
        input_size: int = typer.Option(None, "--input-size", min=8),
        batch_size: int = typer.Option(1, "--batch-size", min=1),
        threads: int = typer.Option(2, "--threads", min=1),
        runtime: str = typer.Option("all", "--runtime",
                                    help="torch, torch-channels_last, torch-compile, "
                                         "onnxruntime, all (torch + onnxruntime) or a "
                                         "comma-separated list."),
        warmup: int = typer.Option(10, "--warmup", min=0),
        runs: int = typer.Option(100, "--runs", min=1),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Time models interleaved; speed-ups are against the first row."""
        from slimkit.deploy.bench import load_for_bench, run_bench

        runtimes = ["torch", "onnxruntime"] if runtime == "all" else \
            [r.strip() for r in runtime.split(",") if r.strip()]
        entries = [load_for_bench(m, input_size) for m in models]
        result = run_bench(entries, runtimes, batch_size=batch_size, threads=threads,
                           warmup=warmup, runs=runs)
        if as_json:
            print_json(result)
            return
        t = table(f"batch {batch_size}, {threads} threads, median of {runs} runs "
                  f"(after {warmup} warm-up), interleaved", [
                      ("model", "left"), ("runtime", "left"), ("MACs", "right"),
                      ("median", "right"), ("p90", "right"), ("throughput", "right"),
                      ("speed-up", "right")])
        for r in result["rows"]:
            t.add_row(r["model"], r["runtime"], fmt_count(r["macs"]) if r["macs"] else "",
                      f"{r['median_ms']:.2f} ms", f"{r['p90_ms']:.2f} ms",
                      f"{r['throughput']:.1f}/s", f"{r['speedup_vs_first']:.2f}x")
        console.print(t)
        for s in result["skipped"]:
            console.print(f"skipped: {s}")
        m = result["machine"]
        console.print(f"{m['cpu']} ({', '.join(m['isa']) or 'no AVX-512/AMX'}), torch "
                      f"{m['torch']}")
