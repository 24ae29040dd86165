"""Trainer callbacks: the hooks compression techniques plug into.

A callback overrides any of the methods below; the trainer calls them in list order.
``extra_loss`` returns a term added to the task loss (distillation, sparsity
regularizers); ``on_after_backward`` sees gradients before clipping and the step
(masking gradients, BN-scale L1); ``on_step_end`` runs after the optimizer step
(re-applying pruning masks, gradual pruning schedules).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from slimkit.train.trainer import Trainer

__all__ = ["Callback", "FreezeBackbone"]


class Callback:
    """Base class: every hook is a no-op.

    ``task_loss_weight`` scales the task (cross-entropy) loss; the trainer multiplies the
    weights of all callbacks (distillation sets ``1 - alpha``).
    """

    task_loss_weight: float = 1.0

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def extra_loss(self, trainer: Trainer, inputs: torch.Tensor, targets: torch.Tensor,
                   outputs: torch.Tensor) -> torch.Tensor | None:
        return None

    def on_after_backward(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, step: int) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


class FreezeBackbone(Callback):
    """Train only the classifier until ``until_epoch`` (a linear probe), then everything.

    ``until_epoch=None`` keeps the backbone frozen for the whole run. Frozen BatchNorm layers
    are kept in eval mode so their running statistics stay those of the pretrained model.
    """

    def __init__(self, until_epoch: int | None = None) -> None:
        self.until_epoch = until_epoch

    def _frozen(self, epoch: int) -> bool:
        return self.until_epoch is None or epoch < self.until_epoch

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        from slimkit.train.transfer import set_backbone_trainable

        set_backbone_trainable(trainer.module, not self._frozen(epoch))
