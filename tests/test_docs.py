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


COMMANDS = [(page.name, args) for page in DOCS
            for args in slimkit_commands(page.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page,args", COMMANDS, ids=[f"{p}:{' '.join(a)[:40]}"
                                                     for p, a in COMMANDS])
def test_doc_commands(page: str, args: list[str], tmp_path_factory, monkeypatch) -> None:
    # the commands of one page run in order in one working directory (later ones use the
    # runs that earlier ones wrote)
    workdir = tmp_path_factory.getbasetemp() / f"docs-{page}"
    workdir.mkdir(exist_ok=True)
    monkeypatch.chdir(workdir)
    assert main(args) == 0, args
