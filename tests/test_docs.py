"""Every Python snippet in docs/*.md runs and prints what the page says it prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = sorted((Path(__file__).resolve().parents[1] / "docs").glob("*.md"))


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_doc_snippets_run(page: Path, capsys) -> None:
    text = page.read_text(encoding="utf-8")
    # a block preceded by "<!-- not-run: reason -->" needs the user's own files; all others run
    blocks = [b for marker, b in re.findall(r"(<!-- not-run:[^>]*-->\n)?```python\n(.*?)```",
                                            text, re.S) if not marker]
    namespace: dict[str, object] = {}
    for block in blocks:  # a page's snippets share one namespace, like a reader's session
        exec(compile(block, str(page), "exec"), namespace)
    out = capsys.readouterr().out
    # a print annotated "# <text>" must print <text> as one output line ("..." matches
    # anything, as in doctest)
    lines = [line.strip() for line in out.splitlines()]
    for block in blocks:
        for line in block.splitlines():
            m = re.match(r"\s*print\(.*\)\s+#\s*(.+)$", line)
            if m:
                pattern = ".*".join(re.escape(p) for p in m.group(1).strip().split("..."))
                assert any(re.fullmatch(pattern, o) for o in lines), (page.name, line)
