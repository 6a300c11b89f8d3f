"""Unseen domains: a mask built from one task's data, evaluated on another set through the same head.

A pair ``source:target`` builds the mask from ``source``'s examples and evaluates ``target``:

* when ``target`` is an unseen-domain set that ``source``'s head can read (imdb through sst2,
  scitail through qnli or rte, sick through cb), through ``source``'s head;
* otherwise (the cross-task case: qnli with masks from rte or from sst2), through ``target``'s own
  head; the target's own mask is then also evaluated, as the in-domain reference.

Every pair also gets the dense model (sparsity 0) and whatever baselines are asked for (a
``random`` mask by default), so a row reads "how much of the dense accuracy on the new set does a
mask from the old one keep".
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mtprune.errors import MtpruneError
from mtprune.experiments.core import (EvalSettings, Group, Point, Repair, ResultTable, Runner, check_at_least, finish,
                                      mask_maker, parse_list, parse_methods, parse_sparsities, run_points, stderr_log)
from mtprune.masks import check_choices
from mtprune.solvers import check_solvers
from mtprune.methods import get_method
from mtprune.tasks import TaskSpec, get_task

SENTIMENT_SETS = ("imdb", "yelp", "amazon", "mr", "cr", "vader_movie", "vader_amazon", "vader_nyt", "vader_tweets")
PAPER_PAIRS: tuple[tuple[str, str], ...] = (
    *(("sst2", t) for t in SENTIMENT_SETS),
    ("qnli", "scitail"),
    ("rte", "scitail"),
    ("cb", "sick"),
    ("rte", "qnli"),
    ("sst2", "qnli"),
)
UNSEEN_COLUMNS = ["source", "target", "head", "mask_from", "method", "sparsity", "repair", "trial", "accuracy",
                  "accuracy_low", "accuracy_high", "f1",
                  "mcc", "examples", "kinds", "scope", "split", "n_eval", "kept_units", "model_fingerprint", "key"]


@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    head: str

    @property
    def cross_task(self) -> bool:
        return get_task(self.target).suite != "unseen"

    def target_spec(self) -> TaskSpec:
        return get_task(self.target).read_through(self.head)


def parse_pairs(text: str | None) -> list[tuple[str, str]]:
    """``sst2:imdb,yelp;qnli:scitail`` (a source, then its targets), or ``paper`` / empty for the
    paper's pairs."""
    if text is None or str(text).strip() in ("", "paper"):
        return list(PAPER_PAIRS)
    out = []
    for chunk in str(text).replace(" ", "").split(";"):
        if not chunk:
            continue
        if ":" not in chunk:
            raise MtpruneError(f"pair {chunk!r}: write source:target[,target...] (as sst2:imdb,yelp)")
        src, _, targets = chunk.partition(":")
        get_task(src)
        tl = [t for t in targets.split(",") if t]
        if not tl:
            raise MtpruneError(f"pair {chunk!r} names no target")
        for t in tl:
            get_task(t)
            out.append((src, t))
    if not out:
        raise MtpruneError("no pairs given")
    return list(dict.fromkeys(out))


def resolve_pair(adapter, source: str, target: str) -> Pair:
    """Which head reads ``target`` for a mask from ``source`` (see the module's docstring)."""
    src, tgt = get_task(source), get_task(target)
    if src.name == tgt.name:
        raise MtpruneError(f"pair {source}:{target}: the source and the target are the same task")
    src_head = adapter.head_for(src)
    if tgt.label_source and src_head in tgt.label_source:
        head = src_head
    elif tgt.label_source:
        raise MtpruneError(
            f"pair {source}:{target}: {target} is read through {' or '.join(tgt.label_source)}'s head, "
            f"not {source}'s"
        )
    else:
        head = adapter.head_for(tgt)
    adapter.head_for(tgt.read_through(head))  # label counts must match
    return Pair(src.name, tgt.name, head)


@dataclass(frozen=True)
class UnseenConfig:
    """Pairs ``(source, target)`` and the masks to try on them; validated on construction."""

    pairs: tuple[tuple[str, str], ...] = PAPER_PAIRS
    methods: tuple[str, ...] = ("ap", "random")
    sparsities: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.9)
    examples: int = 256
    trials: int = 5
    kinds: str = "ffn"
    scope: str = "layer"
    variant: str = "abs"
    seed: int = 0
    repairs: tuple[str, ...] = ("none",)  # every mask also evaluated repaired on the source's train rows
    calib: int = 1024

    def __post_init__(self):
        pairs = parse_pairs(self.pairs) if isinstance(self.pairs, str) else [tuple(p) for p in self.pairs]
        for s, t in pairs:
            get_task(s), get_task(t)
        if not pairs:
            raise MtpruneError("no pairs given")
        object.__setattr__(self, "pairs", tuple(pairs))
        methods, sp = self.methods, self.sparsities
        object.__setattr__(self, "methods", tuple(parse_methods(methods if isinstance(methods, str) else list(methods),
                                                                scores=True)))
        object.__setattr__(self, "sparsities", tuple(parse_sparsities(sp if isinstance(sp, str) else list(sp))))
        check_at_least(self.examples, "--examples")
        check_at_least(self.trials, "--trials")
        check_choices(self.scope, self.kinds)
        object.__setattr__(self, "repairs", check_solvers(self.repairs))
        check_at_least(self.calib, "--calib")

    def to_dict(self) -> dict:
        return asdict(self)


def run_unseen(adapter, cfg: UnseenConfig, evals: EvalSettings | None = None, *, out: str | None = None,
               resume: bool = True, log=stderr_log, progress=None, rows: dict | None = None) -> pd.DataFrame:
    """One row per (pair, mask source, method, sparsity, trial) with the target's metrics."""
    log = log or (lambda msg: None)
    resolved = [resolve_pair(adapter, s, t) for s, t in cfg.pairs]
    runner = Runner(adapter, evals, log=log, rows=rows)
    table = ResultTable(out, resume=resume, columns=UNSEEN_COLUMNS)
    t_start = time.perf_counter()
    groups = []
    for pair in resolved:
        target = pair.target_spec()
        log(f"{pair.source} -> {pair.target} (head {pair.head}, {runner.eval_size(target)} rows of "
            f"{runner.eval_split(target)})")
        for mask_from in [pair.source] + ([pair.target] if pair.cross_task else []):
            for method in cfg.methods:
                m = get_method(method)
                for trial in range(cfg.trials if m.repeats_over_trials else 1):
                    def scores(mask_from=mask_from, method=method, trial=trial):
                        return runner.scores(mask_from, method, cfg.examples, seed=cfg.seed + trial,
                                             variant=cfg.variant)

                    common = {"source": pair.source, "target": pair.target, "head": pair.head,
                              "mask_from": mask_from, "method": method, "trial": trial}
                    key = {**common, "examples": cfg.examples, "variant": cfg.variant, "kinds": cfg.kinds,
                           "scope": cfg.scope, "seed": cfg.seed + trial}
                    points = [Point(target, {**key, "sparsity": p},
                                    {**common, "sparsity": p, "examples": cfg.examples, "kinds": cfg.kinds,
                                     "scope": cfg.scope},
                                    mask_maker(runner, scores, p, cfg.scope, cfg.kinds), None, None,
                                    Repair(r, (mask_from,), cfg.calib))
                              for r in cfg.repairs for p in cfg.sparsities]
                    groups.append(Group(f"{pair.source} -> {pair.target}, mask from {mask_from} {method} trial {trial}",
                                        points))
    keys = run_points(runner, table, "unseen", groups, progress)
    return finish(table, keys, runner, t_start)


def unseen_summary(df: pd.DataFrame, metric: str = "accuracy", lo: float = 0.1, hi: float = 1.0) -> pd.DataFrame:
    """Per pair: the dense metric, and the mean over sparsities in ``[lo, hi]`` per method for the
    source's mask (columns named by the method) and, in the cross-task case, the target's own mask
    (``<method> (own mask)``); trials averaged."""
    d = df.copy()
    name = d["method"].astype(str)
    if "repair" in d and d["repair"].fillna("none").nunique() > 1:
        name = name + " + " + d["repair"].fillna("none").astype(str)
    d["series"] = np.where(d["mask_from"] == d["source"], name, name + " (own mask)")
    dense = d[d["sparsity"] == 0].groupby(["source", "target"])[metric].first().rename("dense")
    rng = d[(d["sparsity"] >= lo - 1e-9) & (d["sparsity"] <= hi + 1e-9)]
    per = rng.groupby(["source", "target", "series", "trial"])[metric].mean().reset_index()
    tab = per.groupby(["source", "target", "series"])[metric].mean().unstack("series")
    tab = tab.join(dense)
    order = list(dict.fromkeys(zip(df["source"], df["target"])))
    tab = tab.loc[[o for o in order if o in tab.index]]
    names = [n for n in dict.fromkeys(d["series"]) if not n.endswith(" (own mask)")]
    cols = ["dense"] + [m for m in names if m in tab.columns] + [f"{m} (own mask)" for m in names
                                                                  if f"{m} (own mask)" in tab.columns]
    return tab[cols]


def unseen_bars(df: pd.DataFrame, sparsity: float, metric: str = "accuracy", labels=None, with_intervals: bool = False):
    """(target labels, {series: values}) for bars from :func:`run_unseen` rows: the dense model,
    then every (mask source, method) at ``sparsity`` (trials averaged). ``labels`` maps a method to
    its display name. With ``with_intervals`` a third item, ``{series: (lows, highs)}``: the 95%
    intervals (Wilson for accuracy; averaged over trials)."""
    if df.empty:
        return ([], {}, {}) if with_intervals else ([], {})
    name_of = labels or (lambda m: m)
    targets = list(dict.fromkeys(df["target"]))
    lo_col, hi_col = f"{metric}_low", f"{metric}_high"
    has_iv = lo_col in df.columns and hi_col in df.columns

    def per_target(g, col):
        means = g.groupby("target")[col].mean()
        return [float(means.get(t, np.nan)) for t in targets]

    dense_rows = df[df["sparsity"] == 0].drop_duplicates("target")
    at = df[np.isclose(df["sparsity"].astype(float), float(sparsity))]
    series = {"dense": per_target(dense_rows, metric)}
    intervals = {"dense": (per_target(dense_rows, lo_col), per_target(dense_rows, hi_col))} if has_iv else {}
    for (src, method), g in at.groupby(["mask_from", "method"], sort=False):
        own = (g["mask_from"] == g["target"]).all()
        name = f"{name_of(method)}, {src}'s own mask" if own else f"{name_of(method)} mask from {src}"
        series[name] = per_target(g, metric)
        if has_iv:
            intervals[name] = (per_target(g, lo_col), per_target(g, hi_col))
    return (targets, series, intervals) if with_intervals else (targets, series)
