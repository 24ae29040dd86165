"""slimkit: design, train, compress and deploy lightweight neural networks with PyTorch."""

from slimkit._version import __version__
from slimkit.errors import SlimkitError
from slimkit.models import create_model, list_models, register_model

__all__ = ["SlimkitError", "__version__", "create_model", "list_models", "register_model"]
