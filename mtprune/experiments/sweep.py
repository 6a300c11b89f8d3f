"""Sweeps: the metric of every task against sparsity, for attribution methods and baselines.

One row per (task, method, sparsity, trial, and the settings that change the numbers: examples
used for attribution, supervised or not). What a method needs and how often it runs come from its
object (:mod:`mtprune.methods`):

* a method with scores: its scores (disk-cached), a mask per sparsity
  (:func:`mtprune.masks.mask_from_scores`), the task evaluated with the mask applied;
* a stand-in baseline (``svd``): every site the ``reference`` method's mask prunes is replaced by
  the stand-in of the pruned site's size (:mod:`mtprune.svd`).

Baselines whose result depends on the seed (``random``, ``random-label``, ``activation``) run
``trials`` times (seed = seed + trial: new random scores, new random labels, a new sample of
examples); the others once (trial 0), or ``trials`` times over new samples with ``sample_trials``.

The paper's settings are presets over the same machinery (:func:`setting_config`):

* ``low-resource``: attribution from 10, 100 and 1000 examples, each drawn ``trials`` times;
* ``unsupervised``: methods that can run without labels, with gold labels against without.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np
import pandas as pd

from mtprune.costs import KIND_NORMALISATIONS, Budget, parse_budgets
from mtprune.errors import MtpruneError
from mtprune.examples_auto import DEFAULT_CAP, DEFAULT_TARGET
from mtprune.experiments.core import (AUTO, EvalSettings, Group, Point, Repair, ResultTable, Runner, auto_key,
                                      budget_mask_maker, check_at_least, finish, mask_maker, parse_examples,
                                      parse_list, parse_methods, parse_sparsities, run_points, split_size,
                                      stderr_log)
from mtprune.masks import check_choices
from mtprune.methods import get_method
from mtprune.solvers import check_solvers
from mtprune.tasks import BENCHMARK, get_task

DEFAULT_METHODS = ("ap", "activation", "random-label", "random", "svd")
DEFAULT_SPARSITIES = tuple(round(0.1 * i, 6) for i in range(11))
SETTINGS = ("standard", "low-resource", "unsupervised")
LOW_RESOURCE_EXAMPLES = (10, 100, 1000)

SWEEP_COLUMNS = [
    "task", "method", "sparsity", "budget", "repair", "trial", "accuracy", "accuracy_low", "accuracy_high", "f1",
    "f1_low", "f1_high", "mcc", "mcc_low", "mcc_high", "examples", "examples_used",
    "unsupervised", "seed", "kinds", "scope", "variant", "split", "n_eval", "actual_sparsity", "kept_units",
    "params", "flops_kept", "latency_ms", "stand_in_params", "eval_seconds", "model", "model_fingerprint", "key",
]
# after them, one column per unit kind of the model: reliability_ffn, reliability_heads (core.score_columns)


def _tuple(v) -> tuple:
    """A config field given as a tuple, a list, one value, or comma-separated text."""
    if isinstance(v, str):
        return tuple(parse_list(v))
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


@dataclass(frozen=True)
class SweepConfig:
    """Every setting of a sweep; validated on construction (one clear line for bad input)."""

    tasks: tuple[str, ...] = BENCHMARK
    methods: tuple[str, ...] = DEFAULT_METHODS
    sparsities: tuple[float, ...] = DEFAULT_SPARSITIES
    kinds: str = "ffn"
    scope: str = "layer"
    stack: str = "all"
    examples: tuple[int | str, ...] = (256,)  # counts, and "auto" (as many as `reliability` needs)
    trials: int = 5
    variant: str = "abs"
    seed: int = 0
    unsupervised: tuple[bool, ...] = (False,)
    # also repeat the data-reading methods that are not baselines (ap, ig) over `trials` samplings
    sample_trials: bool = False
    setting: str = "standard"
    reference: str = "ap"  # the method whose mask gives a stand-in baseline (svd) its site sizes
    attribution_split: str | None = None
    steps: int = 20
    # the accuracy / cost frontier: budgets spent over both kinds and every layer (mtprune.costs),
    # each mask evaluated as pruned and as repaired (mtprune.repair)
    budgets: tuple[Budget, ...] = ()  # Budget objects (strings are parsed once, here)
    repairs: tuple[str, ...] = ("none",)  # registered solvers (mtprune.solvers)
    calib: int = 1024
    normalise: str = "sum"
    latency: bool = False  # measure every row's pruned model (seconds per example)
    reliability: float = DEFAULT_TARGET  # examples "auto": the reliability every kind must reach
    max_examples: int = DEFAULT_CAP  # examples "auto": at most this many

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("tasks", tuple(get_task(t).name for t in _tuple(self.tasks)))
        if not self.tasks:
            raise MtpruneError("no tasks given")
        set_("methods", tuple(parse_methods(list(_tuple(self.methods)))))
        sp = self.sparsities
        set_("sparsities", tuple(parse_sparsities(sp if isinstance(sp, str) else list(_tuple(sp))))
             if (sp if isinstance(sp, str) else len(_tuple(sp))) else ())
        check_choices(self.scope, self.kinds, self.stack)
        check_at_least(self.trials, "--trials")
        check_at_least(self.steps, "--steps")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise MtpruneError(f"--seed must be 0 or more, not {self.seed}")
        examples = self.examples
        set_("examples", tuple(parse_examples(examples if isinstance(examples, str) else list(_tuple(examples)),
                                              self.reliability, self.max_examples)))
        set_("unsupervised", tuple(bool(u) for u in _tuple(self.unsupervised)))
        if self.setting not in SETTINGS:
            raise MtpruneError(f"unknown setting {self.setting!r}; settings: {', '.join(SETTINGS)}")
        get_method(self.reference, scores=True)
        set_("budgets", parse_budgets(self.budgets))
        set_("repairs", check_solvers(self.repairs or ("none",)))
        check_at_least(self.calib, "--calib")
        if self.normalise not in KIND_NORMALISATIONS:
            raise MtpruneError(f"--normalise must be one of {', '.join(KIND_NORMALISATIONS)}, not {self.normalise!r}")
        if not self.sparsities and not self.budgets:
            raise MtpruneError("no sparsities and no budgets given")

    def to_dict(self) -> dict:
        return {**asdict(self), "budgets": [str(b) for b in self.budgets]}


def setting_config(setting: str, base: SweepConfig | None = None, **overrides) -> SweepConfig:
    """The paper's settings as sweep configurations.

    * ``standard``: as given;
    * ``low-resource``: examples 10, 100, 1000 (unless given), every data-reading method repeated
      over ``trials`` samplings;
    * ``unsupervised``: methods that can run label-free, with and without gold labels.
    """
    cfg = replace(base or SweepConfig(), **overrides)
    if setting == "standard":
        return replace(cfg, setting=setting)
    if setting == "low-resource":
        examples = cfg.examples if "examples" in overrides else LOW_RESOURCE_EXAMPLES
        return replace(cfg, setting=setting, examples=tuple(examples), sample_trials=True)
    if setting == "unsupervised":
        if not any(get_method(m).unsupervised for m in cfg.methods):
            able = [m for m in cfg.methods if get_method(m).unsupervised] or ["ap", "ig"]
            raise MtpruneError(f"the unsupervised setting needs one of {', '.join(able)} among the methods")
        return replace(cfg, setting=setting, unsupervised=(False, True))
    raise MtpruneError(f"unknown setting {setting!r}; settings: {', '.join(SETTINGS)}")


@dataclass(frozen=True)
class Run:
    """One computation of scores (or of a stand-in's reference mask), evaluated at every sparsity."""

    method: str
    examples: int | str  # examples asked for (0: the method reads none; "auto": as many as reliability needs)
    unsupervised: bool
    trial: int
    seed: int
    examples_used: int | str  # ``examples`` capped at the attribution split's size ("auto": chosen when run)


def plan_runs(cfg: SweepConfig, task: str, train_size: int | None = None) -> list[Run]:
    """The runs of one task. ``train_size`` caps example counts: a task with fewer training
    examples than asked for uses all it has (cb's 250 for 256; a low-resource 1000)."""
    runs: list[Run] = []
    used = {s: min(s, train_size) if train_size is not None and s != AUTO else s for s in cfg.examples}
    asked = list(used)
    for name in cfg.methods:
        m = get_method(name)
        if not m.scores:
            # site sizes come from the reference mask: they depend on its examples only when global
            for s in (asked if cfg.scope == "global" else asked[:1]):
                runs.append(Run(name, s if cfg.scope == "global" else 0, False, 0, cfg.seed, used[s]))
            continue
        n_trials = cfg.trials if (m.repeats_over_trials or (cfg.sample_trials and m.needs_data)) else 1
        unsup = cfg.unsupervised if m.unsupervised else (False,)
        for s in (asked if m.needs_data else asked[:1]):
            for u in unsup:
                for t in range(n_trials):
                    runs.append(Run(name, s if m.needs_data else 0, bool(u), t, cfg.seed + t, used[s]))
    return runs


def _run_group(runner: Runner, cfg: SweepConfig, task, run: Run) -> Group:
    method = get_method(run.method)
    scoring = get_method(cfg.reference) if not method.scores else method
    seed = cfg.seed if not method.scores else run.seed

    def scores():
        return runner.scores(task.name, scoring.name, run.examples_used, seed=seed, variant=cfg.variant,
                             unsupervised=run.unsupervised, split=cfg.attribution_split, steps=cfg.steps,
                             reliability=cfg.reliability, max_examples=cfg.max_examples)

    variant = cfg.variant if scoring.uses_variant else ""
    examples_used = run.examples_used if run.examples else 0
    key = {"method": run.method, "variant": variant, "examples": run.examples, "examples_used": examples_used,
           "unsupervised": run.unsupervised, "seed": run.seed, "trial": run.trial, "kinds": cfg.kinds,
           "scope": cfg.scope, "stack": cfg.stack, "attribution_split": cfg.attribution_split,
           **auto_key(run.examples, cfg.reliability, cfg.max_examples)}
    # (budget rows replace "scope" with "budget" in their keys)
    if scoring.uses_steps:
        key["steps"] = cfg.steps
    if not method.scores:
        key["reference"] = cfg.reference
    stand_in = None if method.scores else method
    row_scores = scores if method.scores else None  # a stand-in's row has no scores of its own
    repairs = [Repair(r, (task.name,), cfg.calib, run.seed) for r in cfg.repairs]  # trial t: calibration sample t

    def extra(mask):
        from mtprune.pipeline import flops_kept

        out = {"flops_kept": flops_kept(runner.adapter, task, mask)}
        if stand_in is not None:
            from mtprune.svd import plan_svd

            out["stand_in_params"] = plan_svd(runner.adapter, mask).svd_model_params
        return out

    points = []
    common = {"task": task.name, "method": run.method, "trial": run.trial, "examples": run.examples,
              "examples_used": examples_used, "unsupervised": run.unsupervised, "seed": run.seed,
              "kinds": cfg.kinds, "variant": variant, "stand_in_params": np.nan}
    for rep in repairs:
        repair = rep if rep.refits else None
        for p in cfg.sparsities:
            fields = {**common, "sparsity": p, "scope": cfg.scope, "budget": ""}
            points.append(Point(task, {**key, "sparsity": p}, fields,
                                mask_maker(runner, scores, p, cfg.scope, cfg.kinds, cfg.stack), stand_in, extra,
                                repair or rep, row_scores))
        for b in cfg.budgets:  # Budget objects; their string form in keys and columns
            fields = {**common, "sparsity": np.nan, "scope": "budget", "budget": str(b), "normalise": cfg.normalise}
            points.append(Point(task, {**key, "scope": "budget", "budget": str(b), "normalise": cfg.normalise}, fields,
                                budget_mask_maker(runner, scores, task, b, cfg.kinds, cfg.stack, cfg.normalise),
                                stand_in, extra, repair or rep, row_scores))
    label = (f"{task.name} {run.method}{' unsup' if run.unsupervised else ''}"
             f"{f' n={run.examples}' if run.examples else ''} trial {run.trial}")
    return Group(label, points)


def run_sweep(adapter, cfg: SweepConfig, evals: EvalSettings | None = None, *, out: str | None = None,
              resume: bool = True, log=stderr_log, progress=None, rows: dict | None = None) -> pd.DataFrame:
    """Run ``cfg`` on ``adapter``; rows go to the CSV ``out`` (rewritten atomically after every
    run, so an interrupted sweep keeps what it finished). Returns the rows of this sweep.

    ``progress(done, total)`` counts rows; ``rows`` (``{task: rows}``) replaces a task's
    evaluation split.
    """
    log = log or (lambda msg: None)
    runner = Runner(adapter, evals, log=log, rows=rows)
    table = ResultTable(out, resume=resume, columns=SWEEP_COLUMNS)
    tasks = [get_task(t) for t in cfg.tasks]
    for t in tasks:  # every head first: one clear line before any work
        adapter.head_for(t)
    t_start = time.perf_counter()
    groups = []
    for t in tasks:
        size = split_size(t, cfg.attribution_split)
        if size is not None and any(s != AUTO and s > size for s in cfg.examples):
            log(f"{t.name} has {size} examples to attribute from: runs asking for more use all {size}")
        runs = plan_runs(cfg, t.name, size)
        log(f"{t.name}: {runner.eval_size(t)} evaluation rows ({runner.eval_split(t)}), "
            f"{len(runs)} runs x {len(cfg.sparsities)} sparsities")
        groups += [_run_group(runner, cfg, t, run) for run in runs]
    keys = run_points(runner, table, "sweep", groups, progress)
    return finish(table, keys, runner, t_start)


# ----------------------------------------------------------------------------------------------
# reading results


def series_label(df: pd.DataFrame) -> pd.Series:
    """A readable name per row: the method, plus ``(unsupervised)`` and ``n=...`` (examples) where the table
    holds more than one value of those."""
    label = df["method"].astype(str)
    if "budget" in df:
        budgeted = df["budget"].fillna("").astype(str).ne("")
        if budgeted.nunique() > 1:
            label = label + np.where(budgeted, " (budget)", " (same sparsity per layer)")
    if "normalise" in df and df["normalise"].dropna().astype(str).replace("", np.nan).dropna().nunique() > 1:
        norm = df["normalise"].fillna("").astype(str)
        label = label + np.where(norm.ne(""), " [" + norm + "]", "")
    if "repair" in df and df["repair"].fillna("none").nunique() > 1:
        label = label + " + " + df["repair"].fillna("none").astype(str)
    if "unsupervised" in df and df["unsupervised"].astype(bool).nunique() > 1:
        label = label + np.where(df["unsupervised"].astype(bool), " (unsupervised)", "")
    if "examples" in df:
        text = examples_text(df["examples"])
        reads = text.ne("0")
        if text[reads].nunique() > 1:
            label = label + np.where(reads, " n=" + text, "")
    return label


def examples_text(col: pd.Series) -> pd.Series:
    """The ``examples`` column as text: counts (``"256"``; ``"0"`` for methods that read none) and
    ``"auto"``, whichever way a CSV read them back (numbers, or strings beside ``auto``)."""
    def one(v) -> str:
        if isinstance(v, str) and v.strip().lower() == AUTO:
            return AUTO
        try:
            return str(int(float(v)))
        except (TypeError, ValueError):
            return "0"
    return col.map(one).astype(str)


def curves(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Mean and standard deviation over trials, per task, series and sparsity."""
    if metric not in df.columns:
        raise MtpruneError(f"the results have no {metric!r} column")
    d = df.assign(series=series_label(df))
    g = d.groupby(["task", "series", "sparsity"])[metric]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def _per_trial(df: pd.DataFrame, metric: str, lo: float, hi: float) -> pd.Series:
    """Each trial's mean ``metric`` over the sparsities in ``[lo, hi]``, indexed (task, series, trial)."""
    d = df[(df["sparsity"] >= lo - 1e-9) & (df["sparsity"] <= hi + 1e-9)].copy()
    if d.empty:
        raise MtpruneError(f"no results at sparsities between {lo} and {hi}")
    d["series"] = series_label(d)
    return d.groupby(["task", "series", "trial"])[metric].mean()


def _trials_by_task(per_trial: pd.Series, series: str, tasks: Sequence[str]) -> pd.DataFrame:
    """One series' per-trial means as a trial x task table (NaN where a task lacks a trial)."""
    return per_trial.xs(series, level="series").unstack("task").reindex(columns=list(tasks))


def summarize(df: pd.DataFrame, metric: str = "accuracy", lo: float = 0.1, hi: float = 0.9) -> pd.DataFrame:
    """Mean ``metric`` over the sparsities in ``[lo, hi]`` per task and series (each trial's mean
    first, then their mean and standard deviation), with a ``mean`` row over the tasks (its
    standard deviation: of trial ``t``'s mean over the tasks, where every task ran the same trials).

    Returns a task x series table of means; ``.attrs["std"]`` holds the matching standard
    deviations over trials.
    """
    if df.empty:
        raise MtpruneError("no results to summarise")
    per_trial = _per_trial(df, metric, lo, hi)
    mean = per_trial.groupby(["task", "series"]).mean().unstack("series")
    std = per_trial.groupby(["task", "series"]).std().unstack("series").fillna(0.0)
    order = [t for t in dict.fromkeys(df["task"]) if t in mean.index]
    mean, std = mean.loc[order], std.loc[order]
    cols = [c for c in dict.fromkeys(series_label(df)) if c in mean.columns]
    mean, std = mean[cols], std[cols]
    mean.loc["mean"] = mean.mean(axis=0, skipna=False)
    # the mean row's spread: trial t's mean over the tasks, where every task ran the same trials
    row = {}
    for c in cols:
        block = _trials_by_task(per_trial, c, order)
        row[c] = float(block.mean(axis=1).std()) if len(block) > 1 and not block.isna().any().any() else np.nan
    std.loc["mean"] = pd.Series(row)
    mean.attrs["std"] = std
    mean.attrs["range"] = (lo, hi)
    return mean


def compare(df: pd.DataFrame, a: str, b: str, metric: str = "accuracy", lo: float = 0.1,
            hi: float = 0.9) -> pd.DataFrame:
    """Is series ``a`` better than ``b``? Per task and over the tasks: their means over the
    sparsities in ``[lo, hi]``, the difference ``a - b`` and its standard error.

    Trials that both series ran are paired (trial ``t`` of every method reads the same sample of
    examples; its mean over the tasks pairs too), so the error is that of the mean of paired
    differences. Where fewer than two trials pair, the error is Welch's, from each series' spread
    over its own trials (NaN where a series has one trial). ``verdict`` says which is higher when
    the difference exceeds two standard errors, else ``tie``.
    """
    if df.empty:
        raise MtpruneError("no results to compare")
    per_trial = _per_trial(df, metric, lo, hi)
    known = list(dict.fromkeys(per_trial.index.get_level_values("series")))
    for name in (a, b):
        if name not in known:
            raise MtpruneError(f"no series {name!r} in the results; series: {', '.join(known)}")
    if a == b:
        raise MtpruneError(f"compare two different series, not {a!r} with itself")
    ran = set(per_trial.index.droplevel("trial"))
    tasks = [t for t in dict.fromkeys(df["task"]) if (t, a) in ran and (t, b) in ran]
    if not tasks:
        raise MtpruneError(f"no task has results for both {a} and {b}")

    def stats(xa: pd.Series, xb: pd.Series) -> dict:
        common = sorted(set(xa.index) & set(xb.index))
        if len(common) >= 2:
            diff = xa.loc[common] - xb.loc[common]
            se, paired = float(diff.std(ddof=1) / np.sqrt(len(diff))), True
        else:
            va = xa.var(ddof=1) / len(xa) if len(xa) > 1 else np.nan
            vb = xb.var(ddof=1) / len(xb) if len(xb) > 1 else np.nan
            se, paired = float(np.sqrt(va + vb)), False
        delta = float(xa.mean() - xb.mean())
        if np.isnan(se):
            verdict = "one trial: no error"
        elif abs(delta) > 2 * se:
            verdict = f"{a} higher" if delta > 0 else f"{b} higher"
        else:
            verdict = "tie"
        return {a: float(xa.mean()), b: float(xb.mean()), "difference": delta, "se": se,
                "trials": len(common) if paired else min(len(xa), len(xb)), "paired": paired, "verdict": verdict}

    rows = {}
    for t in tasks:
        rows[t] = stats(per_trial.loc[(t, a)], per_trial.loc[(t, b)])
    # over the tasks: trial t's mean over the tasks, for the trials every task ran
    xa, xb = (_trials_by_task(per_trial, name, tasks).dropna() for name in (a, b))
    if len(xa) and len(xb):
        rows["mean"] = stats(xa.mean(axis=1), xb.mean(axis=1))
        # the mean over the tasks of each series' task means (what summarize's mean row shows)
        rows["mean"][a] = float(np.mean([rows[t][a] for t in tasks]))
        rows["mean"][b] = float(np.mean([rows[t][b] for t in tasks]))
        rows["mean"]["difference"] = rows["mean"][a] - rows["mean"][b]
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "task"
    out.attrs.update(a=a, b=b, metric=metric, range=(lo, hi))
    return out


def format_compare(table: pd.DataFrame, digits: int = 4) -> str:
    """A Markdown table of :func:`compare`'s output."""
    a, b = table.attrs["a"], table.attrs["b"]
    lines = [f"| task | {a} | {b} | difference | standard error | trials | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for task, r in table.iterrows():
        se = "" if pd.isna(r["se"]) else f"{r['se']:.{digits}f}" + ("" if r["paired"] else " (unpaired)")
        name = "**mean**" if task == "mean" else task
        lines.append(f"| {name} | {r[a]:.{digits}f} | {r[b]:.{digits}f} | {r['difference']:+.{digits}f} | {se} | "
                     f"{int(r['trials'])} | {r['verdict']} |")
    return "\n".join(lines)


def frontier_table(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Budget rows as a (task, series) x budget table of ``metric`` (mean over trials; ``attrs``:
    ``std`` over trials and the mean ``flops_kept``), the dense model's metric as the column ``dense``."""
    d = df[df["budget"].fillna("").astype(str).ne("")].copy()
    if d.empty:
        raise MtpruneError("no budget rows in the results")
    d["series"] = series_label(d)
    per = d.groupby(["task", "series", "budget"], sort=False)
    mean = per[metric].mean().unstack("budget")
    order = list(dict.fromkeys(d["budget"]))
    mean = mean[order]
    dense = df[df["sparsity"].fillna(-1) == 0].groupby("task")[metric].mean()
    mean.insert(0, "dense", [dense.get(t, np.nan) for t in mean.index.get_level_values("task")])
    mean.attrs["std"] = per[metric].std().unstack("budget")[order]
    mean.attrs["flops_kept"] = per["flops_kept"].mean().unstack("budget")[order] if "flops_kept" in d else None
    return mean


def format_frontier(table: pd.DataFrame, digits: int = 3) -> str:
    std = table.attrs.get("std")
    budgets = [c for c in table.columns if c != "dense"]
    lines = ["| task | series | dense | " + " | ".join(budgets) + " |", "| --- | --- | --- |" + " --- |" * len(budgets)]
    for (task, series), row in table.iterrows():
        cells = []
        for b in budgets:
            v = row[b]
            sd = std.loc[(task, series), b] if std is not None else np.nan
            cells.append("" if pd.isna(v) else f"{v:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd == sd and sd > 0 else ""))
        lines.append(f"| {task} | {series} | {row['dense']:.{digits}f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_summary(table: pd.DataFrame, digits: int = 3) -> str:
    """A Markdown table of :func:`summarize`'s output (``mean +- std`` where trials vary)."""
    std = table.attrs.get("std")
    cols = list(table.columns)
    lines = ["| task | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for task, row in table.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if pd.isna(v):
                cells.append("")
                continue
            s = f"{v:.{digits}f}"
            if std is not None and task in std.index and not pd.isna(std.loc[task, c]) and std.loc[task, c] > 0:
                s += f" ± {std.loc[task, c]:.{digits}f}"
            cells.append(f"**{s}**" if task == "mean" else s)
        lines.append(f"| {'**mean**' if task == 'mean' else task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
