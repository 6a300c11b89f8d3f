"""Batched evaluation of an adapter on a task split: accuracy, and F1 / Matthews correlation where
the task asks for them, each with a 95% interval; and the paired comparison of two models on the
same rows.

* Accuracy's interval is Wilson's score interval (``scipy.stats.binomtest(...).proportion_ci``);
  F1's and MCC's come from a seeded percentile bootstrap over the rows (``scipy.stats.bootstrap``,
  1,000 resamples).
* :func:`compare` pairs two results on the same rows: which rows flipped (right -> wrong, wrong ->
  right), McNemar's exact test on those discordant rows (a two-sided binomial test), and a plain
  verdict: ``lower`` or ``higher`` when p < 0.05, else ``no measurable change``.
* A mask is evaluated with hooks on the dense model (``prune="soft"``), on a sliced copy
  (``"hard"``: :func:`mtprune.pruning.hard_prune`, faster) or, with ``"auto"``, sliced where the
  mask allows it and hooked where it does not (:func:`pruned_model`).
* ``cache_logits=True`` keeps a dense evaluation's logits on disk (the ``logits`` namespace of
  :class:`mtprune.cache.DiskCache`), keyed by the model's fingerprint, the task, its head, the
  split and the rows themselves: a second evaluation of the same rows, in any process, reads them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from mtprune.batching import length_order
from mtprune.errors import MtpruneError
from mtprune.tasks import TaskSpec, get_task, load_rows, rows_as_list
from mtprune.text import plural

Progress = Callable[[int, int], None]  # (rows done, rows in all)


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean()) if len(gold) else float("nan")


def f1_binary(pred: np.ndarray, gold: np.ndarray, positive: int = 1) -> float:
    tp = int(((pred == positive) & (gold == positive)).sum())
    fp = int(((pred == positive) & (gold != positive)).sum())
    fn = int(((pred != positive) & (gold == positive)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def confusion(pred: np.ndarray, gold: np.ndarray, n_labels: int | None = None) -> np.ndarray:
    """``c[g, p]``: rows of gold label ``g`` predicted ``p``."""
    pred, gold = np.asarray(pred, dtype=int), np.asarray(gold, dtype=int)
    n = n_labels or int(max(pred.max(initial=0), gold.max(initial=0)) + 1)
    return np.bincount(gold * n + pred, minlength=n * n).reshape(n, n)


def matthews(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation (multi-class form, Gorodkin 2004); 0 when undefined."""
    c = confusion(pred, gold).astype(np.float64)
    t, pk, s = c.sum(1), c.sum(0), c.sum()
    num = np.trace(c) * s - t @ pk
    den = np.sqrt((s**2 - pk @ pk) * (s**2 - t @ t))
    return float(num / den) if den else 0.0


METRIC_FNS = {"accuracy": accuracy, "f1": f1_binary, "mcc": matthews}
LEVEL = 0.95


def compute_metrics(task: TaskSpec, pred, gold) -> dict[str, float]:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return {m: METRIC_FNS[m](pred, gold) for m in task.metrics}


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``k / n``."""
    from scipy.stats import binomtest

    if n <= 0:
        return float("nan"), float("nan")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap(metric: str, pred, gold, level: float = LEVEL, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of ``metric`` over rows (resampled in pairs), seeded."""
    from scipy.stats import bootstrap as sp_bootstrap

    pred, gold = np.asarray(pred), np.asarray(gold)
    if len(gold) < 2:
        return float("nan"), float("nan")
    fn = METRIC_FNS[metric]
    res = sp_bootstrap((pred, gold), lambda p, g: fn(p, g), paired=True, vectorized=False, n_resamples=resamples,
                       confidence_level=level, method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def intervals(task: TaskSpec, pred, gold, level: float = LEVEL) -> dict[str, tuple[float, float]]:
    """A ``level`` interval for every metric of the task: Wilson's for accuracy, a bootstrap's for
    F1 and MCC."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    out = {}
    for m in task.metrics:
        out[m] = wilson(int((pred == gold).sum()), len(gold), level) if m == "accuracy" else \
            bootstrap(m, pred, gold, level)
    return out


@dataclass(frozen=True)
class Predictions:
    """What a model said about every row, in the rows' order: gold labels, predicted labels, and
    the probability of every label (softmax over the task's labels)."""

    gold: np.ndarray
    pred: np.ndarray
    probs: np.ndarray  # [rows, labels]

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.gold

    @property
    def p_gold(self) -> np.ndarray:
        return self.probs[np.arange(len(self.gold)), self.gold]


@dataclass(frozen=True)
class EvalResult:
    task: str
    split: str
    n: int
    accuracy: float
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    model: str = ""
    head: str = ""
    intervals: dict = field(default_factory=dict)  # metric -> (low, high), 95%
    predictions: Predictions | None = field(default=None, repr=False, compare=False)
    how: str = field(default="", compare=False)  # dense | cached | soft | hard: how the logits were had

    def interval(self, metric: str = "accuracy") -> tuple[float, float]:
        return tuple(self.intervals.get(metric, (float("nan"), float("nan"))))

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("predictions", None)
        d.pop("how", None)
        d.update(self.metrics)
        d["intervals"] = {m: [round(v, 6) for v in iv] for m, iv in self.intervals.items()}
        d["level"] = LEVEL
        return d

    def describe(self, metric: str = "accuracy") -> str:
        """``0.868 (0.845-0.889, n=872)``."""
        lo, hi = self.interval(metric)
        return f"{self.metrics.get(metric, float('nan')):.3f} ({lo:.3f}-{hi:.3f}, n={self.n})"


VERDICTS = ("lower", "higher", "no measurable change")


@dataclass(frozen=True)
class Comparison:
    """Two models on the same rows: ``b`` against the reference ``a`` (dense against pruned)."""

    task: str
    split: str
    n: int
    a: dict  # metrics of the reference
    b: dict
    a_only: int  # rows a gets right and b wrong (right -> wrong)
    b_only: int  # rows b gets right and a wrong (wrong -> right)
    p_value: float  # McNemar's exact test
    verdict: str
    difference: float  # b's accuracy - a's
    difference_interval: tuple[float, float]  # 95%, Newcombe's for paired proportions, via Wilson

    def to_dict(self) -> dict:
        return asdict(self)

    def sentence(self, a: str = "dense", b: str = "pruned") -> str:
        if self.verdict == "no measurable change":
            return (f"No measurable change: {b} {self.b['accuracy']:.3f} against {a} {self.a['accuracy']:.3f} "
                    f"on {plural(self.n, 'row')} ({self.a_only} flipped right -> wrong, {self.b_only} wrong -> right; "
                    f"McNemar p = {self.p_value:.2g}).")
        return (f"{b.capitalize()} is {self.verdict}: {self.b['accuracy']:.3f} against {self.a['accuracy']:.3f} "
                f"on {plural(self.n, 'row')} ({self.difference:+.3f}, 95% interval {self.difference_interval[0]:+.3f} to "
                f"{self.difference_interval[1]:+.3f}; {self.a_only} flipped right -> wrong, {self.b_only} wrong -> "
                f"right; McNemar p = {self.p_value:.2g}).")


def mcnemar(a_only: int, b_only: int) -> float:
    """McNemar's exact test: the two-sided binomial p-value of the discordant rows."""
    from scipy.stats import binomtest

    n = int(a_only) + int(b_only)
    return 1.0 if n == 0 else float(binomtest(int(min(a_only, b_only)), n, 0.5).pvalue)


def paired_difference_interval(a_correct, b_correct, level: float = LEVEL) -> tuple[float, float]:
    """Newcombe's interval (method 10) of the difference of two paired proportions, from Wilson's."""
    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    n = len(a)
    if n == 0:
        return float("nan"), float("nan")
    p1, p2 = a.mean(), b.mean()
    l1, u1 = wilson(int(a.sum()), n, level)
    l2, u2 = wilson(int(b.sum()), n, level)
    n11, n10 = int((a & b).sum()), int((a & ~b).sum())
    n01, n00 = int((~a & b).sum()), int((~a & ~b).sum())
    denom = np.sqrt(float((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)))
    phi = 0.0 if denom == 0 else (n11 * n00 - n10 * n01) / denom
    d = p2 - p1
    lo = d - np.sqrt(max((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2, 0.0))
    hi = d + np.sqrt(max((u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2, 0.0))
    return float(lo), float(hi)


def compare(a: EvalResult, b: EvalResult, alpha: float = 0.05) -> Comparison:
    """``b`` against ``a`` on the same rows (both need their predictions)."""
    if a.predictions is None or b.predictions is None:
        raise ValueError("compare needs results with their predictions (evaluate keeps them)")
    if a.task != b.task or a.n != b.n or not np.array_equal(a.predictions.gold, b.predictions.gold):
        raise MtpruneError("the two results are not on the same rows: compare them on one task, split and limit")
    ca, cb = a.predictions.correct, b.predictions.correct
    a_only, b_only = int((ca & ~cb).sum()), int((~ca & cb).sum())
    p = mcnemar(a_only, b_only)
    diff = float(cb.mean() - ca.mean())
    verdict = ("lower" if diff < 0 else "higher") if p < alpha else "no measurable change"
    return Comparison(a.task, a.split, a.n, dict(a.metrics), dict(b.metrics), a_only, b_only, p, verdict, diff,
                      paired_difference_interval(ca, cb))


def predict_logits(adapter, task: TaskSpec, rows: Sequence[dict], batch_size: int = 32,
                   progress: Progress | None = None, context=None) -> torch.Tensor:
    """Logits for every row, in order; rows are batched by length for speed.

    ``context`` is an optional context-manager factory entered around the forward passes (a soft
    mask, say).
    """
    if batch_size < 1:
        raise MtpruneError(f"batch size must be at least 1, not {batch_size}")
    order = length_order(task, rows)
    out = [None] * len(rows)
    done = 0
    from contextlib import nullcontext

    with torch.inference_mode(), (context() if context else nullcontext()):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = adapter.encode([rows[i] for i in idx], task)
            logits = adapter.logits(batch, task).float().cpu()
            for j, i in enumerate(idx):
                out[i] = logits[j]
            done += len(idx)
            if progress:
                progress(done, len(rows))
    return torch.stack(out) if out else torch.zeros(0, task.num_labels)


def eval_rows(task: TaskSpec | str, split: str | None = None, limit: int | None = None) -> list[dict]:
    """The first ``limit`` labeled rows of a split (all when None): what :func:`evaluate` reads."""
    task = get_task(task) if isinstance(task, str) else task
    split = split or task.default_split
    rows = [r for r in rows_as_list(load_rows(task, split), limit) if r.get("label", -1) != -1]
    if not rows:
        raise MtpruneError(f"{task.name}/{split} has no labeled rows to evaluate")
    return rows


PRUNE_MODES = ("soft", "hard", "auto")
LOGITS_NAMESPACE = "logits"


def pruned_model(adapter, mask, prune: str = "auto"):
    """``(model, context, how)``: what evaluates ``adapter`` with ``mask`` applied.

    ``"hard"``: a sliced copy (:func:`mtprune.pruning.hard_prune`; the model's own hooks are not
    used, and the copy can run while other code runs the dense model); ``"soft"``: the dense model
    and a context factory that hooks the pruned units away while it is entered; ``"auto"``: hard
    where the mask allows it (every pruned unit can be sliced away), else soft. A mask that keeps
    every unit is the dense model. Slicing copies the model's state: hold the model's lock around
    this call when other code may set hooks on it.
    """
    from mtprune.pruning import hard_prune, hard_prune_problem, soft_prune

    if prune not in PRUNE_MODES:
        raise MtpruneError(f"prune must be one of {', '.join(PRUNE_MODES)}, not {prune!r}")
    mask.check_matches(adapter)
    if mask.keeps_all():
        return adapter, None, "dense"
    if prune == "hard" or (prune == "auto" and hard_prune_problem(adapter, mask) is None):
        return hard_prune(adapter, mask), None, "hard"
    return adapter, (lambda: soft_prune(adapter, mask)), "soft"


def rows_digest(task: TaskSpec, rows: Sequence[dict]) -> str:
    """A hash of the rows an evaluation reads (the task's fields and the labels, in order)."""
    from mtprune.io import stable_hash

    fields = (*task.fields, "label")
    return stable_hash([{k: r.get(k) for k in fields} for r in rows], 24)


def logits_key(adapter, task: TaskSpec, split: str, rows: Sequence[dict]) -> str:
    """The disk cache key of a dense model's logits on ``rows``."""
    from mtprune import __version__
    from mtprune.cache import make_key

    return make_key({"what": "dense logits", "model": adapter.fingerprint(), "task": task.name,
                     "head": adapter.head_for(task), "split": split, "rows": rows_digest(task, rows),
                     "n": len(rows), "max_length": getattr(adapter, "max_length", None), "version": __version__})


def dense_logits(adapter, task: TaskSpec, split: str, rows: Sequence[dict], batch_size: int = 32,
                 progress: Progress | None = None) -> tuple[torch.Tensor, bool]:
    """``(logits, cache_hit)``: the dense model's logits on ``rows``, from the disk cache or computed
    and stored there (one computation per key across processes). A cache that cannot be written is
    passed by: the logits are computed and not kept."""
    from safetensors.torch import load_file, save_file

    from mtprune.cache import DiskCache

    want = (len(rows), task.num_labels)

    def read(path):
        t = load_file(str(path))["logits"]
        if tuple(t.shape) != want or not torch.isfinite(t).all():
            raise ValueError(f"logits of shape {tuple(t.shape)}, expected {want}")
        return t

    def compute():
        return predict_logits(adapter, task, rows, batch_size, progress)

    cache = DiskCache(namespace=LOGITS_NAMESPACE)
    try:
        key = logits_key(adapter, task, split, rows)
        logits, hit, _ = cache.get_or_compute(
            key, compute, read, lambda t, tmp: save_file({"logits": t.contiguous()}, str(tmp),
                                                           metadata={"task": task.name, "split": split}))
    except MtpruneError:  # the cache is not writable: compute, keep nothing
        return compute(), False
    if hit and progress:
        progress(len(rows), len(rows))
    return logits, hit


def evaluate(adapter, task: TaskSpec | str, split: str | None = None, limit: int | None = None,
             batch_size: int = 32, progress: Progress | None = None, rows: Sequence[dict] | None = None,
             context=None, mask=None, prune: str = "soft", cache_logits: bool = False) -> EvalResult:
    """The task's metrics on ``rows`` (default: the first ``limit`` labeled rows of ``split``).

    ``mask`` evaluates the pruned model: with hooks on this one (``prune="soft"``), on a sliced
    copy (``"hard"``) or sliced where the mask allows (``"auto"``; :func:`pruned_model`).
    ``context`` is any other context-manager factory entered around the forward passes.
    ``cache_logits`` reads a dense evaluation's logits from the disk cache, or stores them there
    (:func:`dense_logits`).
    """
    task = get_task(task) if isinstance(task, str) else task
    head = adapter.head_for(task)
    split = split or task.default_split
    if rows is None:
        rows = eval_rows(task, split, limit)
    rows = [r for r in rows if r.get("label", -1) != -1]
    if not rows:
        raise MtpruneError(f"{task.name}/{split} has no labeled rows to evaluate")
    how = "dense"
    if mask is not None:
        if context is not None:
            raise ValueError("pass a mask or a context, not both")
        adapter, context, how = pruned_model(adapter, mask, prune)
    t0 = time.perf_counter()
    if cache_logits and context is None and how == "dense":
        logits, hit = dense_logits(adapter, task, split, rows, batch_size, progress)
        how = "cached" if hit else how
    else:
        logits = predict_logits(adapter, task, rows, batch_size, progress, context)
    return result_from_logits(adapter, task, split, rows, logits, time.perf_counter() - t0, head, how)


def result_from_logits(adapter, task: TaskSpec, split: str, rows: Sequence[dict], logits: torch.Tensor,
                       seconds: float, head: str, how: str = "") -> EvalResult:
    """The metrics, intervals and per-row predictions of ``logits`` on ``rows``."""
    pred = logits.argmax(1).numpy()
    gold = np.array([int(r["label"]) for r in rows])
    metrics = compute_metrics(task, pred, gold)
    probs = logits.float().softmax(-1).numpy()  # classifier logits, or label words' log-probabilities
    return EvalResult(task.name, split, len(rows), metrics["accuracy"], metrics, seconds, adapter.display_name, head,
                      intervals(task, pred, gold), Predictions(gold, pred, probs), how)
