"""Masks the tests and benchmarks build: one that keeps every unit of a model's sites."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from mtprune.masks import Mask
from mtprune.units import UnitSite


def full_mask(sites: Iterable[UnitSite], meta: dict | None = None) -> Mask:
    """A mask that keeps every unit of the given sites (sparsity 0)."""
    n_units: dict[str, dict[int, int]] = {}
    for s in sites:
        n_units.setdefault(s.group, {})[s.layer] = s.n_units
    counts = {g: [d.get(i, 0) for i in range(max(d) + 1)] for g, d in n_units.items()}
    keep = {}
    for g, n in counts.items():
        k = np.zeros((len(n), max(n, default=0)), dtype=bool)
        for layer, c in enumerate(n):
            k[layer, :c] = True
        keep[g] = k
    return Mask(keep=keep, n_units=counts, sparsity=0.0, scope="layer", kinds="all", meta=meta or {})
