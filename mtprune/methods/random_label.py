"""``random-label``: the paper's control, ``ap`` towards a target that is not the task's."""

from __future__ import annotations

from dataclasses import dataclass

from mtprune.methods.base import GradientMethod, register_method


@dataclass(frozen=True)
class RandomLabel(GradientMethod):
    """Gradient x activation towards a random non-label vocabulary word (label-word models) or a
    seeded random linear head over the same pooled output (classifiers):
    ``adapter.control_logprob``. Not the task's other label: with a two-label softmax
    ``dP(other) = -dP(gold)``, so with ``abs`` it would equal ``ap``."""

    def gradient(self, spec):
        from mtprune.methods.engine import objective_control

        return {"objective": objective_control, "alphas": [1.0]}


RANDOM_LABEL = register_method(RandomLabel(
    "random-label", label="random label (control)", needs_labels=False, baseline=True,
    help="control: gradient x activation on the same examples towards a random target instead of the "
         "task's labels"))
