"""``ig``: Integrated Gradients over the unit gates."""

from __future__ import annotations

from dataclasses import dataclass

from mtprune.methods.base import GradientMethod, register_method


@dataclass(frozen=True)
class IntegratedGradients(GradientMethod):
    """Zero baseline, ``steps`` right-Riemann points ``alpha = k / steps``. All selected units are
    scaled together: the path is the joint one, from every selected unit off to every unit on, so
    the scores of all units add up to ``P(dense) - P(all selected units off)`` (completeness); with
    one step IG is ``ap`` exactly."""

    def gradient(self, spec):
        from mtprune.methods.engine import objective_all, objective_gold

        return {"objective": objective_all if spec.unsupervised else objective_gold,
                "alphas": [(k + 1) / spec.steps for k in range(spec.steps)]}


IG = register_method(IntegratedGradients(
    "ig", label="integrated gradients", uses_steps=True, unsupervised=True,
    help="gradient x activation averaged along a path from every unit off to every unit on (--steps points)"))
