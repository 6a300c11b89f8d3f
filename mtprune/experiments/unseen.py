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
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mtprune.errors import MtpruneError
from mtprune.experiments.core import (STOCHASTIC, ResultTable, Runner, attribution_methods, fmt_seconds,
                                      row_key, with_head)
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
UNSEEN_COLUMNS = ["source", "target", "head", "mask_from", "method", "sparsity", "trial", "accuracy", "f1",
                  "mcc", "samples", "units", "scope", "split", "n_eval", "kept_units", "model_fingerprint", "key"]


@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    head: str

    @property
    def cross_task(self) -> bool:
        return get_task(self.target).group != "unseen"

    def target_spec(self) -> TaskSpec:
        return with_head(get_task(self.target), self.head)


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
    spec = with_head(tgt, head)
    adapter.head_for(spec)  # label counts must match
    return Pair(src.name, tgt.name, head)


def run_unseen(adapter, pairs=None, methods=("ap", "random"), sparsities=(0.0, 0.3, 0.5, 0.7, 0.9),
               samples: int = 256, trials: int = 5, units: str = "ffn", scope: str = "layer",
               variant: str = "abs", limit: int | None = None, batch_size: int = 32, seed: int = 0,
               out: str | None = None, resume: bool = True, log=None, rows: dict | None = None,
               prune: str = "soft") -> pd.DataFrame:
    """One row per (pair, mask source, method, sparsity, trial) with the target's metrics."""
    from mtprune.experiments.core import _stderr, parse_methods, parse_sparsities

    log = log or _stderr
    methods = parse_methods(list(methods), allowed=attribution_methods())
    sparsities = parse_sparsities(list(sparsities))
    if trials < 1:
        raise MtpruneError(f"--trials must be at least 1, not {trials}")
    resolved = [resolve_pair(adapter, s, t) for s, t in (pairs if pairs is not None else PAPER_PAIRS)]
    runner = Runner(adapter, limit=limit, batch_size=batch_size, log=log, rows=rows, prune=prune)
    table = ResultTable(out, resume=resume, columns=UNSEEN_COLUMNS)
    keys: list[str] = []
    t_start = time.perf_counter()
    for pair in resolved:
        target = pair.target_spec()
        sources = [pair.source] + ([pair.target] if pair.cross_task else [])
        n_eval = runner.eval_size(target)
        log(f"{pair.source} -> {pair.target} (head {pair.head}, {n_eval} rows of {runner.eval_split(target)})")
        for mask_from in sources:
            for method in methods:
                n_trials = trials if method in STOCHASTIC else 1
                for trial in range(n_trials):
                    t0 = time.perf_counter()
                    accs = []
                    scores = None
                    for p in sparsities:
                        key = row_key({
                            "experiment": "unseen", "model": runner.fingerprint, "source": pair.source,
                            "target": pair.target, "head": pair.head, "mask_from": mask_from, "method": method,
                            "samples": samples, "variant": variant, "units": units, "scope": scope,
                            "sparsity": p, "trial": trial, "seed": seed + trial,
                            "split": runner.eval_split(target), "n_eval": n_eval,
                        })
                        keys.append(key)
                        if key in table:
                            accs.append(table.get(key)["accuracy"])
                            continue
                        if scores is None:
                            scores = runner.scores(mask_from, method, samples, seed=seed + trial, variant=variant)
                        mask = runner.mask(scores, p, scope=scope, units=units)
                        res = runner.evaluate(target, mask)
                        table.put({
                            "source": pair.source, "target": pair.target, "head": pair.head,
                            "mask_from": mask_from, "method": method, "sparsity": p, "trial": trial,
                            "accuracy": res.metrics.get("accuracy"), "f1": res.metrics.get("f1", np.nan),
                            "mcc": res.metrics.get("mcc", np.nan), "samples": samples, "units": units,
                            "scope": scope, "split": runner.eval_split(target), "n_eval": res.n,
                            "kept_units": mask.kept(), "model_fingerprint": runner.fingerprint, "key": key,
                        })
                        accs.append(res.metrics.get("accuracy"))
                    table.save()
                    log(f"  mask from {mask_from} {method} trial {trial}: "
                        + " ".join(f"{a:.3f}" for a in accs)
                        + f"  ({fmt_seconds(time.perf_counter() - t0)}, {fmt_seconds(time.perf_counter() - t_start)} so far)")
    df = table.frame(keys)
    df.attrs["stats"] = dict(runner.stats, seconds=time.perf_counter() - t_start)
    return df


def unseen_summary(df: pd.DataFrame, metric: str = "accuracy", lo: float = 0.1, hi: float = 1.0) -> pd.DataFrame:
    """Per pair: the dense metric, and the mean over sparsities in ``[lo, hi]`` per method for the
    source's mask (columns named by the method) and, in the cross-task case, the target's own mask
    (``<method> (own mask)``); trials averaged."""
    d = df.copy()
    d["series"] = np.where(d["mask_from"] == d["source"], d["method"], d["method"] + " (own mask)")
    dense = d[d["sparsity"] == 0].groupby(["source", "target"])[metric].first().rename("dense")
    rng = d[(d["sparsity"] >= lo - 1e-9) & (d["sparsity"] <= hi + 1e-9)]
    per = rng.groupby(["source", "target", "series", "trial"])[metric].mean().reset_index()
    tab = per.groupby(["source", "target", "series"])[metric].mean().unstack("series")
    tab = tab.join(dense)
    order = list(dict.fromkeys(zip(df["source"], df["target"])))
    tab = tab.loc[[o for o in order if o in tab.index]]
    methods = list(dict.fromkeys(df["method"]))
    cols = ["dense"] + [m for m in methods if m in tab.columns] + [f"{m} (own mask)" for m in methods
                                                                    if f"{m} (own mask)" in tab.columns]
    return tab[cols]
