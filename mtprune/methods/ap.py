"""``ap``: gradient x activation (attribution patching), the paper's method and the default."""

from __future__ import annotations

from dataclasses import dataclass

from mtprune.methods.base import GradientMethod, register_method


@dataclass(frozen=True)
class GradientTimesActivation(GradientMethod):
    """Per example, ``sum over tokens of h_i * dP(gold)/dh_i`` for every unit ``i``, all layers in one
    forward and backward pass; ``abs`` sums the magnitudes over examples (the default), ``signed``
    the values (Eq. 6 as written). ``P(gold)`` is the softmax of a classifier head, or ``exp`` of
    the gold label words' log-probability for text-to-text and causal LMs. Label-free
    (``--unsupervised``): the sum over every label's attribution (Eq. 10); on a two-label
    classifier head exactly twice the supervised ``abs`` scores, the same ranking."""

    def gradient(self, spec):
        from mtprune.methods.engine import objective_all, objective_gold

        return {"objective": objective_all if spec.unsupervised else objective_gold, "alphas": [1.0]}


AP = register_method(GradientTimesActivation(
    "ap", label="gradient x activation (AP)", unsupervised=True,
    help="activation times the gradient of P(gold) per unit, summed in magnitude over examples: a "
         "first-order estimate of how much the right answer's probability changes without the unit "
         "(default)"))
