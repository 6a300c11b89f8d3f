"""Unseen domains: a mask built from one task's data, evaluated on another set through the same head.

A pair ``source:target`` builds the mask from ``source``'s examples and evaluates ``target``:

* when ``target`` is an unseen-domain set that ``source``'s head can read (imdb through sst2,
  scitail through qnli or rte, sick through cb), through ``source``'s head;
* otherwise (the cross-task case: qnli with masks from rte or from sst2), through ``target``'s own
  head; the target's own mask is then also evaluated, as the in-domain reference.

Every pair also gets the dense model (sparsity 0) and whatever baselines are asked for (a
``random`` mask by default), so a row reads "how much of the dense accuracy on the new set does a
mask from the old one keep".

Every pruned row is tested on the same evaluation rows (McNemar's exact test, 5% level) against the
dense model (``p_vs_dense``), the random mask of the same size from the same source, sparsity and
trial (``p_vs_random``; for methods other than ``random``, when ``random`` is among the methods) and,
in the cross-task case, the target's own mask of the same method (``p_vs_own``), with the outcome in
words (``verdict``; :func:`unseen_verdicts` says it per target). The rows of one pair are one group:
the per-row predictions the tests read stay in memory for that pair only.

A repaired row reads no labels, so its calibration rows can be the deployment domain's own text
(``UnseenConfig.calib_from``, ``--calib``, the ``calib`` column): ``source`` (the source task's
train rows, as before: the same keys), ``target`` (the target's own rows from a split other than
the one measured; a target with no such split is an error before any row is made) or ``mix``
(half each: one model for both).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mtprune.errors import MtpruneError
from mtprune.examples_auto import DEFAULT_CAP, DEFAULT_TARGET
from mtprune.experiments.core import (ALPHA, EvalSettings, Group, Point, Repair, ResultTable, Runner, auto_key,
                                      check_at_least, check_examples, comparison_words, finish, mask_maker,
                                      paired_test, parse_methods, parse_sparsities, run_points,
                                      stderr_log)
from mtprune.masks import check_choices
from mtprune.solvers import check_solvers, get_solver
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
CALIB_CHOICES = ("source", "target", "mix")  # where a repair's calibration rows come from (--calib)
UNSEEN_COLUMNS = ["source", "target", "head", "mask_from", "method", "sparsity", "repair", "calib", "trial",
                  "accuracy",
                  "accuracy_low", "accuracy_high", "f1",
                  "mcc", "examples", "kinds", "scope", "split", "n_eval", "kept_units", "model_fingerprint", "key",
                  "p_vs_dense", "p_vs_random", "p_vs_own", "verdict"]


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
    examples: int | str = 256  # or "auto": as many as `reliability` needs (mtprune.examples_auto)
    trials: int = 5
    kinds: str = "ffn"
    scope: str = "layer"
    variant: str = "abs"
    seed: int = 0
    repairs: tuple[str, ...] = ("none",)  # every mask also evaluated repaired on calibration rows (calib_from)
    calib: int = 1024  # calibration rows
    calib_from: str = "source"  # source: the source task's train rows; target: the target's own text from a split
    # other than the one measured; mix: half each (CALIB_CHOICES)
    reliability: float = DEFAULT_TARGET  # examples "auto": the reliability every kind must reach
    max_examples: int = DEFAULT_CAP  # examples "auto": at most this many

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
        object.__setattr__(self, "examples", check_examples(self.examples, self.reliability, self.max_examples))
        check_at_least(self.trials, "--trials")
        check_choices(self.scope, self.kinds)
        object.__setattr__(self, "repairs", check_solvers(self.repairs))
        check_at_least(self.calib, "--calib-rows")
        if self.calib_from not in CALIB_CHOICES:
            raise MtpruneError(f"--calib is one of {', '.join(CALIB_CHOICES)}, not {self.calib_from!r}")
        if self.calib_from != "source" and not any(get_solver(r).refits for r in self.repairs):
            raise MtpruneError(f"--calib {self.calib_from} calibrates a repair: give one that refits (--repair lsq)")

    def to_dict(self) -> dict:
        return asdict(self)


def run_unseen(adapter, cfg: UnseenConfig, evals: EvalSettings | None = None, *, out: str | None = None,
               resume: bool = True, log=stderr_log, progress=None, rows: dict | None = None) -> pd.DataFrame:
    """One row per (pair, mask source, method, sparsity, trial) with the target's metrics and the
    paired tests of the pruned rows (one group per pair)."""
    log = log or (lambda msg: None)
    resolved = [resolve_pair(adapter, s, t) for s, t in cfg.pairs]
    runner = Runner(adapter, evals, log=log, rows=rows)
    mixes = {p: {m: calibration_mix(cfg, p, m, runner.eval_split(p.target_spec()))
                 for m in [p.source] + ([p.target] if p.cross_task else [])} for p in resolved}  # fails before a row
    table = ResultTable(out, resume=resume, columns=UNSEEN_COLUMNS)
    t_start = time.perf_counter()
    groups = []
    for pair in resolved:
        target = pair.target_spec()
        log(f"{pair.source} -> {pair.target} (head {pair.head}, {runner.eval_size(target)} rows of "
            f"{runner.eval_split(target)})" + (f"; repairs calibrated on {mixes[pair][pair.source].describe()}"
                                               if mixes[pair][pair.source] is not None else ""))
        points = _pair_points(runner, cfg, pair, target, mixes[pair])
        groups.append(Group(f"{pair.source} -> {pair.target}", points, unseen_tests(points, target, pair.source)))
    keys = run_points(runner, table, "unseen", groups, progress)
    df = finish(table, keys, runner, t_start)
    if len(df) and "repair" in df:  # rows written before the calib column were calibrated on the source
        refit = df["repair"].fillna("none").map(lambda r: get_solver(r).refits)
        calib = df["calib"] if "calib" in df else pd.Series(np.nan, index=df.index, dtype=object)
        df["calib"] = calib.where(~refit | calib.notna(), "source")
    return df


def check_calibration(cfg: UnseenConfig, evals: EvalSettings | None = None) -> None:
    """One line, before any model loads, when ``cfg.calib_from`` needs a target's own text and a
    target has no split apart from the one it is measured on (``evals.split``, else its default)."""
    from mtprune.calibration import other_split

    if cfg.calib_from == "source" or not any(get_solver(r).refits for r in cfg.repairs):
        return
    for t in dict.fromkeys(t for _, t in cfg.pairs):
        task = get_task(t)
        other_split(task, (evals.split if evals is not None else None) or task.default_split)


def calibration_mix(cfg: UnseenConfig, pair: Pair, mask_from: str, measured: str):
    """The calibration rows of a repaired row of ``pair`` whose mask is ``mask_from``'s, as
    ``cfg.calib_from`` says (a :class:`mtprune.calibration.CalibrationMix`): None for the source's
    train rows (the rows and keys of before, and a target's own mask in the cross-task case, whose
    train rows are already its own text); else the target's own text from a split other than the
    ``measured`` one, read through the pair's head, alone (``target``) or half and half with the
    source's train rows (``mix``). One line when the target has no such split."""
    from mtprune.calibration import CalibrationMix, CalibSource, other_split

    if cfg.calib_from == "source" or mask_from == pair.target:
        return None
    text = CalibSource(1.0, task=pair.target, split=other_split(pair.target, measured), read_as=pair.target,
                       head=pair.head)
    if cfg.calib_from == "target":
        return CalibrationMix((text,), cfg.calib, 0)
    return CalibrationMix((CalibSource(1.0, task=mask_from), text), cfg.calib, 0)


def _pair_points(runner: Runner, cfg: UnseenConfig, pair: Pair, target: TaskSpec, mixes: dict) -> list[Point]:
    """Every (mask source, method, trial, repair, sparsity) of one pair, its keys those of before (the
    repairs calibrated on ``mixes[mask_from]``; None: the mask source's train rows)."""
    points = []
    for mask_from in [pair.source] + ([pair.target] if pair.cross_task else []):
        for method in cfg.methods:
            for trial in range(cfg.trials if get_method(method).repeats_over_trials else 1):
                def scores(mask_from=mask_from, method=method, trial=trial):
                    return runner.scores(mask_from, method, cfg.examples, seed=cfg.seed + trial, variant=cfg.variant,
                                         reliability=cfg.reliability, max_examples=cfg.max_examples)

                common = {"source": pair.source, "target": pair.target, "head": pair.head,
                          "mask_from": mask_from, "method": method, "trial": trial}
                key = {**common, "examples": cfg.examples, "variant": cfg.variant, "kinds": cfg.kinds,
                       "scope": cfg.scope, "seed": cfg.seed + trial,
                       **auto_key(cfg.examples, cfg.reliability, cfg.max_examples)}
                points += [Point(target, {**key, "sparsity": p},
                                 {**common, "sparsity": p, "examples": cfg.examples, "kinds": cfg.kinds,
                                  "scope": cfg.scope, **({"calib": cfg.calib_from} if get_solver(r).refits else {})},
                                 mask_maker(runner, scores, p, cfg.scope, cfg.kinds), None, None,
                                 Repair(r, (mask_from,), cfg.calib, mix=mixes[mask_from]), scores)
                           for r in cfg.repairs for p in cfg.sparsities]
    return points


def unseen_tests(points: list[Point], target: TaskSpec, source: str):
    """The paired tests of one pair's pruned rows (:attr:`mtprune.experiments.core.Group.tests`):
    against the dense model, the random mask (same source, sparsity, repair; the same trial, else
    trial 0) and, for the source's mask in the cross-task case, the target's own mask."""
    where = {(p.fields["mask_from"], p.fields["method"], p.fields["trial"], p.repair.solver, p.fields["sparsity"]): i
             for i, p in enumerate(points)}
    dense = Point(target, {}, {})

    def ref(f, i, method=None, mask_from=None):
        k = (mask_from or f["mask_from"], method or f["method"], f["trial"], points[i].repair.solver, f["sparsity"])
        return where.get(k, where.get((*k[:2], 0, *k[3:])))

    def tests(new: set, correct) -> dict:
        out = {}
        for i in sorted(new):
            f = points[i].fields
            if f["sparsity"] == 0:
                continue
            cell = correct(points[i])
            cols = {}
            cols["p_vs_dense"], d = paired_test(cell, correct(dense))
            words = [comparison_words(cols["p_vs_dense"], d, "dense")]
            r = ref(f, i, method="random") if f["method"] != "random" else None
            if r is not None:
                cols["p_vs_random"], d = paired_test(cell, correct(points[r]))
                words.append(comparison_words(cols["p_vs_random"], d, "a random mask of the same size"))
            o = ref(f, i, mask_from=f["target"]) if f["mask_from"] == source and f["method"] != "random" else None
            if o is not None and o != i:
                cols["p_vs_own"], d = paired_test(cell, correct(points[o]))
                words.append(comparison_words(cols["p_vs_own"], d, f"{f['target']}'s own mask"))
            cols["verdict"] = "; ".join(words)
            out[i] = cols
        return out
    return tests


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


def _said(p, diff: float) -> str:
    """``worse (McNemar p = 0.003)`` / ``no measurable difference (McNemar p = 0.4)``."""
    if not (isinstance(p, (int, float, np.floating)) and np.isfinite(p)):
        return "not tested (a row written before the tests; --no-resume tests it)"
    words = "no measurable difference" if p >= ALPHA else ("worse" if diff < 0 else "better")
    return f"{words} (McNemar p = {float(p):.2g})"


def unseen_verdicts(df: pd.DataFrame, sparsity: float, method: str = "ap", label=None) -> list[str]:
    """One sentence per target: ``method``'s mask from the source at ``sparsity`` (trial 0, the
    first repair) against the dense model, the random mask of the same size and, in the cross-task
    case, the target's own mask, with the accuracies and McNemar's p-values of :func:`run_unseen`."""
    name = (label or (lambda m: m))(method)
    if df.empty:
        return []
    d = df[df["repair"].fillna("none") == df["repair"].fillna("none").iloc[0]] if "repair" in df else df
    at = d[np.isclose(d["sparsity"].astype(float), float(sparsity)) & (d["trial"] == 0)]
    out = []
    for (src, tgt), g in at.groupby(["source", "target"], sort=False):
        cell = g[(g["mask_from"] == src) & (g["method"] == method)]
        if cell.empty:
            continue
        c = cell.iloc[0]
        dense = d[(d["source"] == src) & (d["target"] == tgt) & (d["sparsity"] == 0)]["accuracy"]
        dense_acc = float(dense.iloc[0]) if len(dense) else float("nan")
        parts = [f"{tgt}: {name}'s mask from {src} with {sparsity:.0%} pruned keeps {c['accuracy']:.3f} against "
                 f"{dense_acc:.3f} dense: {_said(c.get('p_vs_dense'), c['accuracy'] - dense_acc)}"]
        for what, rows, col in (("a random mask of the same size", g[(g["mask_from"] == src) & (g["method"] == "random")],
                                 "p_vs_random"),
                                (f"{tgt}'s own mask", g[(g["mask_from"] == tgt) & (g["method"] == method)], "p_vs_own")):
            if len(rows) and method != "random":
                ref = float(rows["accuracy"].iloc[0])
                parts.append(f"against {what} ({ref:.3f}): {_said(c.get(col), c['accuracy'] - ref)}")
        out.append("; ".join(parts) + ".")
    return out
