"""``slimkit train`` and ``slimkit eval``."""

from __future__ import annotations

from pathlib import Path

import typer

from slimkit.cli._output import console, print_json, table


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        model: str = typer.Option(..., "--model", "-m", help="Zoo model name."),
        data: str = typer.Option("digits", "--data", "-d",
                                 help="Dataset spec: digits, shapes, fashion-mnist[:PATH], "
                                      "cifar10:PATH or an image folder."),
        epochs: int = typer.Option(10, "--epochs", min=1),
        batch_size: int = typer.Option(64, "--batch-size", min=1),
        lr: float = typer.Option(None, "--lr", help="Peak learning rate (default by optimizer)."),
        optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (Nesterov) or adamw."),
        schedule: str = typer.Option("cosine", "--schedule", help="cosine, onecycle, constant."),
        warmup_epochs: float = typer.Option(1.0, "--warmup-epochs", min=0.0),
        weight_decay: float = typer.Option(None, "--weight-decay", min=0.0),
        label_smoothing: float = typer.Option(0.0, "--label-smoothing", min=0.0),
        grad_clip: float = typer.Option(None, "--grad-clip", help="Max gradient norm."),
        ema: float = typer.Option(None, "--ema", help="EMA decay of the weights, e.g. 0.999."),
        precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or auto."),
        channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last"),
        input_size: int = typer.Option(None, "--input-size", min=8,
                                       help="Resize images to N px (default: the data's)."),
        small_input: bool = typer.Option(None, "--small-input/--no-small-input",
                                         help="28-32 px variant (default: on for <= 64 px)."),
        width_mult: float = typer.Option(None, "--width-mult"),
        pretrained: Path = typer.Option(None, "--pretrained",
                                        help="Weights to start from (.safetensors or .pth)."),
        freeze_backbone: bool = typer.Option(False, "--freeze-backbone",
                                             help="Train only the classifier."),
        linear_probe_epochs: int = typer.Option(None, "--linear-probe-epochs", min=1,
                                                help="Classifier only for N epochs, then all."),
        backbone_lr_mult: float = typer.Option(1.0, "--backbone-lr-mult", min=0.0,
                                               help="LR multiplier of all but the head."),
        seed: int = typer.Option(0, "--seed"),
        out: Path = typer.Option(None, "--out", help="Run directory (default runs/MODEL-DATA)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
        force: bool = typer.Option(False, "--force", help="Replace a run already in --out."),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Train a zoo model; writes checkpoints, metrics and plots to the run directory."""
        from slimkit.train.api import config_from_options, train_model

        cfg = config_from_options(
            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
            warmup_epochs=warmup_epochs, weight_decay=weight_decay,
            label_smoothing=label_smoothing, grad_clip=grad_clip, ema_decay=ema,
            precision=precision, channels_last=channels_last, seed=seed,
            backbone_lr_mult=backbone_lr_mult,
        )
        out_dir = out or Path("runs") / f"{model}-{_slug(data)}"
        result = train_model(model, data, cfg, out_dir=out_dir, input_size=input_size,
                             small_input=small_input, width_mult=width_mult,
                             pretrained=pretrained, freeze_backbone=freeze_backbone,
                             linear_probe_epochs=linear_probe_epochs, resume=resume,
                             force=force, progress=None if not as_json else False)
        test = result.test
        assert test is not None
        if result.rank != 0:
            return  # under torchrun only rank 0 reports
        if as_json:
            print_json({"checkpoint": str(result.checkpoint), "test": test.to_dict(False),
                        "epochs": cfg.epochs, "train_samples_per_s": result.train_samples_per_s,
                        "wall_time_s": result.wall_time_s})
            return
        console.print(f"test top-1 {test.top1:.2f} %  top-5 {test.top5:.2f} %  "
                      f"({test.samples} images)  {result.train_samples_per_s:.0f} samples/s")
        console.print(f"checkpoint: {result.checkpoint}")

    @app.command("eval")
    def eval_command(
        checkpoint: Path = typer.Argument(..., help="A slimkit checkpoint (.safetensors)."),
        data: str = typer.Option(..., "--data", "-d", help="Dataset spec."),
        split: str = typer.Option("test", "--split", help="test, val or train."),
        batch_size: int = typer.Option(256, "--batch-size", min=1),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Evaluate a checkpoint: top-1/top-5, loss and per-class accuracy."""
        from slimkit.train.api import evaluate_checkpoint

        loaded, bundle, res = evaluate_checkpoint(checkpoint, data, split=split,
                                                  batch_size=batch_size)
        if as_json:
            print_json({"checkpoint": str(checkpoint), "data": bundle.name, "split": split,
                        **res.to_dict()})
            return
        console.print(f"{checkpoint.name} on {bundle.name} ({split}, {res.samples} images): "
                      f"top-1 {res.top1:.2f} %  top-5 {res.top5:.2f} %  loss {res.loss:.4f}")
        names = bundle.class_names
        t = table("per-class accuracy", [("class", "left"), ("accuracy", "right")])
        for i, acc in enumerate(res.per_class):
            t.add_row(names[i] if i < len(names) else str(i), f"{acc:.2f} %")
        console.print(t)


def _slug(spec: str) -> str:
    name = Path(spec).name if "/" in spec else spec.split(":")[0]
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name) or "data"
