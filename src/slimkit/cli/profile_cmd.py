"""``slimkit profile MODEL``: params, MACs, memory, size, energy, per-layer table."""

from __future__ import annotations

import typer

from slimkit.cli._output import console, fmt_bytes, fmt_count, print_json, table


def register(app: typer.Typer) -> None:
    @app.command("profile")
    def profile_command(
        model: str = typer.Argument(..., help="A zoo model name (see `slimkit models`)."),
        input_size: int = typer.Option(None, "--input-size", min=8,
                                       help="Square input side in px (default: the model's)."),
        num_classes: int = typer.Option(None, "--num-classes", min=0,
                                        help="Classifier outputs (default: the model's)."),
        small_input: bool = typer.Option(False, "--small-input",
                                         help="Use the 28-32 px variant of the model."),
        width_mult: float = typer.Option(None, "--width-mult", help="Width multiplier."),
        batch_size: int = typer.Option(1, "--batch-size", min=1, help="Inputs per pass."),
        per_layer: bool = typer.Option(False, "--per-layer", help="Show every layer."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Profile a model: parameters, MACs, activation memory, size and energy estimate."""
        import torch

        from slimkit.analysis import profile
        from slimkit.models import create_model

        with torch.device("meta"):
            net = create_model(model, num_classes=num_classes, width_mult=width_mult,
                               small_input=small_input or None)
        prof = profile(net, input_size, batch_size=batch_size)
        if as_json:
            data = prof.to_dict()
            if not per_layer:
                data.pop("layers")
            print_json({"model": model, **data})
            return
        summary = table(f"{model} @ {tuple(prof.input_shape)}", [("metric", "left"),
                                                                   ("value", "right")])
        summary.add_row("parameters", f"{prof.params:,}")
        summary.add_row("MACs", f"{prof.macs:,} ({fmt_count(prof.macs)})")
        summary.add_row("weights fp32 / int8", f"{fmt_bytes(prof.weight_bytes_fp32)} / "
                        f"{fmt_bytes(prof.weight_bytes_int8)}")
        summary.add_row("activations (all layer outputs, fp32)", fmt_bytes(prof.activation_bytes))
        summary.add_row("peak layer in+out (fp32)", fmt_bytes(prof.peak_activation_bytes))
        summary.add_row("energy estimate fp32 / int8",
                        f"{prof.energy_fp32_mj:.2f} / {prof.energy_int8_mj:.2f} mJ")
        console.print(summary)
        rows = prof.layers if per_layer else sorted(prof.layers, key=lambda r: -r.macs)[:10]
        title = "per layer" if per_layer else "top 10 layers by MACs (--per-layer for all)"
        t = table(title, [("layer", "left"), ("type", "left"), ("output", "right"),
                          ("params", "right"), ("MACs", "right"), ("share", "right")])
        for r in rows:
            t.add_row(r.name, r.type, "x".join(map(str, r.output_shape[1:])), fmt_count(r.params),
                      fmt_count(r.macs), f"{100 * r.macs_share:.1f} %")
        console.print(t)
        console.print(f"energy model: {prof.energy_model} (see docs/costs.md)")
