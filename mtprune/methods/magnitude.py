"""``magnitude``: the size of each unit's weights, no data."""

from __future__ import annotations

from dataclasses import dataclass

from mtprune.methods.base import Method, register_method
from mtprune.units import UnitSite


def unit_weight_norms(model, site: UnitSite):
    """L2 norm of each unit's weights: its ``width`` input columns of the out projection and its
    output rows of every in projection (a key/value group: its query heads' rows of Q and its one
    head of K and V; a query head of grouped attention: its rows of Q and columns of O)."""
    from mtprune import layers

    n, w = site.n_units, site.width
    total = layers.col_sq_norms(model.get_submodule(site.out_proj)).view(n, w).sum(1)
    for ip in site.in_proj:
        rows = layers.row_sq_norms(model.get_submodule(ip.path))
        r = ip.rows(site)
        for chunk in rows.view(ip.chunks, -1):
            total = total + chunk.view(n, r).sum(1)
    return total.sqrt()


@dataclass(frozen=True)
class WeightMagnitude(Method):
    """The L2 norm of each unit's weights (its in rows and out columns)."""

    def attribute(self, adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
        return {s.name: unit_weight_norms(adapter.model, s).double().cpu().numpy() for s in sites}


MAGNITUDE = register_method(WeightMagnitude(
    "magnitude", label="weight magnitude", needs_data=False, uses_variant=False, uses_seed=False,
    help="the size of the unit's weights (no data)"))
