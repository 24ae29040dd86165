"""Transfer learning: freezing the backbone, new heads."""

from __future__ import annotations

from torch import nn

from slimkit.errors import UnsupportedModuleError

__all__ = ["classifier_of", "set_backbone_trainable"]


def classifier_of(model: nn.Module) -> nn.Module:
    """The classifier of a zoo model (``get_classifier()``) or of a user model with a final
    ``classifier``/``fc``/``head`` Linear."""
    get = getattr(model, "get_classifier", None)
    if callable(get):
        return get()
    for name in ("classifier", "fc", "head"):
        m = getattr(model, name, None)
        if isinstance(m, nn.Module):
            return m
    raise UnsupportedModuleError(
        f"cannot find the classifier of {type(model).__name__}; name its last layer "
        "'classifier' or 'fc', or add a get_classifier() method"
    )


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (``trainable=False``) or unfreeze everything except the classifier.

    Frozen BatchNorm layers are switched to eval mode so their running statistics stay; the
    trainer's ``model.train()`` at each epoch start runs before this is applied again.
    """
    head = classifier_of(model)
    head_params = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(trainable or id(p) in head_params)
    if not trainable:
        head_modules = {id(m) for m in head.modules()}
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in head_modules:
                m.eval()
