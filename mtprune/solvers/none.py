"""``none``: no refit; the model is only hard-pruned."""

from mtprune.solvers.base import Solver, register_solver

register_solver(Solver("none", label="none", help="no repair: the hard-pruned model as it is", fits="nothing: the hard-pruned model as it is",
                       damped=False, refits=False))
