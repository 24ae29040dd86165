"""Checkpoint-level decomposition, N:M sparsity, clustering and conv -> separable (what
``slimkit decompose``, ``slimkit sparsify`` and ``slimkit separable`` run)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.errors import InvalidArgumentError
from slimkit.train.checkpoint import OutputExistsError, atomic_write_text, save_checkpoint

__all__ = ["TransformRun", "decompose_checkpoint", "sparsify_checkpoint",
           "separable_checkpoint"]


@dataclass
class TransformRun:
    checkpoint: Path
    before: dict[str, Any]
    after: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)


def _prepare(checkpoint: str | Path, data_spec: str, out_dir: str | Path, force: bool
             ) -> tuple[tuple[nn.Module, Any, Any], None, Path, torch.Tensor]:
    from slimkit.compress.pruning.api import load_for_data

    out = Path(out_dir) / "model.safetensors"
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists; pass --force to overwrite it")
    model, meta, data = load_for_data(checkpoint, data_spec)
    x = torch.zeros(1, data.in_chans, data.input_size, data.input_size)
    return (model.eval(), meta, data), None, out, x


def _finish(model: nn.Module, meta: Any, data: Any, out: Path, x: torch.Tensor, stage: str,
            before: Any, record: dict[str, Any], epochs: int, lr: float,
            callbacks: list[Any]) -> TransformRun:
    from slimkit.compress.pruning.api import measure_model
    from slimkit.train import TrainConfig, fit

    if epochs:
        ft = fit(model, data, TrainConfig(epochs=epochs, lr=lr, warmup_epochs=0),
                 callbacks=callbacks, progress=False)
        record["finetune_top1"] = ft.test.top1 if ft.test else None
    after = measure_model(model, data, x)
    meta.add_stage(stage, params=record.get("params", {}),
                   metrics={"before": before.to_dict(), "after": after.to_dict()})
    path = save_checkpoint(out, model, meta, overwrite=True)
    atomic_write_text(out.parent / "metrics.json", json.dumps(
        {"before": before.to_dict(), "after": after.to_dict(), "record": record}, indent=2,
        default=str))
    return TransformRun(path, before.to_dict(), after.to_dict(), record)


def decompose_checkpoint(checkpoint: str | Path, data_spec: str, out_dir: str | Path, *,
                         rank_ratio: float | None = None, energy: float | None = None,
                         target_macs: float | None = None, method: str = "tucker2",
                         layers: list[str] | None = None, finetune_epochs: int = 0,
                         finetune_lr: float = 0.01, force: bool = False) -> TransformRun:
    """Low-rank decomposition of a checkpoint's conv/linear layers, then fine-tuning."""
    from slimkit.compress.decompose import decompose
    from slimkit.compress.pruning.api import measure_model

    (model, meta, data), _, out, x = _prepare(checkpoint, data_spec, out_dir, force)
    before = measure_model(model, data, x)
    result = decompose(model, rank_ratio=rank_ratio, energy=energy, target_macs=target_macs,
                       example_inputs=x, layers=layers, method=method)
    record = {"params": {"rank_ratio": rank_ratio, "energy": energy, "target_macs": target_macs,
                         "method": method}, "summary": result.summary()}
    return _finish(result.model, meta, data, out, x, "decompose", before, record,
                   finetune_epochs, finetune_lr, [])


def sparsify_checkpoint(checkpoint: str | Path, data_spec: str, out_dir: str | Path, *,
                        nm: str | None = None, clusters: int | None = None,
                        finetune_epochs: int = 0, finetune_lr: float = 0.005,
                        force: bool = False) -> TransformRun:
    """N:M semi-structured sparsity (``nm="2:4"``) or weight clustering (``clusters=16``),
    with the constraint kept during fine-tuning; the record holds the storage figures."""
    from slimkit.compress.pruning.api import measure_model
    from slimkit.compress.pruning.unstructured import MaskCallback
    from slimkit.compress.sparsity import (
        ClusterCallback,
        cluster_sizes,
        cluster_weights,
        nm_sparsity,
        storage_report,
    )

    if (nm is None) == (clusters is None):
        raise InvalidArgumentError("give exactly one of --nm N:M or --clusters K")
    if nm is not None:
        try:
            n, m = (int(v) for v in nm.split(":"))
        except ValueError as exc:
            raise InvalidArgumentError(f"--nm is N:M like 2:4, got {nm!r}") from exc
    (model, meta, data), _, out, x = _prepare(checkpoint, data_spec, out_dir, force)
    before = measure_model(model, data, x)
    dense_storage = storage_report(model)
    if nm is not None:
        res = nm_sparsity(model, n=n, m=m)
        record: dict[str, Any] = {"params": {"nm": nm}, "summary": res.summary()}
        callbacks: list[Any] = [MaskCallback(res.masks)]
        new = res.model
    else:
        assert clusters is not None
        cres = cluster_weights(model, n_clusters=clusters)
        record = {"params": {"clusters": clusters}, "summary": cres.summary()}
        callbacks = [ClusterCallback(cres)]
        new = cres.model
    run = _finish(new, meta, data, out, x, "sparsify" if nm else "cluster", before, record,
                  finetune_epochs, finetune_lr, callbacks)
    run.record["storage"] = {"before": dense_storage, "after": storage_report(new)}
    if clusters is not None:
        run.record["cluster_sizes"] = cluster_sizes(cres)
    return run


def separable_checkpoint(checkpoint: str | Path, data_spec: str, out_dir: str | Path, *,
                         layers: list[str] | None = None, finetune_epochs: int = 0,
                         finetune_lr: float = 0.01, distill: bool = True,
                         force: bool = False) -> TransformRun:
    """Replace k x k convolutions by depthwise separable ones, then fine-tune (with the
    original model as the distillation teacher by default)."""
    from slimkit.compress.distill import LogitDistillation
    from slimkit.compress.fuse import to_separable
    from slimkit.compress.pruning.api import measure_model

    (model, meta, data), _, out, x = _prepare(checkpoint, data_spec, out_dir, force)
    before = measure_model(model, data, x)
    result = to_separable(model, x, layers=layers)
    record = {"params": {"layers": layers, "distill": distill},
              "layers": [vars(layer) for layer in result.layers],
              "skipped": result.skipped}
    callbacks = [LogitDistillation(copy.deepcopy(model))] if distill and finetune_epochs else []
    return _finish(result.model, meta, data, out, x, "separable", before, record,
                   finetune_epochs, finetune_lr, callbacks)
