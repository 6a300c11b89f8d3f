"""Sweeps: the metric of every task against sparsity, for attribution methods and baselines.

One row per (task, method, sparsity, trial, and the settings that change the numbers: examples
used for attribution, supervised or not). Methods:

* attribution methods of :mod:`mtprune.attribution` (``ap``, ``ig``, ``activation``, ``random``,
  ``magnitude``, ``random-label``): scores (disk-cached), a mask per sparsity
  (:func:`mtprune.masks.mask_from_scores`), the task evaluated with the mask applied by
  :func:`mtprune.pruning.soft_prune`;
* ``svd``: every site pruned in ``ap``'s mask replaced by its truncated SVD with the pruned site's
  parameter count (:mod:`mtprune.svd`).

``random``, ``random-label`` and ``activation`` run ``trials`` times (seed = trial: new random
scores, new random labels, a new sample of examples); the others once (trial 0).

The paper's settings are presets over the same machinery (:func:`setting_config`):

* ``low-resource``: attribution from 10, 100 and 1000 examples, each drawn ``trials`` times;
* ``unsupervised``: ``ap`` / ``ig`` with gold labels against without (the model's own prediction).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import numpy as np
import pandas as pd

from mtprune.errors import MtpruneError
from mtprune.experiments.core import (DATA_FREE, LABEL_METHODS, STOCHASTIC, ResultTable, Runner,
                                      attribution_methods, fmt_seconds, parse_methods, row_key, split_size)
from mtprune.tasks import BENCHMARK, get_task

DEFAULT_METHODS = ("ap", "activation", "random-label", "random", "svd")
DEFAULT_SPARSITIES = tuple(round(0.1 * i, 6) for i in range(11))
SETTINGS = ("standard", "low-resource", "unsupervised")
LOW_RESOURCE_SAMPLES = (10, 100, 1000)
METRICS = ("accuracy", "f1", "mcc")

SWEEP_COLUMNS = [
    "task", "method", "sparsity", "trial", "accuracy", "f1", "mcc", "samples", "samples_used", "unsupervised",
    "seed", "units", "scope", "variant", "split", "n_eval", "actual_sparsity", "kept_units", "params",
    "svd_params", "eval_seconds", "model", "model_fingerprint", "key",
]


@dataclass
class SweepConfig:
    tasks: tuple[str, ...] = BENCHMARK
    methods: tuple[str, ...] = DEFAULT_METHODS
    sparsities: tuple[float, ...] = DEFAULT_SPARSITIES
    units: str = "ffn"
    scope: str = "layer"
    stack: str = "all"
    samples: tuple[int, ...] = (256,)
    trials: int = 5
    variant: str = "abs"
    seed: int = 0
    unsupervised: tuple[bool, ...] = (False,)
    # also repeat data-reading deterministic methods (ap, ig) over `trials` samplings
    sample_trials: bool = False
    setting: str = "standard"
    svd_reference: str = "ap"  # the method whose mask gives the SVD baseline its site sizes
    attribution_split: str | None = None
    steps: int = 20

    def validate(self) -> "SweepConfig":
        from mtprune.experiments.core import check_rate

        for t in self.tasks:
            get_task(t)
        parse_methods(list(self.methods))
        if not self.sparsities:
            raise MtpruneError("no sparsities given")
        for p in self.sparsities:
            check_rate(float(p))
        if self.units not in ("ffn", "heads", "all"):
            raise MtpruneError(f"--units must be ffn, heads or all, not {self.units!r}")
        if self.stack not in ("encoder", "decoder", "all"):
            raise MtpruneError(f"--stack must be encoder, decoder or all, not {self.stack!r}")
        if self.scope not in ("layer", "global"):
            raise MtpruneError(f"--scope must be layer or global, not {self.scope!r}")
        if self.trials < 1:
            raise MtpruneError(f"--trials must be at least 1, not {self.trials}")
        if not self.samples or any(int(s) < 1 for s in self.samples):
            raise MtpruneError(f"--samples must be at least 1, not {list(self.samples)}")
        if self.setting not in SETTINGS:
            raise MtpruneError(f"unknown setting {self.setting!r}; settings: {', '.join(SETTINGS)}")
        if self.svd_reference not in attribution_methods():
            raise MtpruneError(f"the SVD reference method {self.svd_reference!r} is not an attribution method")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def setting_config(setting: str, base: SweepConfig | None = None, **overrides) -> SweepConfig:
    """The paper's settings as sweep configurations.

    * ``standard``: as given;
    * ``low-resource``: samples 10, 100, 1000 (unless given), every data-reading method repeated
      over ``trials`` samplings;
    * ``unsupervised``: ``ap``/``ig`` run with and without gold labels.
    """
    cfg = replace(base or SweepConfig(), **overrides)
    if setting == "standard":
        return replace(cfg, setting=setting).validate()
    if setting == "low-resource":
        samples = cfg.samples if "samples" in overrides else LOW_RESOURCE_SAMPLES
        return replace(cfg, setting=setting, samples=tuple(samples), sample_trials=True).validate()
    if setting == "unsupervised":
        if not any(m in LABEL_METHODS for m in cfg.methods):
            raise MtpruneError(f"the unsupervised setting needs one of {', '.join(LABEL_METHODS)} among the methods")
        return replace(cfg, setting=setting, unsupervised=(False, True)).validate()
    raise MtpruneError(f"unknown setting {setting!r}; settings: {', '.join(SETTINGS)}")


@dataclass(frozen=True)
class Run:
    """One scores computation (or the SVD stand-in), evaluated at every sparsity."""

    method: str
    samples: int  # examples asked for (0: the method reads none)
    unsupervised: bool
    trial: int
    seed: int
    attr_samples: int  # examples the scores read: ``samples`` capped at the training split's size


def plan_runs(cfg: SweepConfig, task: str, train_size: int | None = None) -> list[Run]:
    """The runs of one task. ``train_size`` caps sample counts: a task with fewer training
    examples than asked for uses all it has (cb's 250 for 256; a low-resource 1000)."""
    runs: list[Run] = []
    samples: dict[int, int] = {}  # asked -> used
    for s in cfg.samples:
        s = int(s)
        samples[s] = min(s, train_size) if train_size is not None else s
    asked = list(samples)
    for m in cfg.methods:
        if m == "svd":
            # site sizes come from the reference mask: they depend on its samples only when global
            for s in (asked if cfg.scope == "global" else asked[:1]):
                runs.append(Run("svd", s if cfg.scope == "global" else 0, False, 0, cfg.seed, samples[s]))
            continue
        n_trials = cfg.trials if (m in STOCHASTIC or (cfg.sample_trials and m not in DATA_FREE)) else 1
        unsup = cfg.unsupervised if m in LABEL_METHODS else (False,)
        for s in (asked[:1] if m in DATA_FREE else asked):
            for u in unsup:
                for t in range(n_trials):
                    runs.append(Run(m, 0 if m in DATA_FREE else s, bool(u), t, cfg.seed + t, samples[s]))
    return runs


def _key(runner: Runner, cfg: SweepConfig, task, run: Run, sparsity: float) -> str:
    parts = {
        "experiment": "sweep",
        "model": runner.fingerprint,
        "task": task.name,
        "split": runner.eval_split(task),
        "n_eval": runner.eval_size(task),
        "method": run.method,
        "variant": cfg.variant if run.method not in ("random", "magnitude") else "",
        "samples": run.samples,
        "samples_used": run.attr_samples if run.samples else 0,
        "unsupervised": run.unsupervised,
        "seed": run.seed,
        "trial": run.trial,
        "units": cfg.units,
        "scope": cfg.scope,
        "stack": cfg.stack,
        "sparsity": round(float(sparsity), 6),
        "attribution_split": cfg.attribution_split,
    }
    if run.method == "ig":
        parts["steps"] = cfg.steps
    if run.method == "svd":
        parts["svd_reference"] = cfg.svd_reference
        parts["variant"] = cfg.variant
    return row_key(parts)


def run_sweep(adapter, cfg: SweepConfig, out: str | None = None, limit: int | None = None,
              split: str | None = None, batch_size: int = 32, resume: bool = True, log=None,
              progress=None, rows: dict | None = None, prune: str = "soft") -> pd.DataFrame:
    """Run ``cfg`` on ``adapter``; rows go to the CSV ``out`` (rewritten atomically after every
    run, so an interrupted sweep keeps what it finished). Returns the rows of this sweep.

    ``progress(done, total)`` counts rows; ``rows`` (``{task: rows}``) replaces a task's
    evaluation split. ``prune`` is ``soft`` (hooks) or ``hard`` (a sliced copy: the same logits,
    faster at high sparsity); see :class:`Runner`.
    """
    cfg.validate()
    from mtprune.experiments.core import _stderr

    log = log or _stderr
    runner = Runner(adapter, limit=limit, split=split, batch_size=batch_size, log=log, rows=rows, prune=prune)
    table = ResultTable(out, resume=resume, columns=SWEEP_COLUMNS)
    tasks = [get_task(t) for t in cfg.tasks]
    for t in tasks:  # every head first: one clear line before any work
        adapter.head_for(t)
    plans = {}
    for t in tasks:
        size = split_size(t, cfg.attribution_split)
        plans[t.name] = plan_runs(cfg, t.name, size)
        if size is not None and any(int(s) > size for s in cfg.samples):
            log(f"{t.name} has {size} examples to attribute from: runs asking for more use all {size}")
    total = sum(len(p) for p in plans.values()) * len(cfg.sparsities)
    done = 0
    keys: list[str] = []
    t_start = time.perf_counter()
    for task in tasks:
        n_eval = runner.eval_size(task)
        log(f"{task.name}: {n_eval} evaluation rows ({runner.eval_split(task)}), "
            f"{len(plans[task.name])} runs x {len(cfg.sparsities)} sparsities")
        for run in plans[task.name]:
            run_keys = [_key(runner, cfg, task, run, p) for p in cfg.sparsities]
            keys += run_keys
            if all(k in table for k in run_keys):
                done += len(run_keys)
                if progress:
                    progress(done, total)
                continue
            t0 = time.perf_counter()
            rows = _do_run(runner, cfg, task, run, run_keys, table)
            for r in rows:
                table.put(r)
            table.save()
            done += len(run_keys)
            if progress:
                progress(done, total)
            acc = " ".join(f"{r['accuracy']:.3f}" for r in rows)
            log(f"  {task.name} {run.method}{' unsup' if run.unsupervised else ''}"
                f"{f' n={run.samples}' if run.samples else ''} trial {run.trial}: {acc}  "
                f"({fmt_seconds(time.perf_counter() - t0)}; {done}/{total} rows, "
                f"{fmt_seconds(time.perf_counter() - t_start)} so far)")
    df = table.frame(keys)
    df.attrs["stats"] = dict(runner.stats, seconds=time.perf_counter() - t_start)
    return df


def _do_run(runner: Runner, cfg: SweepConfig, task, run: Run, run_keys: list[str], table: ResultTable) -> list[dict]:
    scores = None
    if run.method == "svd":
        ref_samples = run.attr_samples
        scores = runner.scores(task.name, cfg.svd_reference, ref_samples, seed=cfg.seed, variant=cfg.variant,
                               split=cfg.attribution_split, steps=cfg.steps)
    else:
        need = [k for k in run_keys if k not in table]
        if need:
            scores = runner.scores(task.name, run.method, run.attr_samples, seed=run.seed, variant=cfg.variant,
                                   unsupervised=run.unsupervised, split=cfg.attribution_split, steps=cfg.steps)
    rows = []
    for p, key in zip(cfg.sparsities, run_keys):
        old = table.get(key)
        if old is not None:
            rows.append(old)
            continue
        mask = runner.mask(scores, p, scope=cfg.scope, units=cfg.units, stack=cfg.stack)
        svd = run.method == "svd"
        res = runner.evaluate(task, mask, svd=svd)
        row = {
            "task": task.name, "method": run.method, "sparsity": round(float(p), 6), "trial": run.trial,
            "accuracy": res.metrics.get("accuracy"), "f1": res.metrics.get("f1", np.nan),
            "mcc": res.metrics.get("mcc", np.nan), "samples": run.samples,
            "samples_used": run.attr_samples if run.samples else 0,
            "unsupervised": bool(run.unsupervised), "seed": run.seed, "units": cfg.units,
            "scope": cfg.scope, "variant": cfg.variant if run.method not in ("random", "magnitude") else "",
            "split": runner.eval_split(task), "n_eval": res.n,
            "actual_sparsity": round(float(mask.actual_sparsity()), 6), "kept_units": mask.kept(),
            "params": runner.params(mask), "svd_params": np.nan, "eval_seconds": round(res.seconds, 3),
            "model": runner.model_name, "model_fingerprint": runner.fingerprint, "key": key,
        }
        if svd:
            from mtprune.svd import plan_svd

            row["svd_params"] = plan_svd(runner.adapter, mask).svd_model_params
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# reading results


def series_label(df: pd.DataFrame) -> pd.Series:
    """A readable name per row: the method, plus ``(unsupervised)`` and ``n=...`` where the table
    holds more than one value of those."""
    label = df["method"].astype(str)
    if "unsupervised" in df and df["unsupervised"].astype(bool).nunique() > 1:
        label = label + np.where(df["unsupervised"].astype(bool), " (unsupervised)", "")
    if "samples" in df:
        data_rows = df[df["samples"].fillna(0).astype(int) > 0]
        if data_rows["samples"].nunique() > 1:
            label = label + np.where(df["samples"].fillna(0).astype(int) > 0,
                                     " n=" + df["samples"].fillna(0).astype(int).astype(str), "")
    return label


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
