"""`slimkit prune` and `slimkit sensitivity` end to end, and their user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimkit.cli.main import main
from slimkit.train import load_checkpoint, read_checkpoint_meta

DATA = "shapes:n_train=256,n_test=64,size=16"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("base") / "run"
    assert main(["train", "-m", "resnet20", "--data", DATA, "--epochs", "2", "--batch-size",
                 "32", "--out", str(out)]) == 0
    return out / "model.safetensors"


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_prune_with_finetune(capsys, trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "pruned"
    code, stdout, _ = run(capsys, "prune", str(trained), "--data", DATA, "--target-macs", "0.5",
                          "--finetune-epochs", "1", "--latency-runs", "3", "--out", str(out),
                          "--json")
    assert code == 0
    res = json.loads(stdout)
    assert res["after"]["macs"] <= 0.5 * res["before"]["macs"] * 1.02
    assert res["after"]["params"] < res["before"]["params"]
    assert res["before"]["latency_ms"] > 0 and res["after"]["latency_ms"] > 0
    meta = read_checkpoint_meta(out / "model.safetensors")
    assert [s["stage"] for s in meta.lineage] == ["train", "prune"]
    assert meta.lineage[-1]["metrics"]["after"]["macs"] == res["after"]["macs"]
    loaded = load_checkpoint(out / "model.safetensors")  # rebuilt from arch + structure
    assert sum(p.numel() for p in loaded.model.parameters()) == res["after"]["params"]
    # the table for people
    code, stdout, _ = run(capsys, "prune", str(trained), "--data", DATA, "--ratio", "0.25",
                          "--method", "fpgm", "--latency-runs", "3", "--out",
                          str(tmp_path / "p2"))
    assert code == 0 and "MACs" in stdout and "test top-1" in stdout


def test_iterative_and_sensitivity(capsys, trained: Path, tmp_path: Path) -> None:
    code, _, _ = run(capsys, "sensitivity", str(trained), "--data", DATA, "--ratios", "0.25,0.5",
                     "--samples", "32", "--out", str(tmp_path / "sens"))
    assert code == 0
    assert (tmp_path / "sens" / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    table = json.loads((tmp_path / "sens" / "sensitivity.json").read_text())
    assert table["ratios"] == [0.25, 0.5] and table["rows"]
    code, stdout, _ = run(capsys, "prune", str(trained), "--data", DATA, "--target-macs", "0.6",
                          "--sensitivity", str(tmp_path / "sens" / "sensitivity.json"),
                          "--latency-runs", "0", "--out", str(tmp_path / "alloc"), "--json")
    assert code == 0
    res = json.loads(stdout)
    assert res["record"]["allocation"] == "sensitivity" and res["record"]["layer_ratios"]
    assert res["after"]["macs"] <= 0.62 * res["before"]["macs"]
    code, stdout, _ = run(capsys, "prune", str(trained), "--data", DATA, "--target-macs", "0.5",
                          "--steps", "2", "--finetune-epochs", "1", "--latency-runs", "0",
                          "--out", str(tmp_path / "iter"), "--json")
    assert code == 0
    assert len(json.loads(stdout)["record"]["iterations"]) == 2


def test_unstructured(capsys, trained: Path, tmp_path: Path) -> None:
    code, stdout, _ = run(capsys, "prune", str(trained), "--data", DATA, "--unstructured",
                          "--sparsity", "0.8", "--finetune-epochs", "1", "--latency-runs", "3",
                          "--out", str(tmp_path / "u"), "--json")
    assert code == 0
    rec = json.loads(stdout)["record"]
    sizes = rec["compressed_sizes"]
    assert sizes["after"]["zlib_bytes"] < 0.6 * sizes["before"]["zlib_bytes"]
    # masks were kept during fine-tuning: the sparsity survived
    assert rec["report_after"]["total_zeros"] >= rec["report"]["total_zeros"]


def _exit_2(code: int, err: str) -> None:
    assert code == 2 and err.startswith("slimkit: error: ") and err.count("\n") == 1, err


def test_user_mistakes(capsys, trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    cases = [
        ["--ratio", "1.5"],
        ["--ratio", "0.5", "--target-macs", "0.5"],
        ["--target-macs", "0.0001"],
        ["--ratio", "0.5", "--ignore", "stages.7.conv"],
        ["--ratio", "0.5", "--method", "magic"],
        ["--unstructured"],
        ["--sparsity", "0.5"],
        ["--target-macs", "0.5", "--sensitivity", str(tmp_path / "missing.json")],
    ]
    for extra in cases:
        code, _, err = run(capsys, "prune", str(trained), "--data", DATA, "--latency-runs", "0",
                           "--out", str(out), *extra)
        _exit_2(code, err)
        assert not (out / "model.safetensors").exists(), extra
    # a checkpoint and data that do not match
    code, _, err = run(capsys, "prune", str(trained), "--data", "digits", "--ratio", "0.5",
                       "--out", str(out))
    _exit_2(code, err)
    # an existing output is not replaced without --force
    good = tmp_path / "good"
    assert run(capsys, "prune", str(trained), "--data", DATA, "--ratio", "0.25",
               "--latency-runs", "0", "--out", str(good))[0] == 0
    stamp = (good / "model.safetensors").stat().st_mtime_ns
    code, _, err = run(capsys, "prune", str(trained), "--data", DATA, "--ratio", "0.25",
                       "--latency-runs", "0", "--out", str(good))
    _exit_2(code, err)
    assert (good / "model.safetensors").stat().st_mtime_ns == stamp
