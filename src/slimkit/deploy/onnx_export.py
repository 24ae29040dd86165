"""ONNX export verified against the original model.

:func:`export_onnx` folds BatchNorms, exports with ``torch.onnx.export`` (the dynamo exporter;
the TorchScript-based one as a fallback, recorded in the result), runs the ONNX checker,
then runs the file in ONNX Runtime on fresh random inputs and compares with PyTorch. A
failed check is an error: nothing is left at the destination. The preprocessing (input
size, mean, std), the class names and the lineage travel in the ONNX metadata, so a
deployed file describes itself.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.errors import FileFormatError, SlimkitError, UnsupportedModuleError

__all__ = ["ExportResult", "ExportError", "export_onnx", "read_onnx_metadata",
           "ort_session", "DEFAULT_OPSET"]

DEFAULT_OPSET = 18
INPUT, OUTPUT = "input", "logits"


class ExportError(UnsupportedModuleError):
    """The model could not be exported, or the export does not match PyTorch."""


@dataclass
class ExportResult:
    """Where the file went and how well it matches PyTorch.

    ``max_abs_err`` / ``rel_err`` compare ONNX Runtime with PyTorch on ``parity_batch``
    fresh random inputs (``rel_err = max|onnx - torch| / max|torch|``).
    """

    path: Path
    exporter: str
    opset: int
    dynamic_batch: bool
    max_abs_err: float
    rel_err: float
    parity_batch: int
    folded_batchnorms: int
    size_bytes: int
    nodes: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporters print progress and warn about optional torchvision ops: silence them."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                             "torch.fx.experimental.symbolic_shapes")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export(model: nn.Module, x: torch.Tensor, path: str, opset: int, dynamic_batch: bool,
            exporter: str, optimize: bool) -> None:
    with _quiet():
        if exporter == "dynamo":
            dyn = {"x": {0: torch.export.Dim("batch", min=1, max=4096)}} \
                if dynamic_batch else None
            program = torch.onnx.export(model, (x,), None, dynamo=True, opset_version=opset,
                                        input_names=[INPUT], output_names=[OUTPUT],
                                        dynamic_shapes=_dynamic_for(model, dyn),
                                        optimize=optimize, verbose=False)
            program.save(path)
        else:
            torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset,
                              input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}
                              if dynamic_batch else None)


def _dynamic_for(model: nn.Module, dyn: dict[str, Any] | None) -> Any:
    """Dynamic shapes keyed by the forward's first argument name."""
    if dyn is None:
        return None
    import inspect

    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    name = params[0].name if params else "x"
    return {name: dyn["x"]}


def ort_session(path: str | Path, threads: int = 2, optimize: bool = True):  # type: ignore[no-untyped-def]
    """An ONNX Runtime CPU session with all graph optimizations and fixed thread counts."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for invalid models
        raise FileFormatError(
            f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0][:200]}"
        ) from exc


def _metadata(model: nn.Module, shape: tuple[int, ...], extra: Mapping[str, Any] | None
              ) -> dict[str, str]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    meta: dict[str, Any] = {
        "input_name": INPUT,
        "output_name": OUTPUT,
        "input_size": list(shape),  # (C, H, W) the file was exported and verified at
        "mean": list(cfg.get("mean", [])),
        "std": list(cfg.get("std", [])),
        "num_classes": getattr(model, "num_classes", cfg.get("num_classes")),
        "arch": getattr(model, "slimkit_arch", None),
    }
    meta.update(extra or {})
    from slimkit._version import __version__

    return {"slimkit": json.dumps(meta), "slimkit_version": __version__}


def export_onnx(
    model: nn.Module,
    example_inputs: torch.Tensor,
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    fold_bn: bool = True,
    exporter: str = "auto",
    metadata: Mapping[str, Any] | None = None,
    rtol: float = 1e-3,
    parity_batch: int = 2,
    overwrite: bool = False,
    optimize: bool = True,
) -> ExportResult:
    """Export ``model`` to ONNX and verify it in ONNX Runtime.

    Args:
        model: any ``nn.Module`` taking one image tensor (copied, never modified).
        example_inputs: ``(N, C, H, W)`` tensor fixing C, H, W (and N if not dynamic).
        path: destination ``.onnx`` file; written only after every check passed.
        dynamic_batch: a symbolic batch dimension.
        opset: ONNX opset (default 18).
        fold_bn: fold BatchNorms into convolutions first (same function).
        exporter: ``dynamo``, ``legacy`` (TorchScript-based) or ``auto`` (dynamo, falling
            back to legacy when it fails; the result records which).
        metadata: extra JSON-able entries for the ``slimkit`` metadata (class names...).
        rtol: the largest accepted ``max|onnx - torch| / max|torch|``.
        parity_batch: random inputs for the parity check (batch 2 exercises dynamic batch).
        overwrite: replace an existing file.
        optimize: run onnxscript's graph optimizer after the dynamo export (constant folding,
            dead-code removal; ONNX Runtime optimizes again at load time either way).
    """
    import onnx

    from slimkit.compress.fuse import fold_batchnorm
    from slimkit.train.checkpoint import OutputExistsError

    path = Path(path)
    if path.suffix != ".onnx":
        raise SlimkitError(f"export to a .onnx file, got {path.name!r}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --force to overwrite it")
    if exporter not in ("auto", "dynamo", "legacy"):
        raise SlimkitError(f"exporter must be auto, dynamo or legacy, got {exporter!r}")
    if example_inputs.ndim != 4:
        raise SlimkitError(f"example input must be (N, C, H, W), got {tuple(example_inputs.shape)}")
    folded = fold_batchnorm(model) if fold_bn else None
    net = folded.model if folded is not None else copy.deepcopy(model).eval()
    net.eval()
    x = example_inputs[:1].contiguous() if dynamic_batch else example_inputs.contiguous()
    try:
        with torch.no_grad():
            net(x)
    except RuntimeError as exc:
        raise ExportError(f"the model cannot run on {tuple(x.shape)}: "
                          f"{str(exc).splitlines()[0]}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    used = exporter
    try:
        errors = []
        for attempt in (["dynamo", "legacy"] if exporter == "auto" else [exporter]):
            try:
                _export(net, x, tmp, opset, dynamic_batch, attempt, optimize)
                used = attempt
                break
            except Exception as exc:  # exporters raise many types; report the first line
                first = (str(exc).strip().splitlines() or [""])[0]
                first = re.sub(r"\x1b\[[0-9;]*m", "", first)[:200]  # ANSI colours
                errors.append(f"{attempt}: {type(exc).__name__}: {first}")
        else:
            raise ExportError("export failed (" + "; ".join(errors) + "); the op named is "
                              "not supported by the ONNX exporter")
        proto = onnx.load(tmp)
        try:
            onnx.checker.check_model(proto, full_check=True)
        except Exception as exc:
            raise ExportError(f"the exported graph is not valid ONNX: "
                              f"{str(exc).splitlines()[0][:200]}") from exc
        for k, v in _metadata(model, tuple(x.shape[1:]), metadata).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(proto, tmp)
        # parity on fresh inputs (not the example the exporter saw)
        gen = torch.Generator().manual_seed(1234)
        n = parity_batch if dynamic_batch else x.shape[0]
        probe = torch.randn((n, *x.shape[1:]), generator=gen)
        with torch.no_grad():
            expected = model.eval()(probe).float().numpy()
        got = ort_session(tmp, threads=1).run(None, {INPUT: probe.numpy()})[0]
        abs_err = float(np.max(np.abs(got - expected))) if expected.size else 0.0
        rel_err = abs_err / max(float(np.max(np.abs(expected))), 1e-12)
        if got.shape != expected.shape or not rel_err <= rtol:
            raise ExportError(
                f"ONNX Runtime output differs from PyTorch (shape {got.shape} vs "
                f"{expected.shape}, relative error {rel_err:.2e} > {rtol:.0e})"
            )
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return ExportResult(path=path, exporter=used, opset=opset, dynamic_batch=dynamic_batch,
                        max_abs_err=abs_err, rel_err=rel_err, parity_batch=n,
                        folded_batchnorms=len(folded.folded) if folded else 0,
                        size_bytes=path.stat().st_size, nodes=len(proto.graph.node))


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``slimkit`` metadata of an exported file (``{}`` for other ONNX files)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path} does not exist; check the path")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise FileFormatError(f"{path} is not a valid ONNX file "
                              f"({str(exc).splitlines()[0][:120]})") from exc
    props = {p.key: p.value for p in proto.metadata_props}
    return json.loads(props["slimkit"]) if "slimkit" in props else {}
