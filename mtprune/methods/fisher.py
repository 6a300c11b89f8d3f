"""``fisher``: the diagonal Fisher information of each unit's gate (Kwon et al., NeurIPS 2022)."""

from __future__ import annotations

from dataclasses import dataclass

from mtprune.methods.base import GradientMethod, register_method


@dataclass(frozen=True)
class Fisher(GradientMethod):
    """``sum over examples of (d log P(gold) / d gate_i)^2``: the squared gradient of the loss with
    respect to the unit's mask variable, the importance Kwon et al.'s training-free pruning
    searches with. Per example (the empirical Fisher); Kwon's code sums per batch of 32 before
    squaring. The gate gradient is the same one ``ap`` reads, so it costs one forward and
    backward pass per batch too."""

    def gradient(self, spec):
        from mtprune.methods.engine import objective_gold_log

        return {"objective": objective_gold_log, "alphas": [1.0], "reduce": "square"}


FISHER = register_method(Fisher(
    "fisher", label="Fisher information", uses_variant=False,
    help="the squared gradient of the loss with respect to each unit's mask, summed over examples "
         "(Kwon et al. 2022)"))
