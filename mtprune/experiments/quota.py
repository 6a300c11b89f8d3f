"""Multi-task parameter quotas (after Xia & Shin): one mask shared by several tasks against an
ensemble of single-task masks, under one parameter quota (``mtprune quota``).

A quota is not a budget (:class:`mtprune.costs.Budget`, ``flops:0.6``, the share of a cost measure
one task's mask may keep): it is the parameters several tasks share. It counts the parameters of
the kept units of the pruned kinds (the registered ``params`` measure, :func:`mtprune.costs.unit_costs`:
an FFN neuron of the default model is its row of the up projection with its bias and its column of
the down projection, 2 x 384 + 1 = 769; a head its rows of Q, K, V with biases and its columns of O),
the parameters pruning can remove. It is given as a count (``3M``, ``250k``, ``1200000``), a
percentage of the prunable parameters (``40%``) or a fraction (``0.4``).

* **joint**: every task's scores are normalised (per task and unit group, :data:`TASK_NORMALISATIONS`:
  ``sum`` divides by the group's total |score|, ``max`` by its largest, ``rank`` replaces scores by
  their percentile), combined (``mean`` or ``max`` over tasks), and one mask keeps the best units
  that fit the quota; every task is evaluated with it.
* **ensemble**: each of the ``m`` tasks gets its own mask from its own scores with ``quota / m``
  parameters (together the same total), and is evaluated with it.

A mask fits a quota by the smallest sparsity (same rate per layer, or per group for the global
scope) whose kept parameters do not exceed it, found by bisection; the kept parameters of every
mask are reported, so the two sides can be checked to spend the same total.

The rows keep the words of the experiment's first name, ``budget``: the CSV column ``budget`` (the
quota in parameters), the experiment name in row keys and the progress lines, so that result files
written before the rename resume by key and read the same.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mtprune.costs import unit_costs
from mtprune.errors import MtpruneError
from mtprune.examples_auto import DEFAULT_CAP, DEFAULT_TARGET
from mtprune.experiments.core import (EvalSettings, Group, Point, Repair, ResultTable, Runner, auto_key, check_at_least,
                                      check_examples, finish, parse_list, parse_methods, run_points, stderr_log)
from mtprune.masks import check_choices, mask_from_scores
from mtprune.solvers import get_solver
from mtprune.tasks import get_task
from mtprune.text import human_count
from mtprune.units import chosen_groups, group_sites

# how the joint mask makes tasks comparable: each task's scores normalised per unit group before they
# are combined (not mtprune.costs.KIND_NORMALISATIONS, which make kinds comparable in a budget search)
TASK_NORMALISATIONS = ("sum", "max", "rank")
COMBINERS = ("mean", "max")
# "budget" is the quota in parameters, "normalise" the task normalisation: the columns keep the
# experiment's first names, so that result files written before the rename resume and read the same
QUOTA_COLUMNS = ["setting", "task", "budget", "repair", "kept_params", "prunable_params", "kept_units",
                 "actual_sparsity", "accuracy", "accuracy_low", "accuracy_high", "f1", "mcc", "method", "examples",
                 "kinds", "scope",
                 "normalise", "combine", "tasks", "split", "n_eval", "model_fingerprint", "key"]


# ----------------------------------------------------------------------------------------------
# parameter costs

# a unit's parameters are the registered params measure: mtprune.costs.unit_costs(adapter, "params")


def kept_params(mask, costs: dict[str, np.ndarray], kinds: str | None = None, stack: str = "all") -> int:
    """Parameters of the kept units of the selected groups (all of the mask's pruned groups by default)."""
    kinds = kinds or getattr(mask, "kinds", "all")
    chosen = chosen_groups(mask.keep, kinds, stack)
    return int(sum((np.asarray(k, dtype=bool).sum(1) * costs[g]).sum()
                   for g, k in mask.keep.items() if g in costs and g in chosen))


def prunable_params(adapter, kinds: str = "ffn", stack: str = "all", costs=None) -> int:
    """Parameters of all units of the selected kinds: what a quota is a share of."""
    costs = costs if costs is not None else unit_costs(adapter, "params")
    groups = group_sites(adapter.unit_sites())
    chosen = chosen_groups(groups, kinds, stack)
    views = [g for g in chosen if g not in costs]
    if views:  # the params measure leaves out view groups: their parameters are their groups'
        raise MtpruneError(f"the query heads of grouped attention ({', '.join(views)}) hold no parameters of "
                           f"their own: share a quota of --kinds kv or all")
    total = sum(int(costs[g][s.layer]) * s.n_units for g, ss in groups.items() if g in chosen for s in ss)
    if total == 0:
        raise MtpruneError(f"the model has no {kinds} units to share a quota of")
    return total


_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}


def parse_quota(text, total: int) -> int:
    """A quota in parameters: ``40%``, ``0.4`` (a fraction of ``total``), ``3M``, ``250k``, ``1200000``.

    A one-line error when it is negative or larger than ``total``.
    """
    s = str(text).strip().lower().replace(",", "").replace("_", "")
    human = human_count(total)
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(%|k|m|g|b)?", s)
    if not m:
        raise MtpruneError(f"quota {text!r} is not a number of parameters (as 3M, 250k) or a percentage (40%)")
    v, unit = float(m.group(1)), m.group(2) or ""
    if unit == "%":
        if v > 100:
            raise MtpruneError(f"quota {text} is larger than the model's {human} prunable parameters (over 100%)")
        return int(math.floor(total * v / 100.0 + 1e-9))
    if unit == "" and "." in m.group(1) and v <= 1.0:
        return int(math.floor(total * v + 1e-9))
    n = int(round(v * _SUFFIX[unit]))
    if n > total:
        raise MtpruneError(f"quota {text} is larger than the model's {human} prunable parameters")
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
    if how not in TASK_NORMALISATIONS:
        raise MtpruneError(f"normalisation must be one of {', '.join(TASK_NORMALISATIONS)}, not {how!r}")
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


def mask_for_quota(scores, quota: int, costs: dict[str, np.ndarray], scope: str = "layer",
                   kinds: str = "ffn", stack: str = "all", meta: dict | None = None):
    """The mask with the smallest sparsity whose kept parameters fit ``quota`` (bisection over
    the sparsity; kept parameters never exceed the quota)."""
    if quota < 0:
        raise MtpruneError(f"a quota cannot be negative ({quota})")

    def make(p):
        return mask_from_scores(scores, p, scope=scope, kinds=kinds, stack=stack, meta=meta)

    full = make(0.0)
    if kept_params(full, costs, kinds, stack) <= quota:
        return full
    lo, hi = 0.0, 1.0  # cost(lo) > quota >= cost(hi)
    best = make(1.0)
    if kept_params(best, costs, kinds, stack) > quota:
        raise MtpruneError(f"even pruning every {kinds} unit keeps more than {quota} parameters")
    for _ in range(60):
        mid = (lo + hi) / 2
        m = make(mid)
        if kept_params(m, costs, kinds, stack) <= quota:
            hi, best = mid, m
        else:
            lo = mid
        if hi - lo < 1e-7:
            break
    return best


# ----------------------------------------------------------------------------------------------
# the experiment


@dataclass(frozen=True)
class QuotaConfig:
    """Tasks sharing one parameter quota (or several), and how their scores combine."""

    tasks: tuple[str, ...]
    quotas: tuple = ("50%",)  # kept unit parameters: 40%, 0.4, 3M, 250k or counts
    method: str = "ap"
    examples: int | str = 256  # or "auto": as many as `reliability` needs (mtprune.examples_auto)
    variant: str = "abs"
    kinds: str = "ffn"
    scope: str = "layer"
    task_normalise: str = "sum"  # TASK_NORMALISATIONS: each task's scores, before they are combined
    combine: str = "mean"
    seed: int = 0
    repair: str = "none"  # the joint model repaired on every task's rows, each member on its own task's
    calib: int = 1024
    reliability: float = DEFAULT_TARGET  # examples "auto": the reliability every kind must reach
    max_examples: int = DEFAULT_CAP  # examples "auto": at most this many

    def __post_init__(self):
        tasks = tuple(get_task(t).name for t in (parse_list(self.tasks, "tasks") if isinstance(self.tasks, str)
                                                  else self.tasks))
        if len(set(tasks)) < 2:
            raise MtpruneError("a multi-task quota needs at least two tasks")
        object.__setattr__(self, "tasks", tuple(dict.fromkeys(tasks)))
        quotas = parse_list(self.quotas, "quotas") if isinstance(self.quotas, str) else list(self.quotas)
        if not quotas:
            raise MtpruneError("no quotas given")
        object.__setattr__(self, "quotas", tuple(quotas))
        parse_methods([self.method], scores=True)
        object.__setattr__(self, "examples", check_examples(self.examples, self.reliability, self.max_examples))
        check_choices(self.scope, self.kinds)
        if self.task_normalise not in TASK_NORMALISATIONS:
            raise MtpruneError(f"--task-normalise must be one of {', '.join(TASK_NORMALISATIONS)}, "
                               f"not {self.task_normalise!r}")
        if self.combine not in COMBINERS:
            raise MtpruneError(f"--combine must be one of {', '.join(COMBINERS)}, not {self.combine!r}")
        get_solver(self.repair)
        check_at_least(self.calib, "--calib")

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved_quotas(self, total: int) -> list[int]:
        """The quotas in parameters (sorted, without repeats) for ``total`` prunable parameters."""
        out = set()
        for q in self.quotas:
            n = int(q) if isinstance(q, (int, np.integer)) else parse_quota(q, total)
            if n > total:
                raise MtpruneError(f"quota {n} is larger than the model's {human_count(total)} prunable parameters")
            if n < 0:
                raise MtpruneError(f"a quota cannot be negative ({n})")
            out.add(n)
        return sorted(out)


def run_quota(adapter, cfg: QuotaConfig, evals: EvalSettings | None = None, *, out: str | None = None,
              resume: bool = True, log=stderr_log, progress=None, rows: dict | None = None) -> pd.DataFrame:
    """Joint mask against ensemble at each quota: one row per (quota, setting, task), plus a
    ``mean`` row per (quota, setting) and a ``dense`` reference per task.

    The rows, their keys and the progress lines keep the experiment's first name: the quota is the
    column ``budget``, the experiment ``budget`` in keys (rows written before the rename are reused)."""
    log = log or (lambda msg: None)
    tasks = [get_task(t) for t in cfg.tasks]
    for t in tasks:
        adapter.head_for(t)
    costs = unit_costs(adapter, "params")
    total = prunable_params(adapter, cfg.kinds, costs=costs)
    quotas = cfg.resolved_quotas(total)
    runner = Runner(adapter, evals, log=log, rows=rows)
    table = ResultTable(out, resume=resume, columns=QUOTA_COLUMNS)
    names = [t.name for t in tasks]
    memo: dict = {}

    def scores(name):
        return runner.scores(name, cfg.method, cfg.examples, seed=cfg.seed, variant=cfg.variant,
                             reliability=cfg.reliability, max_examples=cfg.max_examples)

    def joint_scores():
        if "joint" not in memo:
            memo["joint"] = combine_scores([scores(n) for n in names], cfg.combine, cfg.task_normalise)
        return memo["joint"]

    def quota_mask(which, q):
        def make():
            if (which, q) not in memo:
                if which == "joint":
                    memo[(which, q)] = mask_for_quota(joint_scores(), q, costs, cfg.scope, cfg.kinds)
                else:
                    memo[(which, q)] = mask_for_quota(scores(which), q // len(names), costs, cfg.scope, cfg.kinds)
            return memo[(which, q)]
        return make

    # the key and column names of before the rename ("normalise", "budget"): old rows resume by key
    common = dict(method=cfg.method, examples=cfg.examples, kinds=cfg.kinds, scope=cfg.scope,
                  normalise=cfg.task_normalise, combine=cfg.combine, tasks=",".join(names))
    key_common = {**common, "variant": cfg.variant, "seed": cfg.seed,
                  **auto_key(cfg.examples, cfg.reliability, cfg.max_examples)}

    def extra(mask):
        return {"kept_params": kept_params(mask, costs, cfg.kinds) if mask is not None else total,
                "prunable_params": total,
                "actual_sparsity": round(mask.actual_sparsity(), 6) if mask is not None else 0.0}

    def point(setting, t, q, mask):
        calib_tasks = tuple(names) if setting == "joint" else (t.name,)
        used = {"joint": lambda: [scores(n) for n in names], "ensemble": lambda: scores(t.name)}.get(setting)
        return Point(t, {**key_common, "setting": setting, "task": t.name, "budget": q},
                     {"setting": setting, "task": t.name, "budget": q, **common}, mask, None, extra,
                     Repair(cfg.repair, calib_tasks, cfg.calib), used)

    t_start = time.perf_counter()
    groups = [Group("dense", [point("dense", t, total, None) for t in tasks])]
    for q in quotas:
        points = [point("joint", t, q, quota_mask("joint", q)) for t in tasks]
        points += [point("ensemble", t, q, quota_mask(t.name, q)) for t in tasks]
        groups.append(Group(f"budget {human_count(q)} (joint, then ensemble)", points))  # the printed line of old
    keys = run_points(runner, table, "budget", groups, progress)  # "budget": the experiment's name in keys
    for q in quotas:
        if ("joint", q) in memo:
            jk = kept_params(memo[("joint", q)], costs, cfg.kinds)
            ek = sum(kept_params(memo[(n, q)], costs, cfg.kinds) for n in names if (n, q) in memo)
            log(f"  budget {human_count(q)}: joint keeps {human_count(jk)}, ensemble {human_count(ek)} in all")
    return _with_means(finish(table, keys, runner, t_start), common, total)


def _with_means(df: pd.DataFrame, common: dict, total: int) -> pd.DataFrame:
    """The rows and a ``mean`` row per (setting, quota): the ensemble's kept parameters summed."""
    means = []
    for (setting, q), g in df[df["setting"] != "dense"].groupby(["setting", "budget"], sort=False):
        kp = g["kept_params"].sum() if setting == "ensemble" else g["kept_params"].iloc[0]
        means.append({"setting": setting, "task": "mean", "budget": q, "kept_params": kp,
                      "accuracy": g["accuracy"].mean(), **common})
    dense = df[df["setting"] == "dense"]
    if len(dense):
        means.append({"setting": "dense", "task": "mean", "budget": total, "kept_params": total,
                      "accuracy": dense["accuracy"].mean(), **common})
    out_df = pd.concat([df, pd.DataFrame.from_records(means)], ignore_index=True)
    out_df.attrs = df.attrs
    return out_df


def quota_table(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """(quota, setting) x task of the metric, the dense model last, for printing (the quota is the
    column ``budget``)."""
    d = df[df["setting"] != "dense"]
    tab = d.pivot_table(index=["budget", "setting"], columns="task", values=metric, sort=False)
    dense = df[df["setting"] == "dense"]
    if len(dense):
        row = dense.set_index("task")[metric]
        tab.loc[(int(dense["budget"].iloc[0]), "dense"), :] = [row.get(c, np.nan) for c in tab.columns]
    return tab
