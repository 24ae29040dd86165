"""The trainer: learning, schedules, EMA, callbacks, exact resume, transfer learning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from slimkit.data import load_dataset
from slimkit.errors import InvalidArgumentError, SlimkitError
from slimkit.models import create_model
from slimkit.train import Callback, FreezeBackbone, TrainConfig, evaluate, fit, load_checkpoint
from slimkit.train.schedule import lr_factor
from slimkit.train.trainer import _param_groups

SHAPES = "shapes:n_train=256,n_test=128,size=16"


@pytest.fixture(scope="module")
def shapes():
    return load_dataset(SHAPES)


class TinyNet(nn.Module):
    """A user model (not from the zoo) with BN, dropout and a classifier."""

    def __init__(self, in_chans: int = 3, num_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x).mean((2, 3))))


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=32, lr=0.05, warmup_epochs=0.5)
    base.update(kw)
    return TrainConfig(**base)


def test_a_user_model_learns_shapes(shapes) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    before = evaluate(model, shapes).top1
    result = fit(model, shapes, _cfg(epochs=6))
    assert result.test is not None
    assert result.test.top1 > 80.0 > before + 20  # four classes: chance is 25 %
    assert len(result.history) == 6
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.test.samples == 128 and len(result.test.per_class) == 4
    assert sum(map(sum, result.test.confusion)) == 128


def test_lr_schedules() -> None:
    total = 100
    cos = [lr_factor(s, total, schedule="cosine", warmup_steps=10) for s in range(total)]
    assert cos[0] == pytest.approx(1 / 11) and cos[9] == pytest.approx(10 / 11)
    assert cos[10] == pytest.approx(1.0) and cos[-1] < 0.01
    assert all(a >= b for a, b in zip(cos[10:], cos[11:], strict=False))
    one = [lr_factor(s, total, schedule="onecycle") for s in range(total)]
    assert one[0] == pytest.approx(1 / 25) and max(one) == pytest.approx(1.0)
    assert one.index(max(one)) == 30 and one[-1] == pytest.approx(1e-4)
    assert lr_factor(50, total, schedule="constant", warmup_steps=10) == 1.0
    with pytest.raises(InvalidArgumentError):
        lr_factor(0, total, schedule="step")


def test_no_weight_decay_on_norms_and_biases() -> None:
    model = create_model("mobilenet_v2_035", num_classes=3)
    groups = _param_groups(model, TrainConfig(weight_decay=0.1).resolved())
    for g in groups:
        for p in g["params"]:
            assert (g["weight_decay"] > 0) == (p.ndim > 1)
    n = sum(len(g["params"]) for g in groups)
    assert n == len(list(model.parameters()))


def test_every_option_runs(shapes) -> None:
    cfg = _cfg(epochs=2, optimizer="adamw", schedule="onecycle", label_smoothing=0.1,
               grad_clip=1.0, ema_decay=0.9, channels_last=False, lr=None)
    result = fit(TinyNet(), shapes, cfg)
    assert result.test is not None and math.isfinite(result.test.loss)
    assert result.config.lr == 2e-3 and result.config.weight_decay == 0.05


def test_bad_configs_are_user_errors(shapes) -> None:
    for bad in (dict(epochs=0), dict(optimizer="rmsprop"), dict(schedule="step"),
                dict(label_smoothing=1.0), dict(lr=-1.0), dict(precision="fp8")):
        with pytest.raises(InvalidArgumentError):
            fit(TinyNet(), shapes, _cfg(**bad))


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.extra_called = 0

    def on_fit_start(self, trainer) -> None:
        self.events.append("fit_start")

    def on_epoch_start(self, trainer, epoch) -> None:
        self.events.append(f"epoch_start{epoch}")

    def extra_loss(self, trainer, inputs, targets, outputs):
        self.extra_called += 1
        return 0.0 * outputs.sum()

    def on_after_backward(self, trainer) -> None:
        assert any(p.grad is not None for p in trainer.module.parameters())

    def on_epoch_end(self, trainer, epoch, metrics) -> None:
        self.events.append(f"epoch_end{epoch}:{'val_top1' in metrics}")

    def on_fit_end(self, trainer) -> None:
        self.events.append("fit_end")


def test_callback_hooks(shapes) -> None:
    rec = Recorder()
    fit(TinyNet(), shapes, _cfg(epochs=2), callbacks=[rec])
    assert rec.events == ["fit_start", "epoch_start0", "epoch_end1:True", "epoch_start1",
                          "epoch_end2:True", "fit_end"]
    assert rec.extra_called == 2 * 8  # 256 samples / 32 per batch, 2 epochs


def test_run_directory_contents(shapes, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = fit(TinyNet(), shapes, _cfg(epochs=2), out_dir=out)
    files = {p.name for p in out.iterdir()}
    assert {"last.safetensors", "model.safetensors", "metrics.json", "log.jsonl",
            "confusion.png"} <= files
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["top1"] == pytest.approx(result.test.top1)
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x.get("epoch") for x in lines[:2]] == [1, 2] and lines[-1]["event"] == "done"
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # an existing run is never reused silently
    with pytest.raises(SlimkitError, match="--force"):
        fit(TinyNet(), shapes, _cfg(epochs=1), out_dir=out)
    with pytest.raises(InvalidArgumentError, match="nothing to resume"):
        fit(TinyNet(), shapes, _cfg(epochs=1), out_dir=tmp_path / "empty", resume=True)


class Interrupt(Callback):
    """Simulates Ctrl-C after a given number of optimizer steps."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_end(self, trainer, step) -> None:
        if step == self.at_step:
            raise KeyboardInterrupt


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("stop_at", [5, 8, 13])  # mid-epoch, at an epoch end, later epoch
def test_interrupted_run_resumes_to_identical_weights(shapes, tmp_path: Path,
                                                      stop_at: int) -> None:
    cfg = _cfg(epochs=2, ema_decay=0.9)
    torch.manual_seed(1)
    reference = fit(TinyNet(), shapes, cfg, out_dir=tmp_path / "ref")
    expected = _weights(reference.model)

    out = tmp_path / "interrupted"
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        fit(TinyNet(), shapes, cfg, out_dir=out, callbacks=[Interrupt(stop_at)])
    state = load_checkpoint(out / "last.safetensors", model=TinyNet()).meta.training
    assert state["step"] == stop_at
    torch.manual_seed(123)  # resume must not depend on the fresh process's RNG
    resumed = fit(TinyNet(), shapes, cfg, out_dir=out, resume=True)
    got = _weights(resumed.model)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0, msg=k)
    assert resumed.test.top1 == reference.test.top1


def test_resume_refuses_changed_settings(shapes, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(TinyNet(), shapes, _cfg(epochs=2), out_dir=out, callbacks=[Interrupt(3)])
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        fit(TinyNet(), shapes, _cfg(epochs=2, batch_size=16), out_dir=out, resume=True)


def test_freeze_backbone_trains_only_the_classifier(shapes) -> None:
    model = TinyNet()
    before = _weights(model)
    fit(model, shapes, _cfg(epochs=1), callbacks=[FreezeBackbone()])
    after = model.state_dict()
    for k in before:
        changed = not torch.equal(before[k], after[k])
        if k.startswith("classifier."):
            assert changed, k
        elif k.endswith("num_batches_tracked"):
            continue
        else:
            assert not changed, k  # weights and BN running statistics untouched


def test_linear_probe_then_fine_tune(shapes) -> None:
    model = TinyNet()
    first_conv = model.features[0].weight.clone()
    seen: list[bool] = []

    class Watch(Callback):
        def on_epoch_end(self, trainer, epoch, metrics) -> None:
            seen.append(torch.equal(first_conv, trainer.module.features[0].weight))

    fit(model, shapes, _cfg(epochs=3), callbacks=[FreezeBackbone(until_epoch=1), Watch()])
    assert seen == [True, False, False]


def test_transfer_to_a_new_task_with_a_new_head(tmp_path: Path) -> None:
    """Train on shapes (4 classes, RGB), save, transfer to digits (10 classes, grayscale)."""
    src_data = load_dataset("shapes:n_train=256,n_test=64")
    src = create_model("resnet20", num_classes=src_data.num_classes)
    first = fit(src, src_data, _cfg(epochs=1), out_dir=tmp_path / "src")
    digits = load_dataset("digits")
    dst = create_model("resnet20", num_classes=digits.num_classes, in_chans=1,
                       pretrained=first.checkpoint)
    # the backbone came over (the RGB stem summed to one channel), the head is new
    torch.testing.assert_close(dst.stages[2][0].conv1.conv.weight,
                               src.stages[2][0].conv1.conv.weight)
    torch.testing.assert_close(dst.stem[0].conv.weight,
                               src.stem[0].conv.weight.sum(1, keepdim=True))
    assert dst.classifier.out_features == 10
    result = fit(dst, digits, _cfg(epochs=3, batch_size=64, lr=0.1), out_dir=tmp_path / "dst")
    assert result.test is not None and result.test.top1 > 50.0  # 10 classes: chance 10 %
    lineage = load_checkpoint(result.checkpoint).meta.lineage
    assert [s["stage"] for s in lineage] == ["train"]
    assert lineage[0]["metrics"]["test_top1"] == pytest.approx(result.test.top1)
