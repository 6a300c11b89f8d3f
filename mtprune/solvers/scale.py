"""``scale``: one scale per kept unit (Kwon et al.'s mask tuning), damped towards 1; scales outside
[-max_scale, max_scale] are refused, as Kwon's code does."""

from dataclasses import dataclass

from mtprune.solvers.base import Solver, register_solver, solve


@dataclass(frozen=True)
class ScaleSolver(Solver):
    max_scale: float = 10.0  # Kwon et al. stop rescaling when a scale leaves [-10, 10]

    def fit(self, G, C, W0, *, width, damping):
        """Per-unit scales of the kept columns (bias fixed): ``W = W0 * s``."""
        import torch

        k = G.shape[0] - 1
        if k == 0:
            return None
        Wk, b = W0[:, :k], W0[:, k]
        n_units = k // width
        WtW = (Wk.T @ Wk).view(n_units, width, n_units, width)
        A = (G[:k, :k].view(n_units, width, n_units, width) * WtW).sum((1, 3))
        # sum over tokens of (W_u x_u) . (t - b)
        Ct = C[:k] - G[:k, k:k + 1] * b[None, :]
        c = (Wk.T * Ct).sum(1).view(n_units, width).sum(1)
        D = torch.diag(A).clamp(min=1e-12)
        s = solve(A + damping * torch.diag(D), c + damping * D)
        if s is None or not torch.isfinite(s).all() or s.abs().max() > self.max_scale:
            return None
        W = W0.clone()
        W[:, :k] = Wk * s.repeat_interleave(width)[None, :]
        return W


register_solver(ScaleSolver("scale", label="one scale per unit", help="one scale per unit",
                            fits="one scale per kept unit (Kwon's mask tuning), damped towards 1; scales outside "
                                 "[-10, 10] refused"))
