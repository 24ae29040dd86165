"""``slimkit demo``: the main job on the embedded default.

Until training lands it profiles a few zoo models side by side (params, MACs, size, energy
estimate, eager latency measured interleaved) and shows where one model's costs go.
"""

from __future__ import annotations

import typer

from slimkit.cli._output import console, fmt_bytes, fmt_count, print_json, table

DEMO_MODELS = ("mobilenet_v3_small_100", "mobilenet_v2_100", "shufflenet_v2_x1_0",
               "efficientnet_b0", "resnet18")


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        input_size: int = typer.Option(224, "--input-size", min=32, help="Input side in px."),
        threads: int = typer.Option(2, "--threads", min=1, help="Intra-op threads."),
        runs: int = typer.Option(20, "--runs", min=1, help="Timed runs per model."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Profile a few zoo models and show where their parameters, MACs and latency go."""
        from slimkit.analysis import cpu_info, measure_torch, profile, stage_breakdown
        from slimkit.models import create_model

        models = {name: create_model(name).eval() for name in DEMO_MODELS}
        profiles = {name: profile(m, input_size) for name, m in models.items()}
        with console.status("timing (batch 1, interleaved)..."):
            lat = measure_torch(models, (3, input_size, input_size), threads=threads,
                                warmup=5, runs=runs)
            prof, parts = stage_breakdown(models["mobilenet_v2_100"], input_size,
                                          threads=threads, runs=runs)
        if as_json:
            print_json({"cpu": cpu_info(), "models": {
                n: {"profile": {k: v for k, v in profiles[n].to_dict().items() if k != "layers"},
                    "latency": lat[n].to_dict()} for n in models},
                "breakdown": {"model": "mobilenet_v2_100", "parts": [p.to_dict() for p in parts]}})
            return
        base = lat[DEMO_MODELS[-1]].median_ms
        t = table(f"zoo at {input_size} px, batch 1, {threads} threads, torch eager "
                  f"(median of {runs} runs)",
                  [("model", "left"), ("params", "right"), ("MACs", "right"),
                   ("fp32 size", "right"), ("energy est.", "right"), ("latency", "right"),
                   ("vs resnet18", "right")])
        for n in models:
            p, s = profiles[n], lat[n]
            t.add_row(n, fmt_count(p.params), fmt_count(p.macs), fmt_bytes(p.weight_bytes_fp32),
                      f"{p.energy_fp32_mj:.1f} mJ", f"{s.median_ms:.1f} ms",
                      f"{base / s.median_ms:.2f}x")
        console.print(t)
        total_ms = sum(r.latency_ms for r in parts)
        t2 = table("where mobilenet_v2_100's costs go", [
            ("part", "left"), ("params", "right"), ("% params", "right"), ("MACs", "right"),
            ("% MACs", "right"), ("latency", "right"), ("% latency", "right")])
        for r in parts:
            t2.add_row(r.name, fmt_count(r.params), f"{100 * r.params / prof.params:.0f} %",
                       fmt_count(r.macs), f"{100 * r.macs / max(prof.macs, 1):.0f} %",
                       f"{r.latency_ms:.2f} ms", f"{100 * r.latency_ms / total_ms:.0f} %")
        console.print(t2)
        console.print("MAC savings show up in an optimized runtime more than in eager "
                      "PyTorch at batch 1, where per-op overhead dominates.")
