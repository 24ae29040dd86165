"""Checkpoint- or ONNX-level INT8 quantization (what ``slimkit quantize`` runs)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimkit.data import BatchLoader, DatasetBundle, load_dataset
from slimkit.errors import InvalidArgumentError

__all__ = ["QuantizeRun", "quantize_model_file", "calibration_arrays", "evaluation_arrays"]


@dataclass
class QuantizeRun:
    """The INT8 file, the accuracies along the way, and what was done."""

    path: Path
    torch_top1: float | None
    fp32_onnx_top1: float | None
    int8_top1: float | None
    size_fp32: int
    size_int8: int
    int8_ops: dict[str, int]
    excluded_nodes: list[str]
    steps: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["path"] = str(self.path)
        return d


def calibration_arrays(data: DatasetBundle, samples: int, batch_size: int = 32,
                       seed: int = 0) -> list[np.ndarray]:
    """``samples`` training images (no augmentation, shuffled) as float32 batches."""
    if samples < 1:
        raise InvalidArgumentError(f"--calib-samples must be >= 1, got {samples}")
    loader = BatchLoader.for_bundle(data, "train", batch_size, shuffle=True, augment="none",
                                    seed=seed)
    out, n = [], 0
    for x, _ in loader:
        out.append(x.numpy())
        n += len(x)
        if n >= samples:
            break
    return out


def evaluation_arrays(data: DatasetBundle, split: str = "test", limit: int | None = None
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    out, n = [], 0
    for x, y in BatchLoader.for_bundle(data, split, 256):
        out.append((x.numpy(), y.numpy()))
        n += len(y)
        if limit is not None and n >= limit:
            break
    return out


def quantize_model_file(
    source: str | Path,
    data_spec: str,
    out_path: str | Path,
    *,
    calib_samples: int = 256,
    method: str = "minmax",
    per_channel: bool = True,
    equalize: bool = False,
    relu6_to_relu: bool = True,
    bias_correction: bool = False,
    max_acc_drop: float | None = None,
    qat_epochs: int = 0,
    qat_lr: float = 0.005,
    batch_size: int = 64,
    eval_samples: int | None = None,
    force: bool = False,
    seed: int = 0,
    activations: str = "auto",
) -> QuantizeRun:
    """Quantize a checkpoint (or an fp32 ``.onnx``) to an INT8 QDQ ``.onnx``.

    Checkpoint pipeline: [equalize (+ bias correction)] -> [QAT for ``qat_epochs``] ->
    verified fp32 export -> ORT static quantization with the accuracy guard. An ``.onnx``
    source allows PTQ only (equalization and QAT need the PyTorch model).
    """
    from slimkit.compress.quantization.ptq import (
        onnx_accuracy,
        quantize_with_guard,
        resolve_activations,
    )
    from slimkit.deploy.onnx_export import export_onnx, read_onnx_metadata
    from slimkit.train.checkpoint import OutputExistsError, load_checkpoint
    from slimkit.train.trainer import TrainConfig, evaluate, fit

    source, out_path = Path(source), Path(out_path)
    if out_path.suffix != ".onnx":
        raise InvalidArgumentError(f"--out must be a .onnx file, got {out_path.name!r}")
    if out_path.exists() and not force:
        raise OutputExistsError(f"{out_path} already exists; pass --force to overwrite it")
    if qat_epochs < 0:
        raise InvalidArgumentError(f"--qat-epochs must be >= 0, got {qat_epochs}")
    steps: list[str] = []
    details: dict[str, Any] = {"method": method, "per_channel": per_channel}
    # validated before any training or export; the weight grid PTQ will use, so bias
    # correction and QAT target it too
    _, reduce_range = resolve_activations(activations)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        torch_top1 = None
        if source.suffix == ".onnx":
            if equalize or bias_correction or qat_epochs:
                raise InvalidArgumentError(
                    "--equalize, --bias-correction and --qat-epochs need the PyTorch model: "
                    "pass the checkpoint, not the .onnx")
            meta = read_onnx_metadata(source)
            size = (meta.get("input_size") or [None])[-1]
            data = load_dataset(data_spec, input_size=size)
            fp32.write_bytes(source.read_bytes())
        elif source.suffix == ".safetensors":
            loaded = load_checkpoint(source)
            model = loaded.model.eval()
            m = loaded.meta
            data = load_dataset(data_spec, input_size=m.input_size[-1] if m.input_size else None)
            from slimkit.train.api import fit_data_to_checkpoint

            data = fit_data_to_checkpoint(m, data, source)
            torch_top1 = evaluate(model, data).top1
            calib_t = [torch.from_numpy(a) for a in calibration_arrays(data, calib_samples,
                                                                         seed=seed)]
            if equalize:
                from slimkit.compress.quantization.equalize import equalize as cle

                eq = cle(model, relu6_to_relu=relu6_to_relu)
                model = eq.model
                details["equalized_pairs"] = len(eq.pairs)
                details["relu6_replaced"] = len(eq.relu6_replaced)
                details["top1_after_equalize"] = evaluate(model, data).top1
                steps.append("equalize")
            if bias_correction:
                from slimkit.compress.quantization.equalize import bias_correct

                details["bias_corrected"] = len(bias_correct(
                    model, calib_t, per_channel=per_channel,
                    reduce_range=reduce_range))
                details["top1_after_bias_correction"] = evaluate(model, data).top1
                steps.append("bias_correction")
            if qat_epochs:
                from slimkit.compress.quantization.qat import prepare_qat, strip_qat

                prepared = prepare_qat(model, per_channel=per_channel,
                                       reduce_range=reduce_range)
                cfg = TrainConfig(epochs=qat_epochs, batch_size=batch_size, lr=qat_lr,
                                  warmup_epochs=0, seed=seed, channels_last=False)
                ft = fit(prepared, data, cfg, progress=False)
                details["qat_top1_fake_quant"] = ft.test.top1 if ft.test else None
                model = strip_qat(prepared)
                steps.append("qat")
            export_onnx(model, torch.zeros(1, data.in_chans, data.input_size, data.input_size),
                        fp32, overwrite=True, optimize=False,
                        metadata={"class_names": data.class_names, "mean": list(data.mean),
                                  "std": list(data.std),
                                  "input_size": [data.in_chans, data.input_size,
                                                 data.input_size]})
        else:
            raise InvalidArgumentError(
                f"quantize takes a checkpoint (.safetensors) or an fp32 .onnx, got {source.name!r}"
            )
        calib = calibration_arrays(data, calib_samples, seed=seed)
        evaluation = evaluation_arrays(data, limit=eval_samples)
        result = quantize_with_guard(fp32, out_path, calib, evaluation,
                                     max_acc_drop=max_acc_drop, method=method,
                                     per_channel=per_channel, activations=activations)
        steps.append("ptq")
        details["activations"] = result.activations
        details["reduce_range"] = result.reduce_range
        details["guard_rounds"] = result.guard_rounds
        fp32_top1 = result.fp32_top1 if result.fp32_top1 is not None else \
            onnx_accuracy(fp32, evaluation)
        size_fp32 = fp32.stat().st_size
    return QuantizeRun(path=out_path, torch_top1=torch_top1, fp32_onnx_top1=fp32_top1,
                       int8_top1=result.int8_top1, size_fp32=size_fp32,
                       size_int8=out_path.stat().st_size, int8_ops=result.int8_ops,
                       excluded_nodes=result.excluded_nodes, steps=steps, details=details)

