"""Multi-task budgets (after Xia & Shin): one mask shared by several tasks against an ensemble of
single-task masks, under one parameter budget.

The budget counts the parameters of the kept units of the pruned kinds (an FFN neuron of the
default model: its row of the up projection with its bias and its column of the down projection,
2 x 384 + 1 = 769; a head: its rows of Q, K, V with biases and its columns of O), the parameters
pruning can remove. It is given as a count (``3M``, ``250k``, ``1200000``), a percentage of the
prunable parameters (``40%``) or a fraction (``0.4``).

* **joint**: every task's scores are normalised (per task and unit group: ``sum`` divides by the
  group's total |score|, ``max`` by its largest, ``rank`` replaces scores by their percentile),
  combined (``mean`` or ``max`` over tasks), and one mask keeps the best units that fit the budget;
  every task is evaluated with it.
* **ensemble**: each of the ``m`` tasks gets its own mask from its own scores with ``budget / m``
  parameters (together the same total), and is evaluated with it.

A mask fits a budget by the smallest sparsity (same rate per layer, or per group for the global
scope) whose kept parameters do not exceed it, found by bisection; the kept parameters of every
mask are reported, so the two sides can be checked to spend the same total.
"""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pandas as pd

from mtprune.errors import MtpruneError
from mtprune.experiments.core import Runner, row_key

NORMALISERS = ("sum", "max", "rank")
COMBINERS = ("mean", "max")
BUDGET_COLUMNS = ["setting", "task", "budget", "kept_params", "prunable_params", "kept_units",
                  "actual_sparsity", "accuracy", "f1", "mcc", "method", "samples", "units", "scope",
                  "normalise", "combine", "tasks", "split", "n_eval", "model_fingerprint", "key"]


# ----------------------------------------------------------------------------------------------
# parameter costs


def unit_costs(adapter) -> dict[str, np.ndarray]:
    """``{group: [n_layers]}`` parameters one unit of each layer holds (the count
    :func:`mtprune.pruning.count_parameters` removes per pruned unit)."""
    from mtprune.svd import weight_out_in

    model = adapter.model
    per: dict[str, dict[int, int]] = {}
    for s in adapter.unit_sites():
        out = model.get_submodule(s.out_proj)
        cost = s.width * int(weight_out_in(out).shape[0])
        for ip in s.in_proj:
            m = model.get_submodule(ip.path)
            n_in = int(weight_out_in(m).shape[1])
            cost += s.width * ip.chunks * (n_in + (1 if getattr(m, "bias", None) is not None else 0))
        per.setdefault(s.group, {})[s.layer] = cost
    return {g: np.array([d[i] for i in range(max(d) + 1)], dtype=np.int64) for g, d in per.items()}


def _selected(group: str, units: str, stack: str = "all") -> bool:
    s, _, k = group.partition(".")
    return (units == "all" or k == units) and (stack == "all" or s == stack)


def kept_params(mask, costs: dict[str, np.ndarray], units: str | None = None, stack: str = "all") -> int:
    """Parameters of the kept units of the selected groups (all of the mask's pruned groups by default)."""
    units = units or getattr(mask, "units", "all")
    total = 0
    for g, k in mask.keep.items():
        if g in costs and _selected(g, units, stack):
            total += int((np.asarray(k, dtype=bool).sum(1) * costs[g]).sum())
    return total


def prunable_params(adapter, units: str = "ffn", stack: str = "all", costs=None) -> int:
    costs = costs if costs is not None else unit_costs(adapter)
    n: dict[str, dict[int, int]] = {}
    for s in adapter.unit_sites():
        n.setdefault(s.group, {})[s.layer] = s.n_units
    total = 0
    for g, c in costs.items():
        if _selected(g, units, stack):
            total += int(sum(c[layer] * n[g][layer] for layer in n[g]))
    if total == 0:
        raise MtpruneError(f"the model has no {units} units to budget")
    return total


_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}


def parse_budget(text, total: int) -> int:
    """A budget in parameters: ``40%``, ``0.4`` (a fraction of ``total``), ``3M``, ``250k``, ``1200000``.

    A one-line error when it is negative or larger than ``total``.
    """
    s = str(text).strip().lower().replace(",", "").replace("_", "")
    human = _human(total)
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(%|k|m|g|b)?", s)
    if not m:
        raise MtpruneError(f"budget {text!r} is not a number of parameters (as 3M, 250k) or a percentage (40%)")
    v, unit = float(m.group(1)), m.group(2) or ""
    if unit == "%":
        if v > 100:
            raise MtpruneError(f"budget {text} is larger than the model's {human} prunable parameters (over 100%)")
        return int(math.floor(total * v / 100.0 + 1e-9))
    if unit == "" and "." in m.group(1) and v <= 1.0:
        return int(math.floor(total * v + 1e-9))
    n = int(round(v * _SUFFIX[unit]))
    if n > total:
        raise MtpruneError(f"budget {text} is larger than the model's {human} prunable parameters")
    return n


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return str(int(n))


# ----------------------------------------------------------------------------------------------
# score normalisation and combination


def _arrays(scores) -> tuple[dict, dict]:
    if isinstance(scores, dict) and "arrays" in scores:
        arrays, n_units = scores["arrays"], scores["n_units"]
    else:
        arrays, n_units = scores.arrays, scores.n_units
    return ({g: np.asarray(a, dtype=np.float64) for g, a in arrays.items()},
            {g: [int(x) for x in v] for g, v in n_units.items()})


def _valid(n_units: list[int], width: int) -> np.ndarray:
    return np.arange(width)[None, :] < np.asarray(n_units)[:, None]


def normalise_scores(scores, how: str = "sum") -> dict:
    """Scores of one task made comparable with other tasks', per unit group.

    ``sum``: divided by the group's total |score| (times its unit count: mean magnitude 1);
    ``max``: divided by the largest |score|; ``rank``: percentile within the group (0 lowest,
    1 highest, ties averaged). NaN padding stays NaN; a NaN score inside a layer counts as 0.
    """
    if how not in NORMALISERS:
        raise MtpruneError(f"normalisation must be one of {', '.join(NORMALISERS)}, not {how!r}")
    arrays, n_units = _arrays(scores)
    out = {}
    for g, a in arrays.items():
        valid = _valid(n_units[g], a.shape[1])
        v = np.where(valid, np.nan_to_num(a, nan=0.0), np.nan)
        vals = v[valid]
        if how == "sum":
            d = np.abs(vals).sum()
            r = v * (vals.size / d) if d > 0 else np.where(valid, 0.0, np.nan)
        elif how == "max":
            d = np.abs(vals).max() if vals.size else 0.0
            r = v / d if d > 0 else np.where(valid, 0.0, np.nan)
        else:
            ranks = pd.Series(vals).rank(method="average").to_numpy()
            r = np.full(v.shape, np.nan)
            r[valid] = (ranks - 1) / max(vals.size - 1, 1)
        out[g] = r
    return {"arrays": out, "n_units": n_units}


def combine_scores(scores_list, how: str = "mean", normalise: str = "sum") -> dict:
    """One score per unit for a set of tasks: each task's normalised scores, then their mean (or max)."""
    if how not in COMBINERS:
        raise MtpruneError(f"combination must be one of {', '.join(COMBINERS)}, not {how!r}")
    if not scores_list:
        raise MtpruneError("no scores to combine")
    normed = [normalise_scores(s, normalise) for s in scores_list]
    groups = set(normed[0]["arrays"])
    for n in normed[1:]:
        if set(n["arrays"]) != groups or n["n_units"] != normed[0]["n_units"]:
            raise MtpruneError("the tasks' scores are for different models")
    arrays = {}
    for g in groups:
        stack = np.stack([n["arrays"][g] for n in normed])
        arrays[g] = stack.mean(0) if how == "mean" else stack.max(0)
    return {"arrays": arrays, "n_units": normed[0]["n_units"]}


def mask_for_budget(scores, budget: int, costs: dict[str, np.ndarray], scope: str = "layer",
                    units: str = "ffn", stack: str = "all", meta: dict | None = None):
    """The mask with the smallest sparsity whose kept parameters fit ``budget`` (bisection over
    the sparsity; kept parameters never exceed the budget)."""
    from mtprune.masks import mask_from_scores

    if budget < 0:
        raise MtpruneError(f"a budget cannot be negative ({budget})")

    def make(p):
        return mask_from_scores(scores, p, scope=scope, units=units, stack=stack, meta=meta)

    full = make(0.0)
    if kept_params(full, costs, units, stack) <= budget:
        return full
    lo, hi = 0.0, 1.0  # cost(lo) > budget >= cost(hi)
    best = make(1.0)
    if kept_params(best, costs, units, stack) > budget:
        raise MtpruneError(f"even pruning every {units} unit keeps more than {budget} parameters")
    for _ in range(60):
        mid = (lo + hi) / 2
        m = make(mid)
        if kept_params(m, costs, units, stack) <= budget:
            hi, best = mid, m
        else:
            lo = mid
        if hi - lo < 1e-7:
            break
    return best


# ----------------------------------------------------------------------------------------------
# the experiment


def run_budget(adapter, tasks, budgets, method: str = "ap", samples: int = 256, variant: str = "abs",
               units: str = "ffn", scope: str = "layer", normalise: str = "sum", combine: str = "mean",
               limit: int | None = None, split: str | None = None, batch_size: int = 32, seed: int = 0,
               out: str | None = None, resume: bool = True, log=None, rows: dict | None = None,
               prune: str = "soft") -> pd.DataFrame:
    """Joint mask against ensemble at each budget: one row per (budget, setting, task), plus a
    ``mean`` row per (budget, setting) and a ``dense`` reference per task."""
    from mtprune.experiments.core import ResultTable, _stderr
    from mtprune.tasks import get_task

    log = log or _stderr
    tasks = [get_task(t) if isinstance(t, str) else t for t in tasks]
    if len(tasks) < 2:
        raise MtpruneError("a multi-task budget needs at least two tasks")
    if normalise not in NORMALISERS:
        raise MtpruneError(f"--normalise must be one of {', '.join(NORMALISERS)}, not {normalise!r}")
    if combine not in COMBINERS:
        raise MtpruneError(f"--combine must be one of {', '.join(COMBINERS)}, not {combine!r}")
    for t in tasks:
        adapter.head_for(t)
    costs = unit_costs(adapter)
    total = prunable_params(adapter, units, costs=costs)
    budgets = [parse_budget(b, total) if not isinstance(b, (int, np.integer)) else int(b) for b in budgets]
    for b in budgets:
        if b > total:
            raise MtpruneError(f"budget {b} is larger than the model's {_human(total)} prunable parameters")
        if b < 0:
            raise MtpruneError(f"a budget cannot be negative ({b})")
    runner = Runner(adapter, limit=limit, split=split, batch_size=batch_size, log=log, rows=rows, prune=prune)
    table = ResultTable(out, resume=resume, columns=BUDGET_COLUMNS)
    names = [t.name for t in tasks]
    scores = {t.name: runner.scores(t.name, method, samples, seed=seed, variant=variant) for t in tasks}
    joint_scores = combine_scores([scores[n] for n in names], combine, normalise)
    common = dict(method=method, samples=samples, units=units, scope=scope, normalise=normalise,
                  combine=combine, tasks=",".join(names), model_fingerprint=runner.fingerprint)
    keys = []

    def row(setting, task, budget, mask):
        t = get_task(task)
        key = row_key({"experiment": "budget", **common, "variant": variant, "seed": seed, "setting": setting,
                       "task": task, "budget": budget, "split": runner.eval_split(t), "n_eval": runner.eval_size(t)})
        keys.append(key)
        old = table.get(key)
        if old is not None:
            return old
        res = runner.evaluate(t, mask)
        r = {"setting": setting, "task": task, "budget": budget,
             "kept_params": kept_params(mask, costs, units) if mask is not None else total,
             "prunable_params": total,
             "kept_units": mask.kept() if mask is not None else np.nan,
             "actual_sparsity": round(mask.actual_sparsity(), 6) if mask is not None else 0.0,
             "accuracy": res.metrics.get("accuracy"), "f1": res.metrics.get("f1", np.nan),
             "mcc": res.metrics.get("mcc", np.nan), **common, "split": runner.eval_split(t),
             "n_eval": res.n, "key": key}
        table.put(r)
        return r

    t0 = time.perf_counter()
    for n in names:
        row("dense", n, total, None)
    for b in budgets:
        joint = mask_for_budget(joint_scores, b, costs, scope, units)
        share = b // len(names)
        members = {n: mask_for_budget(scores[n], share, costs, scope, units) for n in names}
        for n in names:
            row("joint", n, b, joint)
            row("ensemble", n, b, members[n])
        table.save()
        jk = kept_params(joint, costs, units)
        ek = sum(kept_params(m, costs, units) for m in members.values())
        log(f"  budget {_human(b)}: joint keeps {_human(jk)}, ensemble {_human(ek)} in all "
            f"({time.perf_counter() - t0:.0f} s so far)")
    table.save()
    df = table.frame(keys)
    means = []
    for (setting, b), g in df[df["setting"] != "dense"].groupby(["setting", "budget"], sort=False):
        kp = g["kept_params"].sum() if setting == "ensemble" else g["kept_params"].iloc[0]
        means.append({"setting": setting, "task": "mean", "budget": b, "kept_params": kp,
                      "accuracy": g["accuracy"].mean(), **{k: v for k, v in common.items()}})
    dense = df[df["setting"] == "dense"]
    if len(dense):
        means.append({"setting": "dense", "task": "mean", "budget": total, "kept_params": total,
                      "accuracy": dense["accuracy"].mean(), **common})
    return pd.concat([df, pd.DataFrame.from_records(means)], ignore_index=True)


def budget_table(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """(budget, setting) x task of the metric, the dense model last, for printing."""
    d = df[df["setting"] != "dense"]
    tab = d.pivot_table(index=["budget", "setting"], columns="task", values=metric, sort=False)
    dense = df[df["setting"] == "dense"]
    if len(dense):
        row = dense.set_index("task")[metric]
        tab.loc[(int(dense["budget"].iloc[0]), "dense"), :] = [row.get(c, np.nan) for c in tab.columns]
    return tab
