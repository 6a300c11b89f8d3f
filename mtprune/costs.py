"""What a unit costs, and masks that spend one budget over the units of every layer and both kinds.

A unit's cost is measured in

* ``params``: the parameters its removal saves (:func:`mtprune.units.unit_cost`: its columns of
  the out projection, its rows and biases of the in projections);
* ``flops``: the multiply-adds of one forward pass at a sequence length ``T``, times two: an FFN
  neuron ``2 T (d_in + d_out)`` (a row of the up/gate projections, a column of the down one); a
  head ``2 T w (3 d + d) + 4 T^2 w`` (its rows of Q, K, V, its columns of O, and its share of
  QK^T and AV), as Kwon et al. count them and as ``torch.utils.flop_counter`` does;
* ``latency``: seconds per example, from a table measured on this machine
  (:func:`latency_table`: the dense model against copies with half the FFN neurons or half the
  heads removed, at batch 32 and length ``T``).

A budget (:class:`Budget`, ``flops:0.6``, ``params:0.5``, ``latency:0.6``) is the share of the
prunable units' total cost (heads and FFN neurons of every layer: "encoder FLOPs" for an
encoder) that the pruned model may keep. :func:`search_mask` spends it as Kwon et al. do: both
kinds ranked by score (each kind's scores normalised to sum to one by default, so heads and
neurons compare), and for every number of heads kept, the rest of the budget goes to the best
neurons; the split with the highest total score wins.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass

import numpy as np

from mtprune.errors import MtpruneError
from mtprune.masks import Mask, check_choices, rank_order, scores_parts
from mtprune.units import KINDS, chosen_groups, group_parts, group_sites, unit_cost, view_groups

MEASURES = ("flops", "params", "latency")
NORMALISATIONS = ("sum", "none")


# ----------------------------------------------------------------------------------------------
# budgets


@dataclass(frozen=True)
class Budget:
    """``measure:fraction``: keep at most ``fraction`` of the prunable units' total ``measure``."""

    measure: str
    fraction: float

    def __post_init__(self):
        if self.measure not in MEASURES:
            raise MtpruneError(f"unknown budget {self.measure!r}: use {', '.join(m + ':0.6' for m in MEASURES)}")
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
            raise MtpruneError(f"a budget reads measure:fraction (flops:0.6, params:0.5, latency:0.6), not {text!r}")
        try:
            value = float(m.group(2).rstrip("%")) / (100.0 if m.group(2).endswith("%") else 1.0)
        except ValueError:
            raise MtpruneError(f"budget {text!r}: {m.group(2)!r} is not a number") from None
        return cls(m.group(1), value)

    def __str__(self) -> str:
        return f"{self.measure}:{self.fraction:g}"

    def to_dict(self) -> dict:
        return {"measure": self.measure, "fraction": self.fraction}


# ----------------------------------------------------------------------------------------------
# costs per unit


def _per_group(adapter, fn) -> dict[str, np.ndarray]:
    """``{group: [fn(site) per layer]}``; view groups (the query heads of grouped attention, whose
    parameters their key/value groups hold) have no cost of their own and are left out."""
    groups = group_sites(adapter.unit_sites())
    views = view_groups(groups)
    return {g: np.array([fn(s) for s in ss], dtype=np.float64) for g, ss in groups.items() if g not in views}


def unit_flops(adapter, seq_len: float) -> dict[str, np.ndarray]:
    """``{group: [layers]}`` FLOPs of one unit for one sequence of ``seq_len`` tokens."""
    model = adapter.model

    def flops(site):
        macs = seq_len * (unit_cost(model, site) - _bias_rows(model, site))  # weights only
        if site.kind != "ffn":
            macs += 2 * seq_len * seq_len * site.width  # QK^T and AV of its query heads
        return 2.0 * macs

    return _per_group(adapter, flops)


def _bias_rows(model, site) -> int:
    from mtprune import layers

    return sum(ip.rows(site) * ip.chunks for ip in site.in_proj if layers.has_bias(model.get_submodule(ip.path)))


def unit_costs(adapter, measure: str = "params", seq_len: float | None = None,
               latency: dict | None = None) -> dict[str, np.ndarray]:
    """``{group: [layers]}``: what one unit of each layer costs in ``measure``."""
    if measure == "params":
        return _per_group(adapter, lambda s: unit_cost(adapter.model, s))
    if seq_len is None or seq_len <= 0:
        raise ValueError(f"{measure} costs need a sequence length")
    if measure == "flops":
        return unit_flops(adapter, seq_len)
    if measure == "latency":
        if latency is None:
            raise ValueError("latency costs need a latency table")
        return _per_group(adapter, lambda s: latency["per_unit"][s.kind])
    raise MtpruneError(f"unknown cost measure {measure!r}; measures: {', '.join(MEASURES)}")


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
# sequence length and FLOP counting


_LENGTHS: dict[tuple, float] = {}


def average_length(adapter, task, split: str | None = None, n: int = 512) -> float:
    """The mean number of tokens the adapter feeds its model for ``n`` seeded rows of a split (the
    task's validation split by default): the length FLOPs are counted at."""
    from mtprune.methods.engine import token_lengths
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


def count_flops(adapter, batch: dict, task) -> int:
    """Matmul FLOPs of one forward pass of ``batch`` (``torch.utils.flop_counter`` for Linear layers
    and whatever matmuls it sees; attention's QK^T and AV added from the head counts when the CPU's
    fused attention hides them from the counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        adapter.logits(batch, task)
    counted = int(fc.get_total_flops())
    ops = {str(k) for k in fc.get_flop_counts().get("Global", {})}
    if not any("attention" in o or "bmm" in o for o in ops):
        counted += attention_flops(adapter, batch)
    return counted


def attention_flops(adapter, batch: dict) -> int:
    """FLOPs of QK^T and AV for a batch of ``input_ids``: ``4 B T^2 w`` per head."""
    b, t = batch["input_ids"].shape
    return sum(4 * b * t * t * s.n_units * s.width for s in adapter.unit_sites()
               if s.kind == "heads")  # every query head once (a grouped model's groups hold the same heads)


# ----------------------------------------------------------------------------------------------
# latency, measured


def latency_table(adapter, task, seq_len: int, batch_size: int = 32, repeats: int = 5, cache: bool = True) -> dict:
    """Seconds per example of each unit kind on this machine: the dense model timed against copies
    with half of every layer's FFN neurons or heads removed (random masks, hard pruning), at
    ``batch_size`` x ``seq_len`` tokens, medians of interleaved runs. Stored in the cache folder
    per model, length and thread count, so it is measured once."""
    import os
    import platform

    import torch

    from mtprune.assets import cache_dir
    from mtprune.io import atomic_write_text, stable_hash
    from mtprune.masks import mask_from_scores
    from mtprune.pruning import hard_prune, hard_prune_problem

    ident = {"model": adapter.fingerprint(), "seq_len": int(seq_len), "batch": batch_size,
             "threads": torch.get_num_threads(), "device": str(adapter.device), "machine": platform.machine(),
             "cpus": os.cpu_count()}
    path = cache_dir() / "latency" / f"{stable_hash(ident, 24)}.json"
    if cache and path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    rng = np.random.default_rng(0)
    shapes = {g: (len(ss), max(s.n_units for s in ss)) for g, ss in group_sites(adapter.unit_sites()).items()}
    scores = {"arrays": {g: rng.random(sh) for g, sh in shapes.items()},
              "n_units": {g: [s.n_units for s in ss] for g, ss in group_sites(adapter.unit_sites()).items()}}
    rows = [{f: " ".join(["word"] * max(1, int(seq_len) - 2)) for f in task.fields} | {"label": 0}
            for _ in range(batch_size)]
    batch = adapter.encode(rows, task)
    models = {"dense": adapter}
    removed = {}
    for kind in KINDS:
        if kind not in [group_parts(g)[1] for g in shapes]:
            continue
        mask = mask_from_scores(scores, 0.5, kinds=kind)
        if hard_prune_problem(adapter, mask):
            continue
        models[kind] = hard_prune(adapter, mask)
        removed[kind] = mask.total() - mask.kept()
    times = {k: [] for k in models}

    def once(a):
        with torch.inference_mode():
            t0 = time.perf_counter()
            a.logits(batch, task)
            return time.perf_counter() - t0

    for a in models.values():
        once(a)  # warm-up
    for _ in range(repeats):
        for k, a in models.items():
            times[k].append(once(a))
    med = {k: float(np.median(v)) / batch_size for k, v in times.items()}
    per_unit = {k: max(med["dense"] - med[k], 0.0) / removed[k] for k in removed}
    table = {"seconds_per_example": med, "per_unit": per_unit, **ident}
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(table, indent=1))
    return table


# ----------------------------------------------------------------------------------------------
# the search


def _normalised(arrays: dict, n_units: dict, groups: list[str], how: str) -> dict[str, np.ndarray]:
    """Scores of the chosen groups, each kind divided by its total (``sum``) or as they are."""
    if how not in NORMALISATIONS:
        raise MtpruneError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, not {how!r}")
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
                           "they cost nothing apart from their key/value groups; budget --kinds groups or all")
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
