"""``svd``: a baseline of the same size as a pruned model, spent on low-rank matrices instead."""

from __future__ import annotations

from dataclasses import dataclass

from mtprune.methods.base import Method, register_method


@dataclass(frozen=True)
class SVDBaseline(Method):
    """Every site the ``reference`` method's mask prunes keeps all its units, but its matrices are
    replaced by their truncated SVD at the largest rank whose parameters do not exceed the pruned
    site's (:mod:`mtprune.svd`)."""

    def stand_in(self, adapter, mask, state):
        from mtprune.svd import SVDCache, svd_compress

        return svd_compress(adapter, mask, state.setdefault("svd", SVDCache()))


SVD = register_method(SVDBaseline(
    "svd", label="SVD (same parameter count)", needs_labels=False, uses_seed=False, baseline=True,
    scores=False, reference="ap",
    help="the sites the reference method's mask prunes, replaced by truncated SVDs of the same "
         "parameter count (a baseline)"))
