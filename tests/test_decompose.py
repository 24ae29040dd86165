"""Low-rank decomposition: full-rank parity, costs that fall with the rank, monotone energy,
MAC targets, user errors, rebuilding a decomposed model from its records, export."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.utils.prune
from torch import nn

from slimkit.analysis.latency import torch_threads
from slimkit.analysis.profile import count_macs, count_params
from slimkit.compress.decompose import (
    apply_decomposition,
    decompose,
    decompose_layer,
    restructure_from_state_dict,
)
from slimkit.errors import FileFormatError, InvalidArgumentError, UnsupportedModuleError
from slimkit.models import create_model

X = torch.randn(2, 3, 32, 32)


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


class UserNet(nn.Module):
    """A user model covering the layer variants: strided, dilated, non-square, 'same' and
    reflect-padded kxk convs, 1x1 convs with stride, a depthwise conv, Linear on tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.strided = nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(24)
        self.dilated = nn.Conv2d(24, 24, (3, 5), padding=(2, 4), dilation=(2, 2))
        self.same = nn.Conv2d(24, 20, 3, padding="same", padding_mode="reflect")
        self.depthwise = nn.Conv2d(20, 20, 3, padding=1, groups=20)
        self.point = nn.Conv2d(20, 32, 1, stride=2)
        self.tokens = nn.Linear(32, 48)
        self.head = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.strided(torch.relu(self.stem(x)))))
        x = torch.relu(self.same(torch.relu(self.dilated(x))))
        x = self.point(self.depthwise(x))
        t = torch.relu(self.tokens(x.flatten(2).transpose(1, 2)))  # (N, HW, 48)
        return self.head(t.mean(1))


def _resnet20() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    # BN statistics away from identity, so parity covers the whole network's function
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def _close(a: nn.Module, b: nn.Module, x: torch.Tensor, tol: float = 1e-5) -> None:
    with torch.no_grad():
        ya, yb = a.eval()(x), b.eval()(x)
    assert float((ya - yb).abs().max()) <= tol * max(1.0, float(ya.abs().max()))


# -- parity at full rank -----------------------------------------------------------------


@pytest.mark.parametrize("criterion", [{"rank_ratio": 1.0}, {"energy": 1.0}])
def test_full_rank_reproduces_a_user_model(criterion) -> None:
    torch.manual_seed(0)
    model = UserNet().eval()
    res = decompose(model, **criterion, example_inputs=X, only_if_cheaper=False,
                    min_channels=1)
    kinds = {d.name: d.kind for d in res.layers}
    assert kinds == {"stem": "tucker2", "strided": "tucker2", "dilated": "tucker2",
                     "same": "tucker2", "point": "svd", "tokens": "svd", "head": "svd"}
    assert res.skipped == {"depthwise": "grouped convolution (groups=20)"}
    assert all(d.rel_error < 1e-12 for d in res.layers)
    assert all(d.ranks == d.full_ranks for d in res.layers)
    assert all(e == pytest.approx(1.0) for d in res.layers for e in d.energy)
    _close(model, res.model, torch.randn(3, 3, 32, 32))
    # every replacement is plain Conv2d/Linear layers in a plain Sequential
    for d in res.layers:
        seq = res.model.get_submodule(d.name)
        assert type(seq) is nn.Sequential
        assert all(type(m) in (nn.Conv2d, nn.Linear) for m in seq)
    # the original is untouched (not inplace)
    assert isinstance(model.stem, nn.Conv2d)


def test_full_rank_reproduces_a_zoo_model() -> None:
    model = _resnet20()
    res = decompose(model, energy=1.0, example_inputs=X, only_if_cheaper=False)
    assert len(res.layers) == 21  # 18 3x3 convs, 2 downsample 1x1 convs, the classifier
    assert res.skipped == {"stem.0.conv": "fewer than min_channels=8 input or output channels"}
    _close(model, res.model, torch.randn(3, 3, 32, 32))
    # in training mode too (BN uses batch statistics: a stricter test of the conv outputs)
    model.train(), res.model.train()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(res.model(x), model(x), rtol=1e-4, atol=1e-5)


def test_cp_reproduces_a_conv_of_low_cp_rank() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 20, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    factors = [torch.randn(d, 4) for d in conv.weight.shape]
    with torch.no_grad():
        conv.weight.copy_(torch.einsum("or,cr,ir,jr->ocij", *factors))
    seq = decompose_layer(conv, 4, "cp")
    assert [tuple(m.weight.shape) for m in seq] == [(4, 12, 1, 1), (4, 1, 3, 1), (4, 1, 1, 5),
                                                   (20, 4, 1, 1)]
    x = torch.randn(2, 12, 15, 17)
    with torch.no_grad():
        torch.testing.assert_close(seq(x), conv(x), rtol=1e-4, atol=1e-4)


def test_cp_on_a_zoo_model_cuts_macs_and_records_its_error() -> None:
    model = _resnet20()
    res = decompose(model, rank_ratio=0.25, method="cp", example_inputs=X)
    cp = [d for d in res.layers if d.kind == "cp"]
    assert len(cp) == 18 and all(len(d.ranks) == 1 for d in cp)
    assert all(0 < d.rel_error < 1 for d in cp)  # an approximation (random weights)
    assert res.macs_after < 0.3 * res.macs_before
    assert res.macs_after == count_macs(res.model.eval(), X)
    with torch.no_grad():
        assert bool(torch.isfinite(res.model(X)).all())


# -- costs -------------------------------------------------------------------------------


def test_costs_fall_with_the_rank_and_are_measured_exactly() -> None:
    model = _resnet20()
    res = decompose(model, rank_ratio=0.25, example_inputs=X)
    assert res.macs_before == count_macs(model, X) == 2 * 40_813_184
    assert res.params_before == count_params(model) == 272_474
    assert res.macs_after == count_macs(res.model.eval(), X)
    assert res.params_after == count_params(res.model)
    assert res.macs_after < 0.3 * res.macs_before and res.params_after < 0.3 * res.params_before
    # per-layer MACs and params add up to the measured totals
    assert res.macs_before - res.macs_after == sum(d.macs_before - d.macs_after
                                                   for d in res.layers)
    assert res.params_before - res.params_after == sum(d.params_before - d.params_after
                                                       for d in res.layers)
    for d in res.layers:
        assert count_params(res.model.get_submodule(d.name)) == d.params_after
        assert d.macs_after < d.macs_before
    conv = next(d for d in res.layers if d.name == "stages.1.0.conv2.conv")  # 32 -> 32, 3x3
    assert conv.ranks == (8, 8) and conv.full_ranks == (32, 32)
    # macs without an example input: params decide, MACs are None
    res2 = decompose(model, rank_ratio=0.25)
    assert res2.macs_before is None and res2.layers[0].macs_before is None
    assert [d.ranks for d in res2.layers] == [d.ranks for d in res.layers]


def test_layers_that_would_not_get_cheaper_are_kept_and_reported() -> None:
    model = _resnet20()
    res = decompose(model, rank_ratio=0.9, example_inputs=X)
    assert res.layers == [] and res.macs_after == res.macs_before
    assert len(res.skipped) == 22
    assert "not cheaper" in res.skipped["stages.0.0.conv1.conv"]
    assert "MACs" in res.skipped["stages.0.0.conv1.conv"]
    assert not hasattr(res.model, "slimkit_decomposition")


def test_energy_is_monotone() -> None:
    model = _resnet20()
    levels = [0.3, 0.5, 0.7, 0.9, 0.99]
    runs = [decompose(model, energy=e, example_inputs=X, only_if_cheaper=False)
            for e in levels]
    for lo, hi in itertools.pairwise(runs):
        for a, b in zip(lo.layers, hi.layers):
            assert a.name == b.name
            assert all(ra <= rb for ra, rb in zip(a.ranks, b.ranks))
            assert all(ea <= eb + 1e-12 for ea, eb in zip(a.energy, b.energy))
            assert b.rel_error <= a.rel_error + 1e-12
        assert lo.macs_after <= hi.macs_after and lo.params_after <= hi.params_after
    for res, e in zip(runs, levels):  # each mode keeps at least the energy asked for
        assert all(k >= e - 1e-12 for d in res.layers for k in d.energy)
    # with the default only_if_cheaper the model's MACs are monotone too
    macs = [decompose(model, energy=e, example_inputs=X).macs_after for e in levels]
    assert macs == sorted(macs) and macs[0] < 0.5 * macs[-1]


@pytest.mark.parametrize("target", [0.3, 0.5, 0.8])
def test_target_macs_is_reached_within_5_percent(target: float) -> None:
    model = _resnet20()
    res = decompose(model, target_macs=target, example_inputs=(1, 3, 32, 32))
    ratio = res.macs_after / res.macs_before
    assert ratio <= target + 1e-9 and ratio >= 0.95 * target
    assert res.macs_after == count_macs(res.model.eval(), torch.zeros(1, 3, 32, 32))
    assert 0 < res.energy_level < 1 and res.criterion == {"target_macs": target}


def test_layers_filter_ranks_override_shared_modules_and_repeated_decomposition() -> None:
    model = _resnet20()
    res = decompose(model, rank_ratio=0.25, layers=["stages.2"],
                    ranks={"classifier": 4, "stages.0.0.conv1.conv": (3, 5)}, example_inputs=X)
    names = [d.name for d in res.layers]
    assert names[0] == "stages.0.0.conv1.conv" and res.layers[0].ranks == (3, 5)
    assert names[-1] == "classifier" and res.layers[-1].ranks == (4,)
    assert all(n.startswith("stages.2.") for n in names[1:-1]) and len(names) == 9
    assert res.criterion["ranks"] == {"classifier": 4, "stages.0.0.conv1.conv": [3, 5]}
    # explicit ranks alone: only those layers
    only = decompose(model, ranks={"classifier": 2})
    assert [d.name for d in only.layers] == ["classifier"]
    # a second pass leaves the factors of the first alone
    again = decompose(res.model, rank_ratio=0.25, example_inputs=X)
    assert "stages.2.0.conv1.conv.1" in again.skipped
    assert all(not d.name.startswith("stages.2.") for d in again.layers)
    assert [r["name"] for r in again.model.slimkit_decomposition] == \
        names + [d.name for d in again.layers]

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(16, 16)
            self.b = self.a  # one module under two names, called twice

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    shared = Shared()
    out = decompose(shared, energy=1.0, only_if_cheaper=False, example_inputs=(4, 16))
    assert out.model.a is out.model.b and isinstance(out.model.a, nn.Sequential)
    assert out.layers[0].macs_before == 2 * 4 * 16 * 16  # both calls counted
    _close(shared, out.model, torch.randn(5, 16))


# -- user errors -------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"rank_ratio": 0.0}, "rank_ratio must be in \\(0, 1\\]"),
    ({"rank_ratio": 1.5}, "rank_ratio must be in"),
    ({"rank_ratio": True}, "rank_ratio must be in"),
    ({"energy": -0.1}, "energy must be in"),
    ({"energy": "0.9"}, "energy must be in"),
    ({"target_macs": 0.5, "example_inputs": X, "energy": 0.5}, "give one of"),
    ({}, "give one of rank_ratio, energy or target_macs"),
    ({"target_macs": 0.5}, "target_macs needs example_inputs"),
    ({"target_macs": 1e-6, "example_inputs": X}, "cannot be reached"),
    ({"energy": 0.9, "method": "svd"}, "method must be one of"),
    ({"energy": 0.9, "min_channels": 0}, "min_channels must be"),
    ({"energy": 0.9, "layers": ["stages.9"]}, "layers names no module 'stages.9'"),
    ({"energy": 0.9, "example_inputs": (1, 5, 32, 32)}, "cannot run on example_inputs"),
    ({"energy": 0.9, "example_inputs": "1x3x32x32"}, "example_inputs must be"),
    ({"ranks": {"classifier": 11}}, "'classifier'.*allows: 1..10"),
    ({"ranks": {"stages.0.0.conv1.conv": (17, 4)}}, "'stages.0.0.conv1.conv'.*1..16/16"),
    ({"ranks": {"stages.0.0.conv1.conv": 0}}, "outside what layer"),
    ({"ranks": {"classifier": (2, 2)}}, "must be one int"),
    ({"ranks": {"clasifier": 2}}, "no module 'clasifier'.*Did you mean: classifier"),
])
def test_bad_arguments_raise_one_line_errors(kwargs, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match) as exc:
        decompose(_resnet20(), **kwargs)
    _one_line(exc)


def test_layers_that_cannot_be_decomposed_raise_when_named_in_ranks() -> None:
    with pytest.raises(UnsupportedModuleError, match="'depthwise'.*grouped") as exc:
        decompose(UserNet(), ranks={"depthwise": 2})
    _one_line(exc)
    with pytest.raises(UnsupportedModuleError, match="only nn.Linear and nn.Conv2d"):
        decompose_layer(nn.Conv1d(8, 8, 3), 2)
    model = UserNet()
    torch.nn.utils.prune.l1_unstructured(model.head, "weight", 0.5)
    with pytest.raises(UnsupportedModuleError, match="reparametrised"):
        decompose(model, energy=0.9)


# -- saving and loading ------------------------------------------------------------------


def test_restructure_rebuilds_a_decomposed_zoo_model_from_its_records(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    res = decompose(_resnet20(), energy=0.7, example_inputs=X)
    assert res.model.slimkit_decomposition == res.records
    # what a checkpoint would hold: tensors + JSON records in the header
    save_file({k: v.contiguous() for k, v in res.model.state_dict().items()},
              str(tmp_path / "m.safetensors"),
              metadata={"decomposition": json.dumps(res.records)})
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        records = json.loads(f.metadata()["decomposition"])
    fresh = create_model("resnet20", num_classes=10)
    restructure_from_state_dict(fresh, load_file(str(tmp_path / "m.safetensors")), records)
    _close(res.model, fresh, torch.randn(2, 3, 32, 32), tol=0)
    assert fresh.slimkit_decomposition == records
    # weights of another decomposition do not fit: a clear error listing keys
    other = decompose(_resnet20(), energy=0.5, example_inputs=X)
    with pytest.raises(FileFormatError, match="shape mismatch") as exc:
        restructure_from_state_dict(create_model("resnet20", num_classes=10),
                                    other.model.state_dict(), records)
    _one_line(exc)


def test_records_reload_after_structured_pruning_of_the_factors() -> None:
    """The load path the checkpoint needs: fresh build -> apply_decomposition ->
    apply_structure (the pruned factors) -> load the weights."""
    from slimkit.compress.pruning import prune
    from slimkit.train.checkpoint import apply_structure, module_structure

    dec = decompose(_resnet20(), energy=0.7, example_inputs=X)
    pruned = prune(dec.model, X, target_macs=0.7).model.eval()
    records = pruned.slimkit_decomposition
    reference = apply_decomposition(create_model("resnet20", num_classes=10), records)
    structure = module_structure(pruned, reference)
    assert structure and any(".conv1.conv." in k for k in structure)
    fresh = apply_decomposition(create_model("resnet20", num_classes=10), records)
    apply_structure(fresh, structure)
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    _close(pruned, fresh, torch.randn(2, 3, 32, 32), tol=0)


@pytest.mark.parametrize("record, match", [
    ({"name": "nope", "kind": "svd", "layer": {"type": "Linear", "in_features": 2,
                                              "out_features": 2, "bias": True},
      "ranks": [1]}, "does not have"),
    ({"name": "classifier", "kind": "magic", "layer": {"type": "Linear"}, "ranks": [1]},
     "malformed"),
    ({"name": "classifier"}, "malformed"),
])
def test_bad_records_raise_file_format_errors(record, match) -> None:
    with pytest.raises(FileFormatError, match=match) as exc:
        apply_decomposition(create_model("resnet20", num_classes=10), [record])
    _one_line(exc)


# -- deployment --------------------------------------------------------------------------


def test_a_decomposed_zoo_model_exports_to_onnx(tmp_path: Path) -> None:
    from slimkit.deploy import export_onnx

    res = decompose(_resnet20(), energy=0.7, example_inputs=X)
    out = export_onnx(res.model, torch.zeros(1, 3, 32, 32), tmp_path / "m.onnx",
                      exporter="legacy")
    assert out.rel_err < 1e-4 and out.path.exists()
    assert math.isfinite(out.max_abs_err)
