"""Regenerate the generated sections of README.md (the zoo table) from the registry.

Run: python tools/update_readme.py   (tests/test_readme.py fails when README is stale)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"


def render(readme: str) -> str:
    from slimkit.cli.models_cmd import markdown_table, zoo_rows

    table = markdown_table(zoo_rows(builtin_only=True))
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md lacks the {START} ... {END} markers")
    return pattern.sub(f"{START}\n{table}{END}", readme)


if __name__ == "__main__":
    path = ROOT / "README.md"
    new = render(path.read_text(encoding="utf-8"))
    path.write_text(new, encoding="utf-8")
    sys.stdout.write("README.md zoo table updated\n")
