"""The architecture zoo: a registry of table-defined families built by one builder."""

from slimkit.models.builder import ArchSpec, BlockRow, SlimNet, build_network, register_spec
from slimkit.models.registry import (
    ModelEntry,
    PublishedFigures,
    create_model,
    get_model_entry,
    is_model,
    list_models,
    register_model,
)

__all__ = [
    "ArchSpec",
    "BlockRow",
    "ModelEntry",
    "PublishedFigures",
    "SlimNet",
    "build_network",
    "create_model",
    "get_model_entry",
    "is_model",
    "list_models",
    "register_model",
    "register_spec",
]
