"""The pruning pipeline in one place: scores -> mask -> hard-pruned (repaired) model.

``mtprune prune``, the dashboard and the experiment runner all call it:

* :func:`choose_mask`: the mask of scores at one sparsity (per kind, per layer or global) or one
  budget spent over the units of every layer (:func:`mtprune.costs.search_mask`, its costs from
  :func:`mtprune.costs.prepare_costs`);
* :func:`plan_calibration`: the solver and the calibration rows a repair reads (the task's own, or
  from several sources with weights: :class:`mtprune.calibration.CalibrationMix`), stepping aside
  (with a note) when a defaulted repair has no rows apart from those the task is measured on;
* :func:`prune`: a mask (given, or chosen from scores) applied: the hard-pruned copy, its out
  projections refit by a registered solver (:mod:`mtprune.solvers`), and what happened
  (:class:`Pruned`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from mtprune.costs import Budget, kept_share, prepare_costs
from mtprune.errors import MtpruneError
from mtprune.masks import Mask, mask_from_scores
from mtprune.calibration import CalibrationMix
from mtprune.repair import RepairReport, RepairSettings, repair
from mtprune.solvers import get_solver


def choose_mask(adapter, task, scores, *, sparsity=None, budget: Budget | str | None = None, kinds: str | None = None,
                scope: str = "layer", stack: str = "all", normalise: str = "sum", meta: dict | None = None) -> Mask:
    """The mask of ``scores`` at ``sparsity`` (a number or one per kind) or within ``budget``.

    ``kinds`` defaults to ``all`` with a budget (Kwon et al.: one budget over heads and neurons) and
    ``ffn`` with a sparsity. A budget's mask records the task's average length (``seq_len``)."""
    from mtprune.costs import search_mask

    if (sparsity is None) == (budget is None):
        raise MtpruneError("give a sparsity or a budget, not both or neither")
    if budget is not None:
        budget = Budget.parse(budget)
        costs = prepare_costs(adapter, task, budget.measure)
        seq = costs.seq_len if costs.seq_len is not None else prepare_costs(adapter, task, "flops").seq_len
        return search_mask(scores, budget, costs.costs, kinds=kinds or "all", stack=stack, normalise=normalise,
                           meta={**(meta or {}), "seq_len": seq})
    return mask_from_scores(scores, sparsity, scope=scope, kinds=kinds or "ffn", stack=stack, meta=meta)


def intermediate_mask(adapter, task, scores, mask: Mask) -> Mask:
    """The intermediate repair target (Kwon et al.): the mask of the same ``scores`` at the square
    root of ``mask``'s budget (``flops:0.5`` -> ``flops:0.707``), searched as ``mask`` was."""
    import math

    if scores is None or mask.scope != "budget" or not mask.meta.get("budget"):
        raise MtpruneError("the intermediate repair target is the mask of the same scores at the square root of the "
                           "budget: give --budget and scores (not --sparsity or --mask)")
    b = Budget.parse(mask.meta["budget"])
    return choose_mask(adapter, task, scores, budget=Budget(b.measure, math.sqrt(b.fraction)), kinds=mask.kinds,
                       stack=mask.stack, normalise=mask.meta.get("normalise", "sum"))


def repair_teacher(adapter, task, scores, mask: Mask, settings: RepairSettings) -> Mask | None:
    """The mask whose model a repair with ``settings`` fits to: :func:`intermediate_mask` for the
    intermediate target of a refitting solver, else None (the dense model)."""
    return intermediate_mask(adapter, task, scores, mask) if settings.refits and settings.target == "intermediate" \
        else None


def flops_kept(adapter, task, mask: Mask | None) -> float:
    """The share of the model's prunable FLOPs (heads and FFN neurons, at the task's average
    length) ``mask`` keeps; kinds it leaves alone count as kept."""
    from mtprune.units import layout

    return kept_share(mask, prepare_costs(adapter, task, "flops").costs, layout(adapter.unit_sites())[1])


@dataclass(frozen=True)
class Calibration:
    """What a repair reads: the solver, ``rows`` (``{task: rows}`` or one task's list), where they came
    from (``source``: the sources' names; ``origin``: sources, weights and rows drawn each, as the
    pruned model's description records them), and why a defaulted repair stepped aside (``notes``)."""

    solver: str
    rows: object = ()
    source: str = ""
    notes: tuple[str, ...] = ()
    origin: dict | None = None


def plan_calibration(task, solver: str | None, default: str = "lsq", n: int = 1024, split: str | None = None,
                     data_file=None, mix: CalibrationMix | None = None) -> Calibration:
    """The calibration of a prune of ``task``: ``solver`` as asked, or ``default`` when None; its rows
    from ``mix`` (several sources with weights), else ``data_file``, else the task's ``split`` (default
    train), ``n`` of them. A defaulted repair steps aside (solver ``none``, with a note) when the task
    has no split apart from the one it is measured on (an unseen domain) or its rows cannot be read.
    Bad settings asked for explicitly fail in one line."""
    from mtprune.tasks import get_task

    task = get_task(task) if isinstance(task, str) else task
    chosen = get_solver(solver or default)
    if not chosen.refits:
        return Calibration(chosen.name)
    explicit = mix is not None or data_file is not None  # rows the user named: their problems are errors
    if mix is None:
        mix = CalibrationMix.of_files([data_file], n) if data_file is not None else \
            CalibrationMix.of_task(task, n, split)
    if solver is None and not explicit and (split or task.train_split) == task.default_split:
        # an unseen-domain task has one split: calibrating on it would fit the rows it is measured on
        return Calibration("none", notes=(f"not repaired: {task.name} has no split apart from {task.default_split}, "
                                          f"which it is measured on (pass --calib-file ROWS.jsonl, or --repair "
                                          f"{chosen.name} to calibrate on it anyway)",))
    try:
        drawn = mix.draw(task)
    except MtpruneError as exc:
        if solver is not None or explicit:
            raise
        return Calibration("none", notes=(f"not repaired: {exc} (pass --calib-file ROWS.jsonl to repair, or "
                                          f"--repair none)",))
    rows = drawn.rows if len(drawn.rows) > 1 or task not in drawn.rows else drawn.rows[task]
    return Calibration(chosen.name, rows, ", ".join(s.label for s in mix.sources), origin=drawn.describe())


@dataclass(frozen=True)
class Pruned:
    """What :func:`prune` made: the pruned (repaired) ``adapter``, its ``mask``, the repair's
    ``report`` and the parameter counts."""

    adapter: object
    mask: Mask
    report: RepairReport
    params_dense: int
    params_pruned: int
    notes: tuple[str, ...] = field(default_factory=tuple)


def prune(adapter, task, *, scores=None, mask: Mask | None = None, sparsity=None, budget: Budget | str | None = None,
          kinds: str | None = None, scope: str = "layer", stack: str = "all", normalise: str = "sum",
          repair_with: RepairSettings | str = "none", calibration=None, meta: dict | None = None,
          progress: Callable[[int, int], None] | None = None, log: Callable[[str], None] | None = None,
          rearrange_rows=None) -> Pruned:
    """``adapter`` pruned for ``task``: by ``mask``, or by the mask of ``scores`` at ``sparsity`` or
    within ``budget`` (:func:`choose_mask`); hard-pruned and, unless the solver is ``none``, its out
    projections refit on ``calibration`` rows (``{task: rows}`` for several tasks, or a
    :class:`Calibration`, whose notes the result keeps). ``repair_with``: a solver name or
    :class:`RepairSettings`. ``rearrange_rows``: labelled rows of ``task`` whose mini-batch gradients
    re-choose the pruned units of each layer of a budget's mask (:func:`mtprune.rearrange.rearrange`,
    Kwon et al.), before the repair. The input adapter is not changed."""
    if (mask is None) == (scores is None):
        raise MtpruneError("give scores or a mask, not both or neither")
    notes: tuple[str, ...] = ()
    origin = None
    if isinstance(calibration, Calibration):
        notes, origin, calibration = calibration.notes, calibration.origin, calibration.rows
    settings = repair_with if isinstance(repair_with, RepairSettings) else RepairSettings(solver=repair_with)
    if mask is None:
        mask = choose_mask(adapter, task, scores, sparsity=sparsity, budget=budget, kinds=kinds, scope=scope,
                           stack=stack, normalise=normalise, meta=meta)
    if rearrange_rows is not None:
        from mtprune.rearrange import rearrange

        mask = rearrange(adapter, task, mask, rearrange_rows, batch_size=settings.batch_size)
    small, report = repair(adapter, mask, calibration if calibration is not None else [], task, settings,
                           progress=progress, log=log, origin=origin,
                           teacher=repair_teacher(adapter, task, scores, mask, settings))
    return Pruned(small, mask, report, adapter.num_parameters(), small.num_parameters(), notes)
