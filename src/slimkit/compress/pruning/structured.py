"""Structured pruning that removes channels (Torch-Pruning's dependency graph as the engine).

:func:`prune` physically removes whole channels from every coupled layer (residual adds,
concatenations, depthwise convolutions, SE blocks, norms, the classifier input), so the
pruned model is a smaller ordinary model: it is faster in a real runtime, it exports, and it
saves/loads through slimkit's checkpoint (the resized layers are recorded in its metadata).

Targets: a channel ratio (``ratio=0.5`` removes half the channels of each prunable group),
or a fraction of the original MACs or parameters to keep (``target_macs=0.5`` = half the
MACs), reached by bisection on the ratio with the MACs measured after each trial.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from slimkit.analysis.profile import count_macs, count_params
from slimkit.compress.pruning.custom import CUSTOM_NOTES, custom_kind, prune_custom_model
from slimkit.errors import InvalidArgumentError, SlimkitError, UnsupportedModuleError, suggest
from slimkit.nn.blocks import GhostBottleneck, ShuffleUnit

__all__ = ["PruneResult", "prune", "METHODS", "make_importance", "resolve_modules",
           "prunable_groups", "check_targets"]

METHODS = ("l1", "l2", "bn", "taylor", "fpgm", "random")


@dataclass
class PruneResult:
    """What :func:`prune` did.

    Attributes:
        model: the pruned model (a copy unless ``inplace``).
        method: importance criterion; ratio: the channel ratio finally applied.
        params_before/after, macs_before/after: counts at the example input.
        target: the requested target (``ratio``/``macs``/``params`` and its value).
        excluded: ``(layer, reason)`` for layers kept whole on purpose.
        layers: per changed layer, ``{"name", "before", "after"}`` output channels.
    """

    model: nn.Module
    method: str
    ratio: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    target: dict[str, Any] = field(default_factory=dict)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def macs_ratio(self) -> float:
        """Remaining fraction of MACs (0.5 = half)."""
        return self.macs_after / max(self.macs_before, 1)

    @property
    def params_ratio(self) -> float:
        return self.params_after / max(self.params_before, 1)

    def summary(self) -> dict[str, Any]:
        """JSON-ready record for lineage and reports (no model)."""
        d = asdict(self)
        d.pop("model")
        d.update(macs_ratio=self.macs_ratio, params_ratio=self.params_ratio)
        return d


def make_importance(method: str) -> tp.importance.Importance:
    """The Torch-Pruning importance for a criterion name."""
    if method == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if method == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if method == "bn":
        return tp.importance.BNScaleImportance()
    if method == "taylor":
        return tp.importance.GroupTaylorImportance()
    if method == "fpgm":
        return tp.importance.FPGMImportance()
    if method == "random":
        return tp.importance.RandomImportance()
    raise InvalidArgumentError(f"unknown pruning method {method!r}; choose one of {METHODS}."
                               + suggest(method, METHODS))


def resolve_modules(model: nn.Module, names: Iterable[str]) -> list[nn.Module]:
    """Modules of ``model`` by qualified name; an unknown name is a one-line error."""
    modules = dict(model.named_modules())
    out = []
    for name in names:
        if name not in modules:
            raise InvalidArgumentError(
                f"no layer named {name!r} in this model; see `slimkit profile --per-layer`."
                + suggest(name, [n for n in modules if n])
            )
        out.append(modules[name])
    return out


def _auto_excluded(model: nn.Module) -> tuple[list[nn.Module], list[tuple[str, str]]]:
    """Layers never used as pruning roots, with the reason reported to the user."""
    ignored: list[nn.Module] = []
    notes: list[tuple[str, str]] = []
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Linear):
        ignored.append(head)
        notes.append(("classifier", "its outputs are the classes"))
    elif head is None:
        last_linear = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if last_linear:
            ignored.append(last_linear[-1][1])
            notes.append((last_linear[-1][0], "the last Linear layer gives the outputs"))
    return ignored, notes


def _as_example(example_inputs: torch.Tensor | Sequence[int]) -> torch.Tensor:
    if isinstance(example_inputs, torch.Tensor):
        return example_inputs
    return torch.randn(1, *example_inputs)


def _taylor_grads(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
                  max_batches: int = 4) -> None:
    if batches is None:
        raise InvalidArgumentError("the taylor criterion needs data: pass calibration batches "
                                   "(the CLI's --data)")
    model.zero_grad()
    model.train()
    n = 0
    for x, y in batches:
        nn.functional.cross_entropy(model(x), y).backward()
        n += 1
        if n >= max_batches:
            break
    model.eval()
    if n == 0:
        raise InvalidArgumentError("no calibration batches for the taylor criterion")


def _build_pruner(model: nn.Module, x: torch.Tensor, method: str, ratio: float,
                  global_pruning: bool, round_to: int | None, ignored: list[nn.Module],
                  layer_ratios: Mapping[nn.Module, float] | None,
                  iterative_steps: int = 1,
                  scheduler: Callable[[float, int], list[float]] | None = None,
                  ) -> tp.pruner.BasePruner:
    kwargs: dict[str, Any] = {}
    if scheduler is not None:
        kwargs["iterative_pruning_ratio_scheduler"] = scheduler
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tp.pruner.BasePruner(
                model, x, importance=make_importance(method), pruning_ratio=ratio,
                pruning_ratio_dict=dict(layer_ratios) if layer_ratios else None,
                global_pruning=global_pruning, round_to=round_to, ignored_layers=ignored,
                iterative_steps=iterative_steps,
                max_pruning_ratio=0.95, **kwargs,
            )
    except SlimkitError:
        raise
    except Exception as exc:
        raise UnsupportedModuleError(
            f"Torch-Pruning cannot trace this model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no message'}); pass the layers "
            "around the failing op with --ignore"
        ) from exc


def _channels(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def _prune_once(model: nn.Module, x: torch.Tensor, method: str, ratio: float,
                global_pruning: bool, round_to: int | None, ignore_names: Sequence[str],
                layer_ratios: Mapping[str, float] | None,
                calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
                seed: int) -> list[tuple[str, str]]:
    auto, notes = _auto_excluded(model)
    ignored = auto + resolve_modules(model, ignore_names)
    kind = custom_kind(model)
    if kind is not None:
        prune_custom_model(model, ratio, method=method, round_to=round_to,
                           ratios=dict(layer_ratios or {}), seed=seed)
        return notes + [("stem, block outputs", CUSTOM_NOTES[kind])]
    by_module = {m: r for m, r in zip(resolve_modules(model, (layer_ratios or {}).keys()),
                                      (layer_ratios or {}).values(), strict=True)}
    if method == "taylor":
        _taylor_grads(model, calibration)
    torch.manual_seed(seed)  # the random criterion
    pruner = _build_pruner(model, x, method, ratio, global_pruning, round_to, ignored, by_module)
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner.step()
    except SlimkitError:
        raise
    except Exception as exc:
        raise UnsupportedModuleError(
            f"pruning failed inside Torch-Pruning ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no message'}); exclude the layer "
            "it names with --ignore"
        ) from exc
    model.zero_grad(set_to_none=True)
    return notes


def check_targets(ratio: float | None, target_macs: float | None, target_params: float | None,
                  layer_ratios: Mapping[str, float] | None = None) -> dict[str, float]:
    """Validate the pruning target arguments; returns the one given as ``{kind: value}``."""
    targets = {k: v for k, v in (("ratio", ratio), ("macs", target_macs),
                                  ("params", target_params)) if v is not None}
    if len(targets) > 1 or (not targets and not layer_ratios):
        raise InvalidArgumentError("give exactly one of --ratio, --target-macs, --target-params")
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise InvalidArgumentError(f"--ratio must be in [0, 1), got {ratio}")
    for key in ("macs", "params"):
        if key in targets and not 0.0 < targets[key] <= 1.0:
            raise InvalidArgumentError(
                f"--target-{key} is the fraction of {'MACs' if key == 'macs' else key} to "
                f"keep and must be in (0, 1], got {targets[key]}"
            )
    for name, r in (layer_ratios or {}).items():
        if not 0.0 <= r < 1.0:
            raise InvalidArgumentError(f"ratio of layer {name!r} must be in [0, 1), got {r}")
    return targets


def prune(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[int],
    *,
    ratio: float | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    method: str = "l2",
    global_pruning: bool = False,
    round_to: int | None = 8,
    ignore: Sequence[str] = (),
    layer_ratios: Mapping[str, float] | None = None,
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    tolerance: float = 0.02,
    inplace: bool = False,
    seed: int = 0,
) -> PruneResult:
    """Remove channels from ``model``.

    Args:
        model: any ``nn.Module`` (zoo or user); left untouched unless ``inplace``.
        example_inputs: an input tensor ``(N, C, H, W)`` or its shape ``(C, H, W)``.
        ratio: fraction of the channels of each prunable group to remove, in ``[0, 1)``.
        target_macs / target_params: fraction of the original MACs / parameters to keep,
            in ``(0, 1]``; the channel ratio is found by bisection (within ``tolerance``).
        method: importance criterion: ``l1``/``l2`` (group weight magnitude), ``bn``
            (BatchNorm scale, network slimming), ``taylor`` (first-order, needs
            ``calibration`` batches), ``fpgm`` (geometric median), ``random`` (a control).
        global_pruning: rank channels across layers instead of per layer.
        round_to: kept channel counts are multiples of it (8: hardware-friendly widths).
        ignore: names of layers never used as pruning roots (their channels are kept).
        layer_ratios: per-layer ratios by name (e.g. from sensitivity analysis); others use
            ``ratio``.
        calibration: ``(images, labels)`` batches for the taylor criterion.

    Exactly one of ``ratio``, ``target_macs``, ``target_params`` must be given (or
    ``layer_ratios`` alone).
    """
    targets = check_targets(ratio, target_macs, target_params, layer_ratios)
    make_importance(method)  # validates the name early
    if round_to is not None and round_to < 1:
        raise InvalidArgumentError(f"round_to must be >= 1, got {round_to}")
    x = _as_example(example_inputs)
    resolve_modules(model, ignore)
    was_training = model.training
    model.eval()
    try:
        macs0 = count_macs(model, x)
    except RuntimeError as exc:
        raise InvalidArgumentError(
            f"the model cannot run on the example input {tuple(x.shape)}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    params0 = count_params(model)
    calib = list(calibration) if calibration is not None else None

    def attempt(r: float, target: nn.Module | None = None) -> tuple[nn.Module, list]:
        m = target if target is not None else copy.deepcopy(model)
        notes = _prune_once(m, x, method, r, global_pruning, round_to, ignore, layer_ratios,
                            calib, seed)
        return m, notes

    if "ratio" in targets or not targets:
        final_ratio = float(targets.get("ratio", 0.0))
    else:
        key = next(iter(targets))
        goal = targets[key]
        measure = (lambda m: count_macs(m, x) / macs0) if key == "macs" else \
            (lambda m: count_params(m) / params0)
        # bisection for the smallest ratio at or below the goal; channel rounding makes the
        # curve a staircase (stop once within the tolerance) and Torch-Pruning skips groups
        # that would drop below round_to, so very high ratios are not trusted to be lower
        lo, hi, best, lowest = 0.0, 0.9, None, 1.0
        for _ in range(12):
            mid = (lo + hi) / 2
            value = measure(attempt(mid)[0])
            lowest = min(lowest, value)
            if value > goal:
                lo = mid
            else:
                hi = best = mid
                if goal - value <= tolerance:
                    break
        if best is None:
            raise InvalidArgumentError(
                f"cannot reach --target-{key} {goal}: the lowest reached is {lowest:.2f} of the "
                f"{'MACs' if key == 'macs' else 'parameters'}; excluded layers or round_to="
                f"{round_to} limit it (try --round-to 1)"
            )
        final_ratio = best
    before = _channels(model)
    pruned, notes = attempt(final_ratio, target=model if inplace else None)
    after = _channels(pruned)
    model.train(was_training)
    pruned.train(was_training)
    layers = [{"name": n, "before": before[n], "after": after[n]}
              for n in after if n in before and after[n] != before[n]]
    user_notes = [(n, "excluded with --ignore") for n in ignore]
    return PruneResult(
        model=pruned, method=method, ratio=final_ratio,
        params_before=params0, params_after=count_params(pruned),
        macs_before=macs0, macs_after=count_macs(pruned.eval(), x),
        target=targets or {"layer_ratios": dict(layer_ratios or {})},
        excluded=notes + user_notes, layers=layers,
    )


def prunable_groups(model: nn.Module, example_inputs: torch.Tensor | Sequence[int],
                    ignore: Sequence[str] = ()) -> list[str]:
    """Names of the layers that root a prunable channel group (what sensitivity analysis
    prunes one at a time), plus the ShuffleNet units whose hidden channels are prunable."""
    x = _as_example(example_inputs)
    m = copy.deepcopy(model).eval()
    if custom_kind(m) is not None:
        units = [n for n, mod in m.named_modules()
                 if isinstance(mod, ShuffleUnit | GhostBottleneck)]
        return units + (["head_conv"] if hasattr(m, "head_conv") else [])
    auto, _ = _auto_excluded(m)
    ignored = auto + resolve_modules(m, ignore)
    pruner = _build_pruner(m, x, "l2", 0.5, False, None, ignored, None)
    names = {id(mod): n for n, mod in m.named_modules()}
    roots: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                              root_module_types=pruner.root_module_types):
            root = group[0].dep.target.module
            name = names.get(id(root))
            if name is not None and name not in roots:
                roots.append(name)
    return roots
