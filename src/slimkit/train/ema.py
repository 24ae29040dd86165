"""Exponential moving average of model weights (Polyak averaging)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from slimkit.errors import InvalidArgumentError

__all__ = ["ModelEMA"]


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer step.

    Floating-point parameters and buffers are averaged; integer buffers (BN's
    ``num_batches_tracked``) are copied. ``decay`` ramps up as ``min(decay, (1 + n) / (10 + n))``
    over the first updates so early, random weights fade quickly.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise InvalidArgumentError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in _unwrap(model).state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                s.copy_(v)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into ``model`` (e.g. to evaluate them)."""
        target = _unwrap(model)
        saved = {k: v.detach().clone() for k, v in target.state_dict().items()}
        target.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            target.load_state_dict(saved)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{k}": v for k, v in self.shadow.items()} | {
            "ema_updates": torch.tensor(self.updates, dtype=torch.int64)
        }

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        for k in self.shadow:
            self.shadow[k].copy_(state[f"ema.{k}"])
        self.updates = int(state["ema_updates"])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
