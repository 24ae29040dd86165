"""INT8 post-training quantization with ONNX Runtime (static, QDQ).

Static quantization in the QDQ format with int8 weights, per-channel weight scales,
calibration on the user's data, and ``quant_pre_process`` (shape inference + graph
optimization) first. The activation type matters for speed: on x86 CPUs without VNNI
(AVX2 only), ONNX Runtime's fast integer GEMM multiplies unsigned 8-bit activations by
signed 8-bit weights (``vpmaddubsw``); with signed activations it measured *slower* than fp32
here (MobileNetV2 at 224 px, every op quantized: 25.8 vs 25.1 ms) while unsigned
activations gave 16.2 ms. So
``activations="auto"`` picks uint8 activations on x86 and int8 elsewhere, and on x86 without
VNNI it also quantizes weights to 7 bits (``reduce_range``), as ONNX Runtime advises, because
``vpmaddubsw`` saturates its 16-bit sums with full-range weights. ORT then fuses
each ``DequantizeLinear -> Conv -> QuantizeLinear`` into an int8 kernel (``QLinearConv`` /
``ConvInteger``); :func:`int8_node_types` checks that it really did.

:func:`quantize_with_guard` adds an accuracy guard: if the INT8 model loses more than the
budget, the layers whose quantized outputs deviate most from fp32 (lowest SQNR on the
calibration data) are kept in fp32, one by one, until the budget holds.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import FileFormatError, InvalidArgumentError

__all__ = ["QuantResult", "quantize_onnx", "quantize_with_guard", "onnx_accuracy",
           "int8_node_types", "layer_sqnr", "CALIBRATION_METHODS", "ACTIVATION_TYPES",
           "check_activation_type", "default_activation_type", "resolve_activations"]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("auto", "int8", "uint8")
_QUANT_OPS = ("Conv", "Gemm", "MatMul")  # the layers with weights (SQNR, the guard)
# Quantizing the activations and residual adds between the convolutions too lets ONNX Runtime
# keep tensors in 8 bits from one QLinearConv to the next (and fuse Relu/Clip into it);
# with only the convolutions quantized, every layer pays Q/DQ round trips and MobileNetV2 at
# 224 px ran no faster than fp32 here (28.2 vs 27.1 ms; 18.0 ms with this set).
_QUANTIZED_OP_TYPES = (*_QUANT_OPS, "Add", "Relu", "Clip", "GlobalAveragePool", "MaxPool")


@dataclass
class QuantResult:
    """The INT8 file and what went into it."""

    path: Path
    method: str
    per_channel: bool
    calib_samples: int
    excluded_nodes: list[str] = field(default_factory=list)
    fp32_top1: float | None = None
    int8_top1: float | None = None
    size_fp32: int = 0
    size_int8: int = 0
    activations: str = "int8"
    reduce_range: bool = False
    int8_ops: dict[str, int] = field(default_factory=dict)
    guard_rounds: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over float32 batches."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.batches = list(batches)
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.batches):
            return None
        batch = self.batches[self.i]
        self.i += 1
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.i = 0


@contextlib.contextmanager
def _quiet() -> Any:
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _input_info(path: Path) -> tuple[str, list[Any]]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise FileFormatError(f"{path} is not a valid ONNX file "
                              f"({str(exc).splitlines()[0][:120]})") from exc
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise InvalidArgumentError(f"{path.name} has {len(inputs)} inputs; slimkit quantizes "
                                   "single-input image models")
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def _check_calibration(batches: list[np.ndarray], dims: list[Any], path: Path) -> None:
    if not batches:
        raise InvalidArgumentError("no calibration data: pass --data with images of the "
                                   "model's input size")
    for b in batches:
        if b.ndim != len(dims) or any(isinstance(d, int) and d > 0 and d != s
                                      for d, s in zip(dims[1:], b.shape[1:], strict=False)):
            raise InvalidArgumentError(
                f"calibration batches have shape {tuple(b.shape)} but {path.name} expects "
                f"{['N' if not isinstance(d, int) or d <= 0 else d for d in dims]}; load the "
                "data at the model's input size"
            )


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: Iterable[np.ndarray],
    *,
    method: str = "minmax",
    per_channel: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    preprocess: bool = True,
    percentile: float = 99.999,
    activations: str = "auto",
    reduce_range: bool | None = None,
) -> QuantResult:
    """Statically quantize an fp32 ONNX model to INT8 QDQ.

    Args:
        fp32_path: the exported fp32 model (e.g. from :func:`slimkit.deploy.export_onnx`).
        out_path: destination; written atomically.
        calibration: float32 batches ``(N, C, H, W)``, normalized as the model expects.
        method: activation range calibration: ``minmax``, ``entropy`` (KL) or
            ``percentile``.
        per_channel: per-output-channel weight scales (per-tensor otherwise).
        nodes_to_exclude: node names kept in fp32 (mixed precision).
        preprocess: run ``quant_pre_process`` first (ORT's recommendation).
        activations: ``int8``, ``uint8`` or ``auto`` (see :func:`default_activation_type`).
        reduce_range: 7-bit weights; ``None`` = on for uint8 activations on x86 CPUs
            without VNNI (see the module docstring), off otherwise.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from slimkit.train.checkpoint import atomic_write_bytes

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise FileFormatError(f"{fp32_path} does not exist; export the model first")
    if method not in CALIBRATION_METHODS:
        raise InvalidArgumentError(f"--method must be one of {CALIBRATION_METHODS}, got "
                                   f"{method!r}")
    act, default_reduce = resolve_activations(activations)
    if reduce_range is None:
        reduce_range = default_reduce
    name, dims = _input_info(fp32_path)
    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in calibration]
    _check_calibration(batches, dims, fp32_path)
    calib_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile}[method]
    extra = {"CalibPercentile": percentile} if method == "percentile" else {}
    with tempfile.TemporaryDirectory() as tmp:
        src = fp32_path
        if preprocess:
            pre = Path(tmp) / "pre.onnx"
            with _quiet():
                quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            src = pre
        dst = Path(tmp) / "int8.onnx"
        with _quiet():
            quantize_static(str(src), str(dst), _Reader(name, batches),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(_QUANTIZED_OP_TYPES),
                            per_channel=per_channel, reduce_range=reduce_range,
                            activation_type=(QuantType.QUInt8 if act == "uint8"
                                             else QuantType.QInt8),
                            weight_type=QuantType.QInt8,
                            nodes_to_exclude=list(nodes_to_exclude), calibrate_method=calib_method,
                            extra_options=extra)
        atomic_write_bytes(out_path, dst.read_bytes())
    return QuantResult(path=out_path, method=method, per_channel=per_channel,
                       calib_samples=sum(len(b) for b in batches),
                       excluded_nodes=list(nodes_to_exclude),
                       size_fp32=fp32_path.stat().st_size, size_int8=out_path.stat().st_size,
                       activations=act, reduce_range=reduce_range,
                       int8_ops=int8_node_types(out_path))


def resolve_activations(activations: str = "auto") -> tuple[str, bool]:
    """``(activation type, reduce_range)`` that :func:`quantize_onnx` uses for
    ``activations`` (``auto``, ``int8`` or ``uint8``) on this CPU: 7-bit weights only for
    uint8 activations on x86 without VNNI, where u8 x s8 products can saturate."""
    check_activation_type(activations)
    auto_act, saturates = default_activation_type()
    act = auto_act if activations == "auto" else activations
    return act, act == "uint8" and saturates


def check_activation_type(activations: str) -> None:
    """Refuse an ``activations`` value other than ``auto``, ``int8`` or ``uint8``."""
    if activations not in ACTIVATION_TYPES:
        raise InvalidArgumentError(f"--activations must be one of {ACTIVATION_TYPES}, got "
                                   f"{activations!r}")


@functools.lru_cache(maxsize=1)
def default_activation_type() -> tuple[str, bool]:
    """``(activation type, reduce_range)`` for this CPU: ``("uint8", True)`` on x86 without
    VNNI, ``("uint8", False)`` on x86 with VNNI (AVX512-VNNI / AVX-VNNI), ``("int8", False)``
    elsewhere (ARM's int8 dot products take signed operands)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return "int8", False
    from slimkit.analysis.latency import cpu_info

    isa = set(cpu_info().get("isa", []))
    return "uint8", not ({"avx512_vnni", "avx_vnni"} & isa)


def int8_node_types(path: str | Path) -> dict[str, int]:
    """Node types of the graph ONNX Runtime actually runs (after its optimizations) that are
    integer kernels: ``QLinearConv``, ``ConvInteger``, ``QLinearMatMul``, ``MatMulInteger``...
    An empty result means the model runs in float."""
    import onnx

    from slimkit.deploy.onnx_export import ort_session

    with tempfile.TemporaryDirectory() as tmp:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.log_severity_level = 3
        try:
            ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception:
            ort_session(path)  # raises the FileFormatError with the reason
            raise
        proto = onnx.load(str(Path(tmp) / "opt.onnx"))
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        if "Integer" in node.op_type or node.op_type.startswith("QLinear") or \
                node.op_type in ("QGemm", "DynamicQuantizeLinear"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def onnx_accuracy(path: str | Path, batches: Iterable[tuple[np.ndarray, np.ndarray]],
                  threads: int = 2) -> float:
    """Top-1 (%) of an ONNX classifier over ``(images, labels)`` batches."""
    from slimkit.deploy.onnx_export import ort_session

    session = ort_session(path, threads=threads)
    name = session.get_inputs()[0].name
    correct = total = 0
    for x, y in batches:
        logits = session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    if total == 0:
        raise InvalidArgumentError("no evaluation data")
    return 100.0 * correct / total


def _with_outputs(path: Path, names: list[str], dst: Path) -> None:
    import onnx

    proto = onnx.load(str(path))
    existing = {o.name for o in proto.graph.output}
    for n in names:
        if n not in existing:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    onnx.save(proto, str(dst))


def layer_sqnr(fp32_path: str | Path, int8_path: str | Path, batches: Sequence[np.ndarray]
               ) -> dict[str, float]:
    """SQNR (dB) of each quantizable node's output in the INT8 model against fp32, keyed by
    the fp32 node name (low = the layer suffers from quantization)."""
    import onnx

    from slimkit.deploy.onnx_export import ort_session

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    f_proto = onnx.load(str(fp32_path))
    q_proto = onnx.load(str(int8_path))
    targets = {n.output[0]: n.name for n in f_proto.graph.node if n.op_type in _QUANT_OPS}
    # in QDQ graphs the float op keeps its output tensor name
    q_outputs = {o for n in q_proto.graph.node for o in n.output}
    names = [t for t in targets if t in q_outputs]
    with tempfile.TemporaryDirectory() as tmp:
        fp, qp = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        _with_outputs(fp32_path, names, fp)
        _with_outputs(int8_path, names, qp)
        fs, qs = ort_session(fp, 2, optimize=False), ort_session(qp, 2, optimize=False)
        inp = fs.get_inputs()[0].name
        signal = dict.fromkeys(names, 0.0)
        noise = dict.fromkeys(names, 0.0)
        for x in batches:
            fo = dict(zip([o.name for o in fs.get_outputs()], fs.run(None, {inp: x}),
                          strict=True))
            qo = dict(zip([o.name for o in qs.get_outputs()], qs.run(None, {inp: x}),
                          strict=True))
            for t in names:
                signal[t] += float(np.square(fo[t]).sum())
                noise[t] += float(np.square(fo[t] - qo[t]).sum())
    return {targets[t]: 10 * np.log10(max(signal[t], 1e-20) / max(noise[t], 1e-20))
            for t in names}


def quantize_with_guard(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: Sequence[np.ndarray],
    evaluation: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    max_acc_drop: float | None = None,
    method: str = "minmax",
    per_channel: bool = True,
    max_fp32_layers: int = 8,
    activations: str = "auto",
) -> QuantResult:
    """Quantize, measure top-1 on ``evaluation``, and keep the most damaged layers in fp32
    until the drop is within ``max_acc_drop`` points (or ``max_fp32_layers`` is reached,
    which is reported, not hidden)."""
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    base = onnx_accuracy(fp32_path, evaluation)
    result = quantize_onnx(fp32_path, out_path, calibration, method=method,
                           per_channel=per_channel, activations=activations)
    result.fp32_top1 = base
    result.int8_top1 = onnx_accuracy(out_path, evaluation)
    rounds = [{"excluded": [], "int8_top1": result.int8_top1}]
    if max_acc_drop is None or base - result.int8_top1 <= max_acc_drop:
        result.guard_rounds = rounds
        return result
    sqnr = layer_sqnr(fp32_path, out_path, calibration[:4])
    order = sorted(sqnr, key=sqnr.get)  # type: ignore[arg-type]
    excluded: list[str] = []
    for node in order[:max_fp32_layers]:
        excluded.append(node)
        result = quantize_onnx(fp32_path, out_path, calibration, method=method,
                               per_channel=per_channel, nodes_to_exclude=excluded,
                               activations=activations)
        result.fp32_top1 = base
        result.int8_top1 = onnx_accuracy(out_path, evaluation)
        rounds.append({"excluded": list(excluded), "int8_top1": result.int8_top1,
                       "sqnr_db": sqnr[node]})
        if base - result.int8_top1 <= max_acc_drop:
            break
    result.guard_rounds = rounds
    return result
