"""Pruning of blocks that Torch-Pruning's dependency graph cannot trace or mis-maps.

ShuffleNetV2 shuffles channels with a 5-D view and splits them again in the next unit;
Torch-Pruning fails on that graph (a division by zero in its reshape index mapping, then a
concat whose input widths it cannot infer, even with the unit registered as a customized
layer). Models containing :class:`~slimkit.nn.ShuffleUnit` are therefore pruned here, with
Torch-Pruning's layer functions (``tp.prune_conv_out_channels`` ...) on the channel groups
that are independent of the shuffle:

- the hidden channels of each unit's second branch (1x1 -> depthwise 3x3 -> 1x1);
- the 1x1 head convolution's outputs (and the classifier's inputs) of a SlimNet.

The unit outputs (which flow through the shuffle) and the 24-channel stem are kept, and the
pruning record says so.

GhostNet concatenates a tensor with a depthwise transform of itself (``cat([x, dw(x)])``).
Torch-Pruning maps both halves of that concatenation back onto the same source channels and
over-prunes them (measured: 60 -> 1 channels at a 0.5 ratio, 8 -> 2 at 0.25), so GhostNet is
pruned here too: the hidden (expanded) channels of each bottleneck — channel ``i`` of the
first ghost module's primary conv together with its ghost ``init + i``, through the
depthwise conv, the SE block and the second ghost module's input — and the head. The
residual stream between bottlenecks is kept.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from slimkit.nn.blocks import GhostBottleneck, GhostModule, ShuffleUnit
from slimkit.nn.layers import ConvNormAct, SqueezeExcite

__all__ = ["custom_kind", "prune_custom_model", "CUSTOM_NOTES"]

CUSTOM_NOTES = {
    "shuffle": ("channel shuffle (Torch-Pruning cannot trace it): unit outputs and the stem "
                "are kept; hidden branch channels and the head are pruned"),
    "ghost": ("ghost modules (Torch-Pruning over-prunes cat([x, dw(x)])): the residual stream "
              "is kept; bottleneck hidden channels and the head are pruned"),
}


def custom_kind(model: nn.Module) -> str | None:
    """``"shuffle"`` / ``"ghost"`` when the model needs the custom path, else ``None``."""
    for m in model.modules():
        if isinstance(m, ShuffleUnit):
            return "shuffle"
        if isinstance(m, GhostModule):
            return "ghost"
    return None


def _scores(weights: list[torch.Tensor], method: str, generator: torch.Generator
            ) -> torch.Tensor:
    """Importance of output channel i over coupled weights (dim 0 = the channel)."""
    if method == "random":
        return torch.rand(weights[0].shape[0], generator=generator)
    p = 1 if method == "l1" else 2
    parts = [w.detach().flatten(1).abs().pow(p).sum(1) for w in weights]
    return sum(x / x.mean().clamp_min(1e-12) for x in parts)  # type: ignore[return-value]


def _keep_count(n: int, ratio: float, round_to: int | None) -> int:
    keep = n - int(n * ratio)
    if round_to:
        keep = min(n, -(-keep // round_to) * round_to)
    return max(keep, 1)


def _drop(scores: torch.Tensor, keep: int) -> list[int]:
    return sorted(scores.argsort()[: scores.numel() - keep].tolist())


def _prune_bn(bn: nn.Module, drop: list[int]) -> None:
    if isinstance(bn, nn.BatchNorm2d):
        tp.prune_batchnorm_out_channels(bn, drop)


def _prune_shuffle_unit(unit: ShuffleUnit, ratio: float, method: str, round_to: int | None,
                        generator: torch.Generator) -> bool:
    first, dw, last = unit.branch2
    hidden = first.conv.out_channels
    keep = _keep_count(hidden, ratio, round_to)
    if keep >= hidden:
        return False
    drop = _drop(_scores([first.conv.weight, dw.conv.weight,
                          last.conv.weight.transpose(0, 1)], method, generator), keep)
    tp.prune_conv_out_channels(first.conv, drop)
    _prune_bn(first.bn, drop)
    tp.prune_depthwise_conv_out_channels(dw.conv, drop)
    _prune_bn(dw.bn, drop)
    tp.prune_conv_in_channels(last.conv, drop)
    return True


def _prune_ghost_bottleneck(block: GhostBottleneck, ratio: float, method: str,
                            round_to: int | None, generator: torch.Generator) -> bool:
    g1 = block.ghost1
    primary, cheap = g1.primary_conv, g1.cheap_operation
    init = primary.conv.out_channels
    if cheap.conv.out_channels != init or g1.out_chs != 2 * init:
        return False  # ratio > 2 or an odd width slices the concatenation: keep it whole
    keep = _keep_count(init, ratio, round_to // 2 if round_to else None)
    if keep >= init:
        return False
    consumers = [block.ghost2.primary_conv.conv.weight[:, :init].transpose(0, 1),
                 block.ghost2.primary_conv.conv.weight[:, init:].transpose(0, 1)]
    drop = _drop(_scores([primary.conv.weight, cheap.conv.weight, *consumers], method,
                         generator), keep)
    mid_drop = drop + [init + i for i in drop]
    tp.prune_conv_out_channels(primary.conv, drop)
    _prune_bn(primary.bn, drop)
    tp.prune_depthwise_conv_out_channels(cheap.conv, drop)
    _prune_bn(cheap.bn, drop)
    g1.out_chs = 2 * keep
    if isinstance(block.conv_dw, ConvNormAct):
        tp.prune_depthwise_conv_out_channels(block.conv_dw.conv, mid_drop)
        _prune_bn(block.conv_dw.bn, mid_drop)
    if isinstance(block.se, SqueezeExcite):
        tp.prune_conv_in_channels(block.se.conv_reduce, mid_drop)
        tp.prune_conv_out_channels(block.se.conv_expand, mid_drop)
    tp.prune_conv_in_channels(block.ghost2.primary_conv.conv, mid_drop)
    return True


def _prune_head(model: nn.Module, ratio: float, method: str, round_to: int | None,
                generator: torch.Generator) -> list[str]:
    """The 1x1 head conv (and a pre-logits Linear) of a SlimNet, up to the classifier."""
    changed = []
    head = getattr(model, "head_conv", None)
    pre = getattr(model, "pre_logits", None)
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, nn.Linear):
        return changed
    pre_linear = pre[0] if isinstance(pre, nn.Sequential) and isinstance(pre[0], nn.Linear) \
        else None
    if isinstance(head, ConvNormAct):
        consumer = pre_linear if pre_linear is not None else classifier
        n = head.conv.out_channels
        keep = _keep_count(n, ratio, round_to)
        if keep < n:
            drop = _drop(_scores([head.conv.weight, consumer.weight.transpose(0, 1)], method,
                                 generator), keep)
            tp.prune_conv_out_channels(head.conv, drop)
            _prune_bn(head.bn, drop)
            tp.prune_linear_in_channels(consumer, drop)
            changed.append("head_conv")
    if pre_linear is not None:
        n = pre_linear.out_features
        keep = _keep_count(n, ratio, round_to)
        if keep < n:
            drop = _drop(_scores([pre_linear.weight, classifier.weight.transpose(0, 1)],
                                 method, generator), keep)
            tp.prune_linear_out_channels(pre_linear, drop)
            tp.prune_linear_in_channels(classifier, drop)
            changed.append("pre_logits")
    if changed:
        model.num_features = classifier.in_features  # type: ignore[assignment]
    return changed


def prune_custom_model(model: nn.Module, ratio: float, *, method: str = "l2",
                       round_to: int | None = 8, ratios: dict[str, float] | None = None,
                       seed: int = 0) -> list[str]:
    """Prune a ShuffleNetV2- or GhostNet-style model in place; returns the changed parts.

    ``ratio`` is the fraction of channels removed (``ratios`` overrides it per unit/block
    name or for ``head_conv``). Importance: group magnitude (``l1``/``l2``, each coupled
    weight normalised by its mean) or ``random``; other criteria use ``l2``.
    """
    generator = torch.Generator().manual_seed(seed)
    ratios = ratios or {}
    changed = []
    if any(isinstance(getattr(m, "conv", None), nn.Sequential) for m in model.modules()
           if isinstance(m, ConvNormAct)):
        from slimkit.errors import UnsupportedModuleError

        raise UnsupportedModuleError("this ShuffleNet/GhostNet has decomposed or separable "
                                     "layers; prune before decomposing")
    for name, block in model.named_modules():
        r = ratios.get(name, ratio)
        if isinstance(block, ShuffleUnit):
            if _prune_shuffle_unit(block, r, method, round_to, generator):
                changed.append(name)
        elif isinstance(block, GhostBottleneck):
            if _prune_ghost_bottleneck(block, r, method, round_to, generator):
                changed.append(name)
    changed += _prune_head(model, ratios.get("head_conv", ratio), method, round_to, generator)
    return changed
