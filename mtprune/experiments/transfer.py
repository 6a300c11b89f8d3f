"""Cross-task transfer: does task A's mask serve task B?

For every pair of tasks (A, B) of a shared model, B is evaluated through its own head with the
mask made from A's scores (one sparsity, or one budget); A = B is B's own mask. Beside them, per
task B: the dense model and a random mask of the same size. Every metric carries its 95% interval,
so a task x task matrix says not only how much two tasks' masks overlap (``overlap``) but whether
one task's mask keeps another task working: the paper's cross-task finding (qnli keeps its accuracy
with rte's mask, not with sst2's), for every pair.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mtprune.costs import Budget
from mtprune.errors import MtpruneError
from mtprune.experiments.core import (EvalSettings, Group, Point, Repair, ResultTable, Runner, budget_mask_maker,
                                      check_at_least, finish, mask_maker, parse_list, parse_methods, parse_sparsity,
                                      run_points, stderr_log)
from mtprune.masks import check_choices
from mtprune.solvers import get_solver
from mtprune.tasks import get_task

DENSE, RANDOM = "dense", "random mask"
TRANSFER_COLUMNS = ["mask_from", "target", "method", "sparsity", "budget", "repair", "accuracy", "accuracy_low",
                    "accuracy_high", "f1", "mcc", "kinds", "scope", "examples", "split", "n_eval", "kept_units",
                    "model_fingerprint", "key"]


@dataclass(frozen=True)
class TransferConfig:
    """The tasks (two or more) and how each task's mask is made: a sparsity, or a budget."""

    tasks: tuple[str, ...]
    sparsity: float | None = 0.5
    budget: Budget | None = None  # flops:0.6 instead of a sparsity (both kinds, all layers); strings are parsed
    method: str = "ap"
    kinds: str = "ffn"
    scope: str = "layer"
    examples: int = 256
    variant: str = "abs"
    seed: int = 0
    repair: str = "none"  # the pruned model repaired on the mask source's train rows
    calib: int = 1024
    random: bool = True  # also a random mask of the same size, per target

    def __post_init__(self):
        tasks = parse_list(self.tasks, "tasks") if isinstance(self.tasks, str) else list(self.tasks)
        tasks = tuple(dict.fromkeys(get_task(t).name for t in tasks))
        if len(tasks) < 2:
            raise MtpruneError("a transfer matrix needs at least two tasks")
        object.__setattr__(self, "tasks", tasks)
        if self.budget is not None:
            object.__setattr__(self, "budget", Budget.parse(self.budget))
            object.__setattr__(self, "sparsity", None)
        elif self.sparsity is None:
            raise MtpruneError("give a sparsity or a budget")
        else:
            object.__setattr__(self, "sparsity", parse_sparsity(self.sparsity))
        parse_methods([self.method], scores=True)
        check_choices(self.scope, self.kinds)
        check_at_least(self.examples, "--examples")
        get_solver(self.repair)
        check_at_least(self.calib, "--calib")

    def to_dict(self) -> dict:
        return {**asdict(self), "budget": str(self.budget) if self.budget else None}

    def describe(self) -> str:
        what = f"budget {self.budget}" if self.budget else f"{self.sparsity:.0%} of the {self.kinds} units pruned"
        return f"{self.method} masks, {what}" + ("" if self.repair == "none" else f", repaired ({self.repair})")


def run_transfer(adapter, cfg: TransferConfig, evals: EvalSettings | None = None, *, out: str | None = None,
                 resume: bool = True, log=stderr_log, progress=None, rows: dict | None = None) -> pd.DataFrame:
    """One row per (mask source, target): every task's mask on every task, plus the dense model and
    a random mask of the same size per target."""
    log = log or (lambda msg: None)
    tasks = [get_task(t) for t in cfg.tasks]
    for t in tasks:
        adapter.head_for(t)
    runner = Runner(adapter, evals, log=log, rows=rows)
    table = ResultTable(out, resume=resume, columns=TRANSFER_COLUMNS)
    t_start = time.perf_counter()
    kinds = "all" if cfg.budget else cfg.kinds

    def maker(source: str, method: str, seed: int):
        def scores():
            return runner.scores(source, method, cfg.examples, seed=seed, variant=cfg.variant)

        if cfg.budget:
            return budget_mask_maker(runner, scores, get_task(source), cfg.budget, kinds)
        return mask_maker(runner, scores, cfg.sparsity, cfg.scope, kinds)

    budget = str(cfg.budget) if cfg.budget else None  # a Budget; its string form in keys and columns
    common_key = {"method": cfg.method, "sparsity": cfg.sparsity, "budget": budget, "kinds": kinds,
                  "scope": "budget" if cfg.budget else cfg.scope, "examples": cfg.examples, "variant": cfg.variant,
                  "seed": cfg.seed}
    fields = {"sparsity": cfg.sparsity if cfg.sparsity is not None else np.nan, "budget": budget or "",
              "kinds": kinds, "scope": common_key["scope"], "examples": cfg.examples}
    groups = []
    for target in tasks:
        points = [Point(target, {"mask_from": DENSE}, {"mask_from": DENSE, "target": target.name, "method": "",
                                                        **fields})]
        for source in tasks:
            points.append(Point(target, {**common_key, "mask_from": source.name},
                                {"mask_from": source.name, "target": target.name, "method": cfg.method, **fields},
                                maker(source.name, cfg.method, cfg.seed), None, None,
                                Repair(cfg.repair, (source.name,), cfg.calib, cfg.seed)))
        if cfg.random:
            points.append(Point(target, {**common_key, "method": "random", "mask_from": RANDOM},
                                {"mask_from": RANDOM, "target": target.name, "method": "random", **fields},
                                maker(target.name, "random", cfg.seed), None, None,
                                Repair(cfg.repair, (target.name,), cfg.calib, cfg.seed)))
        groups.append(Group(f"{target.name} with every mask", points))
    keys = run_points(runner, table, "transfer", groups, progress)
    return finish(table, keys, runner, t_start)


def transfer_matrix(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Mask source (rows: every task, then ``dense`` and ``random mask``) x evaluated task
    (columns) of ``metric``; ``attrs["low"]`` and ``attrs["high"]`` hold the 95% intervals."""
    if df.empty:
        raise MtpruneError("no transfer rows")
    targets = list(dict.fromkeys(df["target"]))
    sources = [t for t in dict.fromkeys(df["mask_from"]) if t not in (DENSE, RANDOM)]
    order = sources + [s for s in (DENSE, RANDOM) if s in set(df["mask_from"])]

    def pivot(col):
        if col not in df:
            return pd.DataFrame(np.nan, index=order, columns=targets)
        return df.pivot_table(index="mask_from", columns="target", values=col, aggfunc="mean").reindex(
            index=order, columns=targets)

    m = pivot(metric)
    m.index.name, m.columns.name = "mask from", "evaluated task"
    m.attrs["low"], m.attrs["high"] = pivot(f"{metric}_low"), pivot(f"{metric}_high")
    return m


def format_transfer(matrix: pd.DataFrame, digits: int = 3) -> str:
    """A Markdown table: every cell ``value [low, high]``."""
    lo, hi = matrix.attrs.get("low"), matrix.attrs.get("high")
    lines = ["| mask from | " + " | ".join(matrix.columns) + " |", "| --- |" + " --- |" * len(matrix.columns)]
    for src, row in matrix.iterrows():
        cells = []
        for t in matrix.columns:
            v = row[t]
            if pd.isna(v):
                cells.append("")
                continue
            iv = f" [{lo.loc[src, t]:.{digits}f}, {hi.loc[src, t]:.{digits}f}]" if lo is not None and \
                not pd.isna(lo.loc[src, t]) else ""
            cells.append(f"{v:.{digits}f}{iv}")
        lines.append(f"| {src} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
