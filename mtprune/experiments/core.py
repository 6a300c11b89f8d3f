"""What every experiment shares: argument parsing, result tables on disk, and a :class:`Runner`
that turns (task, scores spec, sparsity) into a mask and a mask into metrics, reusing what it can.

Result tables are CSV files written whole to a temporary file beside the target, then renamed
(a reader never sees half a table). Every row carries a ``key``: a hash of everything its numbers
depend on (model fingerprint, task, evaluation split and size, method and its settings, sparsity,
trial). A run that finds its key in the table it writes to reuses the row instead of computing it
again, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from mtprune.errors import MtpruneError
from mtprune.tasks import TaskSpec, get_task

# the attribution methods (mtprune.attribution), and the baselines only experiments know
ATTRIBUTION_METHODS = ("ap", "ig", "activation", "random", "magnitude", "random-label")
EXPERIMENT_METHODS = ("svd",)
# methods whose scores change with the seed: run for several trials
STOCHASTIC = ("random", "random-label", "activation")
# methods that read no data: their rows do not depend on the number of examples
DATA_FREE = ("random", "magnitude")
# methods whose scores differ with and without gold labels
LABEL_METHODS = ("ap", "ig")

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def attribution_methods() -> tuple[str, ...]:
    """The attribution methods mtprune.attribution registers (the documented list before it loads)."""
    try:
        from mtprune import attribution as A
    except ImportError:
        return ATTRIBUTION_METHODS
    for name in ("METHODS", "ATTRIBUTION_METHODS", "method_names"):
        v = getattr(A, name, None)
        if callable(v):
            v = v()
        if isinstance(v, dict):
            return tuple(v)
        if isinstance(v, (list, tuple)) and v:
            return tuple(v)
    return ATTRIBUTION_METHODS


# ----------------------------------------------------------------------------------------------
# parsing


def parse_list(text: str | Sequence[str] | None, what: str = "values") -> list[str]:
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    out = [str(x).strip() for x in items if str(x).strip()]
    if not out:
        raise MtpruneError(f"no {what} given")
    return out


def _float(text: str, what: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise MtpruneError(f"{what} must be a number, not {text!r}") from None
    if not math.isfinite(v):
        raise MtpruneError(f"{what} must be a finite number, not {text!r}")
    return v


def check_rate(p: float, what: str = "sparsity") -> float:
    if not 0.0 <= p <= 1.0:
        raise MtpruneError(f"{what} {p:g} is outside [0, 1]")
    return round(float(p), 6)


def parse_sparsities(text: str | Sequence[float]) -> list[float]:
    """``0:1:0.1`` (start:stop:step, stop included), ``0.1,0.5,0.9``, or a list of numbers.

    Every value must lie in [0, 1]; the result is sorted, rounded to 6 digits, without repeats.
    """
    if isinstance(text, (list, tuple)):
        vals = [_float(v, "a sparsity") for v in text]
    else:
        text = str(text).strip()
        if not text:
            raise MtpruneError("no sparsities given")
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise MtpruneError(f"sparsities {text!r}: write start:stop:step, as 0:1:0.1")
            a, b, step = (_float(x, "a sparsity range bound") for x in parts)
            check_rate(a), check_rate(b)
            if step <= 0:
                raise MtpruneError(f"sparsities {text!r}: the step must be positive")
            if b < a:
                raise MtpruneError(f"sparsities {text!r}: stop is below start")
            n = int(math.floor((b - a) / step + 1e-9))
            vals = [a + i * step for i in range(n + 1)]
        else:
            vals = [_float(v, "a sparsity") for v in parse_list(text, "sparsities")]
    out = sorted({check_rate(v) for v in vals})
    if not out:
        raise MtpruneError("no sparsities given")
    return out


def parse_ints(text: str | Sequence[int] | int, what: str, minimum: int = 1) -> list[int]:
    if isinstance(text, int):
        items = [text]
    else:
        items = parse_list(text if isinstance(text, str) else [str(x) for x in text], what)
    out = []
    for x in items:
        try:
            v = int(str(x))
        except ValueError:
            raise MtpruneError(f"{what} must be whole numbers, not {x!r}") from None
        if v < minimum:
            raise MtpruneError(f"{what} must be at least {minimum}, not {v}")
        out.append(v)
    return out


def parse_methods(text: str | Sequence[str], allowed: Iterable[str] | None = None) -> list[str]:
    names = parse_list(text, "methods")
    allowed = tuple(allowed) if allowed is not None else attribution_methods() + EXPERIMENT_METHODS
    unknown = [m for m in names if m not in allowed]
    if unknown:
        raise MtpruneError(f"unknown method {unknown[0]!r}; known methods: {', '.join(allowed)}")
    return list(dict.fromkeys(names))


def parse_tasks(text: str | Sequence[str]) -> list[TaskSpec]:
    return [get_task(n) for n in dict.fromkeys(parse_list(text, "tasks"))]


# ----------------------------------------------------------------------------------------------
# result tables


def row_key(parts: dict) -> str:
    """The key of a result row: a short hash of a canonical JSON of what the row depends on."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to a temporary file beside ``path``, then rename it onto ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    except OSError as exc:
        raise MtpruneError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are for reading
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """The table as CSV, atomically."""
    return atomic_write_text(path, df.to_csv(index=False))


def read_table(path: str | os.PathLike, required: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV written by :func:`write_table`; an empty frame when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    if path.is_dir():
        raise MtpruneError(f"{path} is a directory, not a CSV file")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as exc:
        raise MtpruneError(f"{path} is not a readable CSV: {type(exc).__name__}: {exc}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise MtpruneError(f"{path} lacks the column(s) {', '.join(missing)}: not a table this command wrote")
    return df


class ResultTable:
    """Rows keyed by ``key``, backed by one CSV file (or memory only when ``path`` is None).

    Rows already in the file are kept (also those of other settings); a row with a key that is
    already there replaces it. :meth:`save` writes the whole table atomically.
    """

    def __init__(self, path: str | os.PathLike | None, resume: bool = True, columns: Sequence[str] = ()):
        self.path = Path(path) if path is not None else None
        self.columns = list(columns)
        self.rows: dict[str, dict] = {}
        if self.path is not None:
            if self.path.exists() and self.path.is_dir():
                raise MtpruneError(f"--out {self.path} is a directory, not a CSV file")
            if resume:
                old = read_table(self.path)
                if len(old) and "key" not in old.columns:
                    raise MtpruneError(f"{self.path} exists and has no key column: not a table mtprune wrote")
                for rec in old.to_dict("records"):
                    self.rows[str(rec["key"])] = rec

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def put(self, row: dict) -> None:
        self.rows[str(row["key"])] = row

    def frame(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        recs = list(self.rows.values()) if keys is None else [self.rows[k] for k in keys if k in self.rows]
        df = pd.DataFrame.from_records(recs)
        if len(df):
            first = [c for c in self.columns if c in df.columns]
            df = df[first + [c for c in df.columns if c not in first]]
        return df

    def save(self) -> Path | None:
        if self.path is None:
            return None
        return write_table(self.frame(), self.path)


# ----------------------------------------------------------------------------------------------
# the runner


def mask_digest(mask) -> str:
    """A hash of which units a mask keeps (equal masks, equal digests)."""
    if mask is None:
        return "dense"
    keep = mask.keep if hasattr(mask, "keep") else mask
    h = hashlib.blake2b(digest_size=12)
    for g in sorted(keep):
        k = np.ascontiguousarray(np.asarray(keep[g], dtype=bool))
        h.update(g.encode())
        h.update(str(k.shape).encode())
        h.update(np.packbits(k).tobytes())
    return h.hexdigest()


def with_head(target: TaskSpec, head: str) -> TaskSpec:
    """``target`` read through ``head`` (scitail through qnli's head rather than rte's)."""
    if head == target.name and not target.label_source:
        return target
    return replace(target, label_source=(head,))


@dataclass
class EvalOutcome:
    metrics: dict
    n: int
    seconds: float
    reused: bool = False


class Runner:
    """One model, evaluation rows loaded once per (task, split), evaluations memoised by mask.

    ``limit`` caps the evaluation rows per task (the first ``limit`` of the split); ``split``
    overrides every task's default evaluation split; ``rows`` gives a task's evaluation rows
    directly (``{task name: rows}``, tests and notebooks).

    ``prune="soft"`` (the default) applies masks with :func:`mtprune.pruning.soft_prune`;
    ``"hard"`` evaluates a hard-pruned copy instead (:func:`mtprune.pruning.hard_prune`: the same
    logits to float rounding, and faster at high sparsity; sites that cannot be cut physically
    fall back to soft masks).
    """

    def __init__(self, adapter, limit: int | None = None, split: str | None = None, batch_size: int = 32,
                 log: Log | None = _stderr, attribution_batch_size: int = 32,
                 rows: dict[str, list[dict]] | None = None, prune: str = "soft"):
        if limit is not None and limit < 1:
            raise MtpruneError(f"--limit must be at least 1, not {limit}")
        if batch_size < 1:
            raise MtpruneError(f"--batch-size must be at least 1, not {batch_size}")
        if prune not in ("soft", "hard"):
            raise MtpruneError(f"prune must be soft or hard, not {prune!r}")
        self.adapter = adapter
        self.prune = prune
        self.limit = limit
        self.split = split
        self.batch_size = batch_size
        self.attribution_batch_size = attribution_batch_size
        self.log = log or (lambda msg: None)
        self._rows: dict[tuple, list[dict]] = {}
        for name, given in (rows or {}).items():
            t = get_task(name)
            self._rows[(t.name, self.eval_split(t))] = [dict(r) for r in given][: limit or None]
        self._evals: dict[tuple, EvalOutcome] = {}
        self._scores: dict[str, object] = {}
        self._capped: set = set()
        self._svd_cache = None
        self.fingerprint = adapter.fingerprint()
        self.model_name = getattr(adapter, "display_name", str(getattr(adapter, "source", "model")))
        self.stats = {"evaluations": 0, "evaluations_reused": 0, "eval_seconds": 0.0,
                      "scores_computed": 0, "scores_cached": 0, "attribution_seconds": 0.0}

    # -- data -------------------------------------------------------------------------------------
    def eval_split(self, task: TaskSpec) -> str:
        split = self.split or task.default_split
        if split not in task.splits:
            raise MtpruneError(f"task {task.name} has no split {split!r}; its splits: {', '.join(task.splits)}")
        return split

    def eval_rows(self, task: TaskSpec) -> list[dict]:
        from mtprune.tasks import load_rows, rows_as_list

        split = self.eval_split(task)
        key = (task.name, split)
        if key not in self._rows:
            rows = rows_as_list(load_rows(task, split), self.limit)
            rows = [r for r in rows if r.get("label", -1) != -1]
            if not rows:
                raise MtpruneError(f"{task.name}/{split} has no labeled rows to evaluate")
            self._rows[key] = rows
        return self._rows[key]

    def eval_size(self, task: TaskSpec) -> int:
        return len(self.eval_rows(task))

    # -- scores and masks ---------------------------------------------------------------------------
    def scores(self, task: str, method: str, samples: int, seed: int = 0, variant: str = "abs",
               unsupervised: bool = False, split: str | None = None, steps: int = 20):
        """Attribution scores through the disk cache (``attribute_cached``). A task with fewer
        examples than ``samples`` in its attribution split uses all it has (cb: 250)."""
        from mtprune.attribution import AttributionSpec, attribute_cached

        size = split_size(get_task(task), split)
        if size is not None and samples > size:
            if (task, samples) not in self._capped:
                self._capped.add((task, samples))
                self.log(f"  {task} has {size} examples to attribute from: using all {size}, not {samples}")
            samples = size

        spec = AttributionSpec(task=task, method=method, variant=variant, samples=samples, seed=seed,
                               split=split, steps=steps, unsupervised=unsupervised, units="all")
        memo = repr(spec)
        if memo in self._scores:
            return self._scores[memo]
        t0 = time.perf_counter()
        out = attribute_cached(self.adapter, spec, batch_size=self.attribution_batch_size)
        scores, hit = out[0], bool(out[1])
        dt = time.perf_counter() - t0
        self.stats["scores_cached" if hit else "scores_computed"] += 1
        self.stats["attribution_seconds"] += dt
        if not hit:
            self.log(f"  scores {task}/{method} samples={samples} seed={seed}"
                     f"{' unsupervised' if unsupervised else ''}: {dt:.1f} s")
        self._scores[memo] = scores
        return scores

    @staticmethod
    def mask(scores, sparsity: float, scope: str = "layer", units: str = "ffn", stack: str = "all"):
        from mtprune.masks import mask_from_scores

        return mask_from_scores(scores, sparsity, scope=scope, units=units, stack=stack)

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, task: TaskSpec, mask=None, svd: bool = False) -> EvalOutcome:
        """Metrics of ``task`` with ``mask`` applied (soft pruning), or its SVD stand-in."""
        from mtprune.evaluation import evaluate

        head = self.adapter.head_for(task)
        split = self.eval_split(task)
        rows = self.eval_rows(task)
        digest = mask_digest(mask)
        memo = (task.name, head, split, len(rows), digest, bool(svd and mask is not None))
        if memo in self._evals:
            self.stats["evaluations_reused"] += 1
            hit = self._evals[memo]
            return EvalOutcome(hit.metrics, hit.n, 0.0, True)
        target = self.adapter
        if mask is None or (not svd and _keeps_all(mask)):
            context = None
        elif not svd and self.prune == "hard" and self._hard_ok(mask):
            from mtprune.pruning import hard_prune

            target, context = hard_prune(self.adapter, mask), None
        elif svd:
            from mtprune.svd import SVDCache, svd_compress

            if self._svd_cache is None:
                self._svd_cache = SVDCache()
            context = lambda: svd_compress(self.adapter, mask, self._svd_cache)  # noqa: E731
        else:
            from mtprune.pruning import soft_prune

            context = lambda: soft_prune(self.adapter, mask)  # noqa: E731
        res = evaluate(target, task, split, rows=rows, batch_size=self.batch_size, context=context)
        del target
        out = EvalOutcome(dict(res.metrics), res.n, res.seconds)
        self._evals[memo] = out
        self.stats["evaluations"] += 1
        self.stats["eval_seconds"] += res.seconds
        return out

    def _hard_ok(self, mask) -> bool:
        keep = mask.keep_for_sites(self.adapter.unit_sites())
        return all(s.hard_prunable for s in self.adapter.unit_sites()
                   if s.name in keep and not bool(keep[s.name].all()))

    def params(self, mask=None) -> int:
        from mtprune.pruning import count_parameters

        return int(count_parameters(self.adapter, mask))


def split_size(task: TaskSpec, split: str | None = None) -> int | None:
    """Rows in a task's split (its training split by default) when there is a local file; else None."""
    from mtprune.tasks import data_path

    split = split or task.train_split
    if split not in task.splits:
        return None
    path = data_path(task, split)
    if path is None:
        return None
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def _keeps_all(mask) -> bool:
    n_units = getattr(mask, "n_units", None)
    if n_units is None:
        return False
    return all(int(np.asarray(mask.keep[g]).sum()) == int(sum(n_units[g])) for g in mask.keep)


def metric_columns(task: TaskSpec) -> list[str]:
    return list(task.metrics)


def fmt_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"
