"""Cross-task transfer: does task A's mask serve task B?

For every pair of tasks (A, B) of a shared model, B is evaluated through its own head with the
mask made from A's scores (one sparsity, or one budget); A = B is B's own mask. Beside them, per
task B: the dense model and a random mask of the same size. Every metric carries its 95% interval,
so a task x task matrix says not only how much two tasks' masks overlap (``overlap``) but whether
one task's mask keeps another task working: the paper's cross-task finding (qnli keeps its accuracy
with rte's mask, not with sst2's), for every pair.

Every cell is also tested, on the same evaluation rows, against the evaluated task's own mask
(``p_vs_own``) and against the random mask of the same size (``p_vs_random``): McNemar's exact test
of the rows one model gets right and the other wrong (:func:`mtprune.evaluation.mcnemar`), at the 5%
level, with the outcome in words (``verdict``); :func:`transfer_matrix` turns them into marks on
the cells. The per-row predictions the tests read stay in memory for one target's cells; the CSV
keeps only the p-values.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mtprune.costs import Budget
from mtprune.errors import MtpruneError
from mtprune.examples_auto import DEFAULT_CAP, DEFAULT_TARGET
from mtprune.experiments.core import (ALPHA, EvalSettings, Group, Point, Repair, ResultTable, Runner, auto_key,
                                      budget_mask_maker, check_at_least, check_examples, comparison_words, finish,
                                      mask_maker, paired_test, parse_list, parse_methods, parse_sparsity, run_points,
                                      stderr_log)
from mtprune.masks import check_choices
from mtprune.solvers import get_solver
from mtprune.tasks import get_task

DENSE, RANDOM = "dense", "random mask"
TRANSFER_COLUMNS = ["mask_from", "target", "method", "sparsity", "budget", "repair", "accuracy", "accuracy_low",
                    "accuracy_high", "f1", "mcc", "kinds", "scope", "examples", "split", "n_eval", "kept_units",
                    "model_fingerprint", "key", "p_vs_own", "p_vs_random", "verdict"]
# the marks of a cell (transfer_matrix's attrs["marks"]; the figure and the table show them)
MARKS = {"worse_own": "▼own", "better_own": "▲own", "like_random": "≈rnd", "worse_random": "▼rnd"}
MARKS_LEGEND = ("▼own/▲own: worse/better than the task's own mask; ≈rnd: no better than a random mask of the "
                "same size; ▼rnd: worse (McNemar, p < 0.05)")


@dataclass(frozen=True)
class TransferConfig:
    """The tasks (two or more) and how each task's mask is made: a sparsity, or a budget."""

    tasks: tuple[str, ...]
    sparsity: float | None = 0.5
    budget: Budget | None = None  # flops:0.6 instead of a sparsity (both kinds, all layers); strings are parsed
    method: str = "ap"
    kinds: str = "ffn"
    scope: str = "layer"
    examples: int | str = 256  # or "auto": as many as `reliability` needs (mtprune.examples_auto)
    variant: str = "abs"
    seed: int = 0
    repair: str = "none"  # the pruned model repaired on the mask source's train rows
    calib: int = 1024
    random: bool = True  # also a random mask of the same size, per target
    reliability: float = DEFAULT_TARGET  # examples "auto": the reliability every kind must reach
    max_examples: int = DEFAULT_CAP  # examples "auto": at most this many

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
        object.__setattr__(self, "examples", check_examples(self.examples, self.reliability, self.max_examples))
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
    a random mask of the same size per target; every cell tested against the target's own mask and
    the random mask (``p_vs_own``, ``p_vs_random``, ``verdict``)."""
    log = log or (lambda msg: None)
    tasks = [get_task(t) for t in cfg.tasks]
    for t in tasks:
        adapter.head_for(t)
    runner = Runner(adapter, evals, log=log, rows=rows)
    table = ResultTable(out, resume=resume, columns=TRANSFER_COLUMNS)
    t_start = time.perf_counter()
    kinds = "all" if cfg.budget else cfg.kinds

    def scores_of(source: str, method: str, seed: int):
        return lambda: runner.scores(source, method, cfg.examples, seed=seed, variant=cfg.variant,
                                     reliability=cfg.reliability, max_examples=cfg.max_examples)

    def maker(source: str, method: str, seed: int):
        if cfg.budget:
            return budget_mask_maker(runner, scores_of(source, method, seed), get_task(source), cfg.budget, kinds)
        return mask_maker(runner, scores_of(source, method, seed), cfg.sparsity, cfg.scope, kinds)

    budget = str(cfg.budget) if cfg.budget else None  # a Budget; its string form in keys and columns
    common_key = {"method": cfg.method, "sparsity": cfg.sparsity, "budget": budget, "kinds": kinds,
                  "scope": "budget" if cfg.budget else cfg.scope, "examples": cfg.examples, "variant": cfg.variant,
                  "seed": cfg.seed, **auto_key(cfg.examples, cfg.reliability, cfg.max_examples)}
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
                                Repair(cfg.repair, (source.name,), cfg.calib, cfg.seed),
                                scores_of(source.name, cfg.method, cfg.seed)))
        if cfg.random:
            points.append(Point(target, {**common_key, "method": "random", "mask_from": RANDOM},
                                {"mask_from": RANDOM, "target": target.name, "method": "random", **fields},
                                maker(target.name, "random", cfg.seed), None, None,
                                Repair(cfg.repair, (target.name,), cfg.calib, cfg.seed)))
        own = 1 + [t.name for t in tasks].index(target.name)
        groups.append(Group(f"{target.name} with every mask", points,
                            transfer_tests(points, own, len(points) - 1 if cfg.random else None, target.name)))
    keys = run_points(runner, table, "transfer", groups, progress)
    return finish(table, keys, runner, t_start)


def transfer_tests(points: list[Point], own: int, random: int | None, target: str):
    """The paired tests of one target's cells (:attr:`mtprune.experiments.core.Group.tests`): every
    task's mask (``points[1:]``, the target's own at ``own``) against the own mask and the random mask."""
    def tests(new: set, correct) -> dict:
        out = {}
        for i in sorted(new):
            if i == 0 or i == random:  # the dense model and the random mask themselves
                continue
            cell = correct(points[i])
            cols, words = {}, ["its own mask" if i == own else ""]
            if i != own:
                cols["p_vs_own"], diff = paired_test(cell, correct(points[own]))
                words[0] = comparison_words(cols["p_vs_own"], diff, f"{target}'s own mask")
            if random is not None:
                cols["p_vs_random"], diff = paired_test(cell, correct(points[random]))
                words.append(comparison_words(cols["p_vs_random"], diff, "a random mask of the same size"))
            cols["verdict"] = "; ".join(w for w in words if w)
            out[i] = cols
        return out
    return tests


def transfer_matrix(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Mask source (rows: every task, then ``dense`` and ``random mask``) x evaluated task
    (columns) of ``metric``; ``attrs["low"]`` and ``attrs["high"]`` hold the 95% intervals,
    ``attrs["p_vs_own"]``, ``attrs["p_vs_random"]`` and ``attrs["verdict"]`` the paired tests (NaN
    or empty where there are none: rows written before them, the dense model, the random mask) and
    ``attrs["marks"]`` their marks (:data:`MARKS`)."""
    if df.empty:
        raise MtpruneError("no transfer rows")
    targets = list(dict.fromkeys(df["target"]))
    sources = [t for t in dict.fromkeys(df["mask_from"]) if t not in (DENSE, RANDOM)]
    order = sources + [s for s in (DENSE, RANDOM) if s in set(df["mask_from"])]

    def pivot(col, how="mean"):
        if col not in df:
            return pd.DataFrame(np.nan, index=order, columns=targets)
        return df.groupby(["mask_from", "target"])[col].agg(how).unstack("target").reindex(index=order,
                                                                                          columns=targets)

    m = pivot(metric)
    m.index.name, m.columns.name = "mask from", "evaluated task"
    m.attrs["low"], m.attrs["high"] = pivot(f"{metric}_low"), pivot(f"{metric}_high")
    for col in ("p_vs_own", "p_vs_random"):
        m.attrs[col] = pivot(col)
    m.attrs["verdict"] = pivot("verdict", "first").fillna("") if "verdict" in df else \
        pd.DataFrame("", index=order, columns=targets)
    m.attrs["marks"] = _marks(pivot("accuracy"), m.attrs["p_vs_own"], m.attrs["p_vs_random"])
    return m


def _marks(acc: pd.DataFrame, p_own: pd.DataFrame, p_random: pd.DataFrame) -> pd.DataFrame:
    """Each cell's marks from its tests: worse or better than the target's own mask (the diagonal's
    accuracy), like or worse than the random mask (the ``random mask`` row's)."""
    marks = pd.DataFrame("", index=acc.index, columns=acc.columns)
    for src in acc.index:
        for t in acc.columns:
            out = []
            if p_own.loc[src, t] < ALPHA and t in acc.index:
                out.append(MARKS["worse_own" if acc.loc[src, t] < acc.loc[t, t] else "better_own"])
            p = p_random.loc[src, t]
            if p == p:  # tested
                if p >= ALPHA:
                    out.append(MARKS["like_random"])
                elif RANDOM in acc.index and acc.loc[src, t] < acc.loc[RANDOM, t]:
                    out.append(MARKS["worse_random"])
            marks.loc[src, t] = " ".join(out)
    return marks


def format_transfer(matrix: pd.DataFrame, digits: int = 3) -> str:
    """A Markdown table: every cell ``value [low, high]`` and its marks (:data:`MARKS`), the legend
    under it when a cell has one."""
    lo, hi = matrix.attrs.get("low"), matrix.attrs.get("high")
    marks = matrix.attrs.get("marks")
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
            mark = f" {marks.loc[src, t]}" if marks is not None and marks.loc[src, t] else ""
            cells.append(f"{v:.{digits}f}{iv}{mark}")
        lines.append(f"| {src} | " + " | ".join(cells) + " |")
    if marks is not None and marks.ne("").any().any():
        lines.append("\n" + MARKS_LEGEND)
    return "\n".join(lines)


def verdict_table(df: pd.DataFrame) -> pd.DataFrame:
    """The tested cells (every task's mask on every other task, and each task's own): evaluated task,
    mask, accuracy, the two p-values and the verdict in words; empty for rows written before the tests."""
    if df.empty or "verdict" not in df:
        return pd.DataFrame()
    d = df[df["verdict"].fillna("").astype(str).ne("")]
    return pd.DataFrame({"evaluated task": d["target"], "mask from": d["mask_from"], "accuracy": d["accuracy"].round(3),
                         "p vs own mask": d.get("p_vs_own"), "p vs random mask": d.get("p_vs_random"),
                         "verdict": d["verdict"]}).reset_index(drop=True)
