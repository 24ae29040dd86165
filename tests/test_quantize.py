"""INT8: ORT static QDQ that runs integer kernels, equalization, bias correction, QAT, guard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from slimkit.analysis.latency import cpu_info
from slimkit.cli.main import main
from slimkit.compress.quantization import int8_node_types, onnx_accuracy, quantize_onnx
from slimkit.compress.quantization.api import calibration_arrays, evaluation_arrays
from slimkit.compress.quantization.equalize import bias_correct, equalize, quantize_weight
from slimkit.compress.quantization.qat import prepare_qat, qat_layers, strip_qat
from slimkit.data import load_dataset
from slimkit.deploy import export_onnx
from slimkit.errors import FileFormatError, InvalidArgumentError
from slimkit.models import create_model
from slimkit.train import TrainConfig, evaluate, fit

DATA = "shapes:n_train=384,n_test=128,size=16"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = load_dataset(DATA)
    torch.manual_seed(0)
    model = create_model("mobilenet_v2_035", num_classes=4, small_input=True)
    fit(model, data, TrainConfig(epochs=4, batch_size=32, lr=0.05), progress=False)
    d = tmp_path_factory.mktemp("q")
    from slimkit.train import save_checkpoint

    ckpt = save_checkpoint(d / "model.safetensors", model)
    fp32 = export_onnx(model, torch.zeros(1, 3, 16, 16), d / "fp32.onnx", optimize=False).path
    return model.eval(), data, ckpt, fp32


def test_ptq_runs_integer_kernels_and_keeps_accuracy(trained, tmp_path: Path) -> None:
    model, data, _, fp32 = trained
    calib = calibration_arrays(data, 128)
    evaluation = evaluation_arrays(data)
    result = quantize_onnx(fp32, tmp_path / "int8.onnx", calib)
    ops = int8_node_types(result.path)
    assert ops.get("QLinearConv", 0) + ops.get("ConvInteger", 0) >= 30  # every conv is int8
    assert result.size_int8 < 0.4 * result.size_fp32
    fp32_acc = onnx_accuracy(fp32, evaluation)
    assert fp32_acc == pytest.approx(evaluate(model, data).top1)
    assert onnx_accuracy(result.path, evaluation) >= fp32_acc - 5.0
    assert int8_node_types(fp32) == {}  # the float model has no integer kernels


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_calibration_methods(trained, tmp_path: Path, method: str) -> None:
    _, data, _, fp32 = trained
    result = quantize_onnx(fp32, tmp_path / "m.onnx", calibration_arrays(data, 64),
                           method=method, per_channel=False)
    assert result.method == method and int8_node_types(result.path)


def test_bad_calibration_and_files(trained, tmp_path: Path) -> None:
    _, _, _, fp32 = trained
    with pytest.raises(InvalidArgumentError, match="calibration batches have shape"):
        quantize_onnx(fp32, tmp_path / "x.onnx", [np.zeros((2, 3, 32, 32), np.float32)])
    with pytest.raises(InvalidArgumentError, match="no calibration data"):
        quantize_onnx(fp32, tmp_path / "x.onnx", [])
    with pytest.raises(InvalidArgumentError, match="--method"):
        quantize_onnx(fp32, tmp_path / "x.onnx", [np.zeros((1, 3, 16, 16), np.float32)],
                      method="mse")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(FileFormatError):
        quantize_onnx(bad, tmp_path / "x.onnx", [np.zeros((1, 3, 16, 16), np.float32)])
    assert not (tmp_path / "x.onnx").exists()


def test_equalization_preserves_relu_networks_and_evens_ranges() -> None:
    model = create_model("mobilenet_v1_050", num_classes=10, small_input=True).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.01, 4.0)  # very uneven depthwise channel ranges
            m.running_var.uniform_(0.1, 2.0)
    x = torch.randn(4, 3, 32, 32)
    result = equalize(model)
    assert len(result.pairs) == 13 and not result.relu6_replaced
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x), rtol=1e-4, atol=1e-5)

    def spread(conv: nn.Conv2d) -> float:
        r = conv.weight.detach().abs().flatten(1).amax(1)
        return float(r.max() / r.min())

    from slimkit.compress.fuse import fold_batchnorm

    folded = fold_batchnorm(model).model
    before = spread(folded.stages[2][0].conv_dw.conv)
    after = spread(result.model.stages[2][0].conv_dw.conv)
    assert after < before / 2
    # per-tensor weight quantization error falls with equalization
    def qerr(m: nn.Module) -> float:
        q = [(mod.weight - quantize_weight(mod.weight, per_channel=False)).norm() /
             mod.weight.norm() for mod in m.modules() if isinstance(mod, nn.Conv2d)]
        return float(sum(q).detach())

    assert qerr(result.model) < qerr(folded)


def test_relu6_is_replaced_only_when_asked() -> None:
    model = create_model("mobilenet_v2_035", num_classes=10, small_input=True).eval()
    assert equalize(model).pairs == []  # ReLU6 is not positively homogeneous
    result = equalize(model, relu6_to_relu=True)
    assert len(result.pairs) == len(result.relu6_replaced) > 0


def test_bias_correction_removes_the_mean_shift() -> None:
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1))
    x = torch.randn(64, 8, 8, 8) + 2.0  # a non-zero input mean makes the shift visible
    with torch.no_grad():
        ref = conv(x).mean((0, 2, 3))
        quant = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1))
        quant.load_state_dict(conv.state_dict())
        quant[0].weight.copy_(quantize_weight(conv[0].weight, per_channel=False))
        shift_before = (quant(x).mean((0, 2, 3)) - ref).abs().mean()
        corrected = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1))
        corrected.load_state_dict(conv.state_dict())
        bias_correct(corrected, [x], per_channel=False)
        corrected[0].weight.copy_(quantize_weight(corrected[0].weight, per_channel=False))
        shift_after = (corrected(x).mean((0, 2, 3)) - ref).abs().mean()
    assert shift_after < 0.35 * shift_before


def test_qat_prepare_train_strip(trained) -> None:
    model, data, _, _ = trained
    prepared = prepare_qat(model)
    assert len(qat_layers(prepared)) == sum(isinstance(m, nn.Conv2d | nn.Linear)
                                            for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    fit(prepared, data, TrainConfig(epochs=1, batch_size=32, lr=0.005, channels_last=False),
        progress=False)
    plain = strip_qat(prepared)
    assert not qat_layers(plain)
    w = plain.stages[1][0].conv_pw.conv.weight
    # weights trained through the per-channel int8 grid sit close to it
    q = quantize_weight(w.detach())
    assert float((w - q).abs().max()) <= float(w.abs().max()) / 127 + 1e-6
    with torch.no_grad():
        assert torch.isfinite(plain(torch.randn(2, 3, 16, 16))).all()


def test_quantize_cli_pipeline_and_errors(capsys, trained, tmp_path: Path) -> None:
    _, _, ckpt, fp32 = trained
    out = tmp_path / "m.int8.onnx"
    code = main(["quantize", str(ckpt), "--data", DATA, "--per-tensor", "--equalize",
                 "--bias-correction", "--qat-epochs", "1", "--calib-samples", "64",
                 "--max-acc-drop", "100", "--out", str(out), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["steps"] == ["equalize", "bias_correction", "qat", "ptq"]
    assert res["int8_ops"] and res["size_int8"] < res["size_fp32"]
    # an .onnx source: PTQ only
    code = main(["quantize", str(fp32), "--data", DATA, "--out", str(tmp_path / "o.onnx")])
    assert code == 0
    capsys.readouterr()
    for args in (["quantize", str(fp32), "--data", DATA, "--equalize", "--out",
                  str(tmp_path / "e.onnx")],
                 ["quantize", str(ckpt), "--data", DATA, "--out", str(out)],  # exists
                 ["quantize", str(ckpt), "--data", "digits", "--out", str(tmp_path / "d.onnx")],
                 ["quantize", str(tmp_path / "none.safetensors"), "--data", DATA]):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("slimkit: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "e.onnx").exists() and not (tmp_path / "d.onnx").exists()


def test_activation_type_choice(tmp_path: Path) -> None:
    """uint8 activations on x86 (ONNX Runtime's fast u8 x s8 kernels), with 7-bit weights
    where the CPU lacks VNNI; explicit choices are honoured and bad ones refused."""
    import platform

    from slimkit.compress.quantization.ptq import default_activation_type

    act, saturates = default_activation_type()
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert act == "uint8"
        vnni = {"avx512_vnni", "avx_vnni"} & set(cpu_info()["isa"])
        assert saturates == (not vnni)
    else:
        assert (act, saturates) == ("int8", False)
    model = create_model("resnet20", num_classes=4, small_input=True).eval()
    fp32 = export_onnx(model, torch.randn(1, 3, 16, 16), tmp_path / "m.onnx").path
    calib = [np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)]
    for choice, onnx_type in (("int8", onnx.TensorProto.INT8), ("uint8", onnx.TensorProto.UINT8)):
        res = quantize_onnx(fp32, tmp_path / f"{choice}.onnx", calib, activations=choice)
        assert res.activations == choice and res.int8_ops
        proto = onnx.load(str(res.path))
        zero_points = {i.name: i.data_type for i in proto.graph.initializer}
        act_zp = [zero_points[n.input[2]] for n in proto.graph.node
                  if n.op_type == "QuantizeLinear" and n.input[0] == "input"]
        assert act_zp == [onnx_type]  # the input's activation quantizer has that type
    assert quantize_onnx(fp32, tmp_path / "a.onnx", calib).activations == act
    with pytest.raises(InvalidArgumentError, match="--activations"):
        quantize_onnx(fp32, tmp_path / "b.onnx", calib, activations="int4")


@pytest.mark.parametrize("reduce_range", [False, True])
def test_qat_trains_on_the_weight_grid_onnx_runtime_deploys(tmp_path: Path,
                                                           reduce_range: bool) -> None:
    """QAT's fake-quantized weights equal what ORT's quantizer stores (int8, or its reduced
    [-64, 64] range used on x86 without VNNI), per channel and per tensor."""
    from onnx import numpy_helper

    from slimkit.compress.quantization.qat import _weight_fake_quant

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    calib = [np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)]
    fp32 = export_onnx(model, torch.zeros(1, 3, 8, 8), tmp_path / "m.onnx").path
    for per_channel in (True, False):
        wrapper = prepare_qat(model, per_channel=per_channel, reduce_range=reduce_range)[0]
        assert wrapper.qmax == (64 if reduce_range else 127)
        fake = _weight_fake_quant(wrapper.layer.weight, per_channel, wrapper.qmax).detach()
        q = quantize_onnx(fp32, tmp_path / f"m{per_channel}.int8.onnx", calib,
                          per_channel=per_channel, reduce_range=reduce_range,
                          activations="uint8").path
        graph = onnx.load(str(q)).graph
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        deq = next(n for n in graph.node if n.op_type == "DequantizeLinear"
                   and inits.get(n.input[0]) is not None and inits[n.input[0]].shape == (8, 3, 3, 3))
        w_int, scale = inits[deq.input[0]].astype(np.float32), inits[deq.input[1]]
        stored = w_int * (scale.reshape(-1, 1, 1, 1) if scale.ndim else scale)
        assert np.abs(w_int).max() <= wrapper.qmax
        np.testing.assert_allclose(fake.numpy(), stored, rtol=0, atol=1e-6)
        # the grid is real: with reduce_range no weight level exceeds 64
        assert np.abs(fake.numpy() / (scale.reshape(-1, 1, 1, 1) if scale.ndim else scale)
                      ).max() <= wrapper.qmax + 1e-3
