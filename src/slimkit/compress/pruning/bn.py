"""BatchNorm re-calibration ("adaptive BN") for pruned models.

Removing channels shifts the distribution every later BatchNorm sees, while its running mean
and variance still describe the unpruned network. Evaluated as is, a pruned MobileNetV2 can
fall to chance accuracy although a few hundred images suffice to repair it: re-estimating
the running statistics on training batches, with no weight updated, recovers most of the
accuracy the pruned weights still carry (Li et al., "EagleEye", ECCV 2020, use this to rank
pruning candidates). :func:`sensitivity_analysis` does it for every candidate it measures;
:func:`recalibrate_bn` is public for users who evaluate pruned models before fine-tuning.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["recalibrate_bn"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]
                                                       | torch.Tensor]) -> nn.Module:
    """Re-estimate every BatchNorm's running mean/variance on ``batches``, in place.

    Args:
        model: any module; only its BatchNorm layers (with running statistics) change.
        batches: ``(x, y)`` pairs or bare inputs ``x`` of shape ``(N, C, H, W)`` as the model
            takes them (training images without augmentation; 256–1024 images are enough).

    Returns:
        ``model`` (same object), in the train/eval mode it had. The statistics are the
        exact average over all given batches (cumulative, ``momentum=None``), not an
        exponential one; weights and biases are untouched. A model without BatchNorm or an
        empty ``batches`` leaves the model unchanged.
    """
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats
           and m.running_mean is not None]
    if not bns:
        return model
    batches = list(batches)
    if not batches:
        return model
    modes = {m: m.training for m in model.modules()}
    saved = {bn: (bn.momentum, bn.running_mean.clone(), bn.running_var.clone(),
                  bn.num_batches_tracked.clone() if bn.num_batches_tracked is not None
                  else None) for bn in bns}
    try:
        model.eval()  # dropout, stochastic depth and the rest stay deterministic
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the batches
            bn.train()
        for b in batches:
            x = b[0] if isinstance(b, (tuple, list)) else b
            model(x)
    except BaseException:
        for bn, (_, mean, var, nbt) in saved.items():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            if nbt is not None:
                bn.num_batches_tracked.copy_(nbt)
        raise
    finally:
        for bn, (momentum, *_) in saved.items():
            bn.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    return model
