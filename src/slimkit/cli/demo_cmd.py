"""``slimkit demo``: the main job on the embedded default (scikit-learn's digits).

Runs the bundled recipe ``slimkit/pipeline/demo.yaml``: train a small-input MobileNetV2,
prune with sensitivity allocation and distillation from the unpruned model, quantize to
INT8, export, benchmark in ONNX Runtime against the original, and write the report; then
prints where the report is and the headline.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

import typer
from rich.markup import escape

from slimkit.cli._output import console, fmt_count, print_json, table

DEMO_RECIPE = Path(__file__).resolve().parents[1] / "pipeline" / "demo.yaml"


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        data: str = typer.Option(None, "--data", help="Replace the dataset (default digits)."),
        max_epochs: int = typer.Option(None, "--max-epochs", min=1,
                                       help="Cap every epoch count (a quicker run)."),
        out: Path = typer.Option(None, "--out", help="Run directory (default runs/demo-<time>)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Train, prune, distill, quantize, export and benchmark a MobileNetV2 on digits."""
        from slimkit.pipeline.runner import run_recipe

        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out_dir = out or Path("runs") / f"demo-{stamp}"
        state = run_recipe(DEMO_RECIPE, out_dir, data=data, max_epochs=max_epochs,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
        if as_json:
            print_json({k: v for k, v in state.items() if k != "records"})
            return
        t = table("demo: MobileNetV2 (small input) on digits", [
            ("stage", "left"), ("params", "right"), ("MACs", "right"), ("file", "right"),
            ("test top-1", "right"), ("ORT batch-1 latency", "right")])
        for r in state["stages"]:
            t.add_row(r["name"], fmt_count(r["params"]) if r.get("params") else "—",
                      fmt_count(r["macs"]) if r.get("macs") else "—",
                      f"{r['size_bytes'] / 1e6:.2f} MB" if r.get("size_bytes") else "—",
                      f"{r['top1']:.2f} %" if r.get("top1") is not None else "—",
                      f"{r['latency_ms']:.2f} ms" if r.get("latency_ms") else "—")
        console.print(t)
        bench = next((rec for rec in state["records"] if rec["kind"] == "bench"), None)
        if bench:
            for row in bench["metrics"]["rows"]:
                console.print(escape(f"bench: {row['model']} [{row['runtime']}] "
                                     f"{row['median_ms']:.3f} ms median "
                                     f"({row['speedup_vs_first']:.2f}x)"))
        console.print(f"report: {state.get('report')}")
        if state.get("headline"):
            console.print(f"[bold]{state['headline']}[/bold] (first vs last stage: ORT "
                          "latency, file size, test top-1)")
