"""``slimkit run``, ``slimkit compress``, ``slimkit report`` and ``slimkit compare``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from slimkit.cli._output import console, print_json, table


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_command(
        recipe: Path = typer.Argument(..., help="A YAML recipe."),
        out: Path = typer.Option(None, "--out", help="Run directory (default runs/<name>)."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
        force: bool = typer.Option(False, "--force", help="Start an existing run over."),
        data: str = typer.Option(None, "--data", help="Replace the recipe's dataset."),
        max_epochs: int = typer.Option(None, "--max-epochs",
                                       help="Cap every epoch count (smoke runs)."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Run a recipe: every stage in order, a checkpoint after each, then a report."""
        from slimkit.pipeline.runner import run_recipe

        state = run_recipe(recipe, out, resume=resume, force=force, data=data,
                           max_epochs=max_epochs, log=_log)
        if as_json:
            print_json({k: v for k, v in state.items() if k != "records"})
            return
        t = table(state["title"], [("stage", "left"), ("params", "right"), ("MACs", "right"),
                                   ("size", "right"), ("top-1", "right"),
                                   ("ORT latency", "right")])
        for r in state["stages"]:
            t.add_row(r["name"], _n(r.get("params")), _n(r.get("macs")),
                      f"{r['size_bytes'] / 1e6:.2f} MB" if r.get("size_bytes") else "—",
                      f"{r['top1']:.2f} %" if r.get("top1") is not None else "—",
                      f"{r['latency_ms']:.2f} ms" if r.get("latency_ms") else "—")
        console.print(t)
        if state.get("headline"):
            console.print(f"[bold]{state['headline']}[/bold]")
        if state.get("report"):
            console.print(f"report: {state['report']}")

    @app.command("compress")
    def compress_command(
        checkpoint: Path = typer.Argument(..., help="A trained checkpoint."),
        data: str = typer.Option(..., "--data", "-d"),
        max_acc_drop: float = typer.Option(..., "--max-acc-drop",
                                           help="Accuracy budget in points."),
        target_latency_ms: float = typer.Option(None, "--target-latency-ms"),
        target_size_mb: float = typer.Option(None, "--target-size-mb"),
        target_macs: float = typer.Option(None, "--target-macs",
                                          help="Fraction of the MACs to keep."),
        runtime: str = typer.Option("onnxruntime", "--runtime"),
        time_budget: float = typer.Option(None, "--time-budget", help="Minutes."),
        finetune_epochs: int = typer.Option(2, "--finetune-epochs", min=0),
        fractions: str = typer.Option(
            "0.75,0.5,0.35,0.25", "--fractions",
            help="Fractions of the latency (--allocate latency) or MACs (--allocate macs) "
                 "to keep, tried in turn; comma-separated, each in (0, 1)."),
        allocate: str = typer.Option(
            None, "--allocate",
            help="Per-layer pruning ratios from measured INT8 ONNX Runtime latency per layer "
                 "group ('latency', the default) or from MACs ('macs', the default with "
                 "--target-macs)."),
        ratios: str = typer.Option(
            "0.3,0.5,0.7", "--ratios",
            help="Channel ratios each layer group is analysed at; add 0.85 when a fraction "
                 "is out of reach."),
        sensitivity: Path = typer.Option(
            None, "--sensitivity",
            help="Reuse the sensitivity.json of an earlier compress run of this checkpoint."),
        reuse: Path = typer.Option(
            None, "--reuse",
            help="An earlier compress run of this checkpoint: its sensitivity table and the "
                 "candidates it already recovered are reused (search again with another "
                 "budget)."),
        refine_steps: int = typer.Option(
            2, "--refine-steps", min=0,
            help="Candidates that bisect between the deepest fraction that kept the "
                 "accuracy budget and the first that missed it."),
        out: Path = typer.Option(None, "--out"),
        force: bool = typer.Option(False, "--force"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Find the fastest (or smallest) model within an accuracy budget, measured for real."""
        from slimkit.pipeline.search import compress_checkpoint

        out_dir = out or Path("runs") / f"{checkpoint.parent.name or checkpoint.stem}-compressed"
        result = compress_checkpoint(
            checkpoint, data, out_dir, max_acc_drop=max_acc_drop,
            target_latency_ms=target_latency_ms, target_size_mb=target_size_mb,
            target_macs=target_macs, runtime=runtime, time_budget_min=time_budget,
            finetune_epochs=finetune_epochs, fractions=_fractions(fractions),
            refine_steps=refine_steps, allocate=allocate,
            sensitivity_ratios=_fractions(ratios, "--ratios"), sensitivity=sensitivity, reuse=reuse,
            force=force,
            log=_log)
        if as_json:
            print_json(result.to_dict())
            return
        best = result.best
        assert best is not None
        console.print(f"[bold]{best.name}: {best.speedup:.2f}x faster, "
                      f"{result.baseline['size_bytes'] / best.size_bytes:.1f}x smaller, test "
                      f"top-1 {best.test_top1:.2f} % (baseline "
                      f"{result.baseline['test_top1']:.2f} %)[/bold]")
        console.print(f"model: {out_dir / 'model.int8.onnx'}  report: {out_dir / 'report.html'}")

    @app.command("report")
    def report_command(
        run_dir: Path = typer.Argument(..., help="A run directory."),
    ) -> None:
        """Regenerate report.md and report.html of a run directory."""
        from slimkit.report import collect, write_report

        md, html = write_report(collect(run_dir), run_dir)
        console.print(f"{md}\n{html}")

    @app.command("compare")
    def compare_command(
        run_dirs: list[Path] = typer.Argument(..., help="Run directories."),
        out: Path = typer.Option(Path("runs/compare"), "--out"),
    ) -> None:
        """Put runs side by side (a table and a combined Pareto plot)."""
        from slimkit.report import compare_runs

        paths = compare_runs(run_dirs, out)
        console.print("\n".join(str(p) for p in paths))


def _n(v: object) -> str:
    from slimkit.cli._output import fmt_count

    return fmt_count(float(v)) if isinstance(v, int | float) else "—"  # type: ignore[arg-type]


def _fractions(text: str, flag: str = "--fractions") -> tuple[float, ...]:
    """``"0.75,0.5"`` -> ``(0.75, 0.5)``; an empty string tries INT8 alone."""
    from slimkit.errors import InvalidArgumentError

    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise InvalidArgumentError(
            f"{flag} must be comma-separated numbers in (0, 1), e.g. 0.75,0.5; got {text!r}"
        ) from None
