"""Every runnable snippet and command in docs/*.md works and prints what the page says."""

from __future__ import annotations

from pathlib import Path

import pytest

from doc_snippets import blocks, check_annotated_prints, slimkit_commands
from slimkit.cli.main import main

DOCS = sorted((Path(__file__).resolve().parents[1] / "docs").glob("*.md"))


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_doc_python_snippets(page: Path, capsys) -> None:
    python = blocks(page.read_text(encoding="utf-8"), "python")
    namespace: dict[str, object] = {}
    for block in python:  # a page's snippets share one namespace, like a reader's session
        exec(compile(block, str(page), "exec"), namespace)
    check_annotated_prints(python, capsys.readouterr().out)


# pages whose commands train several models run in the slow job
HEAVY = {"pipeline.md", "pruning.md", "compression.md", "deploy.md"}
PAGES_WITH_COMMANDS = [
    pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in HEAVY else [])
    for p in DOCS if slimkit_commands(p.read_text(encoding="utf-8"))
]


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS)
def test_doc_commands(page: Path, tmp_path: Path, monkeypatch) -> None:
    """A page's commands run in order in one directory (later ones use earlier runs)."""
    monkeypatch.chdir(tmp_path)
    for args in slimkit_commands(page.read_text(encoding="utf-8")):
        assert main(args) == 0, args
