"""``bias``: only the bias, the mean over tokens of ``t - W x`` (FLAP's mean contribution of the pruned
units, plus whatever drift the earlier layers left)."""

from dataclasses import dataclass

from mtprune.solvers.base import Solver, register_solver


@dataclass(frozen=True)
class BiasSolver(Solver):
    def fit(self, G, C, W0, *, width, damping):
        k = G.shape[0] - 1
        W = W0.clone()
        W[:, k] = (C[k] - W0[:, :k] @ G[:k, k]) / G[k, k]
        return W


register_solver(BiasSolver("bias", label="bias only", help="mean contribution of the pruned units", fits="the bias only: the mean of what the block misses (FLAP's mean contribution of the "
                                "pruned units, plus any drift from earlier layers)",
                           damped=False))
