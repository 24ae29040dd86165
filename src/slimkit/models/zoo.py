"""Imports every family module so that their ``register_model`` calls run."""

from slimkit.models import (  # noqa: F401
    efficientnet,
    ghostnet,
    mobilenet_v1,
    mobilenet_v2,
    mobilenet_v3,
    resnet,
    shufflenet_v2,
)
