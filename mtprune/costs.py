"""What a unit costs, and masks that spend one budget over the units of every layer and both kinds.

A unit's cost is measured in a registered budget measure (:mod:`mtprune.measures`: ``flops``,
``params``, ``latency``, one module each); :func:`prepare_costs` is the one place a model's unit
costs for a task are prepared.

A budget (:class:`Budget`, ``flops:0.6``, ``params:0.5``, ``latency:0.6``) is the share of the
prunable units' total cost (heads and FFN neurons of every layer: "encoder FLOPs" for an
encoder) that the pruned model may keep. :func:`search_mask` spends it as Kwon et al. do: both
kinds ranked by score (each kind's scores normalised to sum to one by default, so heads and
neurons compare), and for every number of heads kept, the rest of the budget goes to the best
neurons; the split with the highest total score wins.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from mtprune.errors import MtpruneError
from mtprune.masks import Mask, check_choices, rank_order, scores_parts
from mtprune.measures import get_measure, measure_names
from mtprune.units import KINDS, chosen_groups, group_parts, view_groups

# how the budget search makes kinds comparable: each kind's scores divided by their sum, or as they are
KIND_NORMALISATIONS = ("sum", "none")


# ----------------------------------------------------------------------------------------------
# budgets


@dataclass(frozen=True)
class Budget:
    """``measure:fraction``: keep at most ``fraction`` of the prunable units' total ``measure``."""

    measure: str
    fraction: float

    def __post_init__(self):
        names = measure_names()
        if self.measure not in names:
            raise MtpruneError(f"unknown budget {self.measure!r}: use {', '.join(m + ':0.6' for m in names)}")
        f = float(self.fraction)
        if not math.isfinite(f) or not 0.0 < f <= 1.0:
            raise MtpruneError(f"a budget is a fraction in (0, 1], not {self.fraction!r}")
        object.__setattr__(self, "fraction", f)

    @classmethod
    def parse(cls, text) -> "Budget":
        if isinstance(text, Budget):
            return text
        m = re.fullmatch(r"\s*([a-z]+)\s*:\s*([^\s]+)\s*", str(text))
        if not m:
            raise MtpruneError(f"a budget reads measure:fraction ({', '.join(m + ':0.6' for m in measure_names())}), "
                               f"not {text!r}")
        try:
            value = float(m.group(2).rstrip("%")) / (100.0 if m.group(2).endswith("%") else 1.0)
        except ValueError:
            raise MtpruneError(f"budget {text!r}: {m.group(2)!r} is not a number") from None
        return cls(m.group(1), value)

    def __str__(self) -> str:
        return f"{self.measure}:{self.fraction:g}"

    @property
    def percent(self) -> int:
        """The fraction kept in whole percent (``flops:0.6`` -> 60), as sliders and file names show it."""
        return int(round(100 * self.fraction))

    def to_dict(self) -> dict:
        return {"measure": self.measure, "fraction": self.fraction}


def parse_budgets(value) -> tuple[Budget, ...]:
    """Budgets from ``flops:0.8,0.7,0.6`` (a measure, then fractions; ``params:0.5,flops:0.6`` mixes
    measures) or a list of budgets or their strings; de-duplicated in order."""
    if not value:
        return ()
    items = [x.strip() for x in value.split(",") if x.strip()] if isinstance(value, str) else list(value)
    out, measure = [], None
    for item in items:
        if isinstance(item, Budget) or ":" in str(item):
            b = Budget.parse(item)
            measure = b.measure
        elif measure is None:
            raise MtpruneError(f"--budgets starts with a measure, as flops:{item}, not {item!r}")
        else:
            b = Budget.parse(f"{measure}:{item}")
        out.append(b)
    return tuple(dict.fromkeys(out))


# ----------------------------------------------------------------------------------------------
# costs per unit


def unit_costs(adapter, measure: str = "params", seq_len: float | None = None, task=None,
               **options) -> dict[str, np.ndarray]:
    """``{group: [layers]}``: what one unit of each layer costs in ``measure`` (a registered
    :class:`mtprune.measures.Measure`; those per length need ``seq_len``)."""
    m = get_measure(measure)
    if m.per_length and (seq_len is None or seq_len <= 0):
        raise ValueError(f"{measure} costs need a sequence length")
    return m.costs(adapter, seq_len, task, **options)


@dataclass(frozen=True)
class UnitCosts:
    """A model's unit costs for a task in one measure: ``costs`` ``{group: [layers]}``, at
    ``seq_len`` tokens (the task's average length; None when the measure does not depend on it)."""

    measure: str
    costs: dict
    seq_len: float | None


_PREPARED: dict[tuple, UnitCosts] = {}


def prepare_costs(adapter, task, measure: str | Budget = "flops") -> UnitCosts:
    """The one place a model's unit costs for a task are prepared: the measure's costs at the
    task's average length (:func:`average_length`), computed once per model, task and measure in a
    process (a measured measure's table is kept on disk too)."""
    from mtprune.tasks import get_task

    name = measure.measure if isinstance(measure, Budget) else measure
    m = get_measure(name)
    task = get_task(task) if isinstance(task, str) else task
    key = (adapter.fingerprint(), task.name, name)
    if key not in _PREPARED:
        seq = average_length(adapter, task) if m.per_length else None
        _PREPARED[key] = UnitCosts(name, m.costs(adapter, seq, task), seq)
    return _PREPARED[key]


def total_cost(costs: dict[str, np.ndarray], n_units: dict[str, list[int]], kinds: str = "all",
               stack: str = "all") -> float:
    """The cost of every unit of the selected groups."""
    chosen = chosen_groups(n_units, kinds, stack)
    return float(sum((costs[g] * np.asarray(n, dtype=np.float64)).sum()
                     for g, n in n_units.items() if g in costs and g in chosen))


def kept_cost(mask: Mask, costs: dict[str, np.ndarray]) -> float:
    """The cost of the units ``mask`` keeps (every group)."""
    return float(sum((mask.keep[g].sum(1) * costs[g]).sum() for g in mask.groups if g in costs))


def kept_share(mask: Mask | None, costs: dict[str, np.ndarray], n_units: dict[str, list[int]]) -> float:
    """The share of the cost of all the model's prunable units (``n_units``: its layout) that
    ``mask`` keeps. Groups the mask does not cover (the heads of an FFN-only mask) count as kept
    whole: an FFN mask at 50% keeps more than half the model's prunable FLOPs."""
    total = total_cost(costs, n_units)
    if mask is None or total <= 0:
        return 1.0
    kept = 0.0
    for g, n in n_units.items():
        if g not in costs:
            continue
        per_layer = mask.keep[g].sum(1) if g in mask.groups else np.asarray(n, dtype=np.float64)
        kept += float((per_layer * costs[g]).sum())
    return kept / total


# ----------------------------------------------------------------------------------------------
# sequence length: the length FLOPs are counted at


_LENGTHS: dict[tuple, float] = {}


def average_length(adapter, task, split: str | None = None, n: int = 512) -> float:
    """The mean number of tokens the adapter feeds its model for ``n`` seeded rows of a split (the
    task's validation split by default): the length FLOPs are counted at."""
    from mtprune.batching import token_lengths
    from mtprune.tasks import get_task, load_rows, sample_rows

    task = get_task(task) if isinstance(task, str) else task
    split = split or task.default_split
    key = (adapter.fingerprint(), task.name, split, n)
    if key not in _LENGTHS:
        ds = load_rows(task, split)
        rows = sample_rows(ds, min(n, len(ds)), seed=0, balanced=False)
        lengths = token_lengths(adapter, task, rows, chunk=64)
        _LENGTHS[key] = float(np.mean(lengths)) if lengths else 1.0
    return _LENGTHS[key]


# ----------------------------------------------------------------------------------------------
# the search


def _normalised(arrays: dict, n_units: dict, groups: list[str], how: str) -> dict[str, np.ndarray]:
    """Scores of the chosen groups, each kind divided by its total (``sum``) or as they are."""
    if how not in KIND_NORMALISATIONS:
        raise MtpruneError(f"normalisation must be one of {', '.join(KIND_NORMALISATIONS)}, not {how!r}")
    out = {}
    for kind in KINDS:
        gs = [g for g in groups if group_parts(g)[1] == kind]
        total = sum(float(np.nansum(np.abs(arrays[g]))) for g in gs)
        for g in gs:
            a = np.where(np.isnan(arrays[g]), -np.inf, arrays[g])
            out[g] = a / total if how == "sum" and total > 0 else a
    return out


def search_mask(scores, budget: Budget | str, costs: dict[str, np.ndarray], kinds: str = "all", stack: str = "all",
                normalise: str = "sum", meta: dict | None = None) -> Mask:
    """The mask that keeps the most (normalised) score within ``budget`` of the prunable cost.

    Units of the groups not chosen by ``kinds``/``stack`` are kept whole and their cost counts
    against the budget; a budget they alone exceed is an error that names the smallest reachable one.
    """
    budget = Budget.parse(budget)
    check_choices("global", kinds, stack)
    arrays, n_units, smeta = scores_parts(scores)
    chosen = chosen_groups(arrays, kinds, stack)
    if not chosen:
        raise MtpruneError(f"the scores have no {kinds} units to prune")
    views = [g for g in chosen if g in view_groups(arrays)]
    if views:
        raise MtpruneError(f"a budget cannot be spent on single query heads of grouped attention ({', '.join(views)}): "
                           "they cost nothing apart from their key/value groups; budget --kinds kv or all")
    missing = [g for g in chosen if g not in costs]
    if missing:
        raise MtpruneError(f"no costs for the unit group(s) {', '.join(missing)}")
    total = total_cost(costs, n_units)
    fixed = total - total_cost(costs, n_units, kinds, stack)
    limit = budget.fraction * total
    if fixed > limit * (1 + 1e-12):
        raise MtpruneError(f"budget {budget} cannot be met: pruning only {kinds} units, the units kept whole hold "
                           f"{fixed / total:.3f} of the {budget.measure}; the smallest reachable budget is "
                           f"{budget.measure}:{math.ceil(fixed / total * 1000) / 1000:g}")
    norm = _normalised(arrays, n_units, chosen, normalise)
    # every chosen unit of a kind, best first: (group, layer, unit) with its score and cost
    lists = {}
    for kind in KINDS:
        gs = [g for g in chosen if group_parts(g)[1] == kind]
        if not gs:
            continue
        g_idx = np.concatenate([np.full(int(sum(n_units[g])), i) for i, g in enumerate(gs)])
        layer = np.concatenate([np.repeat(np.arange(len(n_units[g])), n_units[g]) for g in gs])
        unit = np.concatenate([np.concatenate([np.arange(c) for c in n_units[g]] or [np.zeros(0, int)]) for g in gs])
        vals = np.concatenate([norm[g][layer[g_idx == i], unit[g_idx == i]] for i, g in enumerate(gs)])
        cost = np.concatenate([costs[g][layer[g_idx == i]] for i, g in enumerate(gs)])
        order = rank_order(np.where(np.isinf(vals), np.nan, vals))
        finite = np.where(np.isfinite(vals[order]), vals[order], 0.0)
        lists[kind] = {"gs": gs, "g": g_idx[order], "layer": layer[order], "unit": unit[order],
                       "cum_score": np.concatenate([[0.0], np.cumsum(finite)]),
                       "cum_cost": np.concatenate([[0.0], np.cumsum(cost[order])])}
    room = limit - fixed
    kinds_here = list(lists)
    if len(kinds_here) == 1:
        best = {kinds_here[0]: int(np.searchsorted(lists[kinds_here[0]]["cum_cost"], room * (1 + 1e-12), "right") - 1)}
    elif len(kinds_here) > 2 or "ffn" not in lists:
        raise MtpruneError(f"a budget is spent over FFN neurons and one kind of attention unit, not {', '.join(kinds_here)}")
    else:
        attn = next(k for k in kinds_here if k != "ffn")  # heads, or key/value groups
        a, b = lists[attn], lists["ffn"]
        best, best_score = None, -np.inf
        for h in range(len(a["cum_cost"])):
            rest = room - a["cum_cost"][h]
            if rest < -1e-9 * max(room, 1.0):
                break
            n = int(np.searchsorted(b["cum_cost"], rest * (1 + 1e-12), "right") - 1)
            score = a["cum_score"][h] + b["cum_score"][n]
            if score > best_score:
                best, best_score = {attn: h, "ffn": n}, score
    keep = {g: np.zeros((len(n), max(n, default=0)), dtype=bool) for g, n in n_units.items()}
    for g, n in n_units.items():
        if g not in chosen:
            for layer_i, c in enumerate(n):
                keep[g][layer_i, :c] = True
    for kind, k in best.items():
        lst = lists[kind]
        for gi, li, ui in zip(lst["g"][:k], lst["layer"][:k], lst["unit"][:k]):
            keep[lst["gs"][gi]][li, ui] = True
    n_chosen = sum(int(sum(n_units[g])) for g in chosen)
    n_kept = sum(int(keep[g].sum()) for g in chosen)
    kept = float(sum((keep[g].sum(1) * costs[g]).sum() for g in keep if g in costs))
    return Mask(keep=keep, n_units=n_units, sparsity=1.0 - n_kept / n_chosen if n_chosen else 0.0, scope="budget",
                kinds=kinds, stack=stack,
                meta={**smeta, **(meta or {}), "budget": str(budget), "normalise": normalise, "cost_kept": kept,
                      "cost_total": total, "cost_fraction_kept": kept / total if total else 1.0})
