"""Repair solvers: one module each, registered with :func:`register_solver`.

    none    no refit (the hard-pruned model)
    bias    the bias only
    scale   one scale per kept unit (Kwon et al.'s mask tuning)
    lsq     least squares over the kept columns and the bias (the default)

A new solver is one more module here (imported automatically) or in a module named in
``MTPRUNE_PLUGINS``; :func:`mtprune.repair.repair` runs it with its held-out guards.
"""

from mtprune.registry import import_members
from mtprune.solvers.base import (Solver, all_solvers, check_solvers, get_solver, register_solver, solve,
                                  solver_names)

import_members(__name__, __path__, first=("none", "bias", "scale", "lsq"))

__all__ = ["Solver", "all_solvers", "check_solvers", "get_solver", "register_solver", "solve", "solver_names"]
