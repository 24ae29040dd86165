"""Checkpoint-level pruning (what ``slimkit prune`` and ``slimkit sensitivity`` run).

Loads a checkpoint and its dataset, measures the model before, prunes (one-shot, iterative,
or with sensitivity-allocated ratios; or unstructured), fine-tunes, measures after, and
writes a new checkpoint whose lineage records the stage and its numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.analysis.latency import measure_torch
from slimkit.analysis.profile import count_macs, count_params
from slimkit.data import DatasetBundle, load_dataset
from slimkit.errors import InvalidArgumentError
from slimkit.train.api import fit_data_to_checkpoint
from slimkit.train.checkpoint import (
    CheckpointMeta,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from slimkit.train.rundir import RunDir
from slimkit.train.trainer import TrainConfig, evaluate, fit

__all__ = ["ModelStats", "PruneRun", "measure_model", "prune_checkpoint",
           "sensitivity_checkpoint", "load_for_data"]


@dataclass
class ModelStats:
    """Params, MACs, fp32 weight bytes, test top-1 and batch-1 eager latency of a model."""

    params: int
    macs: int
    size_bytes: int
    top1: float | None
    latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PruneRun:
    before: ModelStats
    after: ModelStats
    checkpoint: Path
    record: dict[str, Any] = field(default_factory=dict)


def load_for_data(checkpoint: str | Path, data_spec: str) -> tuple[nn.Module, CheckpointMeta,
                                                                   DatasetBundle]:
    """Load a checkpoint and its dataset at the checkpoint's input size; check they fit."""
    loaded = load_checkpoint(checkpoint)
    meta = loaded.meta
    size = meta.input_size[-1] if meta.input_size else None
    data = load_dataset(data_spec, input_size=size)
    data = fit_data_to_checkpoint(meta, data, Path(checkpoint))
    return loaded.model, meta, data


def measure_model(model: nn.Module, data: DatasetBundle | None, example: torch.Tensor
                  ) -> ModelStats:
    """Counts at ``example``'s shape and the test accuracy (when ``data`` is given)."""
    model.eval()
    params = count_params(model)
    return ModelStats(params=params, macs=count_macs(model, example), size_bytes=params * 4,
                      top1=evaluate(model, data).top1 if data is not None else None)


def _latencies(models: dict[str, nn.Module], example: torch.Tensor, runs: int
               ) -> dict[str, float]:
    stats = measure_torch(models, tuple(example.shape[1:]), warmup=5, runs=runs, threads=2)
    return {k: v.median_ms for k, v in stats.items()}


def prune_checkpoint(
    checkpoint: str | Path,
    data_spec: str,
    out_dir: str | Path,
    *,
    ratio: float | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    method: str = "l2",
    global_pruning: bool = False,
    round_to: int | None = 8,
    ignore: tuple[str, ...] = (),
    steps: int = 1,
    finetune_epochs: int = 0,
    finetune_lr: float = 0.01,
    batch_size: int = 64,
    sensitivity: str | Path | None = None,
    unstructured: bool = False,
    sparsity: float | None = None,
    latency_runs: int = 30,
    force: bool = False,
    seed: int = 0,
    distill: bool = False,
) -> PruneRun:
    """Prune the model in ``checkpoint`` and write ``out_dir/model.safetensors``.

    ``sensitivity``: a ``sensitivity.json`` from :func:`sensitivity_checkpoint`; with
    ``target_macs`` the per-layer ratios are allocated from it. ``unstructured`` with
    ``sparsity`` zeroes weights by magnitude instead (masks kept during fine-tuning).
    ``distill``: fine-tune with the unpruned model as a logit-distillation teacher.
    Other arguments as in :func:`slimkit.compress.pruning.prune` and
    :func:`~slimkit.compress.pruning.schedules.iterative_prune`.
    """
    from slimkit.compress.pruning.schedules import calibration_batches, iterative_prune
    from slimkit.compress.pruning.sensitivity import load_table, prune_to_target
    from slimkit.compress.pruning.structured import prune

    from slimkit.compress.pruning.structured import check_targets, make_importance

    make_importance(method)
    if unstructured:
        if sparsity is None or not 0 <= sparsity < 1:
            raise InvalidArgumentError(
                f"--unstructured needs --sparsity S in [0, 1) (fraction of zeros), got {sparsity}"
            )
    else:
        if sparsity is not None:
            raise InvalidArgumentError("--sparsity is for --unstructured pruning; use --ratio "
                                       "or --target-macs for channels")
        if sensitivity is None:
            check_targets(ratio, target_macs, target_params)
        elif not Path(sensitivity).is_file():
            raise InvalidArgumentError(f"sensitivity table {sensitivity} does not exist; run "
                                       "`slimkit sensitivity` first")
    if distill and not finetune_epochs:
        raise InvalidArgumentError("--distill recovers during fine-tuning: add "
                                   "--finetune-epochs N")
    if steps < 1 or finetune_epochs < 0:
        raise InvalidArgumentError("--steps must be >= 1 and --finetune-epochs >= 0")
    run = RunDir(out_dir, force=force, create=False)
    model, meta, data = load_for_data(checkpoint, data_spec)
    x = torch.zeros(1, data.in_chans, data.input_size, data.input_size)
    before = measure_model(model, data, x)
    record: dict[str, Any] = {"checkpoint": str(checkpoint), "method": method,
                              "steps": steps, "finetune_epochs": finetune_epochs}
    cfg = TrainConfig(epochs=max(finetune_epochs, 1), batch_size=batch_size, lr=finetune_lr,
                      warmup_epochs=0, seed=seed)
    callbacks: list[Any] = []
    if unstructured:
        from slimkit.compress.pruning.unstructured import MaskCallback, prune_unstructured

        ures = prune_unstructured(model, sparsity, exclude=ignore)
        pruned = ures.model
        callbacks.append(MaskCallback(ures.masks))
        record.update(kind="unstructured", sparsity=sparsity,
                      report=ures.report.to_dict())
    else:
        record["kind"] = "structured"
        if sensitivity is not None:
            if target_macs is None:
                raise InvalidArgumentError("--sensitivity allocation needs --target-macs")
            sres = load_table(sensitivity)
            res, ratios = prune_to_target(model, sres, target_macs, method=method,
                                          round_to=round_to, ignore=ignore)
            pruned = res.model
            record.update(res.summary(), layer_ratios=ratios, allocation="sensitivity")
        elif steps > 1:
            it = iterative_prune(model, data, steps=steps, ratio=ratio, target_macs=target_macs,
                                 target_params=target_params,
                                 finetune_epochs=finetune_epochs, finetune_config=cfg,
                                 method=method, global_pruning=global_pruning,
                                 round_to=round_to, ignore=ignore, seed=seed)
            pruned = it.model
            record["iterations"] = it.steps
            finetune_epochs = 0  # already fine-tuned after every step
        else:
            calib = calibration_batches(data) if method == "taylor" else None
            res = prune(model, x, ratio=ratio, target_macs=target_macs,
                        target_params=target_params, method=method,
                        global_pruning=global_pruning, round_to=round_to, ignore=ignore,
                        calibration=calib, seed=seed)
            pruned = res.model
            record.update(res.summary())
    if distill:
        import copy

        from slimkit.compress.distill import LogitDistillation

        callbacks.append(LogitDistillation(copy.deepcopy(model)))
        record["distill"] = "logit, unpruned model as teacher"
    if finetune_epochs:
        ft = fit(pruned, data, TrainConfig(**{**cfg.__dict__, "epochs": finetune_epochs}),
                 callbacks=callbacks, progress=False)
        record["finetune_top1"] = ft.test.top1 if ft.test else None
    if unstructured:
        from slimkit.compress.pruning.unstructured import (
            compressed_sizes,
            make_permanent,
            sparsity_report,
        )

        make_permanent(pruned, callbacks[0].masks)
        record["report_after"] = sparsity_report(pruned).to_dict()
        record["compressed_sizes"] = {"before": compressed_sizes(model),
                                      "after": compressed_sizes(pruned)}
    after = measure_model(pruned, data, x)
    if latency_runs:
        lat = _latencies({"before": model, "after": pruned}, x, latency_runs)
        before.latency_ms, after.latency_ms = lat["before"], lat["after"]
    meta.add_stage("prune", params={k: v for k, v in record.items()
                                    if k in ("kind", "method", "ratio", "target", "steps",
                                             "finetune_epochs", "sparsity", "layer_ratios")},
                   metrics={"before": before.to_dict(), "after": after.to_dict()})
    path = save_checkpoint(run.path / "model.safetensors", pruned, meta, overwrite=True)
    atomic_write_text(run.path / "metrics.json", json.dumps(
        {"before": before.to_dict(), "after": after.to_dict(), "record": record}, indent=2,
        default=str))
    run.log({"event": "prune", "before": before.to_dict(), "after": after.to_dict()})
    return PruneRun(before=before, after=after, checkpoint=path, record=record)


def sensitivity_checkpoint(checkpoint: str | Path, data_spec: str, out_dir: str | Path, *,
                           ratios: tuple[float, ...] = (0.25, 0.5, 0.75), method: str = "l2",
                           samples: int = 512, round_to: int | None = 8,
                           ignore: tuple[str, ...] = (), force: bool = False) -> Any:
    """Run :func:`sensitivity_analysis` on a checkpoint; write ``sensitivity.json`` and
    ``sensitivity.png`` to ``out_dir``."""
    from slimkit.compress.pruning.sensitivity import (
        plot_sensitivity,
        save_table,
        sensitivity_analysis,
    )

    out = Path(out_dir)
    if (out / "sensitivity.json").exists() and not force:
        from slimkit.train.checkpoint import OutputExistsError

        raise OutputExistsError(f"{out / 'sensitivity.json'} exists; pass --force to replace it")
    model, _, data = load_for_data(checkpoint, data_spec)
    result = sensitivity_analysis(model, data, ratios=ratios, method=method, samples=samples,
                                  round_to=round_to, ignore=ignore)
    out.mkdir(parents=True, exist_ok=True)
    save_table(result, out / "sensitivity.json")
    plot_sensitivity(result, out / "sensitivity.png")
    return result
