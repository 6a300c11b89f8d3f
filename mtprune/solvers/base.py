"""A repair solver: how a pruned site's out projection is refit from the sums repair collects.

A solver is a :class:`Solver` (a frozen dataclass) registered with :func:`register_solver`::

    from mtprune.solvers import Solver, register_solver

    class Mine(Solver):
        def fit(self, G, C, W0, *, width, damping):
            return W0 * 0.9          # new [d, k + 1] weights (bias last), or None: no stable solution

    register_solver(Mine("mine", label="shrink", help="what it does", fits="the kept columns"))

:func:`mtprune.repair.repair` collects, for every pruned site, ``G = X^T X`` and ``C = X^T T`` over
the calibration tokens (``X``: the out projection's input over the kept units, with a column of
ones for the bias; ``T``: the target that makes the block's output match the dense model's) and
calls ``fit`` once per damping in ``RepairSettings.dampings`` (once with ``damping=None`` when the
solver is not ``damped``); the held-out error picks the damping and guards the result. Every verb's
``--repair`` choices and help, the configs' validation, the dashboard's list and the docs' table
read the registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtprune.errors import MtpruneError
from mtprune.registry import Registry


@dataclass(frozen=True)
class Solver:
    """A way to refit a pruned out projection. Facts, read by the rest of mtprune:

    * ``label`` and ``help``: how the dashboard, the CLI's help and the docs name it;
    * ``fits``: what it changes ("the kept columns and the bias");
    * ``damped``: it is solved once per damping (the held-out error picks one); False: once;
    * ``refits``: False for ``none``, which only prunes (no calibration rows are read).
    """

    name: str
    label: str = ""
    help: str = ""
    fits: str = ""
    damped: bool = True
    refits: bool = True

    def __post_init__(self):
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"a solver's name is a word, not {self.name!r}")
        if not self.label:
            object.__setattr__(self, "label", self.name)

    def fit(self, G, C, W0, *, width: int, damping: float | None):
        """New weights ``[d, k + 1]`` (the kept columns, then the bias) from ``G`` ``[k + 1, k + 1]``,
        ``C`` ``[k + 1, d]`` (float64 sums) and the unrepaired ``W0``; ``width``: columns per unit;
        None when there is no stable solution."""
        raise NotImplementedError(f"solver {self.name} fits nothing")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


SOLVERS: Registry[Solver] = Registry("repair", Solver, "repairs")


def register_solver(solver: Solver, *, replace: bool = False) -> Solver:
    """Make ``solver`` known to every verb, config and page."""
    return SOLVERS.register(solver, replace=replace)


def get_solver(name: str) -> Solver:
    """The solver called ``name``; one clear line ("unknown repair 'x'; repairs: none, ...") if none."""
    return SOLVERS.get(name)


def solver_names() -> list[str]:
    return SOLVERS.names()


def all_solvers() -> dict[str, Solver]:
    return SOLVERS.all()


def solve(A, B):
    """``A^-1 B``, by least squares when ``A`` is singular; None when that is not finite either."""
    import torch

    try:
        return torch.linalg.solve(A, B)
    except RuntimeError:  # singular
        sol = torch.linalg.lstsq(A, B)
        return sol.solution if torch.isfinite(sol.solution).all() else None


def check_solvers(names) -> tuple[str, ...]:
    """Registered solver names from a list or a comma-separated string, de-duplicated in order;
    one clear line for an unknown name or for none."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = tuple(dict.fromkeys(names))
    if not names:
        raise MtpruneError(f"no repair given; repairs: {', '.join(solver_names())}")
    for n in names:
        get_solver(n)
    return names
