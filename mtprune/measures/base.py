"""A budget measure: what one unit of each layer costs, so that one budget (``flops:0.6``) can be
spent over heads and FFN neurons of every layer (:func:`mtprune.costs.search_mask`).

A measure is a :class:`Measure` (a frozen dataclass) registered with :func:`register_measure`::

    from mtprune.measures import Measure, per_group, register_measure

    class Bytes(Measure):
        def costs(self, adapter, seq_len=None, task=None, **options):
            return per_group(adapter, lambda site: 2.0 * my_param_count(site))   # {group: [layers]}

    register_measure(Bytes("bytes", label="bytes", help="fp16 bytes of the weights", per_length=False))

Every verb's ``--budget`` (``bytes:0.5``), the configs' validation, the dashboard's list and the
docs' table read the registry; :func:`mtprune.costs.prepare_costs` is the one place a model's unit
costs for a task are prepared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtprune.registry import Registry


@dataclass(frozen=True)
class Measure:
    """A cost of units. Facts, read by the rest of mtprune:

    * ``label`` and ``help``: how the dashboard, the CLI's help and the docs name it;
    * ``per_length``: its costs depend on the sequence length (the task's average length is used);
    * ``measured``: its costs are timed on this machine (they vary from run to run).
    """

    name: str
    label: str = ""
    help: str = ""
    per_length: bool = True
    measured: bool = False

    def __post_init__(self):
        if not self.name or not self.name.isalpha() or not self.name.islower():
            raise ValueError(f"a measure's name is a lower-case word, not {self.name!r}")
        if not self.label:
            object.__setattr__(self, "label", self.name)

    def costs(self, adapter, seq_len: float | None = None, task=None, **options) -> dict[str, np.ndarray]:
        """``{group: [layers]}``: what one unit of each layer costs (view groups left out)."""
        raise NotImplementedError(f"measure {self.name} has no costs")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


MEASURES: Registry[Measure] = Registry("budget measure", Measure)


def register_measure(measure: Measure, *, replace: bool = False) -> Measure:
    return MEASURES.register(measure, replace=replace)


def get_measure(name: str) -> Measure:
    return MEASURES.get(name)


def measure_names() -> list[str]:
    return MEASURES.names()


def all_measures() -> dict[str, Measure]:
    return MEASURES.all()


def per_group(adapter, fn) -> dict[str, np.ndarray]:
    """``{group: [fn(site) per layer]}``; view groups (the query heads of grouped attention, whose
    parameters their key/value groups hold) have no cost of their own and are left out."""
    from mtprune.units import group_sites, view_groups

    groups = group_sites(adapter.unit_sites())
    views = view_groups(groups)
    return {g: np.array([fn(s) for s in ss], dtype=np.float64) for g, ss in groups.items() if g not in views}
