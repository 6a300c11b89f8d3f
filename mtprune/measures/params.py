"""``params``: the parameters a unit's removal saves (its columns of the out projection, its rows
and biases of the in projections: :func:`mtprune.units.unit_cost`)."""

from dataclasses import dataclass

from mtprune.measures.base import Measure, per_group, register_measure


@dataclass(frozen=True)
class Params(Measure):
    def costs(self, adapter, seq_len=None, task=None, **options):
        from mtprune.units import unit_cost

        return per_group(adapter, lambda s: unit_cost(adapter.model, s))


register_measure(Params("params", label="parameters", help="the parameters a unit's removal saves", per_length=False))
