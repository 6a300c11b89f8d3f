"""``random``: seeded random scores, the floor every method should beat."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from mtprune.methods.base import Method, register_method


@dataclass(frozen=True)
class RandomScores(Method):
    """Uniform noise in [0, 1), seeded per (seed, site)."""

    def attribute(self, adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
        return {s.name: np.random.default_rng([spec.seed, zlib.crc32(s.name.encode())]).random(s.n_units)
                for s in sites}


RANDOM = register_method(RandomScores(
    "random", label="random", needs_data=False, uses_variant=False, baseline=True,
    help="seeded random scores (a baseline)"))
