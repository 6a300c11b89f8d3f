"""``flops``: the multiply-adds of one forward pass at a sequence length ``T``, times two: an FFN
neuron ``2 T (d_in + d_out)`` (a row of the up/gate projections, a column of the down one); a head
``2 T w (3 d + d) + 4 T^2 w`` (its rows of Q, K, V, its columns of O, and its share of QK^T and
AV), as Kwon et al. count them and as ``torch.utils.flop_counter`` does."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtprune.measures.base import Measure, per_group, register_measure


def unit_flops(adapter, seq_len: float) -> dict[str, np.ndarray]:
    """``{group: [layers]}`` FLOPs of one unit for one sequence of ``seq_len`` tokens."""
    from mtprune.units import unit_cost

    model = adapter.model

    def flops(site):
        macs = seq_len * (unit_cost(model, site) - _bias_rows(model, site))  # weights only
        if site.kind != "ffn":
            macs += 2 * seq_len * seq_len * site.width  # QK^T and AV of its query heads
        return 2.0 * macs

    return per_group(adapter, flops)


def _bias_rows(model, site) -> int:
    from mtprune import layers

    return sum(ip.rows(site) * ip.chunks for ip in site.in_proj if layers.has_bias(model.get_submodule(ip.path)))


@dataclass(frozen=True)
class Flops(Measure):
    def costs(self, adapter, seq_len=None, task=None, **options):
        return unit_flops(adapter, seq_len)


register_measure(Flops("flops", label="FLOPs", help="multiply-adds of a forward pass at the task's average length"))
