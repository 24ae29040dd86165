"""Knowledge distillation: logit KD, FitNets hints, attention transfer, CLI, caching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from slimkit.cli.main import main
from slimkit.compress.distill import (
    AttentionTransfer,
    FeatureDistillation,
    LogitDistillation,
    attention_map,
    parse_pairs,
)
from slimkit.data import load_dataset
from slimkit.errors import InvalidArgumentError
from slimkit.models import create_model
from slimkit.train import TrainConfig, fit, read_checkpoint_meta

DATA = "shapes:n_train=256,n_test=64,size=16"


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "run"
    assert main(["train", "-m", "resnet20", "--data", DATA, "--epochs", "3", "--batch-size",
                 "32", "--lr", "0.05", "--out", str(out)]) == 0
    return out / "model.safetensors"


def test_logit_loss_matches_the_formula() -> None:
    teacher = create_model("resnet20", num_classes=4).eval()
    kd = LogitDistillation(teacher, temperature=4.0, alpha=0.9)
    assert kd.task_loss_weight == pytest.approx(0.1)
    s, t = torch.randn(8, 4), torch.randn(8, 4)
    expected = 0.9 * 16 * (F.softmax(t / 4, 1) * (F.log_softmax(t / 4, 1)
                                                   - F.log_softmax(s / 4, 1))).sum(1).mean()

    class Fake:
        class train_loader:  # noqa: N801 - a stand-in attribute namespace
            last_indices = None

    kd.teacher = lambda x: t  # type: ignore[assignment]
    got = kd.extra_loss(Fake(), torch.zeros(8, 3, 16, 16), torch.zeros(8, dtype=torch.long), s)
    assert got == pytest.approx(float(expected), rel=1e-5)
    assert float(kd.extra_loss(Fake(), torch.zeros(8, 3, 16, 16),
                               torch.zeros(8, dtype=torch.long), t)) == pytest.approx(0, abs=1e-6)


def test_teacher_logits_are_cached_without_augmentation() -> None:
    data = load_dataset(DATA)
    teacher = create_model("resnet20", num_classes=4)
    kd = LogitDistillation(teacher)
    fit(create_model("mobilenet_v2_035", num_classes=4, small_input=True), data,
        TrainConfig(epochs=2, batch_size=32, augment="none"), callbacks=[kd])
    assert kd.teacher_calls == len(data.train) and kd.cache_hits == len(data.train)
    kd2 = LogitDistillation(teacher)
    fit(create_model("mobilenet_v2_035", num_classes=4, small_input=True), data,
        TrainConfig(epochs=2, batch_size=32), callbacks=[kd2])  # augmented: no cache
    assert kd2.cache_hits == 0 and kd2.teacher_calls == 2 * len(data.train)


def test_feature_and_attention_losses_train() -> None:
    data = load_dataset(DATA)
    teacher = create_model("resnet20", num_classes=4)
    for cb in (FeatureDistillation(teacher, [("stages.2", "stages.1")]),
               AttentionTransfer(teacher, [("stages.1", "stages.2"), ("stages.3", "stages.2")])):
        student = create_model("mobilenet_v2_035", num_classes=4, small_input=True)
        result = fit(student, data, TrainConfig(epochs=1, batch_size=32), callbacks=[cb])
        assert result.test is not None
    feat = FeatureDistillation(teacher, [("stages.2", "stages.1")])
    student = create_model("mobilenet_v2_035", num_classes=4, small_input=True)
    fit(student, data, TrainConfig(epochs=1, batch_size=32), callbacks=[feat])
    adapter = next(iter(feat.adapters.values()))
    assert adapter.in_channels == 16 and adapter.out_channels == 32  # student -> teacher


def test_attention_map_properties() -> None:
    f = torch.randn(2, 8, 4, 4)
    a = attention_map(f)
    assert a.shape == (2, 16)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(attention_map(3 * f), a)  # scale invariant


def test_bad_inputs(teacher_ckpt: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_pairs(["stages.1"])
    with pytest.raises(InvalidArgumentError):
        LogitDistillation(create_model("resnet20"), alpha=1.5)
    cases = [  # (data, extra arguments)
        (DATA, ["--method", "feature", "--pair", "nope.layer:stages.1"]),
        (DATA, ["--method", "at"]),  # no layer pair
        (DATA, ["--method", "hints"]),
        ("digits", []),  # other classes than the teacher's
    ]
    for data, extra in cases:
        code = main(["distill", "--teacher", str(teacher_ckpt), "--student", "mobilenet_v2_035",
                     "--data", data, "--epochs", "1", "--out", str(tmp_path / "x"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, (extra, err)
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_distill_cli_and_prune_then_distill(teacher_ckpt: Path, tmp_path: Path, capsys) -> None:
    code = main(["distill", "--teacher", str(teacher_ckpt), "--student", "mobilenet_v2_035",
                 "--data", DATA, "--epochs", "1", "--batch-size", "32", "--out",
                 str(tmp_path / "s"), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["method"] == "logit"
    assert read_checkpoint_meta(tmp_path / "s" / "model.safetensors").lineage[-1]["stage"] \
        == "distill-logit"
    code = main(["prune", str(teacher_ckpt), "--data", DATA, "--target-macs", "0.5",
                 "--finetune-epochs", "1", "--distill", "--latency-runs", "0", "--out",
                 str(tmp_path / "p"), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["record"]["distill"].startswith("logit")
