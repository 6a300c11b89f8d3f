"""``lsq``: ridge least squares over the kept columns and the bias, damped towards the unrepaired
weights by ``damping`` times the Gram diagonal (damping 0 is plain least squares)."""

from dataclasses import dataclass

from mtprune.solvers.base import Solver, register_solver, solve


@dataclass(frozen=True)
class LeastSquares(Solver):
    def fit(self, G, C, W0, *, width, damping):
        import torch

        D = torch.diag(G).clamp(min=1e-12)
        X = solve(G + damping * torch.diag(D), C + damping * D[:, None] * W0.T)
        return None if X is None else X.T


register_solver(LeastSquares("lsq", label="least squares (lsq)", help="least squares",
                             fits="the kept columns and the bias by ridge least squares, damped towards the unrepaired weights by a "
                                  "multiple of the Gram diagonal"))
