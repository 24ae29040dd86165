"""Measured latency for pruning decisions: what fraction of a reference model's ONNX Runtime
latency a pruned model keeps.

MACs are a poor proxy for latency on small inputs and narrow layers: a 28-px MobileNetV2 is
dominated by per-operator overhead, so half the MACs can buy almost nothing, while a group
whose channels feed large feature maps buys a lot. :class:`OrtLatencyProbe` exports each model
it is given to ONNX (optionally quantizes it to INT8, as it will be deployed), and times it
*interleaved* with the reference on the same session settings; the ratio is robust to the slow
drifts of a shared machine, the absolute milliseconds are not. The ratio compares a low
quantile (default the 10th percentile) of each model's times, not the median: interference
from other processes only ever adds time, so the fast runs track the model's own cost. On the
2-core development machine, beside a busy process, repeated measurements of the same pruned
28-px MobileNetV2 at 2 threads spread by about +-2 % with the median and +-0.5 % with the
10th percentile -- single layer groups save 1-7 %, so the median could not rank them. The sensitivity
analysis records this ratio per layer group and ratio (a NetAdapt-style lookup table), and
the allocation can then spend accuracy per millisecond saved instead of per MAC.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch import nn

from slimkit.errors import InvalidArgumentError

__all__ = ["OrtLatencyProbe"]


class OrtLatencyProbe:
    """Times models against a reference in ONNX Runtime (batch 1, CPU).

    Args:
        reference: the model whose latency is 1.0 (copied into ONNX, not modified).
        example: one input ``(1, C, H, W)``.
        threads: ONNX Runtime intra-op threads (the deployment setting).
        runs: timed runs of each model per measurement (interleaved with the reference).
        warmup: untimed runs of each model first.
        quantile: the quantile of each model's run times that is compared (0.5: median).
        calibration: float32 batches ``(N, C, H, W)``; when given, every model (and the
            reference) is statically quantized to INT8 before timing, so the table
            describes the deployed INT8 graph rather than fp32.

    Use as a context manager (or call :meth:`close`) to delete the temporary ONNX files.
    """

    def __init__(self, reference: nn.Module, example: torch.Tensor, *, threads: int = 2,
                 runs: int = 300, warmup: int = 10, quantile: float = 0.1,
                 calibration: Sequence[np.ndarray] | None = None) -> None:
        if example.ndim != 4 or example.shape[0] != 1:
            raise InvalidArgumentError(f"the latency probe needs one (1, C, H, W) example, got "
                                       f"{tuple(example.shape)}")
        if runs < 1 or warmup < 0 or threads < 1 or not 0 < quantile < 1:
            raise InvalidArgumentError(f"need runs >= 1, warmup >= 0, threads >= 1, quantile in "
                                       f"(0, 1); got {runs}, {warmup}, {threads}, {quantile}")
        self.quantile = quantile
        self.example = example
        self.threads = threads
        self.runs = runs
        self.warmup = warmup
        self.calibration = list(calibration) if calibration is not None else None
        self._tmp = tempfile.TemporaryDirectory(prefix="slimkit-probe-")
        self._count = 0
        self._reference, _ = self._session(reference)
        self.reference_ms = self._time({"ref": self._reference})["ref"]

    @property
    def int8(self) -> bool:
        return self.calibration is not None

    def describe(self) -> dict[str, Any]:
        """The settings, for the sensitivity table."""
        return {"runtime": "onnxruntime", "threads": self.threads, "runs": self.runs,
                "quantile": self.quantile, "int8": self.int8,
                "reference_ms": self.reference_ms}

    def _session(self, model: nn.Module) -> tuple[Any, list[Path]]:
        """An ONNX Runtime session of ``model`` and the files written for it."""
        from slimkit.deploy.onnx_export import export_onnx, ort_session

        self._count += 1
        folder = Path(self._tmp.name)
        files = [export_onnx(model, self.example, folder / f"m{self._count}.onnx",
                             exporter="legacy", overwrite=True).path]
        if self.calibration is not None:
            from slimkit.compress.quantization.ptq import quantize_onnx

            files.append(quantize_onnx(files[0], folder / f"m{self._count}.int8.onnx",
                                       self.calibration).path)
        return ort_session(files[-1], threads=self.threads), files

    def _time(self, sessions: dict[str, Any]) -> dict[str, float]:
        from slimkit.analysis.latency import ort_runner, time_interleaved, torch_threads

        fns = {k: ort_runner(s, self.example) for k, s in sessions.items()}
        with torch_threads(self.threads):
            times = time_interleaved(fns, warmup=self.warmup, runs=self.runs)
        return {k: float(np.quantile(v, self.quantile)) * 1e3 for k, v in times.items()}

    def kept(self, model: nn.Module) -> float:
        """``latency(model) / latency(reference)`` (each the ``quantile`` of its run times),
        timed interleaved."""
        session, files = self._session(model)
        ms = self._time({"ref": self._reference, "model": session})
        for f in files:  # the session holds the model in memory
            f.unlink()
        return ms["model"] / ms["ref"]

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
