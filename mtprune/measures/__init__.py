"""Budget measures: one module each, registered with :func:`register_measure`.

    flops     multiply-adds at the task's average length (Kwon et al.)
    params    parameters
    latency   seconds per example, measured on this machine

A new measure is one more module here (imported automatically) or in a module named in
``MTPRUNE_PLUGINS``; ``--budget NAME:0.6`` and the dashboard then offer it.
"""

from mtprune.measures.base import Measure, all_measures, get_measure, measure_names, per_group, register_measure
from mtprune.registry import import_members

import_members(__name__, __path__, first=("flops", "params", "latency"))

__all__ = ["Measure", "all_measures", "get_measure", "measure_names", "per_group", "register_measure"]
