"""Extracting the runnable parts of Markdown pages (README.md, docs/*.md) for the tests.

A block preceded by ``<!-- not-run: reason -->`` needs the user's own files and is skipped;
every other ```python block runs, and every line of a ```bash block that starts with
``slimkit `` runs through the CLI's ``main`` (exit code 0 required).
"""

from __future__ import annotations

import re
import shlex

_BLOCK = r"(<!-- not-run:[^>]*-->\n)?```{lang}\n(.*?)```"


def blocks(text: str, lang: str) -> list[str]:
    """The runnable ```lang blocks of ``text``."""
    return [b for marker, b in re.findall(_BLOCK.format(lang=lang), text, re.S) if not marker]


def slimkit_commands(text: str) -> list[list[str]]:
    """Argument lists of the ``slimkit ...`` lines in runnable bash blocks."""
    return [shlex.split(line.split(" #")[0])[1:] for block in blocks(text, "bash")
            for line in block.splitlines() if line.strip().startswith("slimkit ")]


def check_annotated_prints(python_blocks: list[str], output: str) -> int:
    """A ``print(...)  # text`` line must have printed ``text`` as one output line ("..."
    matches anything, as in doctest). Returns how many annotations were checked."""
    lines = [line.strip() for line in output.splitlines()]
    checked = 0
    for block in python_blocks:
        for line in block.splitlines():
            m = re.match(r"\s*print\(.*\)\s+#\s*(.+)$", line)
            if m:
                pattern = ".*".join(re.escape(p) for p in m.group(1).strip().split("..."))
                assert any(re.fullmatch(pattern, o) for o in lines), line
                checked += 1
    return checked
