"""N:M sparsity and weight clustering: exact patterns, codebooks and their byte counts,
constraints kept through fine-tuning, storage measured."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.utils.prune
from torch import nn

from slimkit.analysis.latency import torch_threads
from slimkit.compress.pruning.unstructured import (
    MaskCallback,
    compressed_sizes,
    prune_unstructured,
)
from slimkit.compress.sparsity import (
    ClusterCallback,
    cluster_sizes,
    cluster_weights,
    nm_sparsity,
    nm_violations,
    storage_report,
)
from slimkit.data import load_dataset
from slimkit.errors import InvalidArgumentError, UnsupportedModuleError
from slimkit.models import create_model
from slimkit.train import TrainConfig, fit

SHAPES = "shapes:n_train=128,n_test=64,size=16"


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def shapes():
    return load_dataset(SHAPES)


class UserNet(nn.Module):
    """Rows of 72 (conv 8x3x3), 40 (Conv1d 8x5), 64 and 32 (Linear); a depthwise conv (9)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.seq = nn.Conv1d(8, 8, 5, padding=2)
        self.hidden = nn.Linear(64, 32)
        self.out = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(self.dw(self.conv(x)).mean((2, 3)).repeat(1, 4)))


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return create_model("mobilenet_v2_035", num_classes=4, small_input=True)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def _groups(w: torch.Tensor, m: int) -> torch.Tensor:
    return w.detach().reshape(w.shape[0], -1).reshape(-1, m)


# -- N:M ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (2, 8), (4, 8), (1, 2)])
def test_nm_keeps_exactly_n_largest_in_every_group(n: int, m: int) -> None:
    torch.manual_seed(0)
    model = UserNet()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    res = nm_sparsity(model, n, m)
    assert set(res.masks) == {"conv.weight", "seq.weight", "hidden.weight", "out.weight"}
    assert res.skipped == {"dw.weight": f"row length 9 is not a multiple of m={m}"}
    params = dict(res.model.named_parameters())
    for k, mask in res.masks.items():
        w = params[k]
        assert mask.dtype == torch.bool and mask.shape == w.shape
        groups = _groups(w, m)
        assert bool(((groups != 0).sum(1) == n).all()), k  # random weights: exactly n
        # the kept ones are the largest of their group, unchanged
        orig = _groups(before[k], m).abs()
        keep = _groups(mask, m)
        kept_min = torch.where(keep, orig, torch.inf).min(1).values
        dropped_max = torch.where(~keep, orig, -torch.inf).max(1).values
        assert bool((kept_min >= dropped_max).all())
        assert torch.equal(w[mask], before[k][mask])
    assert torch.equal(params["dw.weight"], before["dw.weight"])
    assert all(v == 0 for v in nm_violations(res.model, n, m).values())
    assert nm_violations(model, n, m)["conv.weight"] > 0  # the input is untouched
    assert res.sparsified_numel * (1 - n / m) == res.report.total_zeros
    assert res.report.sparsity < 1 - n / m  # the depthwise weights stay dense
    assert res.summary()["pattern"] == f"{n}:{m}"


def test_nm_groups_with_zeros_already_keep_at_most_n_and_ties_go_first() -> None:
    lin = nn.Linear(8, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0, 0, 0, 5, 1, 1, 1, 1],
                                       [0, 0, 0, 0, -3, 2, -3, 0.5],
                                       [1, 1, 1, 1, 1, 1, 1, 1]]))
    res = nm_sparsity(nn.Sequential(lin), 2, 4)
    w = res.model[0].weight
    assert w.tolist() == [[0, 0, 0, 5, 1, 1, 0, 0],
                          [0, 0, 0, 0, -3, 0, -3, 0],
                          [1, 1, 0, 0, 1, 1, 0, 0]]
    nonzero = (_groups(w, 4) != 0).sum(1)
    assert bool((nonzero <= 2).all()) and nonzero.tolist() == [1, 2, 0, 2, 2, 2]


def test_nm_exclude_and_errors() -> None:
    res = nm_sparsity(UserNet(), exclude=["hidden"])
    assert "hidden.weight" not in res.masks and res.excluded == ["hidden"]
    for kwargs, match in [({"n": 4, "m": 4}, "n must be smaller than m"),
                          ({"n": 0, "m": 4}, "n must be an integer >= 1"),
                          ({"n": 1, "m": 1}, "m must be an integer >= 2"),
                          ({"n": 2.0, "m": 4}, "n must be an integer"),
                          ({"n": 1, "m": 1024}, "no layer has an input dimension"),
                          ({"exclude": ["nope"]}, "exclude names no module 'nope'")]:
        with pytest.raises(InvalidArgumentError, match=match) as exc:
            nm_sparsity(UserNet(), **kwargs)
        _one_line(exc)
    with pytest.raises(UnsupportedModuleError):
        nm_sparsity(nn.Sequential(nn.ReLU()))


def test_nm_pattern_survives_fine_tuning_with_the_mask_callback(shapes) -> None:
    res = nm_sparsity(_tiny(), 2, 4)
    assert len(res.masks) == 35 and all("conv_dw" in k or k == "stem.0.conv.weight"
                                        for k in res.skipped)
    before = {k: v.detach().clone() for k, v in res.model.named_parameters()}
    out = fit(res.model, shapes, TrainConfig(epochs=1, batch_size=32),
              callbacks=[MaskCallback(res.masks)], progress=False)
    assert all(v == 0 for v in nm_violations(out.model, 2, 4).values())
    params = dict(out.model.named_parameters())
    for k, mask in res.masks.items():
        assert bool((params[k][~mask] == 0).all())
        assert bool(((_groups(params[k], 4) != 0).sum(1) == 2).all())  # kept ones stay live
    assert any(not torch.equal(params[k], before[k]) for k in res.masks)


# -- clustering --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [4, 16, 256, 300])
def test_clustering_leaves_at_most_k_values_per_layer(k: int) -> None:
    model = _tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = cluster_weights(model, k)
    params = dict(res.model.named_parameters())
    dtype = torch.uint8 if k <= 256 else torch.int16
    assert res.codebooks.keys() == res.indices.keys()
    assert set(res.codebooks) | set(res.skipped) == {n for n in params if n.endswith("weight")
                                                     and params[n].ndim > 1}
    for name, book in res.codebooks.items():
        w = params[name]
        assert book.dtype == torch.float32 and book.shape == (k,)
        assert res.indices[name].dtype == dtype and res.indices[name].shape == w.shape
        assert torch.unique(w).numel() <= k
        assert torch.equal(w, book[res.indices[name].long()])  # exactly on the codebook
        lo, hi = float(before[name].min()), float(before[name].max())
        assert lo - 1e-6 <= float(book.min()) and float(book.max()) <= hi + 1e-6
    assert all(int(r.split()[0]) <= k for r in res.skipped.values())
    # not inplace; biases and norms untouched
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(torch.equal(params[n], before[n]) for n in params if n not in res.codebooks)


def test_kmeans_converges_to_the_means_of_its_clusters_and_error_falls_with_k() -> None:
    lin = nn.Linear(100, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.cat([torch.full((50,), -1.0), torch.full((30,), 2.0),
                                    torch.linspace(4.0, 4.2, 20)])[None])
    res = cluster_weights(nn.Sequential(lin), 3)
    assert sorted(res.codebooks["0.weight"].tolist()) == pytest.approx([-1.0, 2.0, 4.1])
    assert res.rel_error["0.weight"] < 0.02
    model = _tiny()
    errors = [sum(cluster_weights(model, k).rel_error.values()) for k in (4, 16)]
    assert errors == sorted(errors, reverse=True)
    res = cluster_weights(model, 16, init="random", seed=3)
    again = cluster_weights(model, 16, init="random", seed=3)
    assert all(torch.equal(res.codebooks[n], again.codebooks[n]) for n in res.codebooks)
    dens = cluster_weights(model, 16, init="density")
    assert all(torch.unique(p).numel() <= 16 for n, p in dens.model.named_parameters()
               if n in dens.codebooks)


def test_clustering_keeps_pruned_zeros_and_can_share_one_codebook() -> None:
    pruned = prune_unstructured(_tiny(), 0.7, scope="layer")
    res = cluster_weights(pruned.model, 16)
    params = dict(res.model.named_parameters())
    for name, mask in pruned.masks.items():
        assert res.pinned_zero[name] and float(res.codebooks[name][0]) == 0.0
        assert torch.equal(params[name] != 0, mask)  # the sparsity pattern is unchanged
    shared = cluster_weights(_tiny(), 16, per_layer=False)
    assert len(shared.groups()) == 1 and len({id(b) for b in shared.codebooks.values()}) == 1
    values = torch.cat([p.detach().reshape(-1) for n, p in shared.model.named_parameters()
                        if n in shared.codebooks])
    assert torch.unique(values).numel() <= 16
    assert cluster_sizes(shared)["codebook_bytes"] == 16 * 4


@pytest.mark.parametrize("kwargs, match", [
    ({"n_clusters": 1}, "n_clusters must be an integer in \\[2, 65536\\]"),
    ({"n_clusters": 70000}, "n_clusters must be"),
    ({"n_clusters": 16.0}, "n_clusters must be"),
    ({"iterations": -1}, "iterations must be"),
    ({"init": "kmeans++"}, "init must be one of"),
    ({"exclude": ["nope"]}, "exclude names no module"),
    ({"n_clusters": 10_000}, "no weight has more than n_clusters=10000 values"),
])
def test_clustering_errors(kwargs, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match) as exc:
        cluster_weights(UserNet(), **kwargs)
    _one_line(exc)


@pytest.mark.parametrize("k", [16, 5])
def test_cluster_sizes_follow_the_codebook_formula(k: int) -> None:
    model = UserNet() if k == 5 else _tiny()  # the zoo model once: lzma takes a second
    res = cluster_weights(model, k)
    sizes = cluster_sizes(res)
    bits = math.ceil(math.log2(k))
    assert sizes["bits"] == bits
    numel = {n: res.indices[n].numel() for n in res.codebooks}
    assert sizes["codebook_bytes"] == 4 * k * len(res.codebooks)
    assert sizes["index_bytes"] == sum(math.ceil(v * bits / 8) for v in numel.values())
    other = sum(v.numel() * v.element_size() for n, v in res.model.state_dict().items()
                if n not in res.codebooks)
    assert sizes["other_bytes"] == other
    assert sizes["clustered_bytes"] == (sizes["codebook_bytes"] + sizes["index_bytes"]
                                        + other)
    dense = compressed_sizes(res.model)
    assert sizes["dense_bytes"] == dense["payload_bytes"]
    assert sizes["zlib_bytes"] == dense["zlib_bytes"]
    assert sizes["ratio_vs_dense"] == dense["payload_bytes"] / sizes["clustered_bytes"]
    assert sizes["clustered_zlib_bytes"] < sizes["clustered_bytes"]
    assert sizes["clustered_bytes"] < dense["payload_bytes"] / (4 if k == 16 else 3)
    # the memory format (training converts to channels_last) changes nothing
    res.model.to(memory_format=torch.channels_last)
    again = cluster_sizes(res)
    assert {k: again[k] for k in ("index_bytes", "other_bytes", "clustered_bytes")} == \
        {k: sizes[k] for k in ("index_bytes", "other_bytes", "clustered_bytes")}


def test_storage_report_combines_the_encodings() -> None:
    model = _tiny()
    dense = storage_report(model)
    assert dense["codebook_bytes"] is None and dense["codebook_zlib_bytes"] is None
    assert dense["smallest"] == "lzma_bytes"
    assert dense["max_distinct_values"] > 256 and dense["sparsity"] == 0.0
    assert dense["bitmap_bytes"] > dense["dense_fp32_bytes"]  # the bitmap costs 1/32 more
    res = cluster_weights(prune_unstructured(model, 0.8, scope="layer").model, 16)
    report = storage_report(res.model)
    assert report["max_distinct_values"] <= 16 and report["sparsity"] > 0.7
    assert report["codebook_bytes"] <= cluster_sizes(res)["clustered_bytes"]
    assert report["bitmap_bytes"] < dense["dense_fp32_bytes"] / 3
    assert report["codebook_zlib_bytes"] < report["lzma_bytes"] < report["codebook_bytes"]
    assert report["smallest"] == "codebook_zlib_bytes"
    assert report["zlib_bytes"] < dense["zlib_bytes"] / 4


def test_cluster_callback_keeps_weights_on_their_codebooks(shapes) -> None:
    cfg = TrainConfig(epochs=1, batch_size=32)
    res = cluster_weights(_tiny(), 16)  # negative control: without it training spreads them
    fit(res.model, shapes, cfg, progress=False)
    params = dict(res.model.named_parameters())
    assert all(torch.unique(params[n]).numel() > 16 for n in res.codebooks)
    res = cluster_weights(_tiny(), 16)
    books = {n: b.clone() for n, b in res.codebooks.items()}
    fit(res.model, shapes, cfg, callbacks=[ClusterCallback(res)], progress=False)
    params = dict(res.model.named_parameters())
    for name, book in res.codebooks.items():
        assert torch.unique(params[name]).numel() <= 16
        assert torch.equal(params[name], book[res.indices[name].long()])
    assert any(not torch.equal(books[n], res.codebooks[n]) for n in books)  # centroids learn
    sizes = cluster_sizes(res)
    assert sizes["index_bytes"] == sum(math.ceil(i.numel() * 4 / 8)
                                       for i in res.indices.values())
    assert sizes["clustered_bytes"] < sizes["dense_bytes"] / 4  # channels_last after fit


def test_cluster_callback_with_ema_and_a_shared_codebook(shapes) -> None:
    res = cluster_weights(_tiny(), 8, per_layer=False)
    out = fit(res.model, shapes, TrainConfig(epochs=1, batch_size=32, ema_decay=0.9),
              callbacks=[ClusterCallback(res)], progress=False)
    res.sync(out.model)
    book = next(iter(res.codebooks.values()))
    params = dict(out.model.named_parameters())
    values = torch.cat([params[n].detach().reshape(-1) for n in res.codebooks])
    assert torch.unique(values).numel() <= 8
    assert all(torch.equal(params[n], book[res.indices[n].long()]) for n in res.codebooks)
