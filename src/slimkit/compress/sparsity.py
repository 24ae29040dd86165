"""Semi-structured N:M sparsity, weight clustering (weight sharing) and what they store.

N:M sparsity
------------
:func:`nm_sparsity` keeps, in every group of ``m`` consecutive weights along a layer's input
dimension, the ``n`` of largest magnitude and zeroes the rest (2:4 is the pattern of
NVIDIA's sparse tensor cores, 50 % sparsity with a fixed per-group budget). The input
dimension of a row is the weight flattened per output unit in PyTorch order: ``in_features``
for Linear, ``C/groups * kh * kw`` for convolutions (``C * k`` for Conv1d). For Linear and
1x1 convolutions this is exactly the hardware layout; for kxk convolutions accelerated
kernels group along ``C`` in NHWC order instead, so treat kxk results as a storage and
accuracy study. Rows whose length is not a multiple of ``m`` (depthwise 3x3: 9; the RGB
stem: 27) are skipped and reported, not padded: padding would invent weights the runtime
does not have. Masks are ``bool`` tensors keyed by parameter name (``True`` = kept), the
format of :mod:`slimkit.compress.pruning.unstructured`, so
:class:`~slimkit.compress.pruning.unstructured.MaskCallback` keeps the pattern during
fine-tuning and :func:`~slimkit.compress.pruning.unstructured.compressed_sizes` measures it.
Ties in magnitude go to the earlier position, so each group keeps exactly ``n`` entries
(those may already be zero: then the group has fewer than ``n`` non-zeros).

Clustering
----------
:func:`cluster_weights` is the weight-sharing step of Deep Compression (Han et al., ICLR
2016): per layer (or over all layers with ``per_layer=False``), 1-D k-means over the
weights with centroids initialised linearly between the minimum and maximum (the
initialisation the paper found best: it keeps the rare large weights), after which every
weight is replaced by its centroid. The result holds the float32 codebooks and the index
tensors (``uint8`` up to 256 clusters), and :func:`cluster_sizes` counts the exact bytes of
that encoding. Layers with exact zeros (pruned first, as Deep Compression does) keep them:
code 0 of their codebook is pinned to 0.0 and only the non-zero weights are clustered into
the other ``k - 1`` centroids, so sparsity and clustering compose.

:class:`ClusterCallback` keeps the weights on a codebook while :func:`slimkit.train.fit`
fine-tunes: after each optimizer step every weight is re-assigned to its nearest centroid,
each centroid becomes the mean of its members' updated values (empty clusters and the pinned
zero keep their value) and the weights are set to their centroids. We chose this over Deep
Compression's fixed assignments with summed gradients because it needs no custom backward,
works with any optimizer (momentum, AdamW, weight decay act on the weights as usual) and the
mean update is the sum update divided by the cluster size, so large clusters do not take
steps hundreds of times larger than small ones; since a weight only moves ``lr * update``
from its centroid per step, re-assignment changes few codes, so in practice it behaves like
the fixed-assignment scheme with a mean gradient.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from slimkit.compress.pruning.unstructured import (
    SparsityReport,
    _excluded_set,
    _prunable_modules,
    _state_tensors,
    _weight_of,
    compressed_sizes,
    sparsity_report,
)
from slimkit.errors import InvalidArgumentError, UnsupportedModuleError, suggest
from slimkit.train.callbacks import Callback

if TYPE_CHECKING:
    from slimkit.train.trainer import Trainer

__all__ = [
    "INITS",
    "ClusterCallback",
    "ClusterResult",
    "SparsityResult",
    "cluster_sizes",
    "cluster_weights",
    "nm_sparsity",
    "nm_violations",
    "storage_report",
]

#: Centroid initialisations of :func:`cluster_weights` (Han et al. 2016, section 3.1).
INITS = ("linear", "density", "random")


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low \
            or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InvalidArgumentError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def _targets(model: nn.Module, exclude: Sequence[str] | str
             ) -> tuple[list[tuple[str, str, nn.Parameter]], list[str]]:
    """``(module name, parameter name, weight)`` of the Conv/Linear layers not excluded (a
    weight shared by several layers once), and the excluded module names."""
    if isinstance(exclude, str):
        exclude = (exclude,)
    layers = _prunable_modules(model)
    if not layers:
        raise UnsupportedModuleError(
            f"{type(model).__name__} has no Conv1d/Conv2d/Linear layers")
    skip = _excluded_set(model, layers, exclude)
    out: list[tuple[str, str, nn.Parameter]] = []
    seen: set[int] = set()
    for name, m in layers:
        w = _weight_of(name, m)
        if name in skip or id(w) in seen:
            continue
        seen.add(id(w))
        if not bool(torch.isfinite(w.detach()).all()):
            raise InvalidArgumentError(f"{name}.weight has NaN/inf values; fix the model "
                                       "(or its training) first")
        out.append((name, f"{name}.weight" if name else "weight", w))
    return out, [n for n, _ in layers if n in skip]


# -- N:M sparsity ------------------------------------------------------------------------


@dataclass
class SparsityResult:
    """What :func:`nm_sparsity` did.

    Attributes:
        model: the sparse model (a deep copy unless ``inplace``), weights already zeroed.
        masks: parameter name -> ``bool`` mask (``True`` = kept) of each sparsified weight;
            pass them to :class:`~slimkit.compress.pruning.unstructured.MaskCallback`.
        n, m: the pattern (``n`` kept in every ``m``).
        skipped: parameter name -> reason, for weights left dense (row length not a
            multiple of ``m``).
        excluded: module names left dense on request (``exclude``).
        report: :func:`~slimkit.compress.pruning.unstructured.sparsity_report` of the model.
    """

    model: nn.Module
    masks: dict[str, torch.Tensor]
    n: int
    m: int
    skipped: dict[str, str]
    excluded: list[str]
    report: SparsityReport

    @property
    def sparsified_numel(self) -> int:
        """Weights in the N:M layers."""
        return sum(mask.numel() for mask in self.masks.values())

    def summary(self) -> dict[str, Any]:
        """JSON-ready record for lineage and reports (no model, no masks)."""
        return {"pattern": f"{self.n}:{self.m}", "n": self.n, "m": self.m,
                "sparsified_layers": list(self.masks), "sparsified_numel":
                self.sparsified_numel, "skipped": dict(self.skipped),
                "excluded": list(self.excluded), "report": self.report.to_dict()}


def _rows(w: torch.Tensor) -> torch.Tensor:
    """The weight as ``(units, inputs)`` in logical order (a copy for channels_last)."""
    return w.detach().reshape(w.shape[0], -1)


def _nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    groups = _rows(w).abs().reshape(-1, m)
    order = torch.argsort(groups, dim=1, descending=True, stable=True)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, order[:, :n], True)
    return keep.reshape(w.shape)


def nm_sparsity(model: nn.Module, n: int = 2, m: int = 4, *, exclude: Sequence[str] = (),
                inplace: bool = False) -> SparsityResult:
    """Zero all but the ``n`` largest-magnitude weights of every ``m`` consecutive ones.

    Args:
        model: any ``nn.Module``; the weights of its Conv1d/Conv2d/Linear layers are made
            N:M sparse along their input dimension (see the module docstring).
        n, m: keep ``n`` of every ``m`` (``1 <= n < m``); 2:4 is 50 %, 1:4 is 75 %.
        exclude: module names to keep dense (a container covers its subtree).
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        a :class:`SparsityResult`; fine-tune with ``MaskCallback(result.masks)``.

    Raises:
        InvalidArgumentError: bad ``n``/``m``, unknown ``exclude`` names, non-finite
            weights, or no weight whose rows are a multiple of ``m``.
    """
    m = _check_int("m", m, 2)
    n = _check_int("n", n, 1)
    if n >= m:
        raise InvalidArgumentError(f"n must be smaller than m (n:m keeps n of every m "
                                   f"weights), got {n}:{m}; e.g. 2:4")
    for name, layer in _prunable_modules(model):
        _weight_of(name, layer)  # before the copy: parametrised weights do not deep-copy
    if not inplace:
        model = copy.deepcopy(model)
    targets, excluded = _targets(model, exclude)
    masks: dict[str, torch.Tensor] = {}
    skipped: dict[str, str] = {}
    with torch.no_grad():
        for _, pname, w in targets:
            row = math.prod(w.shape[1:])
            if row % m:
                skipped[pname] = f"row length {row} is not a multiple of m={m}"
                continue
            keep = _nm_mask(w, n, m)
            w.masked_fill_(~keep, 0.0)
            masks[pname] = keep
    if not masks:
        raise InvalidArgumentError(
            f"no layer has an input dimension that is a multiple of m={m}; use a smaller m "
            "or fewer exclusions")
    return SparsityResult(model=model, masks=masks, n=n, m=m, skipped=skipped,
                          excluded=excluded, report=sparsity_report(model))


def nm_violations(model: nn.Module, n: int = 2, m: int = 4) -> dict[str, int]:
    """Groups of ``m`` with more than ``n`` non-zeros, per Conv/Linear weight whose rows
    are a multiple of ``m`` (0 everywhere: the model is N:M sparse). Check a fine-tuned or
    re-loaded model with it."""
    out: dict[str, int] = {}
    seen: set[int] = set()
    for name, layer in _prunable_modules(model):
        w = layer.weight
        if id(w) in seen or math.prod(w.shape[1:]) % m:
            continue
        seen.add(id(w))
        nonzero = (_rows(w) != 0).reshape(-1, m).sum(1)
        out[f"{name}.weight" if name else "weight"] = int((nonzero > n).sum())
    return out


# -- clustering --------------------------------------------------------------------------


def _nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid of each value of the 1-D ``x`` (ties: lower value)."""
    ordered, perm = torch.sort(centroids)
    mids = (ordered[1:] + ordered[:-1]) / 2
    return perm[torch.bucketize(x, mids)]


def _means(x: torch.Tensor, idx: torch.Tensor, centroids: torch.Tensor,
           pinned_zero: bool) -> torch.Tensor:
    k = centroids.numel()
    sums = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, idx, x)
    counts = torch.bincount(idx, minlength=k).to(x.dtype)
    new = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    if pinned_zero:
        new[0] = 0.0
    return new


def _init_centroids(x: torch.Tensor, k: int, init: str, gen: torch.Generator
                    ) -> torch.Tensor:
    if x.numel() == 0:
        return torch.zeros(k, dtype=x.dtype, device=x.device)
    if init == "linear":
        return torch.linspace(float(x.min()), float(x.max()), k, dtype=x.dtype,
                              device=x.device)
    if init == "density":  # equally spaced on the CDF: dense where the weights are
        q = torch.linspace(0, 1, k, dtype=x.dtype, device=x.device)
        sample = x if x.numel() <= 1 << 24 else x[:: math.ceil(x.numel() / (1 << 24))]
        return torch.quantile(sample, q)
    pick = torch.randperm(x.numel(), generator=gen)[:k].to(x.device)
    c = x[pick]
    if c.numel() < k:  # fewer weights than clusters
        c = torch.cat([c, c.new_zeros(k - c.numel())])
    return c


def _kmeans(x: torch.Tensor, k: int, iterations: int, init: str, gen: torch.Generator,
            pinned_zero: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D k-means of ``x`` (float64): ``(centroids (k,), index per value)``. With
    ``pinned_zero``, centroid 0 is 0.0, exact zeros map to it and the non-zeros are
    clustered into the other ``k - 1``."""
    if pinned_zero:
        nz = x[x != 0]
        free = _init_centroids(nz, k - 1, init, gen)
        c = torch.cat([free.new_zeros(1), free])
        data = nz
    else:
        c = _init_centroids(x, k, init, gen)
        data = x
    for _ in range(iterations):
        if data.numel() == 0:
            break
        idx = _nearest(data, c) if not pinned_zero else 1 + _nearest(data, c[1:])
        new = _means(data, idx, c, pinned_zero)
        if torch.equal(new, c):
            break
        c = new
    if pinned_zero:
        idx = torch.zeros(x.numel(), dtype=torch.long, device=x.device)
        mask = x != 0
        idx[mask] = 1 + _nearest(x[mask], c[1:])
    else:
        idx = _nearest(x, c)
    return c, idx


def _index_dtype(k: int) -> torch.dtype:
    return torch.uint8 if k <= 256 else torch.int16 if k <= 32767 else torch.int32


def _bits(k: int) -> int:
    """Bits per index of a ``k``-entry codebook (0 for one entry)."""
    return math.ceil(math.log2(k)) if k > 1 else 0


def _index_bytes(numel: int, k: int) -> int:
    return math.ceil(numel * _bits(k) / 8)


@dataclass
class ClusterResult:
    """What :func:`cluster_weights` did.

    Attributes:
        model: the clustered model (a deep copy unless ``inplace``): each clustered weight
            holds only its codebook's values.
        codebooks: parameter name -> float32 centroids ``(k,)``. With ``per_layer=False``
            every entry is the same tensor (one shared codebook).
        indices: parameter name -> index tensor of the weight's shape (``uint8`` for up to
            256 clusters), ``weight == codebooks[name][indices[name]]``.
        pinned_zero: parameter name -> whether code 0 is a pinned 0.0 (the weight had exact
            zeros, which are kept).
        n_clusters, per_layer, init, iterations, seed: the settings.
        skipped: parameter name -> reason, for weights left as they are.
        excluded: module names left as they are on request (``exclude``).
        rel_error: parameter name -> ``||W - W_clustered||_F / ||W||_F`` at clustering time.
    """

    model: nn.Module
    codebooks: dict[str, torch.Tensor]
    indices: dict[str, torch.Tensor]
    pinned_zero: dict[str, bool]
    n_clusters: int
    per_layer: bool
    init: str
    iterations: int
    seed: int
    skipped: dict[str, str] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    rel_error: dict[str, float] = field(default_factory=dict)

    def groups(self) -> list[list[str]]:
        """Parameter names sharing one codebook (one name per group when per layer)."""
        out: dict[int, list[str]] = {}
        for name, book in self.codebooks.items():
            out.setdefault(id(book), []).append(name)
        return list(out.values())

    @torch.no_grad()
    def sync(self, model: nn.Module | None = None) -> None:
        """Snap ``model``'s clustered weights (default ``self.model``) to their nearest
        centroid and refresh ``indices`` from them, e.g. after fine-tuning with EMA, whose
        averaged weights are loaded after the callbacks' last step. Centroids are kept."""
        model = self.model if model is None else model
        params = dict(model.named_parameters(remove_duplicate=False))
        for name, book in self.codebooks.items():
            w = params[name]
            idx = _nearest(w.detach().reshape(-1).to(book), book)
            self.indices[name] = idx.to(_index_dtype(book.numel())).reshape(w.shape)
            w.copy_(book[idx].reshape(w.shape).to(w.dtype))

    def summary(self) -> dict[str, Any]:
        """JSON-ready record for lineage and reports (no tensors)."""
        return {"n_clusters": self.n_clusters, "per_layer": self.per_layer,
                "init": self.init, "iterations": self.iterations, "seed": self.seed,
                "bits": _bits(self.n_clusters), "clustered_layers": list(self.codebooks),
                "pinned_zero": [k for k, v in self.pinned_zero.items() if v],
                "skipped": dict(self.skipped), "excluded": list(self.excluded),
                "rel_error": dict(self.rel_error)}


def cluster_weights(
    model: nn.Module,
    n_clusters: int = 16,
    *,
    exclude: Sequence[str] = (),
    per_layer: bool = True,
    iterations: int = 20,
    seed: int = 0,
    init: Literal["linear", "density", "random"] = "linear",
    inplace: bool = False,
) -> ClusterResult:
    """Share weights: k-means each Conv/Linear weight and replace weights by centroids.

    Args:
        model: any ``nn.Module``; the weights of its Conv1d/Conv2d/Linear layers are
            clustered (biases, norms and buffers stay as they are).
        n_clusters: codebook entries ``k`` per layer (2..65536; up to 256 gives ``uint8``
            indices, ``ceil(log2(k))`` bits each when packed). Weights with no more values
            than ``k`` are skipped (they are exact already).
        exclude: module names to leave as they are (a container covers its subtree).
        per_layer: one codebook per layer (default); False shares one over all layers.
        iterations: k-means iterations at most (it stops when the centroids stop moving).
        seed: random generator seed of ``init="random"`` (the other inits are
            deterministic).
        init: ``linear`` (between min and max, Deep Compression's choice), ``density``
            (equally spaced quantiles) or ``random`` (Forgy: ``k`` random weights).
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        a :class:`ClusterResult`; measure it with :func:`cluster_sizes`, fine-tune with
        :class:`ClusterCallback`.

    Raises:
        InvalidArgumentError: bad ``n_clusters``/``iterations``/``init``, unknown
            ``exclude`` names, non-finite weights, or nothing to cluster.
    """
    k = _check_int("n_clusters", n_clusters, 2, 65536)
    iterations = _check_int("iterations", iterations, 0)
    seed = _check_int("seed", seed, 0)
    if init not in INITS:
        raise InvalidArgumentError(f"init must be one of {INITS}, got {init!r}."
                                   + suggest(str(init), INITS))
    for name, layer in _prunable_modules(model):
        _weight_of(name, layer)
    if not inplace:
        model = copy.deepcopy(model)
    targets, excluded = _targets(model, exclude)
    gen = torch.Generator().manual_seed(seed)
    skipped: dict[str, str] = {}
    chosen: list[tuple[str, nn.Parameter]] = []
    for _, pname, w in targets:
        if w.numel() <= k:
            skipped[pname] = f"{w.numel()} weights <= n_clusters={k}: already exact"
        else:
            chosen.append((pname, w))
    if not chosen:
        raise InvalidArgumentError(f"no weight has more than n_clusters={k} values; lower "
                                   "n_clusters or fewer exclusions")

    flats = {p: w.detach().reshape(-1).double() for p, w in chosen}
    codebooks: dict[str, torch.Tensor] = {}
    pinned: dict[str, bool] = {}
    indices: dict[str, torch.Tensor] = {}
    if per_layer:
        for pname, _ in chosen:
            x = flats[pname]
            zero = bool((x == 0).any())
            c, idx = _kmeans(x, k, iterations, init, gen, zero)
            codebooks[pname], pinned[pname], indices[pname] = c, zero, idx
    else:
        devices = {x.device for x in flats.values()}
        dev = next(iter(devices)) if len(devices) == 1 else torch.device("cpu")
        allx = torch.cat([x.to(dev) for x in flats.values()])
        zero = bool((allx == 0).any())
        c, idx = _kmeans(allx, k, iterations, init, gen, zero)
        for (pname, _), part in zip(chosen, idx.split([x.numel() for x in flats.values()])):
            codebooks[pname], pinned[pname], indices[pname] = c, zero, part
    shared: dict[int, torch.Tensor] = {}
    rel: dict[str, float] = {}
    result_books: dict[str, torch.Tensor] = {}
    result_idx: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for pname, w in chosen:
            c = codebooks[pname]
            book = shared.setdefault(id(c), c.to(torch.float32))
            # the weights take the float32 codebook values, so weight == book[index] exactly
            new = book.to(w.device)[indices[pname].to(w.device)].reshape(w.shape)
            x = flats[pname]
            norm = float(x.norm())
            rel[pname] = float((x - new.reshape(-1).double()).norm()) / norm if norm else 0.0
            w.copy_(new.to(w.dtype))
            result_books[pname] = book
            result_idx[pname] = indices[pname].to(_index_dtype(k)).reshape(w.shape)
    return ClusterResult(model=model, codebooks=result_books, indices=result_idx,
                         pinned_zero=pinned, n_clusters=k, per_layer=bool(per_layer),
                         init=init, iterations=iterations, seed=seed, skipped=skipped,
                         excluded=excluded, rel_error=rel)


class ClusterCallback(Callback):
    """Keeps the clustered weights on their codebooks while :func:`slimkit.train.fit`
    fine-tunes the model.

    After every optimizer step (and at the start and end of the run): each clustered
    weight is re-assigned to its nearest centroid, each centroid becomes the mean of its
    members' updated values (empty clusters and a pinned zero keep theirs; a shared
    codebook averages over all its layers) and the weights are set to their centroids. See
    the module docstring for why. ``result.codebooks`` and ``result.indices`` are updated in
    place, so after ``fit`` they describe the fine-tuned model and :func:`cluster_sizes`
    measures it. With EMA on, the EMA weights are snapped to the current codebook at each
    step too; ``fit`` loads them after the last step, so call ``result.sync()`` after it.
    Parameters are looked up by name on ``trainer.module`` (DDP-safe: every rank computes the
    same update from identical weights).

    Args:
        result: the :class:`ClusterResult` of the model being fine-tuned.
    """

    def __init__(self, result: ClusterResult) -> None:
        self.result = result
        self._module: nn.Module | None = None
        self._params: dict[str, nn.Parameter] = {}

    def _bind(self, trainer: Trainer) -> dict[str, nn.Parameter]:
        if trainer.module is not self._module:
            params = dict(trainer.module.named_parameters(remove_duplicate=False))
            missing = [n for n in self.result.codebooks if n not in params]
            if missing:
                raise InvalidArgumentError(
                    f"clustered weight {missing[0]!r} names no parameter of the model being "
                    "trained; pass the ClusterResult of this model." + suggest(missing[0],
                                                                               params))
            self._params = {n: params[n] for n in self.result.codebooks}
            self._module = trainer.module
        return self._params

    @torch.no_grad()
    def _snap(self, trainer: Trainer, refresh: bool) -> None:
        params = self._bind(trainer)
        ema = getattr(trainer, "ema", None)
        for names in self.result.groups():
            book = self.result.codebooks[names[0]]
            pinned = self.result.pinned_zero.get(names[0], False)
            flats = [params[n].detach().reshape(-1).to(book.device, torch.float32)
                     for n in names]
            x = torch.cat(flats) if len(flats) > 1 else flats[0]
            idx = _nearest(x, book)
            if refresh:
                book.copy_(_means(x, idx, book, pinned))
            for n, part in zip(names, idx.split([f.numel() for f in flats])):
                p = params[n]
                p.copy_(book[part].reshape(p.shape).to(p.device, p.dtype))
                self.result.indices[n] = part.to(_index_dtype(book.numel())).reshape(p.shape)
                if ema is not None and n in ema.shadow:
                    s = ema.shadow[n]
                    near = _nearest(s.reshape(-1).to(book.device, torch.float32), book)
                    s.copy_(book[near].reshape(s.shape).to(s.device, s.dtype))

    def on_fit_start(self, trainer: Trainer) -> None:
        self._snap(trainer, refresh=False)

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        self._snap(trainer, refresh=True)

    def on_fit_end(self, trainer: Trainer) -> None:
        self._snap(trainer, refresh=False)


# -- storage -----------------------------------------------------------------------------


def _pack(indices: torch.Tensor, bits: int) -> bytes:
    """``indices`` packed LSB-first at ``bits`` bits each: ``ceil(numel * bits / 8)`` bytes."""
    import numpy as np

    if bits == 0:
        return b""
    idx = indices.reshape(-1).to("cpu", torch.int64).numpy()
    planes = (idx[:, None] >> np.arange(bits)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def cluster_sizes(result: ClusterResult) -> dict[str, Any]:
    """Exact bytes of the clustered encoding of ``result.model``, and the dense baselines.

    Returns a dict:

    - ``codebook_bytes``: float32 centroids, 4 bytes each, every distinct codebook once.
    - ``index_bytes``: per clustered weight ``ceil(numel * bits / 8)`` with
      ``bits = ceil(log2(k))`` (packed indices: 4 bits for 16 clusters).
    - ``other_bytes``: every other state-dict tensor (non-clustered weights, biases, norms,
      buffers) at full size in its dtype; tied tensors once.
    - ``clustered_bytes``: the sum of the three: the payload of the clustered encoding
      (no file header), to compare with ``dense_bytes``.
    - ``dense_bytes``, ``safetensors_bytes``, ``zlib_bytes``, ``lzma_bytes``: the dense
      state dict's raw payload, its ``.safetensors`` file and that file compressed with
      zlib-9 / xz (:func:`~slimkit.compress.pruning.unstructured.compressed_sizes`; a
      clustered model's few distinct values already help zlib).
    - ``ratio_vs_dense`` / ``ratio_vs_zlib``: ``dense_bytes / clustered_bytes`` and
      ``zlib_bytes / clustered_bytes``.
    - ``clustered_zlib_bytes``: that encoding serialised (codebooks, packed indices, the
      other tensors' raw bytes) and compressed with zlib-9: the entropy-coding stage of
      Deep Compression, approximated by a general-purpose coder (unequal cluster sizes make
      the packed indices compressible).
    - ``bits``, ``clustered_numel``: index width of ``n_clusters`` and weights encoded.
    """
    import zlib

    model = result.model
    dense = compressed_sizes(model)
    params = dict(model.named_parameters(remove_duplicate=False))
    # a tensor tied to another (same memory, same shape) is stored once
    seen = {(params[n].data_ptr(), tuple(params[n].shape)) for n in result.codebooks
            if n in params}
    books: dict[int, torch.Tensor] = {id(b): b for b in result.codebooks.values()}
    codebook_bytes = sum(b.numel() * 4 for b in books.values())
    blob = [b.detach().to("cpu", torch.float32).numpy().tobytes() for b in books.values()]
    index_bytes = 0
    numel = 0
    for name, book in result.codebooks.items():
        n = result.indices[name].numel()
        numel += n
        index_bytes += _index_bytes(n, book.numel())
        blob.append(_pack(result.indices[name], _bits(book.numel())))
    other = 0
    for key, v in model.state_dict().items():
        if key in result.codebooks:
            continue
        ident = (v.data_ptr(), tuple(v.shape))
        if v.numel() and ident in seen:
            continue
        seen.add(ident)
        other += v.numel() * v.element_size()
        raw = v.detach().to("cpu").contiguous().reshape(-1)
        blob.append(raw.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    clustered = codebook_bytes + index_bytes + other
    serialised = b"".join(blob)
    assert len(serialised) == clustered  # the counted bytes are the serialised ones
    return {
        "codebook_bytes": codebook_bytes,
        "index_bytes": index_bytes,
        "other_bytes": other,
        "clustered_bytes": clustered,
        "dense_bytes": dense["payload_bytes"],
        "safetensors_bytes": dense["safetensors_bytes"],
        "zlib_bytes": dense["zlib_bytes"],
        "lzma_bytes": dense["lzma_bytes"],
        "ratio_vs_dense": dense["payload_bytes"] / clustered if clustered else 0.0,
        "ratio_vs_zlib": dense["zlib_bytes"] / clustered if clustered else 0.0,
        "clustered_zlib_bytes": len(zlib.compress(serialised, 9)),
        "bits": _bits(result.n_clusters),
        "clustered_numel": numel,
    }


def storage_report(model: nn.Module, *, max_codebook: int = 256) -> dict[str, Any]:
    """Bytes to store ``model`` under each encoding slimkit measures, from its weights alone.

    Returns a dict:

    - ``dense_fp32_bytes``: raw payload of the state dict (fp32 for a float model).
    - ``safetensors_bytes``, ``zlib_bytes``, ``lzma_bytes``: the dense ``.safetensors``
      file, plain and compressed (zlib-9, xz).
    - ``bitmap_bytes``: Conv/Linear weights as a bitmap plus their non-zero values, the rest
      dense (:func:`~slimkit.compress.pruning.unstructured.compressed_sizes`).
    - ``codebook_bytes``: Conv/Linear weights as a float32 codebook of their distinct values
      plus packed ``ceil(log2(k))``-bit indices, the rest dense (the count of
      :func:`cluster_sizes`, from the values alone); ``None`` unless every such weight has at
      most ``max_codebook`` distinct values (a clustered model).
    - ``codebook_zlib_bytes``: that encoding serialised and compressed with zlib-9 (``None``
      with ``codebook_bytes``).
    - ``max_distinct_values``: the most distinct values of one Conv/Linear weight.
    - ``weight_numel``, ``weight_zeros``, ``sparsity``: Conv/Linear weights and exact zeros.
    - ``smallest``: the key of the smallest of the byte counts above except
      ``safetensors_bytes`` (the compressed files carry the safetensors header, the payload
      counts none: where a compressed file still wins, it wins).
    """
    import zlib

    sizes = compressed_sizes(model)
    tensors = _state_tensors(model)
    weight_keys = {f"{n}.weight" if n else "weight" for n, _ in _prunable_modules(model)}
    coded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key in weight_keys and v.numel():
            coded[key] = torch.unique(v, return_inverse=True)
    max_distinct = max((int(u.numel()) for u, _ in coded.values()), default=0)
    codebook_bytes = codebook_zlib = None
    if max_distinct <= max_codebook:
        blob: list[bytes] = []
        for key, v in tensors.items():
            if key in coded:
                values, inverse = coded[key]
                blob.append(values.to(torch.float32).numpy().tobytes())
                blob.append(_pack(inverse, _bits(values.numel())))
            elif v.numel():
                blob.append(v.reshape(-1).view(torch.uint8).numpy().tobytes())
        serialised = b"".join(blob)
        codebook_bytes = len(serialised)
        codebook_zlib = len(zlib.compress(serialised, 9))
    numel, zeros = sizes["weight_numel"], sizes["weight_zeros"]
    report: dict[str, Any] = {
        "dense_fp32_bytes": sizes["payload_bytes"],
        "safetensors_bytes": sizes["safetensors_bytes"],
        "zlib_bytes": sizes["zlib_bytes"],
        "lzma_bytes": sizes["lzma_bytes"],
        "bitmap_bytes": sizes["bitmap_bytes"],
        "codebook_bytes": codebook_bytes,
        "codebook_zlib_bytes": codebook_zlib,
        "max_distinct_values": max_distinct,
        "weight_numel": numel,
        "weight_zeros": zeros,
        "sparsity": zeros / numel if numel else 0.0,
    }
    candidates = {k: v for k, v in report.items() if k.endswith("_bytes")
                  and k != "safetensors_bytes" and v is not None}
    report["smallest"] = min(candidates, key=lambda k: candidates[k])
    return report
