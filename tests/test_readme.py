"""The README shows working commands: run them, and keep its zoo table in sync."""

from __future__ import annotations

from pathlib import Path

from doc_snippets import blocks, slimkit_commands
from slimkit.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_python_quickstart_runs(capsys) -> None:
    for block in blocks(README, "python"):
        exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "2236682 87976448" in out


def test_readme_cli_commands_run(tmp_path, monkeypatch) -> None:
    """The commands run in order in one directory (eval uses the run train wrote)."""
    commands = slimkit_commands(README)
    assert len(commands) >= 5
    monkeypatch.chdir(tmp_path)
    for args in commands:
        assert main(args) == 0, args


def test_readme_zoo_table_is_current() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "tools/update_readme.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    assert module.render(README) == README, "run: python tools/update_readme.py"
