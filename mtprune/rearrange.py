"""Mask rearrangement (Kwon et al., NeurIPS 2022, section 4.2): within each layer, keep as many units
as the mask keeps, but choose which to prune so that the pruned units' gradients cancel.

A budget's search ranks units one by one (the diagonal of the Fisher information); removing several
units of a layer together costs ``sum over mini-batches of (sum over pruned units of g_b,i)^2``
with ``g_b,i`` the gradient of the loss of mini-batch ``b`` with respect to unit ``i``'s mask
variable (the block-diagonal Fisher of the layer). Kwon's greedy step: start with the units of the
smallest squared gradients pruned; then take the others in that order, add each to the pruned set
and drop from it the unit whose removal leaves the smallest ``|sum g|^2``. The layer keeps its unit
count, so every budget (FLOPs, parameters, latency) stays met.

The mini-batch gradients come from the gate machinery of the gradient methods
(:func:`mtprune.methods.engine.gradient_scores` with ``reduce="signed"`` and one fold per
mini-batch): one forward and backward pass per batch over the rows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mtprune.errors import MtpruneError
from mtprune.masks import Mask
from mtprune.units import layout, select_sites

MINI_BATCH = 32  # rows per gradient vector entry, as Kwon's code
EXAMPLES = 1024  # labelled rows a rearrangement reads by default (prune --rearrange, the dashboard)


def greedy_rearrange(keep: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """One layer: ``keep`` (bool ``[n]``), ``grads`` (``[n, mini-batches]``) -> a new bool keep with
    as many kept units, the pruned set chosen greedily to minimise ``|sum of its gradients|^2``."""
    keep = np.asarray(keep, dtype=bool)
    n = len(keep)
    n_pruned = int(n - keep.sum())
    if n_pruned == 0 or n_pruned == n:
        return keep.copy()
    g = np.asarray(grads, dtype=np.float64)
    order = np.argsort((g ** 2).sum(1), kind="stable").tolist()
    pruned = order[:n_pruned]
    total = g[pruned].sum(0)
    for i in order[n_pruned:]:
        pruned.append(i)
        total = total + g[i]
        rest = total[None, :] - g[pruned]  # the sum without each candidate
        drop = int(np.argmin((rest ** 2).sum(1)))
        total = rest[drop]
        del pruned[drop]
    out = np.ones(n, dtype=bool)
    out[pruned] = False
    return out


def batch_gradients(adapter, task, rows: Sequence[dict], groups: Sequence[str], *, batch_size: int = 32,
                    mini_batch: int = MINI_BATCH) -> dict[str, np.ndarray]:
    """``{group: [mini-batches, layers, max_units]}``: per mini-batch of ``mini_batch`` rows (in the
    rows' order), the gradient of the summed log-likelihood of the gold labels with respect to every
    unit's mask variable."""
    from mtprune.attribution import AttributionSpec
    from mtprune.methods.engine import gradient_scores, objective_gold_log

    if not rows:
        raise MtpruneError("rearranging a mask needs labelled rows of the task")
    sites = [s for s in select_sites(adapter.unit_sites(), "all") if s.group in set(groups)]
    spec = AttributionSpec(task=task.name, method="fisher", examples=len(rows), kinds="all")
    fold_of = [i // mini_batch for i in range(len(rows))]
    per_site = gradient_scores(adapter, task, list(rows), spec, sites, objective=objective_gold_log, alphas=[1.0],
                               batch_size=batch_size, reduce="signed", fold_of=fold_of)
    shapes, _ = layout(sites)
    k = fold_of[-1] + 1
    out = {g: np.zeros((k, *shape)) for g, shape in shapes.items()}
    for s in sites:
        out[s.group][:, s.layer, : s.n_units] = per_site[s.name]
    return out


def rearrange_rows(task, examples: int = EXAMPLES, seed: int = 0, split: str | None = None) -> list[dict]:
    """The labelled rows whose mini-batch gradients a rearrangement reads: the seed's draw of
    ``examples`` rows of the split the scores come from (as a Fisher attribution draws them)."""
    from mtprune.attribution import AttributionSpec, sample_for
    from mtprune.tasks import get_task

    task = get_task(task) if isinstance(task, str) else task
    return sample_for(AttributionSpec(task=task.name, method="fisher", examples=examples, seed=seed, split=split))


def rearrange(adapter, task, mask: Mask, rows: Sequence[dict], *, batch_size: int = 32,
              mini_batch: int = MINI_BATCH) -> Mask:
    """``mask`` with each layer's pruned units re-chosen by :func:`greedy_rearrange` from the
    mini-batch gradients of ``rows`` (labelled rows of ``task``, not the rows it is measured on).
    Only a budget's mask: one line otherwise (a sparsity mask's kept units are its scores' top
    ones by construction)."""
    from mtprune.tasks import get_task

    task = get_task(task) if isinstance(task, str) else task
    if not mask.meta.get("budget"):
        raise MtpruneError("--rearrange re-chooses the units a budget's mask prunes: give a --budget "
                           "(this mask has none)")
    mask.check_matches(adapter)
    bad = [r.get("label") for r in rows if not isinstance(r.get("label"), (int, np.integer))
           or not 0 <= int(r["label"]) < task.num_labels]
    if bad:
        raise MtpruneError(f"rearranging needs labelled rows: {len(bad)} row(s) of {task.name} have no valid label")
    grads = batch_gradients(adapter, task, rows, mask.groups, batch_size=batch_size, mini_batch=mini_batch)
    keep, moved = {}, 0
    for g, k in mask.keep.items():
        new = np.array(k, dtype=bool)
        for layer, n in enumerate(mask.n_units[g]):
            new[layer, :n] = greedy_rearrange(k[layer, :n], grads[g][:, layer, :n].T)
        moved += int((new & ~np.asarray(k)).sum())
        keep[g] = new
    meta = {**mask.meta, "rearranged": {"rows": len(rows), "mini_batch": mini_batch, "units_moved": moved}}
    return Mask(keep, mask.n_units, mask.sparsity, mask.scope, mask.kinds, mask.stack, meta)
