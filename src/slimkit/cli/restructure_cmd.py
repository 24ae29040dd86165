"""``slimkit decompose``, ``slimkit sparsify`` and ``slimkit separable``."""

from __future__ import annotations

from pathlib import Path

import typer

from slimkit.cli._output import console, fmt_bytes, fmt_count, print_json, table


def _show(title: str, run, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    if as_json:
        print_json({"checkpoint": str(run.checkpoint), "before": run.before,
                    "after": run.after, "record": run.record})
        return
    b, a = run.before, run.after
    t = table(title, [("", "left"), ("before", "right"), ("after", "right")])
    t.add_row("parameters", fmt_count(b["params"]), fmt_count(a["params"]))
    t.add_row("MACs", fmt_count(b["macs"]), fmt_count(a["macs"]))
    t.add_row("test top-1", f"{b['top1']:.2f} %", f"{a['top1']:.2f} %")
    storage = run.record.get("storage")
    if storage:
        for key in ("zlib_bytes", "codebook_bytes", "bitmap_bytes"):
            if storage["after"].get(key):
                t.add_row(key.replace("_bytes", "").replace("_", " ") + " size",
                          fmt_bytes(storage["before"].get(key) or 0),
                          fmt_bytes(storage["after"][key]))
    console.print(t)
    console.print(f"checkpoint: {run.checkpoint}")


def register(app: typer.Typer) -> None:
    @app.command("decompose")
    def decompose_command(
        checkpoint: Path = typer.Argument(...),
        data: str = typer.Option(..., "--data", "-d"),
        rank_ratio: float = typer.Option(None, "--rank-ratio"),
        energy: float = typer.Option(None, "--energy", help="Singular-value energy kept."),
        target_macs: float = typer.Option(None, "--target-macs",
                                          help="Fraction of MACs to keep."),
        method: str = typer.Option("tucker2", "--method", help="tucker2 or cp."),
        finetune_epochs: int = typer.Option(0, "--finetune-epochs", min=0),
        out: Path = typer.Option(None, "--out"),
        force: bool = typer.Option(False, "--force"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Low-rank decomposition (SVD for linear layers, Tucker-2 or CP for convolutions)."""
        from slimkit.compress.restructure_api import decompose_checkpoint

        run = decompose_checkpoint(checkpoint, data, out or Path("runs") / "decomposed",
                                   rank_ratio=rank_ratio, energy=energy,
                                   target_macs=target_macs, method=method,
                                   finetune_epochs=finetune_epochs, force=force)
        _show(f"decompose ({method})", run, as_json)

    @app.command("sparsify")
    def sparsify_command(
        checkpoint: Path = typer.Argument(...),
        data: str = typer.Option(..., "--data", "-d"),
        nm: str = typer.Option(None, "--nm", help="N:M semi-structured sparsity, e.g. 2:4."),
        clusters: int = typer.Option(None, "--clusters", help="k-means weight clusters."),
        finetune_epochs: int = typer.Option(0, "--finetune-epochs", min=0),
        out: Path = typer.Option(None, "--out"),
        force: bool = typer.Option(False, "--force"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """N:M sparsity or weight clustering, with compressed storage measured in bytes."""
        from slimkit.compress.restructure_api import sparsify_checkpoint

        run = sparsify_checkpoint(checkpoint, data, out or Path("runs") / "sparsified", nm=nm,
                                  clusters=clusters, finetune_epochs=finetune_epochs,
                                  force=force)
        _show(f"sparsify ({nm or f'{clusters} clusters'})", run, as_json)

    @app.command("separable")
    def separable_command(
        checkpoint: Path = typer.Argument(...),
        data: str = typer.Option(..., "--data", "-d"),
        layer: list[str] = typer.Option([], "--layer", help="Only these convs (repeat)."),
        finetune_epochs: int = typer.Option(0, "--finetune-epochs", min=0),
        no_distill: bool = typer.Option(False, "--no-distill"),
        out: Path = typer.Option(None, "--out"),
        force: bool = typer.Option(False, "--force"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Replace k x k convolutions by depthwise separable ones (1/O + 1/k^2 of the cost)."""
        from slimkit.compress.restructure_api import separable_checkpoint

        run = separable_checkpoint(checkpoint, data, out or Path("runs") / "separable",
                                   layers=layer or None, finetune_epochs=finetune_epochs,
                                   distill=not no_distill, force=force)
        _show("conv -> depthwise separable", run, as_json)
