"""High-level entry points used by the CLI and recipes: train a zoo model on a dataset
spec, evaluate a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimkit.data import DatasetBundle, load_dataset
from slimkit.errors import InvalidArgumentError
from slimkit.train.callbacks import Callback, FreezeBackbone
from slimkit.train.checkpoint import CheckpointMeta, LoadedCheckpoint, load_checkpoint
from slimkit.train.metrics import EvalResult
from slimkit.train.trainer import FitResult, TrainConfig, evaluate, fit

__all__ = ["build_model_for_data", "train_model", "evaluate_checkpoint", "check_model_fits_data"]


def build_model_for_data(model_name: str, data: DatasetBundle, *, small_input: bool | None = None,
                         width_mult: float | None = None, pretrained: str | Path | None = None,
                         drop_rate: float | None = None) -> nn.Module:
    """A zoo model sized for ``data``: its classes and channels; ``small_input`` defaults to
    on for images of 64 px or less."""
    from slimkit.models import create_model

    if small_input is None:
        small_input = data.input_size <= 64
    return create_model(model_name, num_classes=data.num_classes, in_chans=data.in_chans,
                        small_input=small_input, width_mult=width_mult, drop_rate=drop_rate,
                        pretrained=pretrained)


def check_model_fits_data(meta: CheckpointMeta, data: DatasetBundle, path: Path) -> None:
    """Raise a one-line error when a checkpoint's classes/channels differ from the data's."""
    if meta.num_classes is not None and meta.num_classes != data.num_classes:
        raise InvalidArgumentError(
            f"{path.name} predicts {meta.num_classes} classes but {data.name} has "
            f"{data.num_classes}; fine-tune it with `slimkit train --pretrained {path}`"
        )
    if meta.input_size and meta.input_size[0] != data.in_chans:
        raise InvalidArgumentError(
            f"{path.name} takes {meta.input_size[0]}-channel images but {data.name} has "
            f"{data.in_chans}; load the data with channels={meta.input_size[0]}"
        )


def fit_data_to_checkpoint(meta: CheckpointMeta, data: DatasetBundle, path: Path
                           ) -> DatasetBundle:
    """:func:`check_model_fits_data`, then the data normalized as the checkpoint was trained.

    A bundle computes its mean/std from its own train split, which depends on the split seed
    (and on the dataset); a trained model must see inputs normalized with the statistics it
    was trained on, stored in its checkpoint. Returns ``data`` with the checkpoint's
    ``mean``/``std`` when it has them (one per channel), else ``data`` unchanged.
    """
    import dataclasses

    check_model_fits_data(meta, data, path)
    if meta.mean and meta.std and len(meta.mean) == len(meta.std) == data.in_chans:
        return dataclasses.replace(data, mean=tuple(float(m) for m in meta.mean),
                                   std=tuple(float(v) for v in meta.std))
    return data


def train_model(
    model_name: str,
    data_spec: str,
    config: TrainConfig,
    *,
    out_dir: str | Path | None,
    input_size: int | None = None,
    small_input: bool | None = None,
    width_mult: float | None = None,
    pretrained: str | Path | None = None,
    freeze_backbone: bool = False,
    linear_probe_epochs: int | None = None,
    resume: bool = False,
    force: bool = False,
    callbacks: list[Callback] | None = None,
    progress: bool | None = None,
) -> FitResult:
    """Load ``data_spec``, build ``model_name`` for it and :func:`fit` it.

    ``freeze_backbone`` trains only the classifier; ``linear_probe_epochs=N`` trains only the
    classifier for N epochs, then everything (the usual transfer-learning recipe).
    """
    data = load_dataset(data_spec, input_size=input_size, seed=config.seed)
    torch.manual_seed(config.seed)  # the initial weights are part of a reproducible run
    model = build_model_for_data(model_name, data, small_input=small_input,
                                 width_mult=width_mult, pretrained=pretrained)
    cbs = list(callbacks or [])
    if freeze_backbone and linear_probe_epochs is not None:
        raise InvalidArgumentError("use either --freeze-backbone or --linear-probe-epochs")
    if freeze_backbone:
        cbs.append(FreezeBackbone(None))
    elif linear_probe_epochs:
        if linear_probe_epochs >= config.epochs:
            raise InvalidArgumentError(
                f"--linear-probe-epochs ({linear_probe_epochs}) must be below --epochs "
                f"({config.epochs})"
            )
        cbs.append(FreezeBackbone(linear_probe_epochs))
    meta = CheckpointMeta()
    if pretrained is not None:
        meta.add_stage("pretrained", params={"path": str(pretrained)})
    return fit(model, data, config, out_dir=out_dir, callbacks=cbs, resume=resume, force=force,
               progress=progress, meta=meta)


def evaluate_checkpoint(path: str | Path, data_spec: str, *, split: str = "test",
                        batch_size: int = 256) -> tuple[LoadedCheckpoint, DatasetBundle,
                                                        EvalResult]:
    """Rebuild the checkpoint at ``path`` and evaluate it on ``data_spec`` at its input size."""
    loaded = load_checkpoint(path)
    meta = loaded.meta
    size = meta.input_size[-1] if meta.input_size else None
    chans = meta.input_size[0] if meta.input_size else None
    data = load_dataset(data_spec, input_size=size, channels=chans if _is_folder(data_spec)
                        else None)
    data = fit_data_to_checkpoint(meta, data, Path(path))
    result = evaluate(loaded.model, data, split=split, batch_size=batch_size)
    return loaded, data, result


def _is_folder(spec: str) -> bool:
    return Path(spec).is_dir()


def config_from_options(**options: Any) -> TrainConfig:
    """A :class:`TrainConfig` from keyword options, ignoring those left at ``None``."""
    return TrainConfig(**{k: v for k, v in options.items() if v is not None})
