"""One object per method, carrying its facts and its ``attribute``; the registry every other
part of mtprune reads (the CLI's choices and help, sweeps' trials and keys, the dashboard's list).

A method is a :class:`Method` (a frozen dataclass) registered with :func:`register_method`::

    from mtprune.methods import Method, register_method

    class Mine(Method):
        def attribute(self, adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
            return {s.name: my_scores_for(s) for s in sites}     # site name -> [n_units] floats

    register_method(Mine("mine", label="my scores", help="what it measures", needs_labels=False))

``attribute`` returns ``{site.name: scores [n_units]}`` over *all* examples (higher = the task
needs the unit more). A method that reads examples gets the full list, takes this process's share
with :func:`mtprune.batching.batches_for` and adds the ranks' partial sums with
:func:`mtprune.distributed.all_reduce_sum`, so it runs under torchrun unchanged.

Put such a module on ``MTPRUNE_PLUGINS`` (see :mod:`mtprune.plugins`) and ``mtprune attribute
--method mine``, ``mtprune sweep --methods mine`` and the dashboard offer it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

from mtprune.errors import MtpruneError
from mtprune.registry import Registry



@dataclass(frozen=True)
class Method:
    """A way to score units (or, with ``scores=False``, a baseline that stands in for pruning).

    Facts, read by the rest of mtprune:

    * ``label`` and ``help``: how legends, tables, the CLI's help and the dashboard name it;
    * ``needs_data``: it reads examples of the task (``random`` and ``magnitude`` do not);
    * ``needs_labels``: it reads their gold labels (unless run label-free);
    * ``uses_variant``: ``abs`` / ``signed`` change its scores; ``uses_steps``: ``--steps`` does;
    * ``uses_seed``: the seed changes its result (the example draw, noise, a control target);
    * ``unsupervised``: it can run without labels (``--unsupervised``: every label's attribution);
    * ``baseline``: a control or baseline, repeated over ``--trials`` seeds in experiments;
    * ``scores``: it produces scores (False: a stand-in evaluated in place of a pruned model, as
      the SVD baseline, whose site sizes come from the ``reference`` method's mask).
    """

    name: str
    label: str = ""
    help: str = ""
    needs_data: bool = True
    needs_labels: bool = True
    uses_variant: bool = True
    uses_steps: bool = False
    uses_seed: bool = True
    unsupervised: bool = False
    baseline: bool = False
    # its scores are sums over examples (those of disjoint folds add up to the whole); False: a mean
    # (the whole is computed in one call, the folds apart, for their spread only)
    additive: bool = True
    scores: bool = True
    reference: str | None = None

    def __post_init__(self):
        if not self.name or any(c.isspace() or c in ",:;" for c in self.name):
            raise ValueError(f"a method name needs letters, digits or dashes, not {self.name!r}")
        if not self.label:
            object.__setattr__(self, "label", self.name)
        if not self.needs_data:
            object.__setattr__(self, "needs_labels", False)
        if not self.scores and not self.reference:
            raise ValueError(f"method {self.name}: a stand-in baseline needs a reference method")

    @property
    def repeats_over_trials(self) -> bool:
        """A baseline whose result depends on its seed: experiments run it ``--trials`` times."""
        return self.baseline and self.uses_seed

    def attribute(self, adapter, task, rows, spec, sites, *, batch_size: int = 32, progress=None) -> dict:
        """``{site.name: scores [n_units]}`` for ``task`` from ``rows`` (see the module's docstring)."""
        raise NotImplementedError(f"method {self.name} produces no scores")

    def attribute_folds(self, adapter, task, rows, spec, sites, fold_of, *, batch_size: int = 32,
                        progress=None) -> list[dict]:
        """``[{site.name: scores [n_units]}]`` per fold: ``fold_of[i]`` is row ``i``'s fold (folds
        are contiguous runs of rows). This default calls :meth:`attribute` once per fold, a mean
        method's folds weighted by their share of the rows, so that they add up to the whole; a
        method that can keep per-example sums apart reads every batch once instead
        (:class:`GradientMethod`)."""
        n = len(rows)
        bounds: list[tuple[int, int]] = []
        for i, f in enumerate(fold_of):
            if not bounds or f != fold_of[bounds[-1][0]]:
                bounds.append((i, i + 1))
            else:
                bounds[-1] = (bounds[-1][0], i + 1)
        out = []
        for lo, hi in bounds:
            step = (lambda done, total, lo=lo: progress(lo + done, n)) if progress else None
            part = self.attribute(adapter, task, list(rows[lo:hi]), spec, sites, batch_size=batch_size, progress=step)
            out.append(part if self.additive else {k: v * (hi - lo) / n for k, v in part.items()})
        return out

    def stand_in(self, adapter, mask, state: dict) -> AbstractContextManager:
        """(``scores=False`` only) A context in which ``adapter`` computes the baseline's model
        for ``mask``'s site sizes; ``state`` is kept by the caller between calls (caches)."""
        raise NotImplementedError(f"method {self.name} is not a stand-in baseline")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class GradientMethod(Method):
    """A method whose per-example scores come from the unit gates' gradients
    (:func:`mtprune.methods.engine.gradient_scores`): it says which objective, path points and
    reduction in :meth:`gradient`, and gets ``attribute`` and one-pass ``attribute_folds``."""

    def gradient(self, spec) -> dict:
        """``{"objective": f(adapter, task, batch, spec) -> [B, targets], "alphas": [...], "reduce": ...}``."""
        raise NotImplementedError

    def attribute(self, adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
        from mtprune.methods.engine import gradient_scores

        return gradient_scores(adapter, task, rows, spec, sites, batch_size=batch_size, progress=progress,
                               **self.gradient(spec))

    def attribute_folds(self, adapter, task, rows, spec, sites, fold_of, *, batch_size=32, progress=None):
        from mtprune.methods.engine import gradient_scores

        per_site = gradient_scores(adapter, task, rows, spec, sites, batch_size=batch_size, progress=progress,
                                   fold_of=fold_of, **self.gradient(spec))
        k = max(fold_of) + 1
        return [{name: v[i] for name, v in per_site.items()} for i in range(k)]


METHODS: Registry[Method] = Registry("method", Method)


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Make ``method`` known to every verb and page. A second method of the same name is an
    error unless ``replace``."""
    return METHODS.register(method, replace=replace)


def all_methods() -> dict[str, Method]:
    """Every registered method (plugins included), in registration order."""
    return METHODS.all()


def method_names(scores: bool | None = None) -> list[str]:
    """Names of the registered methods; ``scores=True``: only those producing scores."""
    return [n for n, m in all_methods().items() if scores is None or m.scores == scores]


def get_method(name: str, scores: bool | None = None) -> Method:
    """The method called ``name``; one clear line when there is none (of that sort)."""
    m = all_methods().get(name)
    if m is None:
        raise MtpruneError(f"unknown method {name!r}; methods: {', '.join(method_names(scores))}")
    if scores is not None and m.scores != scores:
        what = "a baseline without scores" if scores else "an attribution method"
        raise MtpruneError(f"method {name!r} is {what}, which this does not take; methods: "
                           f"{', '.join(method_names(scores))}")
    return m
