"""``slimkit distill``."""

from __future__ import annotations

from pathlib import Path

import typer

from slimkit.cli._output import console, print_json


def register(app: typer.Typer) -> None:
    @app.command("distill")
    def distill_command(
        teacher: Path = typer.Option(..., "--teacher", help="Teacher checkpoint."),
        student: str = typer.Option(..., "--student",
                                    help="Student: a zoo model name or a checkpoint."),
        data: str = typer.Option(..., "--data", "-d", help="Dataset spec."),
        method: str = typer.Option("logit", "--method", help="logit, feature or at."),
        temperature: float = typer.Option(4.0, "--temperature"),
        alpha: float = typer.Option(0.9, "--alpha", help="Weight of the distillation term."),
        pair: list[str] = typer.Option([], "--pair",
                                       help="STUDENT_LAYER:TEACHER_LAYER (feature, at)."),
        beta: float = typer.Option(None, "--beta", help="Weight of feature/AT losses."),
        epochs: int = typer.Option(10, "--epochs", min=1),
        batch_size: int = typer.Option(64, "--batch-size", min=1),
        lr: float = typer.Option(None, "--lr"),
        seed: int = typer.Option(0, "--seed"),
        out: Path = typer.Option(None, "--out"),
        force: bool = typer.Option(False, "--force"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Train a student with a teacher's guidance (logits, features or attention)."""
        from slimkit.compress.distill import distill_checkpoint
        from slimkit.train import TrainConfig

        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
        name = Path(student).parent.name if student.endswith(".safetensors") else student
        out_dir = out or Path("runs") / f"{name}-distilled"
        result = distill_checkpoint(teacher, student, data, out_dir, method=method,
                                    temperature=temperature, alpha=alpha, pairs=pair,
                                    beta=beta, config=cfg, force=force)
        if result.rank != 0:
            return
        assert result.test is not None
        if as_json:
            print_json({"checkpoint": str(result.checkpoint), "test": result.test.to_dict(False),
                        "method": method})
            return
        console.print(f"student test top-1 {result.test.top1:.2f} % ({method} distillation)")
        console.print(f"checkpoint: {result.checkpoint}")
