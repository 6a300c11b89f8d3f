"""The SVD baseline: the same parameter count as a pruned model, spent on low-rank matrices.

For every site a mask prunes (one layer's FFN neurons or heads), the site's matrices - the in
projections (up/gate, or query/key/value) and the out projection - are replaced by their truncated
SVD, each as two smaller Linear layers (``x -> x V_r^T -> (U_r S_r) + bias``), at one rank ``r``
per site. ``r`` is the largest rank whose parameter count does not exceed what the pruned site
keeps::

    pruned(site) = d_out * k * w + b_out + sum_i k * w * chunks_i * (d_in_i + has_bias_i)
    svd(site, r) = sum_m r * (rows_m + cols_m) + sum_m bias_m
    r = floor((pruned(site) - sum_m bias_m) / sum_m (rows_m + cols_m))   (0 <= r <= min(rows, cols))

with ``k`` of ``n`` units kept, ``w`` the unit width (1 for a neuron, head size for a head), and
the biases kept whole (at rank 0 the in projections' biases go too: nothing reads them). The
pruned count is the one :func:`mtprune.pruning.count_parameters`
uses, so the SVD model has at most the pruned model's parameters, and fewer by less than
``sum_m (rows_m + cols_m)`` per site (under 0.4% of an FFN site of the default model). Sites the
mask leaves whole stay dense.

:func:`svd_compress` swaps the modules in place for the duration of a ``with`` block and restores
the originals in ``finally``; decompositions are cached per weight in an :class:`SVDCache`, so a
sweep over sparsities factorises each matrix once.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from mtprune.errors import MtpruneError
from mtprune.formats.base import prunable
from mtprune.layers import has_bias, set_module, weight_out_in
from mtprune.units import UnitSite


class LowRankLinear(nn.Module):
    """``y = up(down(x))``: a rank-``r`` stand-in for a Linear ``[out, in]``, bias on ``up``."""

    def __init__(self, down: nn.Linear, up: nn.Linear):
        super().__init__()
        self.down = down
        self.up = up

    @property
    def rank(self) -> int:
        return self.down.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The up factor: for model code that reads a layer's weight for its dtype or device
        (T5's FFN casts to ``wo.weight.dtype``); not the ``[out, in]`` product."""
        return self.up.weight

    def forward(self, x):
        return self.up(self.down(x))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass(frozen=True)
class Matrix:
    """One matrix of a site: its module path, ``[rows, cols]`` as out x in, bias length (0 if none)
    and the rows (of ``rows``) the site's kept units leave in the pruned model."""

    path: str
    rows: int
    cols: int
    bias: int
    pruned_params: int

    @property
    def dense_params(self) -> int:
        return self.rows * self.cols + self.bias

    def svd_params(self, rank: int) -> int:
        return rank * (self.rows + self.cols) + self.bias


@dataclass(frozen=True)
class SitePlan:
    site: UnitSite
    kept: int
    rank: int
    matrices: tuple[Matrix, ...]

    @property
    def dense_params(self) -> int:
        return sum(m.dense_params for m in self.matrices)

    @property
    def pruned_params(self) -> int:
        return sum(m.pruned_params for m in self.matrices)

    @property
    def svd_params(self) -> int:
        return sum(m.svd_params(min(self.rank, m.rows, m.cols)) if self._keeps_bias(m) else 0
                   for m in self.matrices)

    def _keeps_bias(self, m: Matrix) -> bool:
        """At rank 0 an in projection's bias is dead weight (the out projection ignores what it
        feeds), so it goes, as in the pruned model: the site computes its out bias alone."""
        return self.rank > 0 or m.path == self.site.out_proj


@dataclass
class SVDPlan:
    """What :func:`svd_compress` does to a model: the ranks per site and the parameter counts."""

    sites: list[SitePlan]
    model_params: int  # the dense model's parameters (heads included)

    @property
    def pruned_model_params(self) -> int:
        """Parameters of the model the mask would make (``count_parameters(adapter, mask)``)."""
        return self.model_params - sum(s.dense_params - s.pruned_params for s in self.sites)

    @property
    def svd_model_params(self) -> int:
        return self.model_params - sum(s.dense_params - s.svd_params for s in self.sites)

    def ranks(self) -> dict[str, int]:
        return {s.site.name: s.rank for s in self.sites}

    def summary(self) -> dict:
        return {
            "pruned_model_params": self.pruned_model_params,
            "svd_model_params": self.svd_model_params,
            "ranks": self.ranks(),
        }


def site_matrices(model: nn.Module, site: UnitSite, kept: int) -> tuple[Matrix, ...]:
    """The site's out projection and in projections, with their pruned parameter counts at
    ``kept`` of ``site.n_units`` units (the count :func:`mtprune.pruning.count_parameters` uses)."""
    if not 0 <= kept <= site.n_units:
        raise MtpruneError(f"site {site.name}: {kept} kept units of {site.n_units}")
    gone = site.n_units - kept
    out_mod = model.get_submodule(site.out_proj)
    w = weight_out_in(out_mod)
    rows, cols = int(w.shape[0]), int(w.shape[1])
    b = int(out_mod.bias.numel()) if has_bias(out_mod) else 0
    mats = [Matrix(site.out_proj, rows, cols, b, rows * cols + b - gone * site.width * rows)]
    for ip in site.in_proj:
        mod = model.get_submodule(ip.path)
        w = weight_out_in(mod)
        rows, cols = int(w.shape[0]), int(w.shape[1])
        has_b = has_bias(mod)
        per_row = cols + (1 if has_b else 0)
        removed = min(rows, gone * site.width * ip.chunks) * per_row
        mats.append(Matrix(ip.path, rows, cols, rows if has_b else 0, rows * cols + (rows if has_b else 0) - removed))
    return tuple(mats)


def rank_for_budget(matrices: tuple[Matrix, ...] | list[Matrix], budget: int) -> int:
    """The largest rank ``r`` with ``sum_m svd_params(r) <= budget`` (0 when even rank 0 exceeds
    it), capped at the smallest matrix's full rank."""
    per_rank = sum(m.rows + m.cols for m in matrices)
    fixed = sum(m.bias for m in matrices)
    cap = min(min(m.rows, m.cols) for m in matrices)
    if per_rank == 0:
        return 0
    r = (budget - fixed) // per_rank
    return int(max(0, min(cap, r)))


def _keep_counts(mask, sites: list[UnitSite]) -> dict[str, int]:
    keep = mask.keep_for_sites(sites) if hasattr(mask, "keep_for_sites") else None
    out = {}
    for s in sites:
        if keep is not None:
            if s.name in keep:
                out[s.name] = int(keep[s.name].sum())
        else:  # a plain {group: bool [layers, units]} mapping
            k = mask.get(s.group) if isinstance(mask, dict) else None
            if k is not None:
                out[s.name] = int(k[s.layer, : s.n_units].sum())
    return out


def plan_svd(adapter, mask) -> SVDPlan:
    """The rank of every site ``mask`` prunes, matched to the pruned site's parameter count.

    ``mask`` is a :class:`mtprune.masks.Mask` (or a ``{group: bool [layers, units]}`` mapping);
    only how many units each site keeps matters, not which.
    """
    sites = prunable(adapter).unit_sites()
    counts = _keep_counts(mask, sites)
    plans = []
    for s in sites:
        k = counts.get(s.name, s.n_units)
        if k >= s.n_units:
            continue
        mats = site_matrices(adapter.model, s, k)
        budget = sum(m.pruned_params for m in mats)
        plans.append(SitePlan(s, k, rank_for_budget(mats, budget), mats))
    return SVDPlan(plans, adapter.num_parameters())


class SVDCache:
    """``U, S, Vh`` of each weight, computed once (float64 SVD, stored float32)."""

    def __init__(self):
        self._store: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def get(self, path: str, weight: torch.Tensor):
        key = (path, weight.data_ptr(), tuple(weight.shape), weight._version)
        hit = self._store.get(key)
        if hit is None:
            # one thread: LAPACK's threaded SVD competing with the OpenMP pool that forward passes
            # leave spinning is 10-20x slower on a busy CPU
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                u, s, vh = torch.linalg.svd(weight.detach().to("cpu", torch.float64), full_matrices=False)
            finally:
                torch.set_num_threads(threads)
            hit = (u.float(), s.float(), vh.float())
            self._store[key] = hit
        return hit

    def __len__(self):
        return len(self._store)


def low_rank(module: nn.Module, rank: int, path: str = "", cache: SVDCache | None = None,
             bias: bool = True) -> LowRankLinear:
    """The rank-``rank`` truncated SVD of a Linear (or Conv1D) as two Linear layers (without the
    bias when ``bias`` is False)."""
    w = weight_out_in(module)
    rows, cols = w.shape
    if not 0 <= rank <= min(rows, cols):
        raise MtpruneError(f"rank {rank} is outside 0..{min(rows, cols)} for a {rows}x{cols} matrix")
    u, s, vh = (cache if cache is not None else SVDCache()).get(path or str(id(module)), w)
    dev, dt = w.device, w.dtype
    with warnings.catch_warnings():  # rank 0: "initializing zero-element tensors is a no-op"
        warnings.simplefilter("ignore", UserWarning)
        down = nn.Linear(cols, rank, bias=False)
        up = nn.Linear(rank, rows, bias=bias and has_bias(module))
    with torch.no_grad():
        down.weight.copy_(vh[:rank].to(dev, dt))
        up.weight.copy_((u[:, :rank] * s[:rank]).to(dev, dt))
        if up.bias is not None:
            up.bias.copy_(module.bias.detach())
    lr = LowRankLinear(down.to(dev), up.to(dev)).eval()
    for p in lr.parameters():
        p.requires_grad_(False)
    return lr


@contextmanager
def svd_compress(adapter, mask, cache: SVDCache | None = None) -> Iterator[SVDPlan]:
    """Replace every matrix of every site ``mask`` prunes by its truncated SVD while the block runs.

    Yields the :class:`SVDPlan` (ranks and parameter counts). The original modules are put back in
    ``finally``, also when the block raises; the adapter's fingerprint is unchanged.
    """
    plan = plan_svd(adapter, mask)
    cache = cache if cache is not None else SVDCache()
    model = adapter.model
    fingerprint = getattr(adapter, "_fingerprint", None)
    swapped: list[tuple[str, nn.Module]] = []
    try:
        for sp in plan.sites:
            for m in sp.matrices:
                mod = model.get_submodule(m.path)
                new = low_rank(mod, min(sp.rank, m.rows, m.cols), m.path, cache, bias=sp._keeps_bias(m))
                swapped.append((m.path, set_module(model, m.path, new)))
        yield plan
    finally:
        for path, old in reversed(swapped):
            set_module(model, path, old)
        if hasattr(adapter, "_fingerprint"):
            adapter._fingerprint = fingerprint


def svd_params_for_sparsity(n: int, d: int, kept: int) -> tuple[int, int]:
    """(rank, params) for a plain FFN site of ``n`` neurons over hidden size ``d`` with biases:
    the closed form of :func:`rank_for_budget` for that case (documentation and tests)."""
    pruned = 2 * kept * d + kept + d
    per_rank, fixed = 2 * (n + d), n + d
    r = max(0, min(min(n, d), math.floor((pruned - fixed) / per_rank)))
    return r, r * per_rank + fixed


__all__ = [
    "LowRankLinear",
    "Matrix",
    "SVDCache",
    "SVDPlan",
    "SitePlan",
    "low_rank",
    "plan_svd",
    "rank_for_budget",
    "site_matrices",
    "svd_compress",
]
