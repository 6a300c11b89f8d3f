"""``fisher``: the diagonal Fisher information of each unit's gate (Kwon et al., NeurIPS 2022)."""

from __future__ import annotations

from dataclasses import dataclass

from mtprune.methods.base import Method, register_method


@dataclass(frozen=True)
class Fisher(Method):
    """``sum over examples of (d log P(gold) / d gate_i)^2``: the squared gradient of the loss with
    respect to the unit's mask variable, the importance Kwon et al.'s training-free pruning
    searches with. Per example (the empirical Fisher); Kwon's code sums per batch of 32 before
    squaring. The gate gradient is the same one ``ap`` reads, so it costs one forward and
    backward pass per batch too."""

    def attribute(self, adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
        from mtprune.methods.engine import gradient_scores, objective_gold_log

        return gradient_scores(adapter, task, rows, spec, sites, objective=objective_gold_log, alphas=[1.0],
                               batch_size=batch_size, progress=progress, reduce="square")


FISHER = register_method(Fisher(
    "fisher", label="Fisher information", uses_variant=False,
    help="the squared gradient of the loss with respect to each unit's mask, summed over examples "
         "(Kwon et al. 2022)"))
