"""A restricted unpickler for data files that come as pickles (the CIFAR-10 python batches).

Unpickling runs code: any global a pickle names can be called. :class:`RestrictedUnpickler`
resolves only the handful of numpy globals needed to rebuild arrays and dtypes (plus a
latin-1-only stand-in for ``_codecs.encode``, which Python 3 uses for ``bytes`` at protocol 2);
every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) is refused
with a :class:`~slimkit.errors.FileFormatError` before anything is called. This is the only
module in slimkit that imports :mod:`pickle`.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

from slimkit.errors import FileFormatError

__all__ = ["ALLOWED_GLOBALS", "RestrictedUnpickler", "safe_load"]

# (module, name) pairs a pickle may name. numpy >= 2 spells its private core ``numpy._core``;
# pickles written by numpy 1.x (or Python 2, like CIFAR-10) say ``numpy.core``. Both spellings
# resolve to the same functions, looked up from whichever module this numpy has.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        # Python 3 writes ``bytes`` at protocol 2 as _codecs.encode(text, "latin1"); it is
        # resolved to a wrapper that accepts no other encoding (see _latin1_encode).
        ("_codecs", "encode"),
    }
)


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """The only use of ``_codecs.encode`` a data pickle needs: text -> bytes via latin-1."""
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise FileFormatError(f"refusing _codecs.encode with encoding {encoding!r} in a pickle")
    return text.encode("latin-1", errors)


def _resolve(module: str, name: str) -> Any:
    if module == "_codecs":
        return _latin1_encode
    if module == "numpy":
        return getattr(importlib.import_module("numpy"), name)
    submodule = module.split(".", 2)[2]  # "multiarray" or "numeric"
    for prefix in ("numpy._core", "numpy.core"):  # prefer the new spelling: no deprecation warning
        try:
            return getattr(importlib.import_module(f"{prefix}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(f"{module}.{name}")


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` whose ``find_class`` allows only :data:`ALLOWED_GLOBALS`.

    Args:
        file: a binary file object positioned at the pickle.
        source: the path (or other name) quoted in error messages.
        encoding: how Python 2 ``str`` objects are decoded; ``"latin1"`` keeps numpy arrays
            written by Python 2 intact.
    """

    def __init__(self, file: BinaryIO, *, source: str, encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return _resolve(module, name)
        raise FileFormatError(
            f"refusing to load {self.source}: it contains global {module}.{name}, and only "
            "plain data and numpy arrays are allowed; get the file from a trusted source"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise FileFormatError(
            f"refusing to load {self.source}: it uses persistent ids, which data files never need"
        )


def safe_load(source: str | Path | bytes, *, encoding: str = "latin1") -> Any:
    """Unpickle a file (path) or ``bytes`` with :class:`RestrictedUnpickler`.

    Raises:
        FileFormatError: the pickle names a global outside :data:`ALLOWED_GLOBALS`, or it is
            truncated or not a pickle at all. The message names the file.
    """
    if isinstance(source, (bytes, bytearray)):
        data, label = bytes(source), "<bytes>"
    else:
        path = Path(source)
        label = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FileFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=label, encoding=encoding).load()
    except FileFormatError:
        raise
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError... all mean corrupt
        raise FileFormatError(
            f"{label} is not a valid pickle file ({type(exc).__name__}: {exc}); "
            "it may be truncated, re-download it"
        ) from exc
