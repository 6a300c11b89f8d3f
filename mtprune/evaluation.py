"""Batched evaluation of an adapter on a task split: accuracy, and F1 / Matthews correlation where
the task asks for them."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from mtprune.errors import MtpruneError
from mtprune.tasks import TaskSpec, get_task, load_rows, rows_as_list

Progress = Callable[[int, int], None]  # (rows done, rows in all)


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean()) if len(gold) else float("nan")


def f1_binary(pred: np.ndarray, gold: np.ndarray, positive: int = 1) -> float:
    tp = int(((pred == positive) & (gold == positive)).sum())
    fp = int(((pred == positive) & (gold != positive)).sum())
    fn = int(((pred != positive) & (gold == positive)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation (multi-class form, Gorodkin 2004); 0 when undefined."""
    labels = np.union1d(pred, gold)
    c = np.zeros((len(labels), len(labels)))
    idx = {v: i for i, v in enumerate(labels)}
    for g, p in zip(gold, pred):
        c[idx[g], idx[p]] += 1
    t, pk, s = c.sum(1), c.sum(0), c.sum()
    num = np.trace(c) * s - t @ pk
    den = np.sqrt((s**2 - pk @ pk) * (s**2 - t @ t))
    return float(num / den) if den else 0.0


def compute_metrics(task: TaskSpec, pred, gold) -> dict[str, float]:
    pred, gold = np.asarray(pred), np.asarray(gold)
    out = {"accuracy": accuracy(pred, gold)}
    if "f1" in task.metrics:
        out["f1"] = f1_binary(pred, gold)
    if "mcc" in task.metrics:
        out["mcc"] = matthews(pred, gold)
    return out


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

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(self.metrics)
        return d


def predict_logits(adapter, task: TaskSpec, rows: Sequence[dict], batch_size: int = 32,
                   progress: Progress | None = None, context=None) -> torch.Tensor:
    """Logits for every row, in order; rows are batched by length for speed.

    ``context`` is an optional context-manager factory entered around the forward passes (a soft
    mask, say).
    """
    if batch_size < 1:
        raise MtpruneError(f"batch size must be at least 1, not {batch_size}")
    order = sorted(range(len(rows)), key=lambda i: sum(len(str(rows[i].get(f, ""))) for f in task.fields))
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


def evaluate(adapter, task: TaskSpec | str, split: str | None = None, limit: int | None = None,
             batch_size: int = 32, progress: Progress | None = None, rows: Sequence[dict] | None = None,
             context=None, mask=None) -> EvalResult:
    """The task's metrics on ``rows`` (default: the first ``limit`` labeled rows of ``split``).

    ``mask`` evaluates the soft-pruned model (:func:`mtprune.pruning.soft_prune`); ``context`` is
    any other context-manager factory entered around the forward passes.
    """
    task = get_task(task) if isinstance(task, str) else task
    head = adapter.head_for(task)
    split = split or task.default_split
    if rows is None:
        rows = eval_rows(task, split, limit)
    rows = [r for r in rows if r.get("label", -1) != -1]
    if not rows:
        raise MtpruneError(f"{task.name}/{split} has no labeled rows to evaluate")
    if mask is not None:
        if context is not None:
            raise ValueError("pass a mask or a context, not both")
        from mtprune.pruning import soft_prune

        mask.check_matches(adapter)
        context = lambda: soft_prune(adapter, mask)  # noqa: E731
    t0 = time.perf_counter()
    logits = predict_logits(adapter, task, rows, batch_size, progress, context)
    pred = logits.argmax(1).numpy()
    gold = np.array([int(r["label"]) for r in rows])
    metrics = compute_metrics(task, pred, gold)
    return EvalResult(task.name, split, len(rows), metrics["accuracy"], metrics,
                      time.perf_counter() - t0, adapter.display_name, head)
