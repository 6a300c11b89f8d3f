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
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mtprune.errors import MtpruneError
from mtprune.experiments.core import (EvalSettings, Group, Point, Repair, ResultTable, Runner, check_at_least, finish,
                                      parse_list, parse_methods, run_points, stderr_log)
from mtprune.masks import check_choices, mask_from_scores
from mtprune.solvers import get_solver
from mtprune.tasks import get_task
from mtprune.text import human_count
from mtprune.units import chosen_groups, group_sites, unit_cost

NORMALISERS = ("sum", "max", "rank")
COMBINERS = ("mean", "max")
BUDGET_COLUMNS = ["setting", "task", "budget", "repair", "kept_params", "prunable_params", "kept_units",
                  "actual_sparsity", "accuracy", "accuracy_low", "accuracy_high", "f1", "mcc", "method", "examples",
                  "kinds", "scope",
                  "normalise", "combine", "tasks", "split", "n_eval", "model_fingerprint", "key"]


# ----------------------------------------------------------------------------------------------
# parameter costs


def unit_costs(adapter) -> dict[str, np.ndarray]:
    """``{group: [n_layers]}`` parameters one unit of each layer holds (:func:`mtprune.units.unit_cost`,
    the count :func:`mtprune.pruning.count_parameters` removes per pruned unit)."""
    return {g: np.array([unit_cost(adapter.model, s) for s in ss], dtype=np.int64)
            for g, ss in group_sites(adapter.unit_sites()).items()}


def kept_params(mask, costs: dict[str, np.ndarray], kinds: str | None = None, stack: str = "all") -> int:
    """Parameters of the kept units of the selected groups (all of the mask's pruned groups by default)."""
    kinds = kinds or getattr(mask, "kinds", "all")
    chosen = chosen_groups(mask.keep, kinds, stack)
    return int(sum((np.asarray(k, dtype=bool).sum(1) * costs[g]).sum()
                   for g, k in mask.keep.items() if g in costs and g in chosen))


def prunable_params(adapter, kinds: str = "ffn", stack: str = "all", costs=None) -> int:
    costs = costs if costs is not None else unit_costs(adapter)
    groups = group_sites(adapter.unit_sites())
    chosen = chosen_groups(groups, kinds, stack)
    total = sum(int(costs[g][s.layer]) * s.n_units for g, ss in groups.items() if g in chosen for s in ss)
    if total == 0:
        raise MtpruneError(f"the model has no {kinds} units to budget")
    return total


_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}


def parse_budget(text, total: int) -> int:
    """A budget in parameters: ``40%``, ``0.4`` (a fraction of ``total``), ``3M``, ``250k``, ``1200000``.

    A one-line error when it is negative or larger than ``total``.
    """
    s = str(text).strip().lower().replace(",", "").replace("_", "")
    human = human_count(total)
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
                    kinds: str = "ffn", stack: str = "all", meta: dict | None = None):
    """The mask with the smallest sparsity whose kept parameters fit ``budget`` (bisection over
    the sparsity; kept parameters never exceed the budget)."""
    if budget < 0:
        raise MtpruneError(f"a budget cannot be negative ({budget})")

    def make(p):
        return mask_from_scores(scores, p, scope=scope, kinds=kinds, stack=stack, meta=meta)

    full = make(0.0)
    if kept_params(full, costs, kinds, stack) <= budget:
        return full
    lo, hi = 0.0, 1.0  # cost(lo) > budget >= cost(hi)
    best = make(1.0)
    if kept_params(best, costs, kinds, stack) > budget:
        raise MtpruneError(f"even pruning every {kinds} unit keeps more than {budget} parameters")
    for _ in range(60):
        mid = (lo + hi) / 2
        m = make(mid)
        if kept_params(m, costs, kinds, stack) <= budget:
            hi, best = mid, m
        else:
            lo = mid
        if hi - lo < 1e-7:
            break
    return best


# ----------------------------------------------------------------------------------------------
# the experiment


@dataclass(frozen=True)
class BudgetConfig:
    """Tasks sharing one parameter budget (or several), and how their scores combine."""

    tasks: tuple[str, ...]
    budgets: tuple = ("50%",)  # kept unit parameters: 40%, 0.4, 3M, 250k or counts
    method: str = "ap"
    examples: int = 256
    variant: str = "abs"
    kinds: str = "ffn"
    scope: str = "layer"
    normalise: str = "sum"
    combine: str = "mean"
    seed: int = 0
    repair: str = "none"  # the joint model repaired on every task's rows, each member on its own task's
    calib: int = 1024

    def __post_init__(self):
        tasks = tuple(get_task(t).name for t in (parse_list(self.tasks, "tasks") if isinstance(self.tasks, str)
                                                  else self.tasks))
        if len(set(tasks)) < 2:
            raise MtpruneError("a multi-task budget needs at least two tasks")
        object.__setattr__(self, "tasks", tuple(dict.fromkeys(tasks)))
        budgets = parse_list(self.budgets, "budgets") if isinstance(self.budgets, str) else list(self.budgets)
        if not budgets:
            raise MtpruneError("no budgets given")
        object.__setattr__(self, "budgets", tuple(budgets))
        parse_methods([self.method], scores=True)
        check_at_least(self.examples, "--examples")
        check_choices(self.scope, self.kinds)
        if self.normalise not in NORMALISERS:
            raise MtpruneError(f"--normalise must be one of {', '.join(NORMALISERS)}, not {self.normalise!r}")
        if self.combine not in COMBINERS:
            raise MtpruneError(f"--combine must be one of {', '.join(COMBINERS)}, not {self.combine!r}")
        get_solver(self.repair)
        check_at_least(self.calib, "--calib")

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved_budgets(self, total: int) -> list[int]:
        """The budgets in parameters (sorted, without repeats) for ``total`` prunable parameters."""
        out = set()
        for b in self.budgets:
            n = int(b) if isinstance(b, (int, np.integer)) else parse_budget(b, total)
            if n > total:
                raise MtpruneError(f"budget {n} is larger than the model's {human_count(total)} prunable parameters")
            if n < 0:
                raise MtpruneError(f"a budget cannot be negative ({n})")
            out.add(n)
        return sorted(out)


def run_budget(adapter, cfg: BudgetConfig, evals: EvalSettings | None = None, *, out: str | None = None,
               resume: bool = True, log=stderr_log, progress=None, rows: dict | None = None) -> pd.DataFrame:
    """Joint mask against ensemble at each budget: one row per (budget, setting, task), plus a
    ``mean`` row per (budget, setting) and a ``dense`` reference per task."""
    log = log or (lambda msg: None)
    tasks = [get_task(t) for t in cfg.tasks]
    for t in tasks:
        adapter.head_for(t)
    costs = unit_costs(adapter)
    total = prunable_params(adapter, cfg.kinds, costs=costs)
    budgets = cfg.resolved_budgets(total)
    runner = Runner(adapter, evals, log=log, rows=rows)
    table = ResultTable(out, resume=resume, columns=BUDGET_COLUMNS)
    names = [t.name for t in tasks]
    memo: dict = {}

    def scores(name):
        return runner.scores(name, cfg.method, cfg.examples, seed=cfg.seed, variant=cfg.variant)

    def joint_scores():
        if "joint" not in memo:
            memo["joint"] = combine_scores([scores(n) for n in names], cfg.combine, cfg.normalise)
        return memo["joint"]

    def budget_mask(which, b):
        def make():
            if (which, b) not in memo:
                if which == "joint":
                    memo[(which, b)] = mask_for_budget(joint_scores(), b, costs, cfg.scope, cfg.kinds)
                else:
                    memo[(which, b)] = mask_for_budget(scores(which), b // len(names), costs, cfg.scope, cfg.kinds)
            return memo[(which, b)]
        return make

    common = dict(method=cfg.method, examples=cfg.examples, kinds=cfg.kinds, scope=cfg.scope,
                  normalise=cfg.normalise, combine=cfg.combine, tasks=",".join(names))
    key_common = {**common, "variant": cfg.variant, "seed": cfg.seed}

    def extra(mask):
        return {"kept_params": kept_params(mask, costs, cfg.kinds) if mask is not None else total,
                "prunable_params": total,
                "actual_sparsity": round(mask.actual_sparsity(), 6) if mask is not None else 0.0}

    def point(setting, t, b, mask):
        calib_tasks = tuple(names) if setting == "joint" else (t.name,)
        return Point(t, {**key_common, "setting": setting, "task": t.name, "budget": b},
                     {"setting": setting, "task": t.name, "budget": b, **common}, mask, None, extra,
                     Repair(cfg.repair, calib_tasks, cfg.calib))

    t_start = time.perf_counter()
    groups = [Group("dense", [point("dense", t, total, None) for t in tasks])]
    for b in budgets:
        points = [point("joint", t, b, budget_mask("joint", b)) for t in tasks]
        points += [point("ensemble", t, b, budget_mask(t.name, b)) for t in tasks]
        groups.append(Group(f"budget {human_count(b)} (joint, then ensemble)", points))
    keys = run_points(runner, table, "budget", groups, progress)
    for b in budgets:
        if ("joint", b) in memo:
            jk = kept_params(memo[("joint", b)], costs, cfg.kinds)
            ek = sum(kept_params(memo[(n, b)], costs, cfg.kinds) for n in names if (n, b) in memo)
            log(f"  budget {human_count(b)}: joint keeps {human_count(jk)}, ensemble {human_count(ek)} in all")
    df = finish(table, keys, runner, t_start)
    means = []
    for (setting, b), g in df[df["setting"] != "dense"].groupby(["setting", "budget"], sort=False):
        kp = g["kept_params"].sum() if setting == "ensemble" else g["kept_params"].iloc[0]
        means.append({"setting": setting, "task": "mean", "budget": b, "kept_params": kp,
                      "accuracy": g["accuracy"].mean(), **common})
    dense = df[df["setting"] == "dense"]
    if len(dense):
        means.append({"setting": "dense", "task": "mean", "budget": total, "kept_params": total,
                      "accuracy": dense["accuracy"].mean(), **common})
    out_df = pd.concat([df, pd.DataFrame.from_records(means)], ignore_index=True)
    out_df.attrs = df.attrs
    return out_df


def budget_table(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """(budget, setting) x task of the metric, the dense model last, for printing."""
    d = df[df["setting"] != "dense"]
    tab = d.pivot_table(index=["budget", "setting"], columns="task", values=metric, sort=False)
    dense = df[df["setting"] == "dense"]
    if len(dense):
        row = dense.set_index("task")[metric]
        tab.loc[(int(dense["budget"].iloc[0]), "dense"), :] = [row.get(c, np.nan) for c in tab.columns]
    return tab
