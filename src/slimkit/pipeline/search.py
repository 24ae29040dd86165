"""Budget-driven compression: ``slimkit compress``.

Given a trained checkpoint, an accuracy budget and a deployment target (latency on the
runtime, file size, or MACs), the search:

1. measures the baseline (PyTorch and ONNX Runtime fp32: accuracy, latency, size);
2. runs a sensitivity analysis: each prunable group pruned alone at several ratios, its
   accuracy measured and (``allocate="latency"``, the default) its INT8 ONNX Runtime latency
   timed against the unpruned INT8 model on the deployment settings -- a lookup table of
   what each group's channels cost in accuracy and buy in measured milliseconds;
3. tries candidates from mild to aggressive: INT8 alone, then pruning to a sequence of
   fractions of the latency (or, ``allocate="macs"``, of the MACs) with per-layer ratios
   allocated from that table (accuracy spent per millisecond saved; the pruned model's
   latency is measured while the allocation is bisected), recovery by fine-tuning with the
   original model as the distillation teacher, and INT8 with the accuracy guard;
4. measures every candidate for real: validation accuracy (the selection never looks at the
   test split), ONNX Runtime latency interleaved with the baseline, file size;
5. stops at the best candidate that meets every constraint (fastest for a latency target,
   smallest for a size target), reports test accuracy for it, or says which constraint
   could not be met and how close the best attempt got.

Accuracy is assumed to fall as pruning deepens: once a candidate misses the budget, deeper
ones are not tried; instead the search bisects between the deepest fraction that kept the
budget and the one that missed it (``refine_steps`` candidates, default 2), so a budget that
falls between two of the given fractions is still approached. ``time_budget_min`` bounds the
wall time (candidates in progress finish).
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from slimkit.errors import InvalidArgumentError, SlimkitError
from slimkit.train.checkpoint import OutputExistsError, atomic_write_text

__all__ = ["BudgetNotMetError", "Candidate", "CompressResult", "compress_checkpoint",
           "search_fractions"]


class BudgetNotMetError(SlimkitError):
    """No candidate met the constraints; the message says which and how close."""


@dataclass
class Candidate:
    """One measured candidate. ``fraction``: the target it was pruned to (1.0: unpruned), of
    the latency or of the MACs as ``allocate`` says."""

    name: str
    fraction: float
    allocate: str
    params: int
    macs: int
    val_top1: float
    val_drop: float
    latency_ms: float
    baseline_latency_ms: float
    size_bytes: int
    onnx: str
    checkpoint: str
    meets: dict[str, bool] = field(default_factory=dict)
    test_top1: float | None = None

    @property
    def speedup(self) -> float:
        return self.baseline_latency_ms / self.latency_ms

    def ok(self) -> bool:
        return all(self.meets.values())

    def row(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "macs": self.macs,
                "size_bytes": self.size_bytes, "top1": self.val_top1,
                "latency_ms": self.latency_ms, "runtime": "onnxruntime",
                "energy_mj": None, "extra": {"val_drop": self.val_drop, "meets": self.meets,
                                             "speedup": self.speedup}}


@dataclass
class CompressResult:
    best: Candidate | None
    candidates: list[Candidate]
    baseline: dict[str, Any]
    out_dir: Path
    stopped: str

    def to_dict(self) -> dict[str, Any]:
        return {"best": asdict(self.best) if self.best else None,
                "candidates": [asdict(c) for c in self.candidates],
                "baseline": self.baseline, "out_dir": str(self.out_dir),
                "stopped": self.stopped}


def _latency_round(paths: Sequence[Path], runs: int, threads: int) -> list[float]:
    """Median ONNX Runtime latency (ms, batch 1) of each model, all timed interleaved."""
    from slimkit.analysis.latency import measure_callables, ort_runner
    from slimkit.deploy.onnx_export import ort_session

    fns, labels = {}, {}
    for i, path in enumerate(paths):
        s = ort_session(path, threads=threads)
        dims = [d if isinstance(d, int) else 1 for d in s.get_inputs()[0].shape]
        fns[str(i)] = ort_runner(s, torch.randn(*dims))
        labels[str(i)] = "onnxruntime"
    stats = measure_callables(fns, labels, batch_size=1, threads=threads, warmup=10, runs=runs)
    return [stats[str(i)].median_ms for i in range(len(paths))]


def search_fractions(fractions: Sequence[float], attempt: Callable[[float], bool | None], *,
                     refine_steps: int = 2, min_step: float = 0.05,
                     out_of_time: Callable[[], bool] = lambda: False,
                     time_budget_min: float | None = None) -> str:
    """The order in which MAC fractions are tried; returns why the search stopped.

    ``attempt(frac)`` builds and measures one candidate (1.0: no pruning) and says whether
    it kept the accuracy budget (``None``: it could not be built). Fractions go from mild to
    aggressive; after the first miss, up to ``refine_steps`` candidates bisect between the
    deepest fraction that kept the budget and the shallowest that missed it, never closer
    than ``min_step``. Accuracy is assumed to fall as pruning deepens.
    """
    stopped = "all candidates tried"
    passed = 1.0  # the deepest fraction whose candidate kept the accuracy budget
    missed: float | None = None
    for frac in (1.0, *sorted(fractions, reverse=True)):
        if out_of_time():
            return f"time budget of {time_budget_min} min reached"
        ok = attempt(frac)
        if ok is None:
            continue
        if ok:
            passed = frac
        else:
            missed = frac
            stopped = f"a {frac:g} MAC fraction missed the accuracy budget; deeper not tried"
            break
    if missed is None:
        return stopped
    for _ in range(refine_steps):
        mid = round((passed + missed) / 2, 3)
        if passed - missed < min_step or mid in (passed, missed):
            break
        if out_of_time():
            return f"time budget of {time_budget_min} min reached while refining"
        ok = attempt(mid)
        if ok is None:
            break
        if ok:
            passed = mid
        else:
            missed = mid
        stopped = (f"refined between {passed:g} (kept the budget) and {missed:g} (missed it) "
                   "of the MACs")
    return stopped


def _candidate_params(meta: Any) -> dict[str, Any] | None:
    """The parameters of a candidate checkpoint's last ``compress-candidate`` stage."""
    stages = [s for s in meta.lineage if s.get("stage") == "compress-candidate"]
    return dict(stages[-1].get("params", {})) if stages else None


def _same_candidate(recorded: dict[str, Any] | None, params: dict[str, Any]) -> bool:
    """Whether a recorded candidate was made as ``params`` asks (fine-tuning epochs are
    compared when recorded: candidates of runs before 2026-12-05 lack them)."""
    if recorded is None:
        return False
    return all(recorded.get(k) == v for k, v in params.items()
               if k in recorded or k != "finetune_epochs")


def compress_checkpoint(
    checkpoint: str | Path,
    data_spec: str,
    out_dir: str | Path,
    *,
    max_acc_drop: float,
    target_latency_ms: float | None = None,
    target_size_mb: float | None = None,
    target_macs: float | None = None,
    runtime: str = "onnxruntime",
    time_budget_min: float | None = None,
    fractions: Sequence[float] = (0.75, 0.5, 0.35, 0.25),
    finetune_epochs: int = 2,
    calib_samples: int = 256,
    sensitivity_samples: int = 512,
    sensitivity_ratios: Sequence[float] = (0.3, 0.5, 0.7),
    latency_runs: int = 50,
    threads: int = 2,
    refine_steps: int = 2,
    min_fraction_step: float = 0.05,
    allocate: str | None = None,
    sensitivity: str | Path | None = None,
    reuse: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> CompressResult:
    """Search for the fastest/smallest model within ``max_acc_drop`` points (see module doc).

    Exactly one of ``target_latency_ms`` (ONNX Runtime, batch 1, ``threads``),
    ``target_size_mb`` (the deployed file) or ``target_macs`` (fraction of the original) is
    required. ``allocate``: ``latency`` (per-layer ratios from measured INT8 ONNX Runtime
    latency, ``fractions`` are fractions of the unpruned INT8 model's latency) or ``macs``
    (ratios from MACs, ``fractions`` of the MACs); default ``macs`` for a MAC target,
    ``latency`` otherwise. ``sensitivity_ratios``: the channel ratios each group is analysed
    at (the largest bounds how deep the allocation can prune). ``sensitivity``: reuse a table from an earlier run
    (``out_dir/sensitivity.json``; with ``allocate="latency"`` it must hold measured latency
    of the same model on the same settings) instead of analysing again. ``reuse``: an
    earlier compress run of the same checkpoint: its sensitivity table is used, and a
    candidate it already pruned and recovered (same name, allocation and fine-tuning epochs)
    is loaded instead of pruned and fine-tuned again; quantization and every measurement are
    redone under this run's budget (to search again with another accuracy budget).
    ``fractions`` are tried from mild to aggressive; once one misses the accuracy budget, up to ``refine_steps`` more candidates
    bisect between it and the deepest fraction that kept the budget (not closer than
    ``min_fraction_step``). Writes candidates, ``pipeline.json``, the chosen
    ``model.int8.onnx`` and the report into ``out_dir``.
    """
    from slimkit.analysis.profile import count_macs, count_params
    from slimkit.compress.distill import LogitDistillation
    from slimkit.compress.pruning.latency_probe import OrtLatencyProbe
    from slimkit.compress.pruning.sensitivity import (
        ALLOCATE_BY,
        allocation_path,
        load_table,
        prune_to_target,
        save_table,
        sensitivity_analysis,
    )
    from slimkit.compress.pruning.structured import prune
    from slimkit.compress.quantization.api import calibration_arrays, evaluation_arrays
    from slimkit.compress.quantization.ptq import onnx_accuracy, quantize_with_guard
    from slimkit.data import load_dataset
    from slimkit.deploy.onnx_export import export_onnx
    from slimkit.train import TrainConfig, evaluate, fit, load_checkpoint, save_checkpoint
    from slimkit.train.api import fit_data_to_checkpoint

    targets = {k: v for k, v in (("latency_ms", target_latency_ms),
                                  ("size_mb", target_size_mb), ("macs", target_macs))
               if v is not None}
    if len(targets) != 1:
        raise InvalidArgumentError("give exactly one of --target-latency-ms, --target-size-mb, "
                                   "--target-macs")
    if max_acc_drop < 0:
        raise InvalidArgumentError(f"--max-acc-drop must be >= 0 points, got {max_acc_drop}")
    if any(v <= 0 for v in targets.values()) or (target_macs is not None and target_macs > 1):
        raise InvalidArgumentError(f"the target must be positive (MACs a fraction in (0, 1]), "
                                   f"got {targets}")
    if any(not 0 < f < 1 for f in fractions):
        raise InvalidArgumentError(f"--fractions must each be in (0, 1) (the part kept), got "
                                   f"{list(fractions)}")
    if not sensitivity_ratios or any(not 0 < r < 1 for r in sensitivity_ratios):
        raise InvalidArgumentError(f"--ratios must each be in (0, 1) (the channels a group "
                                   f"loses), got {list(sensitivity_ratios)}")
    if refine_steps < 0:
        raise InvalidArgumentError(f"--refine-steps must be >= 0, got {refine_steps}")
    if allocate is None:
        allocate = "macs" if target_macs is not None else "latency"
    if allocate not in ALLOCATE_BY:
        raise InvalidArgumentError(f"--allocate must be one of {ALLOCATE_BY}, got {allocate!r}")
    if runtime != "onnxruntime":
        raise InvalidArgumentError("--runtime: only onnxruntime is supported for the search")
    reuse_dir = Path(reuse) if reuse is not None else None
    if reuse_dir is not None:
        if sensitivity is not None:
            raise InvalidArgumentError("give --reuse (which brings its sensitivity table) or "
                                       "--sensitivity, not both")
        if not (reuse_dir / "sensitivity.json").is_file():
            raise InvalidArgumentError(f"--reuse {reuse_dir}: not a compress run (no "
                                       "sensitivity.json in it)")
        sensitivity = reuse_dir / "sensitivity.json"
    table = load_table(sensitivity) if sensitivity is not None else None
    if table is not None:
        allocation_path(table, by=allocate)  # the table supports this allocation
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} already holds a run; pass --force to start over")
    loaded = load_checkpoint(checkpoint)
    meta = loaded.meta
    size = meta.input_size[-1] if meta.input_size else None
    data = load_dataset(data_spec, input_size=size)
    data = fit_data_to_checkpoint(meta, data, Path(checkpoint))
    base_model = loaded.model.eval()
    x = torch.zeros(1, data.in_chans, data.input_size, data.input_size)
    base_macs = count_macs(base_model, x)
    if table is not None and table.base_macs != base_macs:
        raise InvalidArgumentError(
            f"--sensitivity {sensitivity} describes a model with {table.base_macs} MACs, "
            f"not this checkpoint's {base_macs}; analyse it anew")
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    deadline = t_start + time_budget_min * 60 if time_budget_min else None
    val_split = "val" if len(data.val) else "test"
    val = evaluation_arrays(data, val_split)
    calib = calibration_arrays(data, calib_samples)
    base_onnx = export_onnx(base_model, x, out / "baseline.fp32.onnx", overwrite=True,
                            exporter="legacy").path
    baseline = {"val_top1": onnx_accuracy(base_onnx, val),
                "test_top1": evaluate(base_model, data).top1,
                "params": count_params(base_model), "macs": base_macs,
                "size_bytes": base_onnx.stat().st_size}
    baseline["latency_ms"] = _latency_round([base_onnx], latency_runs, threads)[0]
    log(f"baseline: val top-1 {baseline['val_top1']:.2f} %, {baseline['latency_ms']:.2f} ms, "
        f"{baseline['size_bytes'] / 1e6:.2f} MB")
    probe = None
    if allocate == "latency":  # the deployed graph is INT8: time INT8 candidates
        probe = OrtLatencyProbe(base_model, x, threads=threads, runs=max(300, latency_runs),
                                calibration=calib[:2])
        log(f"latency probe: INT8 reference {probe.reference_ms:.3f} ms")
    if table is not None:
        log(f"sensitivity table from {sensitivity}")
        sens = table
    else:
        log("sensitivity analysis" + (" (accuracy and INT8 latency per group)" if probe
                                      else "") + " ...")
        sens = sensitivity_analysis(base_model, data, ratios=tuple(sensitivity_ratios),
                                    samples=sensitivity_samples, latency_probe=probe)
    save_table(sens, out / "sensitivity.json")

    def constraints(c: Candidate) -> dict[str, bool]:
        meets = {"accuracy": c.val_drop <= max_acc_drop}
        if target_latency_ms is not None:
            meets["latency"] = c.latency_ms <= target_latency_ms
        if target_size_mb is not None:
            meets["size"] = c.size_bytes <= target_size_mb * 1e6
        if target_macs is not None:
            meets["macs"] = c.macs <= target_macs * baseline["macs"]
        return meets

    candidates: list[Candidate] = []

    deepest_tried = False

    def reusable(name: str, params: dict[str, Any]) -> torch.nn.Module | None:
        """The recovered model of the same candidate in the ``reuse`` run, if any."""
        cached = reuse_dir / "candidates" / name / "model.safetensors" if reuse_dir else None
        if cached is None or not cached.is_file():
            return None
        loaded_c = load_checkpoint(cached)
        if not _same_candidate(_candidate_params(loaded_c.meta), params):
            return None
        log(f"  recovered model reused from {cached} (not pruned or fine-tuned again)")
        return loaded_c.model

    def try_fraction(frac: float) -> Candidate | None:
        """Prune to ``frac`` of the latency/MACs (1.0: no pruning), recover, quantize,
        measure. A fraction the allocation cannot reach is replaced, once, by the deepest
        allocation (every group at its largest analysed ratio that saves more)."""
        nonlocal deepest_tried
        prefix = "prune" if allocate == "macs" else "prune-lat"
        name = "int8" if frac == 1.0 else f"{prefix}{frac:g}+kd+int8"
        log(f"candidate {name} ...")
        params: dict[str, Any] = {"fraction": frac, "allocate": allocate,
                                  "finetune_epochs": finetune_epochs}
        model = copy.deepcopy(base_model) if frac == 1.0 else reusable(name, params)
        if model is None:  # prune, then recover what was pruned here (not what was reused)
            try:
                pruned = prune_to_target(base_model, sens, frac, by=allocate,
                                         probe=probe)[0].model
            except InvalidArgumentError as exc:
                path = allocation_path(sens, by=allocate)
                if deepest_tried or not path:
                    log(f"  skipped: {exc}")
                    return None
                deepest_tried = True
                name = f"{prefix}-deepest+kd+int8"
                params["fraction"] = "deepest"
                log(f"  {exc}; trying the deepest allocation instead ({name})")
                model = reusable(name, params)
                pruned = None if model is not None else prune(
                    base_model, x, layer_ratios=path[-1][0], method=sens.method).model
            if pruned is not None:
                cfg = TrainConfig(epochs=finetune_epochs, lr=0.01, warmup_epochs=0)
                fit(pruned, data, cfg, callbacks=[LogitDistillation(copy.deepcopy(base_model))],
                    progress=False)
                model = pruned
        cdir = out / "candidates" / name
        cdir.mkdir(parents=True, exist_ok=True)
        cmeta = copy.deepcopy(meta)
        cmeta.add_stage("compress-candidate", params=params)
        ckpt = save_checkpoint(cdir / "model.safetensors", model, cmeta, overwrite=True)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_onnx(model, x, Path(tmp) / "fp32.onnx", exporter="legacy").path
            fp32_val = onnx_accuracy(fp32, val)
            budget_left = max(0.0, max_acc_drop - (baseline["val_top1"] - fp32_val))
            q = quantize_with_guard(fp32, cdir / "model.int8.onnx", calib, val,
                                    max_acc_drop=budget_left)
        base_ms, ms = _latency_round([base_onnx, q.path], latency_runs, threads)
        cand = Candidate(name=name, fraction=frac, allocate=allocate, params=count_params(model),
                         macs=count_macs(model.eval(), x), val_top1=q.int8_top1 or 0.0,
                         val_drop=baseline["val_top1"] - (q.int8_top1 or 0.0), latency_ms=ms,
                         baseline_latency_ms=base_ms, size_bytes=q.path.stat().st_size,
                         onnx=str(q.path), checkpoint=str(ckpt))
        cand.meets = constraints(cand)
        candidates.append(cand)
        log(f"  val {cand.val_top1:.2f} % ({-cand.val_drop:+.2f} pt), {ms:.2f} ms "
            f"({cand.speedup:.2f}x), {cand.size_bytes / 1e6:.2f} MB: "
            + ", ".join(f"{k} {'ok' if v else 'missed'}" for k, v in cand.meets.items()))
        return cand

    def out_of_time() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    def attempt(frac: float) -> bool | None:
        cand = try_fraction(frac)
        return None if cand is None else cand.meets["accuracy"]

    try:
        stopped = search_fractions(fractions, attempt, refine_steps=refine_steps,
                                   min_step=min_fraction_step, out_of_time=out_of_time,
                                   time_budget_min=time_budget_min)
    finally:
        if probe is not None:
            probe.close()
    ok = [c for c in candidates if c.ok()]
    if len(ok) > 1 and target_size_mb is None:
        # each candidate was timed once beside the baseline, minutes apart; the choice
        # between close ones is made on one interleaved measurement of all of them
        log(f"final round: the {len(ok)} candidates that meet the constraints, timed together")
        times = _latency_round([base_onnx, *(Path(c.onnx) for c in ok)],
                               max(200, 4 * latency_runs), threads)
        for c, ms in zip(ok, times[1:], strict=True):
            c.latency_ms, c.baseline_latency_ms = ms, times[0]
            c.meets = constraints(c)
            log(f"  {c.name}: {ms:.3f} ms ({c.speedup:.2f}x)")
        ok = [c for c in ok if c.ok()]
    key = (lambda c: c.size_bytes) if target_size_mb is not None else (lambda c: c.latency_ms)
    best = min(ok, key=key) if ok else None
    if best is not None:
        best.test_top1 = onnx_accuracy(best.onnx, evaluation_arrays(data, "test"))
        (out / "model.int8.onnx").write_bytes(Path(best.onnx).read_bytes())
    result = CompressResult(best=best, candidates=candidates, baseline=baseline, out_dir=out,
                            stopped=stopped)
    state = {
        "title": f"slimkit compress: {Path(checkpoint).name}",
        "headline": (f"{best.speedup:.1f}x faster, {baseline['size_bytes'] / best.size_bytes:.1f}x "
                     f"smaller, {best.test_top1 - baseline['test_top1']:+.1f} pt (test)")
        if best and best.test_top1 is not None else None,
        "stages": [{"name": "baseline (ORT fp32)", "params": baseline["params"],
                    "macs": baseline["macs"], "size_bytes": baseline["size_bytes"],
                    "top1": baseline["val_top1"], "latency_ms": baseline["latency_ms"],
                    "runtime": "onnxruntime", "energy_mj": None, "extra": {}}]
        + ([{**best.row(), "name": f"chosen: {best.name}"}] if best else []),
        "candidates": [c.row() for c in candidates],
        "compress": result.to_dict(),
        "constraints": {"max_acc_drop": max_acc_drop, **targets},
        "allocate": allocate,
    }
    atomic_write_text(out / "pipeline.json", json.dumps(state, indent=2, default=str))
    try:
        from slimkit.report import collect, write_report

        write_report(collect(out), out)
    except ImportError:  # reports are optional until that package is present
        pass
    if best is None:
        closest = min(candidates, key=lambda c: sum(not v for v in c.meets.values()),
                      default=None)
        detail = "no candidate finished" if closest is None else (
            f"closest: {closest.name} ({-closest.val_drop:+.2f} pt, {closest.latency_ms:.2f} ms, "
            f"{closest.size_bytes / 1e6:.2f} MB) missed "
            + ", ".join(k for k, v in closest.meets.items() if not v))
        raise BudgetNotMetError(f"no model meets the constraints ({stopped}); {detail}; see "
                                f"{out / 'report.html'}")
    return result
