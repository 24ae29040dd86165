"""Shared output helpers: rich tables for people, JSON for machines."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

# when piped, rich would wrap at 80 columns; tables are easier to read (and parse) unwrapped
console = Console(width=None if sys.stdout.isatty() else 200)


def print_json(data: Any) -> None:
    """Write ``data`` as JSON to stdout (no colour, no wrapping)."""
    sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")


def _default(obj: Any) -> Any:
    if isinstance(obj, tuple | set):
        return list(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


def table(title: str | None, columns: list[tuple[str, str]]) -> Table:
    """A table with ``(header, justify)`` columns."""
    t = Table(title=title, title_justify="left", header_style="bold")
    for header, justify in columns:
        t.add_column(header, justify=justify)  # type: ignore[arg-type]
    return t


def fmt_count(n: float, unit: str = "") -> str:
    """``3504872 -> '3.50 M'``, ``385_800_000 -> '385.8 M'``, ``1.8e9 -> '1.80 G'``."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.2f} {suffix}{unit}" if v < 100 else f"{v:.1f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def fmt_bytes(n: float) -> str:
    """Bytes in MB (10^6) or kB."""
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
