"""The README shows working commands: run them, and keep its zoo table in sync."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from slimkit.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_readme_python_quickstart_runs(capsys) -> None:
    for block in _blocks("python"):
        exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "2236682 87976448" in out


SLIMKIT_LINES = [line.strip() for block in _blocks("bash") for line in block.splitlines()
                 if line.strip().startswith("slimkit ")]


@pytest.mark.parametrize("line", SLIMKIT_LINES)
def test_readme_cli_commands_run(line: str, capsys) -> None:
    args = shlex.split(line.split("#")[0])[1:]
    assert main(args) == 0


def test_readme_zoo_table_is_current() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "tools/update_readme.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    assert module.render(README) == README, "run: python tools/update_readme.py"
