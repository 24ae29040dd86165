"""`slimkit train` / `slimkit eval`, multi-process training and kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from slimkit.cli.main import main

DATA = "shapes:n_train=192,n_test=64,size=16"


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_then_eval(capsys, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "train", "-m", "resnet20", "--data", DATA, "--epochs", "2",
                          "--batch-size", "32", "--out", str(out), "--json")
    assert code == 0
    trained = json.loads(stdout)
    assert trained["checkpoint"] == str(out / "model.safetensors")
    code, stdout, _ = run(capsys, "eval", str(out / "model.safetensors"), "--data", DATA,
                          "--json")
    assert code == 0
    evaluated = json.loads(stdout)
    assert evaluated["top1"] == pytest.approx(trained["test"]["top1"])
    assert evaluated["samples"] == 64 and len(evaluated["per_class"]) == 4
    code, stdout, _ = run(capsys, "eval", str(out / "model.safetensors"), "--data", DATA)
    assert code == 0 and "per-class accuracy" in stdout and "circle" in stdout


def _one_line_exit_2(code: int, err: str) -> None:
    assert code == 2, err
    assert err.startswith("slimkit: error: ") and err.count("\n") == 1, err


def test_user_mistakes(capsys, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert run(capsys, "train", "-m", "resnet20", "--data", DATA, "--epochs", "1",
               "--out", str(out))[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # an output directory that already holds a run
    code, _, err = run(capsys, "train", "-m", "resnet20", "--data", DATA, "--epochs", "1",
                       "--out", str(out))
    _one_line_exit_2(code, err)
    assert "--force" in err
    assert before == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # unknown dataset spec, unknown model
    code, _, err = run(capsys, "train", "-m", "resnet20", "--data", "digts", "--out",
                       str(tmp_path / "x"))
    _one_line_exit_2(code, err)
    assert "digits" in err
    code, _, err = run(capsys, "train", "-m", "resnet2", "--data", DATA, "--out",
                       str(tmp_path / "y"))
    _one_line_exit_2(code, err)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # a checkpoint evaluated on data with another number of classes
    code, _, err = run(capsys, "eval", str(out / "model.safetensors"), "--data", "digits")
    _one_line_exit_2(code, err)
    assert "10" in err and "4" in err
    # a truncated checkpoint
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((out / "model.safetensors").read_bytes()[:1000])
    code, _, err = run(capsys, "eval", str(bad), "--data", DATA)
    _one_line_exit_2(code, err)
    # a missing checkpoint, a bad --pretrained
    code, _, err = run(capsys, "eval", str(tmp_path / "none.safetensors"), "--data", DATA)
    _one_line_exit_2(code, err)
    code, _, err = run(capsys, "train", "-m", "mobilenet_v2_035", "--data", DATA,
                       "--pretrained", str(out / "model.safetensors"), "--out",
                       str(tmp_path / "z"))
    _one_line_exit_2(code, err)
    assert "do not fit" in err
    # resume without a run
    code, _, err = run(capsys, "train", "-m", "resnet20", "--data", DATA, "--resume", "--out",
                       str(tmp_path / "nothing"))
    _one_line_exit_2(code, err)


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from slimkit.data import load_dataset
    from slimkit.models import create_model
    from slimkit.train import TrainConfig, fit
    data = load_dataset("shapes:n_train=256,n_test=64,size=16")
    torch.manual_seed(dist.get_rank() if dist.is_initialized() else 0)
    model = create_model("resnet20", num_classes=4)
    result = fit(model, data, TrainConfig(epochs=2, batch_size=16, lr=0.05),
                 out_dir=sys.argv[1], progress=False)
    # after DDP every rank must hold identical weights
    flat = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    assert all(torch.equal(gathered[0], g) for g in gathered), "ranks diverged"
    print(f"rank {dist.get_rank()} ok steps={result.history[-1]['step']}")
""")


def test_two_process_ddp_with_gloo(tmp_path: Path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(29500 + os.getpid() % 500), str(script), str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 256 samples (230 after the val split) over 2 ranks of batch 16: 7 steps per epoch
    assert "rank 0 ok steps=14" in proc.stdout and "rank 1 ok steps=14" in proc.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["test"]["samples"] == 64


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """SIGKILL a real training process after its first epoch, resume it, and compare with an
    uninterrupted run of the same seed."""
    data = "shapes:n_train=1000,n_test=100,size=16"
    base = [sys.executable, "-m", "slimkit.cli.main", "train", "-m", "resnet20", "--data",
            data, "--epochs", "3", "--batch-size", "32", "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(base + ["--out", str(tmp_path / "ref")], env=env, timeout=600,
                         capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(base + ["--out", str(run_dir)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = run_dir / "log.jsonl"  # written after the epoch's checkpoint
    deadline = time.time() + 300
    while time.time() < deadline:
        if log.exists() and '"epoch": 1' in log.read_text():
            break
        time.sleep(0.05)
    assert (run_dir / "last.safetensors").exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "model.safetensors").exists(), "the run finished before the kill"
    resumed = subprocess.run(base + ["--out", str(run_dir), "--resume"], env=env,
                             timeout=600, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "at epoch 1" in resumed.stderr
    a = load_file(str(tmp_path / "ref" / "model.safetensors"))
    b = load_file(str(run_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), k


def test_checkpoints_are_evaluated_with_their_training_normalization(tmp_path: Path) -> None:
    """The data's mean/std come from its train split, which depends on the split seed; a
    trained model is evaluated (pruned, quantized, compressed) with the statistics stored in
    its checkpoint, so the same checkpoint scores the same whatever seed loads the data."""
    from slimkit.data import load_dataset
    from slimkit.train import evaluate, load_checkpoint
    from slimkit.train.api import evaluate_checkpoint, fit_data_to_checkpoint

    spec = "shapes:n_train=256,n_test=64,size=16"
    out = tmp_path / "run"
    assert main(["train", "-m", "resnet20", "--data", spec, "--epochs", "1", "--seed", "3",
                 "--out", str(out)]) == 0
    ckpt = out / "model.safetensors"
    meta = load_checkpoint(ckpt).meta
    other = load_dataset(spec, seed=0)
    trained = load_dataset(spec, seed=3)
    assert list(trained.mean) == pytest.approx(meta.mean)
    assert list(other.mean) != pytest.approx(meta.mean)  # the split seed changes the stats
    fitted = fit_data_to_checkpoint(meta, other, ckpt)
    assert list(fitted.mean) == meta.mean and list(fitted.std) == meta.std
    assert len(fitted.test) == len(other.test)
    _, _, res = evaluate_checkpoint(ckpt, spec)  # loads with seed 0
    model = load_checkpoint(ckpt).model
    assert res.loss == pytest.approx(evaluate(model, trained).loss, abs=1e-6)
    assert res.loss != pytest.approx(evaluate(model, other).loss, abs=1e-6)
    meta.mean = None  # a checkpoint without statistics: the data's own are kept
    assert fit_data_to_checkpoint(meta, other, ckpt).mean == other.mean
