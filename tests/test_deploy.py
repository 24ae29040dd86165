"""ONNX export with parity, BN folding, the latency harness across runtimes, bench CLI."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from slimkit.cli.main import main
from slimkit.compress.fuse import fold_batchnorm
from slimkit.compress.pruning import prune
from slimkit.deploy import ExportError, export_onnx, ort_session, read_onnx_metadata
from slimkit.errors import FileFormatError
from slimkit.models import create_model, list_models

# The dynamo exporter takes 10-20 s per model, so exports are spread over the two jobs: the
# main suite exports one plain model per family; the slow job exports every zoo model pruned
# (uneven channel counts, and the same op set as the plain graph: pruning only resizes
# layers). torch.export of every plain model runs in test_models.
REPRESENTATIVE = ["mobilenet_v1_050", "mobilenet_v2_100", "mobilenet_v3_small_100",
                  "efficientnet_b0", "shufflenet_v2_x0_5", "ghostnet_050", "resnet20"]
X = torch.randn(1, 3, 32, 32)


def _export_and_check(name: str, tmp_path: Path, pruned: bool) -> None:
    model = create_model(name, num_classes=10, small_input=True).eval()
    if pruned:
        # one pruning pass (a MAC target bisects over several; test_prune_* cover that)
        model = prune(model, X, ratio=0.5).model.eval()
    result = export_onnx(model, X, tmp_path / f"{name}.onnx", optimize=False)
    assert result.rel_err < 1e-4 and result.parity_batch == 2
    session = ort_session(result.path)
    x = torch.randn(3, 3, 32, 32)  # the batch is dynamic
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]),
                                   model(x), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_export_parity(name: str, tmp_path: Path) -> None:
    _export_and_check(name, tmp_path, pruned=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_export_parity_whole_zoo_pruned(name: str, tmp_path: Path) -> None:
    _export_and_check(name, tmp_path, pruned=True)


def test_batchnorm_folding_keeps_the_function() -> None:
    for name in ("mobilenet_v2_100", "resnet18", "ghostnet_050"):
        model = create_model(name, num_classes=10, small_input=True).eval()
        for m in model.modules():  # non-trivial statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.data.uniform_(0.5, 1.5)
        result = fold_batchnorm(model)
        assert result.folded and not any(isinstance(m, nn.BatchNorm2d)
                                         for m in result.model.modules())
        with torch.no_grad():
            torch.testing.assert_close(result.model(X), model(X), rtol=1e-4, atol=1e-5)


def test_metadata_travels(tmp_path: Path) -> None:
    model = create_model("resnet20", num_classes=4).eval()
    export_onnx(model, X, tmp_path / "m.onnx", metadata={"class_names": list("abcd")},
                exporter="legacy")
    meta = read_onnx_metadata(tmp_path / "m.onnx")
    assert meta["class_names"] == list("abcd") and meta["input_size"] == [3, 32, 32]
    assert meta["arch"]["name"] == "resnet20" and meta["input_name"] == "input"


def test_failing_parity_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    class Noisy(nn.Module):  # random values: ONNX Runtime cannot reproduce PyTorch's
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return y + torch.rand_like(y)

    with pytest.raises(ExportError):
        export_onnx(Noisy(), X, tmp_path / "n.onnx", fold_bn=False, exporter="legacy")
    assert list(tmp_path.iterdir()) == []


def test_unexportable_model_names_the_op(tmp_path: Path) -> None:
    class Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.linalg.eigvals(x[0, 0]).real.sum()  # no ONNX equivalent

    with pytest.raises(ExportError, match="export failed"):
        export_onnx(Bad(), X, tmp_path / "b.onnx", fold_bn=False)
    assert not (tmp_path / "b.onnx").exists()


def test_invalid_onnx_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(FileFormatError):
        read_onnx_metadata(bad)
    with pytest.raises(FileFormatError):
        ort_session(bad)


def test_bench_cli_across_runtimes(capsys, tmp_path: Path) -> None:
    assert main(["export", "resnet20", "--out", str(tmp_path / "r.onnx"), "--exporter",
                 "legacy"]) == 0
    capsys.readouterr()
    code = main(["bench", "resnet20", str(tmp_path / "r.onnx"), "--runtime",
                 "torch,torch-channels_last,onnxruntime", "--runs", "3", "--warmup", "1",
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    runtimes = [(r["model"], r["runtime"]) for r in out["rows"]]
    assert runtimes == [("resnet20", "torch"), ("resnet20", "torch-channels_last"),
                        ("resnet20", "onnxruntime"), ("r.onnx", "onnxruntime")]
    assert out["rows"][0]["speedup_vs_first"] == 1.0 and out["threads"] == 2
    assert "onnx file runs only in onnxruntime" in " ".join(out["skipped"]).lower()
    assert out["machine"]["torch"] == torch.__version__


def test_bench_and_export_errors(capsys, tmp_path: Path) -> None:
    assert main(["bench", "resnet2"]) == 2
    assert main(["bench", "resnet20", "--runtime", "tensorrt"]) == 2
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"xx")
    assert main(["bench", str(bad)]) == 2
    out = tmp_path / "r.onnx"
    assert main(["export", "resnet20", "--out", str(out), "--exporter", "legacy"]) == 0
    assert main(["export", "resnet20", "--out", str(out)]) == 2  # exists
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("slimkit: error:") and "--force" in err
    assert onnx.load(str(out)).graph.node
