"""The recipe runner: stages in order, a checkpoint after each, resumable, reported.

Layout of a run directory::

    runs/<name>/
      recipe.yaml          the recipe as run
      pipeline.json        every finished stage (what resume reads, what the report shows)
      00-train/            each stage's outputs (checkpoint, metrics, plots, ONNX files)
      01-sensitivity/ ...
      report.md, report.html

A stage is recorded in ``pipeline.json`` only when it has finished, so an interrupted run
(Ctrl-C or SIGKILL) loses at most the stage in progress; ``--resume`` redoes that stage from
scratch and continues.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from slimkit.errors import InvalidArgumentError
from slimkit.pipeline.recipe import Recipe, load_recipe
from slimkit.train.checkpoint import OutputExistsError, atomic_write_text

__all__ = ["Context", "run_recipe", "StageOutcome", "measure_artifact", "headline"]


@dataclass
class Context:
    """What the stages pass along: the data spec, the original and current models."""

    recipe: Recipe
    out: Path
    original: Path | None = None  # the first checkpoint (the teacher, the baseline)
    current: Path | None = None  # the latest checkpoint
    previous: Path | None = None  # the checkpoint before the latest model-changing stage
    onnx: Path | None = None  # the latest deployable ONNX file (fp32 or int8)
    sensitivity: Path | None = None
    quick_latency_runs: int = 30


@dataclass
class StageOutcome:
    """One finished stage as recorded in ``pipeline.json``."""

    index: int
    kind: str
    params: dict[str, Any]
    checkpoint: str | None
    onnx: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _data_spec(ctx: Context) -> str:
    return ctx.recipe.data


def measure_artifact(checkpoint: Path | None, onnx_path: Path | None, data_spec: str, *,
                     top1: float | None = None, runs: int = 30, threads: int = 2
                     ) -> dict[str, Any]:
    """Params, MACs, size, accuracy, ORT batch-1 latency and energy of a stage's result.

    The latency is a quick estimate (``runs`` timed runs after 5 warm-ups); the ``bench``
    stage measures by the full protocol.
    """
    from slimkit.analysis.latency import measure_callables, ort_runner
    from slimkit.analysis.profile import profile
    from slimkit.deploy.onnx_export import export_onnx, ort_session
    from slimkit.train import load_checkpoint

    row: dict[str, Any] = {"params": None, "macs": None, "size_bytes": None, "top1": top1,
                           "latency_ms": None, "runtime": "onnxruntime", "energy_mj": None}
    shape = None
    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint)
        model = loaded.model.eval()
        shape = tuple(loaded.meta.input_size or (3, 32, 32))
        prof = profile(model, shape)
        row.update(params=prof.params, macs=prof.macs, size_bytes=prof.weight_bytes_fp32,
                   energy_mj=prof.energy_fp32_mj)
        if top1 is None:
            from slimkit.data import load_dataset
            from slimkit.train import evaluate

            row["top1"] = evaluate(model, load_dataset(data_spec, input_size=shape[-1])).top1
    with tempfile.TemporaryDirectory() as tmp:
        path = onnx_path
        if path is None and checkpoint is not None:
            path = export_onnx(model, torch.zeros(1, *shape), Path(tmp) / "m.onnx",
                               exporter="legacy").path
        if path is not None:
            if onnx_path is not None:
                row["size_bytes"] = onnx_path.stat().st_size
                if row["energy_mj"] is not None and ".int8" in onnx_path.name:
                    row["energy_mj"] = prof.energy_int8_mj
            session = ort_session(path, threads=threads)
            inp = session.get_inputs()[0]
            dims = [d if isinstance(d, int) else 1 for d in inp.shape]
            x = torch.randn(*dims)
            stats = measure_callables({"m": ort_runner(session, x)}, {"m": "onnxruntime"},
                                      batch_size=1, threads=threads, warmup=5, runs=runs)
            row["latency_ms"] = stats["m"].median_ms
    return row


def _finetune_config(epochs: int, lr: float, seed: int) -> Any:
    from slimkit.train import TrainConfig

    return TrainConfig(epochs=epochs, lr=lr, warmup_epochs=0, seed=seed)


def _stage_train(ctx: Context, p: Any, d: Path) -> dict[str, Any]:
    from slimkit.train import TrainConfig, fit, load_checkpoint
    from slimkit.train.api import train_model

    cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, optimizer=p.optimizer,
                      schedule=p.schedule, warmup_epochs=p.warmup_epochs,
                      label_smoothing=p.label_smoothing, ema_decay=p.ema_decay,
                      weight_decay=p.weight_decay, seed=ctx.recipe.seed)
    if ctx.current is None:
        args = ctx.recipe.model_args
        result = train_model(str(ctx.recipe.model), _data_spec(ctx), cfg, out_dir=d,
                             input_size=args.get("input_size"),
                             small_input=args.get("small_input"),
                             width_mult=args.get("width_mult"), pretrained=p.pretrained,
                             freeze_backbone=p.freeze_backbone,
                             linear_probe_epochs=p.linear_probe_epochs, progress=False)
    else:
        from slimkit.data import load_dataset

        loaded = load_checkpoint(ctx.current)
        size = loaded.meta.input_size[-1] if loaded.meta.input_size else None
        data = load_dataset(_data_spec(ctx), input_size=size)
        result = fit(loaded.model, data, cfg, out_dir=d, meta=loaded.meta, progress=False)
    return {"checkpoint": result.checkpoint, "top1": result.test.top1 if result.test else None,
            "metrics": {"epochs": p.epochs, "train_samples_per_s": result.train_samples_per_s}}


def _stage_sensitivity(ctx: Context, p: Any, d: Path) -> dict[str, Any]:
    from slimkit.compress.pruning.api import sensitivity_checkpoint

    assert ctx.current is not None
    result = sensitivity_checkpoint(ctx.current, _data_spec(ctx), d, ratios=tuple(p.ratios),
                                    method=p.method, samples=p.samples)
    ctx.sensitivity = d / "sensitivity.json"
    return {"checkpoint": None, "metrics": {"groups": len(result.layers()),
                                           "base_top1": result.base_top1}}


def _stage_prune(ctx: Context, p: Any, d: Path) -> dict[str, Any]:
    from slimkit.compress.pruning.api import prune_checkpoint

    assert ctx.current is not None
    if p.allocation == "sensitivity" and ctx.sensitivity is None:
        raise InvalidArgumentError("prune with allocation: sensitivity needs a sensitivity "
                                   "stage before it")
    run = prune_checkpoint(
        ctx.current, _data_spec(ctx), d, ratio=p.ratio, target_macs=p.target_macs,
        target_params=p.target_params, method=p.method, global_pruning=p.global_pruning,
        round_to=p.round_to, ignore=tuple(p.ignore), steps=p.steps,
        finetune_epochs=p.finetune_epochs, finetune_lr=p.finetune_lr,
        sensitivity=ctx.sensitivity if p.allocation == "sensitivity" else None,
        unstructured=p.unstructured, sparsity=p.sparsity, latency_runs=0, force=True,
        seed=ctx.recipe.seed, distill=p.distill)
    return {"checkpoint": run.checkpoint, "top1": run.after.top1,
            "metrics": {"before": run.before.to_dict(), "after": run.after.to_dict()}}


def _stage_distill(ctx: Context, p: Any, d: Path) -> dict[str, Any]:
    from slimkit.compress.distill import distill_checkpoint
    from slimkit.train import TrainConfig

    assert ctx.current is not None
    teacher = {"original": ctx.original, "previous": ctx.previous}.get(p.teacher) or Path(
        p.teacher)
    cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, seed=ctx.recipe.seed)
    result = distill_checkpoint(teacher, str(ctx.current), _data_spec(ctx), d, method=p.method,
                                temperature=p.temperature, alpha=p.alpha, pairs=p.pairs,
                                config=cfg, force=True)
    return {"checkpoint": result.checkpoint, "top1": result.test.top1 if result.test else None,
            "metrics": {"teacher": str(teacher), "method": p.method}}


def _finetune_and_save(ctx: Context, model: torch.nn.Module, meta: Any, d: Path, epochs: int,
                       lr: float, callbacks: list[Any], stage: str,
                       params: dict[str, Any]) -> dict[str, Any]:
    from slimkit.data import load_dataset
    from slimkit.train import evaluate, fit, save_checkpoint

    size = meta.input_size[-1] if meta.input_size else None
    data = load_dataset(_data_spec(ctx), input_size=size)
    if epochs:
        fit(model, data, _finetune_config(epochs, lr, ctx.recipe.seed), callbacks=callbacks,
            progress=False)
    top1 = evaluate(model, data).top1
    meta.add_stage(stage, params=params, metrics={"test_top1": top1})
    path = save_checkpoint(d / "model.safetensors", model, meta, overwrite=True)
    return {"checkpoint": path, "top1": top1, "metrics": params}


def _stage_decompose(ctx: Context, p: Any, d: Path) -> dict[str, Any]:
    from slimkit.compress.decompose import decompose
    from slimkit.train import load_checkpoint

    assert ctx.current is not None
    loaded = load_checkpoint(ctx.current)
    shape = tuple(loaded.meta.input_size or (3, 32, 32))
    result = decompose(loaded.model.eval(), rank_ratio=p.rank_ratio, energy=p.energy,
                       target_macs=p.target_macs, example_inputs=torch.zeros(1, *shape))
    return _finetune_and_save(ctx, result.model, loaded.meta, d, p.finetune_epochs,
                              p.finetune_lr, [], "decompose", p.model_dump())


def _stage_sparsify(ctx: Context, p: Any, d: Path) -> dict[str, Any]:
    from slimkit.compress.pruning.unstructured import MaskCallback
    from slimkit.compress.sparsity import nm_sparsity
    from slimkit.train import load_checkpoint

    assert ctx.current is not None
    loaded = load_checkpoint(ctx.current)
    result = nm_sparsity(loaded.model, n=p.n, m=p.m)
    return _finetune_and_save(ctx, result.model, loaded.meta, d, p.finetune_epochs,
                              p.finetune_lr, [MaskCallback(result.masks)], "sparsify",
                              p.model_dump())


def _stage_cluster(ctx: Context, p: Any, d: Path) -> dict[str, Any]:
    from slimkit.compress.sparsity import ClusterCallback, cluster_weights
    from slimkit.train import load_checkpoint

    assert ctx.current is not None
    loaded = load_checkpoint(ctx.current)
    result = cluster_weights(loaded.model, n_clusters=p.clusters)
    return _finetune_and_save(ctx, result.model, loaded.meta, d, p.finetune_epochs,
                              p.finetune_lr, [ClusterCallback(result)], "cluster",
                              p.model_dump())


def _stage_quantize(ctx: Context, p: Any, d: Path) -> dict[str, Any]:
    from slimkit.compress.quantization.api import quantize_model_file

    assert ctx.current is not None
    run = quantize_model_file(ctx.current, _data_spec(ctx), d / "model.int8.onnx",
                              calib_samples=p.calib_samples, method=p.method,
                              per_channel=p.per_channel, equalize=p.equalize,
                              bias_correction=p.bias_correction, max_acc_drop=p.max_acc_drop,
                              qat_epochs=p.qat_epochs, force=True, seed=ctx.recipe.seed)
    atomic_write_text(d / "metrics.json", json.dumps(run.to_dict(), indent=2, default=str))
    return {"checkpoint": None, "onnx": run.path, "top1": run.int8_top1,
            "metrics": {k: v for k, v in run.to_dict().items() if k != "details"}}


def _stage_export(ctx: Context, p: Any, d: Path) -> dict[str, Any]:
    from slimkit.deploy import export_onnx
    from slimkit.train import load_checkpoint, read_checkpoint_meta

    assert ctx.current is not None
    loaded = load_checkpoint(ctx.current)
    meta = read_checkpoint_meta(ctx.current)
    shape = tuple(meta.input_size or (3, 32, 32))
    result = export_onnx(loaded.model, torch.zeros(1, *shape), d / "model.onnx", opset=p.opset,
                         exporter=p.exporter, overwrite=True,
                         metadata={"class_names": meta.class_names,
                                   "lineage": [s["stage"] for s in meta.lineage]})
    return {"checkpoint": None, "onnx": result.path, "metrics": result.to_dict(),
            "keep_onnx": ctx.onnx is not None}


def _stage_bench(ctx: Context, p: Any, d: Path) -> dict[str, Any]:
    from slimkit.deploy.bench import load_for_bench, run_bench

    entries = []
    if ctx.original is not None:
        e = load_for_bench(str(ctx.original))
        e.label = "original"
        entries.append(e)
    if ctx.current is not None and ctx.current != ctx.original:
        e = load_for_bench(str(ctx.current))
        e.label = "final checkpoint"
        entries.append(e)
    if ctx.onnx is not None:
        e = load_for_bench(str(ctx.onnx))
        e.label = f"final {ctx.onnx.name}"
        entries.append(e)
    result = run_bench(entries, list(p.runtimes), batch_size=p.batch_size, threads=p.threads,
                       warmup=p.warmup, runs=p.runs, workdir=d)
    atomic_write_text(d / "bench.json", json.dumps(result, indent=2))
    return {"checkpoint": None, "metrics": {"rows": [
        {k: r[k] for k in ("model", "runtime", "median_ms", "p90_ms", "speedup_vs_first")}
        for r in result["rows"]]}, "no_row": True}


def _stage_evaluate(ctx: Context, p: Any, d: Path) -> dict[str, Any]:
    from slimkit.compress.quantization.api import evaluation_arrays
    from slimkit.compress.quantization.ptq import onnx_accuracy
    from slimkit.data import load_dataset
    from slimkit.train import evaluate, load_checkpoint

    if ctx.onnx is not None:
        from slimkit.deploy import read_onnx_metadata

        size = (read_onnx_metadata(ctx.onnx).get("input_size") or [None])[-1]
        data = load_dataset(_data_spec(ctx), input_size=size)
        top1 = onnx_accuracy(ctx.onnx, evaluation_arrays(data, p.split))
        what = ctx.onnx.name
    else:
        assert ctx.current is not None
        loaded = load_checkpoint(ctx.current)
        size = loaded.meta.input_size[-1] if loaded.meta.input_size else None
        data = load_dataset(_data_spec(ctx), input_size=size)
        top1 = evaluate(loaded.model, data, split=p.split).top1
        what = ctx.current.name
    return {"checkpoint": None, "top1": top1, "metrics": {"evaluated": what, "split": p.split,
                                                          "top1": top1}, "no_row": True}


STAGE_FUNCS: dict[str, Callable[[Context, Any, Path], dict[str, Any]]] = {
    "train": _stage_train,
    "sensitivity": _stage_sensitivity,
    "prune": _stage_prune,
    "distill": _stage_distill,
    "decompose": _stage_decompose,
    "sparsify": _stage_sparsify,
    "cluster": _stage_cluster,
    "quantize": _stage_quantize,
    "export": _stage_export,
    "bench": _stage_bench,
    "evaluate": _stage_evaluate,
}


def headline(first: dict[str, Any], last: dict[str, Any]) -> str | None:
    """"4.1x faster, 6.8x smaller, -0.3 pt" from the first and last stage rows."""
    parts = []
    if first.get("latency_ms") and last.get("latency_ms"):
        parts.append(f"{first['latency_ms'] / last['latency_ms']:.1f}x faster")
    if first.get("size_bytes") and last.get("size_bytes"):
        parts.append(f"{first['size_bytes'] / last['size_bytes']:.1f}x smaller")
    if first.get("top1") is not None and last.get("top1") is not None:
        parts.append(f"{last['top1'] - first['top1']:+.1f} pt")
    return ", ".join(parts) if parts else None


def _save_state(out: Path, recipe: Recipe, outcomes: list[StageOutcome],
                extra: dict[str, Any] | None = None) -> None:
    rows = [o.row for o in outcomes if o.row]
    state = {
        "title": f"slimkit run: {recipe.name}",
        "headline": headline(rows[0], rows[-1]) if len(rows) >= 2 else None,
        "recipe": recipe.model_dump(),
        "stages": rows,
        "candidates": [],
        "records": [asdict(o) for o in outcomes],
        **(extra or {}),
    }
    atomic_write_text(out / "pipeline.json", json.dumps(state, indent=2, default=str))


def _restore(ctx: Context, outcomes: list[StageOutcome]) -> None:
    for o in outcomes:
        if o.checkpoint:
            if ctx.current is not None:
                ctx.previous = ctx.current
            ctx.current = Path(o.checkpoint)
            if ctx.original is None:
                ctx.original = ctx.current
        if o.onnx:
            ctx.onnx = Path(o.onnx)
        if o.kind == "sensitivity":
            ctx.sensitivity = ctx.out / f"{o.index:02d}-sensitivity" / "sensitivity.json"


def run_recipe(recipe_path: str | Path, out: str | Path | None = None, *, resume: bool = False,
               force: bool = False, report: bool = True, data: str | None = None,
               max_epochs: int | None = None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage of the recipe at ``recipe_path`` into the run directory.

    ``out`` defaults to ``runs/<recipe name>``. A directory holding a run needs ``resume``
    (continue after the last finished stage) or ``force`` (start over). ``data`` replaces the
    recipe's dataset and ``max_epochs`` caps every epoch count (quick smoke runs).
    """
    recipe, specs = load_recipe(recipe_path)
    if data is not None:
        recipe.data = data
    if max_epochs is not None:
        if max_epochs < 1:
            raise InvalidArgumentError(f"--max-epochs must be >= 1, got {max_epochs}")
        for spec in specs:
            for key in ("epochs", "finetune_epochs", "qat_epochs", "linear_probe_epochs"):
                value = getattr(spec.params, key, None)
                if isinstance(value, int) and value > max_epochs:
                    setattr(spec.params, key, max_epochs)
            probe = getattr(spec.params, "linear_probe_epochs", None)
            if probe is not None and probe >= spec.params.epochs:  # type: ignore[attr-defined]
                spec.params.linear_probe_epochs = (  # type: ignore[attr-defined]
                    spec.params.epochs - 1 or None)  # type: ignore[attr-defined]
        recipe.stages = [s.to_dict() for s in specs]
    out_dir = Path(out) if out is not None else Path("runs") / str(recipe.name)
    state_path = out_dir / "pipeline.json"
    if resume:
        if not state_path.exists():
            raise InvalidArgumentError(f"nothing to resume in {out_dir} (no pipeline.json); "
                                       "drop --resume")
    elif out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise OutputExistsError(f"{out_dir} already holds a run; use --resume to continue "
                                    "it, --force to start over, or another --out")
        shutil.rmtree(out_dir)
    if recipe.checkpoint is not None and not Path(recipe.checkpoint).is_file():
        raise InvalidArgumentError(f"recipe checkpoint {recipe.checkpoint} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(recipe=recipe, out=out_dir)
    outcomes: list[StageOutcome] = []
    if resume:
        saved = json.loads(state_path.read_text(encoding="utf-8"))
        if saved.get("recipe") != recipe.model_dump():
            raise InvalidArgumentError(f"{recipe_path} changed since the run started; resume "
                                       "with the same recipe or start over with --force")
        outcomes = [StageOutcome(**r) for r in saved.get("records", [])]
        _restore(ctx, outcomes)
        log(f"resuming after {len(outcomes)} finished stage(s)")
    else:
        (out_dir / "recipe.yaml").write_text(yaml.safe_dump(
            json.loads(json.dumps(recipe.model_dump()))), encoding="utf-8")
    if recipe.checkpoint is not None and ctx.current is None:
        ctx.current = ctx.original = Path(recipe.checkpoint)
        start = measure_artifact(ctx.current, None, recipe.data,
                                 runs=ctx.quick_latency_runs)
        outcomes.insert(0, StageOutcome(index=-1, kind="start", params={},
                                        checkpoint=str(ctx.current), onnx=None,
                                        row={"name": "start", **start}))
        _save_state(out_dir, recipe, outcomes)
    done = {o.index for o in outcomes}
    for i, spec in enumerate(specs):
        if i in done:
            continue
        d = out_dir / f"{i:02d}-{spec.kind}"
        if d.exists():
            shutil.rmtree(d)  # a stage interrupted last time: redo it from scratch
        log(f"stage {i}: {spec.kind}")
        t0 = time.perf_counter()
        result = STAGE_FUNCS[spec.kind](ctx, spec.params, d)
        ckpt, onnx_path = result.get("checkpoint"), result.get("onnx")
        if ckpt is not None:
            ctx.previous = ctx.current
            ctx.current = Path(ckpt)
            if ctx.original is None:
                ctx.original = ctx.current
            ctx.onnx = None  # a new model: older ONNX files no longer describe it
        if onnx_path is not None and not (spec.kind == "export" and result.get("keep_onnx")):
            ctx.onnx = Path(onnx_path)
        row: dict[str, Any] = {}
        if not result.get("no_row") and (ckpt is not None or onnx_path is not None):
            row = {"name": f"{i:02d} {spec.kind}",
                   **measure_artifact(ctx.current if ckpt is not None else None,
                                      ctx.onnx if ckpt is None else None, recipe.data,
                                      top1=result.get("top1"), runs=ctx.quick_latency_runs)}
            if ckpt is None and ctx.current is not None:  # an ONNX stage: keep model counts
                prev = next((o.row for o in reversed(outcomes) if o.row), {})
                for k in ("params", "macs"):
                    row[k] = row[k] if row.get(k) is not None else prev.get(k)
        outcome = StageOutcome(index=i, kind=spec.kind, params=spec.params.model_dump(),
                               checkpoint=str(ckpt) if ckpt else None,
                               onnx=str(onnx_path) if onnx_path else None,
                               metrics=copy.deepcopy(result.get("metrics", {})), row=row,
                               seconds=time.perf_counter() - t0)
        outcomes.append(outcome)
        _save_state(out_dir, recipe, outcomes)
    state = json.loads(state_path.read_text(encoding="utf-8"))
    if report:
        from slimkit.report import collect, write_report

        write_report(collect(out_dir), out_dir)
        state["report"] = str(out_dir / "report.html")
    return state

