"""``ig``: Integrated Gradients over the unit gates."""

from __future__ import annotations

from dataclasses import dataclass

from mtprune.methods.base import Method, register_method


@dataclass(frozen=True)
class IntegratedGradients(Method):
    """Zero baseline, ``steps`` right-Riemann points ``alpha = k / steps``. All selected units are
    scaled together: the path is the joint one, from every selected unit off to every unit on, so
    the scores of all units add up to ``P(dense) - P(all selected units off)`` (completeness); with
    one step IG is ``ap`` exactly."""

    def attribute(self, adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
        from mtprune.methods.engine import gradient_scores, objective_all, objective_gold

        objective = objective_all if spec.unsupervised else objective_gold
        alphas = [(k + 1) / spec.steps for k in range(spec.steps)]
        return gradient_scores(adapter, task, rows, spec, sites, objective=objective, alphas=alphas,
                               batch_size=batch_size, progress=progress)


IG = register_method(IntegratedGradients(
    "ig", label="integrated gradients", uses_steps=True, unsupervised=True,
    help="gradient x activation averaged along a path from every unit off to every unit on (--steps points)"))
