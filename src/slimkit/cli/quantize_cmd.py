"""``slimkit quantize``: INT8 that really runs in INT8."""

from __future__ import annotations

from pathlib import Path

import typer

from slimkit.cli._output import console, fmt_bytes, print_json, table


def register(app: typer.Typer) -> None:
    @app.command("quantize")
    def quantize_command(
        source: Path = typer.Argument(..., help="A checkpoint (.safetensors) or fp32 .onnx."),
        data: str = typer.Option(..., "--data", "-d",
                                 help="Dataset spec: calibration and accuracy data."),
        out: Path = typer.Option(None, "--out", "-o", help="Destination .onnx (INT8)."),
        calib_samples: int = typer.Option(256, "--calib-samples", min=1),
        method: str = typer.Option("minmax", "--method", help="minmax, entropy, percentile."),
        per_tensor: bool = typer.Option(False, "--per-tensor",
                                        help="One weight scale per tensor (default: per "
                                             "channel)."),
        equalize: bool = typer.Option(False, "--equalize",
                                      help="Cross-layer equalization first (checkpoints)."),
        keep_relu6: bool = typer.Option(False, "--keep-relu6",
                                        help="Do not replace ReLU6 by ReLU for equalization."),
        bias_correction: bool = typer.Option(False, "--bias-correction"),
        activations: str = typer.Option("auto", "--activations",
                                        help="int8, uint8 or auto (uint8 on x86: ONNX "
                                             "Runtime's fast u8 x s8 kernels)."),
        max_acc_drop: float = typer.Option(None, "--max-acc-drop",
                                           help="Accuracy budget in points: keep the most "
                                                "damaged layers fp32 until it holds."),
        qat_epochs: int = typer.Option(0, "--qat-epochs", min=0,
                                       help="Quantization-aware training epochs first."),
        qat_lr: float = typer.Option(0.005, "--qat-lr"),
        batch_size: int = typer.Option(64, "--batch-size", min=1),
        force: bool = typer.Option(False, "--force"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Quantize to INT8 (ONNX Runtime static QDQ) and report accuracy and size."""
        from slimkit.compress.quantization.api import quantize_model_file

        dest = out or source.with_name(source.stem + ".int8.onnx")
        run = quantize_model_file(source, data, dest, calib_samples=calib_samples,
                                  method=method, per_channel=not per_tensor, equalize=equalize,
                                  relu6_to_relu=not keep_relu6, bias_correction=bias_correction,
                                  max_acc_drop=max_acc_drop, qat_epochs=qat_epochs,
                                  qat_lr=qat_lr, batch_size=batch_size, force=force,
                                  activations=activations)
        if as_json:
            print_json(run.to_dict())
            return
        t = table(f"INT8 ({' -> '.join(run.steps)}, {method}, "
                  f"{'per-tensor' if per_tensor else 'per-channel'})",
                  [("", "left"), ("value", "right")])
        if run.torch_top1 is not None:
            t.add_row("top-1 PyTorch fp32", f"{run.torch_top1:.2f} %")
        t.add_row("top-1 ONNX fp32", f"{run.fp32_onnx_top1:.2f} %")
        t.add_row("top-1 ONNX INT8", f"{run.int8_top1:.2f} %")
        t.add_row("file fp32 -> INT8", f"{fmt_bytes(run.size_fp32)} -> {fmt_bytes(run.size_int8)}")
        t.add_row("integer kernels", ", ".join(f"{k} x{v}" for k, v in run.int8_ops.items())
                  or "none (runs in float!)")
        if "activations" in run.details:
            t.add_row("activations / weights",
                      f"{run.details['activations']} / int8"
                      f"{' (7-bit range)' if run.details.get('reduce_range') else ''}")
        console.print(t)
        for r in run.details.get("guard_rounds", [])[1:]:
            console.print(f"kept fp32: {r['excluded'][-1]} (SQNR {r['sqnr_db']:.1f} dB, "
                          f"INT8 top-1 then {r['int8_top1']:.2f} %)")
        console.print(f"written: {run.path}")
