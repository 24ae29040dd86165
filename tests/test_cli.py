"""The slimkit command: output, JSON, errors with exit code 2, help on every command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slimkit.cli.main import main

COMMANDS = ["models", "profile", "demo", "train", "eval"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys) -> None:
    from slimkit import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"slimkit {__version__}"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_everywhere(capsys, command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    code, out, _ = run(capsys, *args)
    assert code == 0 and "Usage" in out


def test_models_json_lists_the_zoo(capsys) -> None:
    code, out, _ = run(capsys, "models", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) >= 25
    row = next(r for r in rows if r["name"] == "mobilenet_v2_100")
    assert row["params"] == 3_504_872 and row["aliases"] == ["mobilenet_v2"]
    assert abs(row["macs"] / 300e6 - 1) < 0.05


def test_models_table_and_pattern(capsys) -> None:
    code, out, _ = run(capsys, "models", "ghostnet")
    assert code == 0 and "ghostnet_100" in out and "resnet" not in out


def test_models_no_match_is_exit_2(capsys) -> None:
    code, _, err = run(capsys, "models", "nothing-like-this")
    assert code == 2 and err.count("\n") == 1 and "slimkit models" in err


def test_profile_json(capsys) -> None:
    code, out, _ = run(capsys, "profile", "resnet20", "--json")
    data = json.loads(out)
    assert code == 0 and data["params"] == 272_474 and data["input_shape"] == [1, 3, 32, 32]
    assert "layers" not in data
    code, out, _ = run(capsys, "profile", "resnet20", "--json", "--per-layer",
                       "--input-size", "64", "--num-classes", "4")
    data = json.loads(out)
    assert data["input_shape"] == [1, 3, 64, 64] and data["layers"][-1]["output_shape"] == [1, 4]


def test_profile_table(capsys) -> None:
    code, out, _ = run(capsys, "profile", "mobilenet_v2", "--small-input", "--num-classes", "10")
    assert code == 0 and "2,236,682" in out and "top 10 layers" in out


def test_unknown_model_one_line_exit_2(capsys) -> None:
    code, out, err = run(capsys, "profile", "mobilenetv2")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Did you mean" in err and "mobilenet_v2" in err


def test_usage_error_exit_2(capsys) -> None:
    code, _, _ = run(capsys, "profile", "resnet20", "--input-size", "abc")
    assert code == 2


def test_debug_shows_the_traceback() -> None:
    from slimkit.errors import UnknownModelError

    with pytest.raises(UnknownModelError):
        main(["--debug", "profile", "nope"])


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(capsys, tmp_path) -> None:
    """The main job end to end (a small dataset and one epoch per stage to keep it short)."""
    code, out, _ = run(capsys, "demo", "--data", "shapes:n_train=256,n_test=64,size=16",
                       "--max-epochs", "1", "--out", str(tmp_path / "demo"), "--json")
    state = json.loads(out)
    assert code == 0
    kinds = [list(s)[0] for s in state["recipe"]["stages"]]
    assert kinds == ["train", "sensitivity", "prune", "quantize", "bench"]
    assert [r["name"] for r in state["stages"]] == ["00 train", "02 prune", "03 quantize"]
    assert state["headline"] and (tmp_path / "demo" / "report.html").exists()
    assert (tmp_path / "demo" / "03-quantize" / "model.int8.onnx").exists()


def test_console_script_entry_point() -> None:
    """The installed `slimkit` script exits 2 with one line on stderr for a user error."""
    proc = subprocess.run([sys.executable, "-m", "slimkit.cli.main", "profile", "nope"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.startswith("slimkit: error: unknown model 'nope'")
    assert proc.stderr.count("\n") == 1
