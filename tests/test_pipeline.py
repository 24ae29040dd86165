"""Recipes (validated YAML), the runner (resumable stages, report), and `slimkit compress`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slimkit.cli.main import main
from slimkit.pipeline import runner

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "recipes"
SMALL = "shapes:n_train=256,n_test=64,size=16"


def _exit_2(capsys, args: list[str]) -> str:
    """Exit code 2 and the error as one line (progress lines of long commands come before)."""
    code = main(args)
    err = capsys.readouterr().err
    last = err.rstrip("\n").split("\n")[-1]
    assert code == 2 and last.startswith("slimkit: error: "), err
    return last


@pytest.mark.parametrize("text,expected", [
    ("modle: resnet20\ndata: digits\nstages: [{train: {}}]", "Did you mean: model"),
    ("model: resnet20\nstages: [{prune: {taget_macs: 0.5}}]", "stages[0].prune.taget_macs"),
    ("model: resnet20\nstages: [{prune: {ratio: half}}]", "stages[0].prune.ratio"),
    ("model: resnet20\nstages: [{prun: {}}]", "Did you mean: prune"),
    ("model: resnet20\nstages: [{train: {epochs: 0}}]", "greater than or equal to 1"),
    ("model: resnet20\nstages: [train: {]", "not valid YAML"),
    ("data: digits\nstages: [{train: {}}]", "exactly one of model"),
])
def test_recipe_errors(capsys, tmp_path: Path, text: str, expected: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    err = _exit_2(capsys, ["run", str(recipe), "--out", str(tmp_path / "run")])
    assert expected in err
    assert not (tmp_path / "run").exists()


def test_missing_recipe(capsys, tmp_path: Path) -> None:
    assert "does not exist" in _exit_2(capsys, ["run", str(tmp_path / "none.yaml")])


RECIPE = f"""
name: tiny
model: resnet20
data: "{SMALL}"
stages:
  - train: {{epochs: 1, batch_size: 32}}
  - prune: {{target_macs: 0.6, finetune_epochs: 1}}
  - quantize: {{calib_samples: 32}}
  - evaluate: {{}}
"""


def test_run_interrupt_and_resume(capsys, tmp_path: Path, monkeypatch) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "run"
    real_quantize = runner.STAGE_FUNCS["quantize"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(runner.STAGE_FUNCS, "quantize", interrupted)
    assert main(["run", str(recipe), "--out", str(out)]) == 130  # Ctrl-C, as shells report it
    state = json.loads((out / "pipeline.json").read_text())
    assert [r["kind"] for r in state["records"]] == ["train", "prune"]  # finished stages kept
    capsys.readouterr()
    # without --resume or --force an existing run is left alone
    _exit_2(capsys, ["run", str(recipe), "--out", str(out)])
    stamp = (out / "00-train" / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setitem(runner.STAGE_FUNCS, "quantize", real_quantize)
    assert main(["run", str(recipe), "--out", str(out), "--resume", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert (out / "00-train" / "model.safetensors").stat().st_mtime_ns == stamp  # not redone
    assert [r["name"] for r in state["stages"]] == ["00 train", "01 prune", "02 quantize"]
    final = state["stages"][-1]
    assert final["size_bytes"] < state["stages"][0]["size_bytes"] and final["latency_ms"] > 0
    assert state["headline"] and "x smaller" in state["headline"]
    html = (out / "report.html").read_text()
    assert "02 quantize" in html and "data:image/png;base64," in html
    assert (out / "report.md").exists()
    # a changed recipe cannot be resumed silently
    recipe.write_text(RECIPE.replace("target_macs: 0.6", "target_macs: 0.5"))
    assert "changed since" in _exit_2(capsys, ["run", str(recipe), "--out", str(out),
                                               "--resume"])


@pytest.mark.slow
def test_example_recipes_run_on_small_data(tmp_path: Path, monkeypatch) -> None:
    """The three example recipes, in order (later ones use the first one's checkpoint), every
    stage as written, on a small 16-px dataset with every epoch count capped at 1."""
    monkeypatch.chdir(tmp_path)
    for name in ("mobilenet_v2_prune_distill_int8", "quantize_only", "transfer_then_compress"):
        shutil.copy(EXAMPLES / f"{name}.yaml", tmp_path)
    for name in ("mobilenet_v2_prune_distill_int8", "quantize_only", "transfer_then_compress"):
        assert main(["run", f"{name}.yaml", "--data", SMALL, "--max-epochs", "1"]) == 0, name
    for run in ("mbv2-prune-distill-int8", "quantize-only", "transfer-then-compress"):
        assert (tmp_path / "runs" / run / "report.html").exists()


def test_compress_meets_a_budget_or_says_why(capsys, tmp_path: Path) -> None:
    base = tmp_path / "base"
    assert main(["train", "-m", "resnet20", "--data", SMALL, "--epochs", "2", "--batch-size",
                 "32", "--out", str(base)]) == 0
    capsys.readouterr()
    ckpt = str(base / "model.safetensors")
    out = tmp_path / "c"
    code = main(["compress", ckpt, "--data", SMALL, "--max-acc-drop", "100", "--target-macs",
                 "0.6", "--finetune-epochs", "1", "--out", str(out), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["best"]["meets"] == {"accuracy": True, "macs": True}
    assert res["best"]["macs"] <= 0.6 * res["baseline"]["macs"]
    assert (out / "model.int8.onnx").exists() and (out / "report.html").exists()
    names = [c["name"] for c in res["candidates"]]
    assert names[0] == "int8" and any(n.startswith("prune") for n in names)
    err = _exit_2(capsys, ["compress", ckpt, "--data", SMALL, "--max-acc-drop", "0",
                           "--target-latency-ms", "0.0001", "--finetune-epochs", "1",
                           "--refine-steps", "0", "--allocate", "macs",
                           "--out", str(tmp_path / "c2")])
    assert "no model meets" in err and "latency" in err
    err = _exit_2(capsys, ["compress", ckpt, "--data", SMALL, "--max-acc-drop", "1",
                           "--target-macs", "0.5", "--allocate", "energy",
                           "--out", str(tmp_path / "c5")])
    assert "--allocate" in err and not (tmp_path / "c5").exists()
    # a table from the MAC-allocated run has no measured latency: it cannot drive a latency
    # allocation; a missing table is named
    err = _exit_2(capsys, ["compress", ckpt, "--data", SMALL, "--max-acc-drop", "1",
                           "--target-latency-ms", "5", "--sensitivity",
                           str(out / "sensitivity.json"), "--out", str(tmp_path / "c6")])
    assert "latency probe" in err and not (tmp_path / "c6").exists()
    err = _exit_2(capsys, ["compress", ckpt, "--data", SMALL, "--max-acc-drop", "1",
                           "--target-macs", "0.5", "--sensitivity", str(tmp_path / "nope.json"),
                           "--out", str(tmp_path / "c6")])
    assert "nope.json does not exist" in err and not (tmp_path / "c6").exists()
    err = _exit_2(capsys, ["compress", ckpt, "--data", SMALL, "--max-acc-drop", "1",
                           "--target-macs", "0.5", "--reuse", str(tmp_path),
                           "--out", str(tmp_path / "c6")])
    assert "not a compress run" in err and not (tmp_path / "c6").exists()
    err = _exit_2(capsys, ["compress", ckpt, "--data", SMALL, "--max-acc-drop", "1",
                           "--target-macs", "0.5", "--reuse", str(out), "--sensitivity",
                           str(out / "sensitivity.json"), "--out", str(tmp_path / "c6")])
    assert "not both" in err
    _exit_2(capsys, ["compress", ckpt, "--data", SMALL, "--max-acc-drop", "1", "--out",
                     str(tmp_path / "c3")])  # no target
    for bad in ("0.5,x", "0.5,1.2"):
        err = _exit_2(capsys, ["compress", ckpt, "--data", SMALL, "--max-acc-drop", "1",
                               "--target-macs", "0.5", "--fractions", bad,
                               "--out", str(tmp_path / "c4")])
        assert "--fractions" in err
        assert not (tmp_path / "c4").exists()
    for bad in ("0.5,1.0", "x"):
        err = _exit_2(capsys, ["compress", ckpt, "--data", SMALL, "--max-acc-drop", "1",
                               "--target-macs", "0.5", "--ratios", bad,
                               "--out", str(tmp_path / "c4")])
        assert "--ratios" in err and not (tmp_path / "c4").exists()


@pytest.mark.slow
def test_compress_allocates_by_measured_latency(capsys, tmp_path: Path) -> None:
    """The default for a latency target: the sensitivity table holds each group's measured
    INT8 latency saving, candidates are pruned to fractions of the INT8 latency, and each
    candidate is measured against the baseline."""
    base = tmp_path / "base"
    assert main(["train", "-m", "resnet20", "--data", SMALL, "--epochs", "2", "--batch-size",
                 "32", "--out", str(base)]) == 0
    capsys.readouterr()
    out = tmp_path / "c"
    code = main(["compress", str(base / "model.safetensors"), "--data", SMALL,
                 "--max-acc-drop", "100", "--target-latency-ms", "1000",
                 "--fractions", "0.8,0.02,0.01", "--refine-steps", "0", "--finetune-epochs",
                 "1", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    assert code == 0
    # 2 % of the latency is out of reach: the deepest allocation is tried instead, once
    names = [c["name"] for c in res["candidates"]]
    assert names == ["int8", "prune-lat0.8+kd+int8", "prune-lat-deepest+kd+int8"]
    assert "trying the deepest allocation" in captured.err and "skipped" in captured.err
    # the candidates that meet the constraints are timed again together before the choice
    assert "final round: the 3 candidates" in captured.err
    best = res["best"]
    assert best["latency_ms"] == min(c["latency_ms"] for c in res["candidates"])
    pruned = next(c for c in res["candidates"] if c["name"] == "prune-lat0.8+kd+int8")
    assert pruned["allocate"] == "latency" and pruned["macs"] < res["baseline"]["macs"]
    table = json.loads((out / "sensitivity.json").read_text())
    assert table["latency"]["int8"] is True
    assert all(isinstance(r["latency_saved"], float) for r in table["rows"])
    assert json.loads((out / "pipeline.json").read_text())["allocate"] == "latency"
    # the table is reused by a second search (no new analysis), and checked against the model
    code = main(["compress", str(base / "model.safetensors"), "--data", SMALL,
                 "--max-acc-drop", "100", "--target-latency-ms", "1000", "--fractions", "0.6",
                 "--refine-steps", "0", "--finetune-epochs", "1", "--sensitivity",
                 str(out / "sensitivity.json"), "--out", str(tmp_path / "c2")])
    captured = capsys.readouterr()
    assert code == 0 and "sensitivity table from" in captured.err
    assert json.loads((tmp_path / "c2" / "sensitivity.json").read_text()) == table
    # --reuse: the same search with another budget loads the recovered candidate instead of
    # pruning and fine-tuning it again; quantization and measurements are redone
    code = main(["compress", str(base / "model.safetensors"), "--data", SMALL,
                 "--max-acc-drop", "50", "--target-latency-ms", "1000", "--fractions", "0.8",
                 "--refine-steps", "0", "--finetune-epochs", "1", "--reuse", str(out),
                 "--out", str(tmp_path / "c4"), "--json"])
    captured = capsys.readouterr()
    assert code == 0 and "reused from" in captured.err and "prune-lat0.8" in captured.err
    again = json.loads(captured.out)
    reused = next(c for c in again["candidates"] if c["name"] == "prune-lat0.8+kd+int8")
    assert reused["macs"] == pruned["macs"] and reused["params"] == pruned["params"]
    code = main(["compress", str(base / "model.safetensors"), "--data", SMALL,
                 "--max-acc-drop", "50", "--target-latency-ms", "1000", "--fractions", "0.8",
                 "--refine-steps", "0", "--finetune-epochs", "2", "--reuse", str(out),
                 "--out", str(tmp_path / "c5"), "--json"])
    captured = capsys.readouterr()  # other fine-tuning epochs: recovered anew, not reused
    assert code == 0 and "reused from" not in captured.err
    other = tmp_path / "other"
    assert main(["train", "-m", "mobilenet_v2", "--width-mult", "0.25", "--data", SMALL,
                 "--epochs", "1", "--out", str(other)]) == 0
    err = _exit_2(capsys, ["compress", str(other / "model.safetensors"), "--data", SMALL,
                           "--max-acc-drop", "1", "--target-latency-ms", "5", "--sensitivity",
                           str(out / "sensitivity.json"), "--out", str(tmp_path / "c3")])
    assert "MACs" in err and not (tmp_path / "c3").exists()


def test_fraction_search_bisects_after_the_first_miss() -> None:
    from slimkit.pipeline.search import search_fractions

    tried: list[float] = []

    def attempt(frac: float) -> bool:  # accuracy holds down to 0.6 of the MACs
        tried.append(frac)
        return frac >= 0.6

    why = search_fractions((0.5, 0.75, 0.25), attempt, refine_steps=2)
    # mild to aggressive, stop at the first miss, then bisect (0.75, 0.5) -> 0.625 -> 0.562
    assert tried == [1.0, 0.75, 0.5, 0.625, 0.562]
    assert "0.625" in why and "0.562" in why
    tried.clear()
    assert search_fractions((0.75, 0.5), attempt, refine_steps=0) and tried == [1.0, 0.75, 0.5]
    tried.clear()
    search_fractions((0.9, 0.5), lambda f: tried.append(f) or f >= 0.6, min_step=0.3)
    assert tried == [1.0, 0.9, 0.5, 0.7]  # 0.9 - 0.7 < 0.3: no third refinement
    tried.clear()
    search_fractions((0.75,), lambda f: tried.append(f) or True)
    assert tried == [1.0, 0.75]  # nothing missed, nothing to refine
    calls = iter([False, True])
    assert "time budget" in search_fractions((0.5,), lambda f: True,
                                             out_of_time=lambda: next(calls))


def test_a_candidate_is_reused_only_when_made_the_same_way() -> None:
    from slimkit.pipeline.search import _same_candidate

    want = {"fraction": 0.5, "allocate": "latency", "finetune_epochs": 2}
    assert _same_candidate(dict(want), want)
    assert not _same_candidate(None, want)
    assert not _same_candidate({**want, "finetune_epochs": 1}, want)
    assert not _same_candidate({**want, "allocate": "macs"}, want)
    assert not _same_candidate({**want, "fraction": 0.35}, want)
    # recorded before the epochs were: fraction and allocation decide
    assert _same_candidate({"fraction": 0.5, "allocate": "latency"}, want)
