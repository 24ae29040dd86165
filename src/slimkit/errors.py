"""User-facing errors.

Every mistake a user can make (unknown model, missing file, bad shape, bad recipe key)
raises a :class:`SlimkitError` subclass whose message is one line that names the fix.
The CLI prints that line to stderr and exits with :data:`EXIT_USER_ERROR`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_USER_ERROR = 2


class SlimkitError(Exception):
    """Base class of every error caused by user input; the message names the fix."""

    exit_code: int = EXIT_USER_ERROR


class UnknownModelError(SlimkitError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(SlimkitError, ValueError):
    """An argument with a value the function cannot use (shape, ratio, size...)."""


class FileFormatError(SlimkitError):
    """A file that is missing, unreadable, corrupt, or in a format slimkit does not read."""


class UnsupportedModuleError(SlimkitError):
    """A layer or model structure that a transform cannot handle."""


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean: a, b?"`` for the closest ``choices`` to ``name``, or ``""``."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not close:
        # substring matches catch "v3" -> mobilenet_v3_* that difflib ranks low
        close = [c for c in choices if name.lower() in c.lower()][:n]
    return f" Did you mean: {', '.join(close)}?" if close else ""
