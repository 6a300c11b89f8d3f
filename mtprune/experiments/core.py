"""What every experiment shares: argument parsing, result tables on disk, the :class:`Runner` that
turns (task, method, examples) into scores and a mask into metrics, and :func:`run_points`, the
one place where a result row is made, keyed, reused or evaluated.

An experiment (sweep, unseen, quota, transfer...) plans its rows as :class:`Point` objects in
groups (the rows that share one computation of scores) and hands them to :func:`run_points`:

* every point's **key** is the hash of everything its numbers depend on: the experiment, the model's
  fingerprint, the evaluated task, split and row count, and the point's own settings (method,
  examples, seed, sparsity, trial...);
* a point whose key is already in the result table is **reused**; otherwise its mask is built
  (lazily: scores are computed only when some row of the group is missing) and **evaluated**;
* the table (a CSV) is rewritten whole after every group, to a temporary file then renamed: an
  interrupted run keeps what it finished, and a rerun resumes there.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from mtprune import io
from mtprune.errors import MtpruneError
from mtprune.masks import Mask, check_sparsity, mask_from_scores
from mtprune.methods import Method, get_method, method_names
from mtprune.repair import CALIB_TOKENS, RepairSettings
from mtprune.solvers import get_solver
from mtprune.tasks import TaskSpec, data_path, get_task
from mtprune.text import fmt_seconds

Log = Callable[[str], None]
Progress = Callable[[int, int], None]  # (rows done, rows in all)
METRICS = ("accuracy", "f1", "mcc")
PRUNE_MODES = ("soft", "hard")


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


def _float(text, what: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise MtpruneError(f"{what} must be a number, not {text!r}") from None
    if not math.isfinite(v):
        raise MtpruneError(f"{what} must be a finite number, not {text!r}")
    return v


def parse_sparsity(value) -> float:
    """One sparsity in [0, 1], rounded to 6 digits."""
    return round(check_sparsity(_float(value, "a sparsity")), 6)


def parse_sparsities(text: str | Sequence[float]) -> list[float]:
    """``0:1:0.1`` (start:stop:step, stop included), ``0.1,0.5,0.9``, or a list of numbers.

    Every value must lie in [0, 1]; the result is sorted, rounded to 6 digits, without repeats.
    """
    if isinstance(text, (list, tuple)):
        vals = list(text)
    else:
        text = str(text).strip()
        if not text:
            raise MtpruneError("no sparsities given")
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise MtpruneError(f"sparsities {text!r}: write start:stop:step, as 0:1:0.1")
            a, b, step = (_float(x, "a sparsity range bound") for x in parts)
            parse_sparsity(a), parse_sparsity(b)
            if step <= 0:
                raise MtpruneError(f"sparsities {text!r}: the step must be positive")
            if b < a:
                raise MtpruneError(f"sparsities {text!r}: stop is below start")
            n = int(math.floor((b - a) / step + 1e-9))
            vals = [a + i * step for i in range(n + 1)]
        else:
            vals = parse_list(text, "sparsities")
    out = sorted({parse_sparsity(v) for v in vals})
    if not out:
        raise MtpruneError("no sparsities given")
    return out


def parse_ints(text: str | Sequence[int] | int, what: str, minimum: int = 1) -> list[int]:
    if isinstance(text, (int, np.integer)):
        items = [str(int(text))]
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


def parse_methods(text: str | Sequence[str], scores: bool | None = None) -> list[str]:
    """Registered method names, in the given order without repeats (``scores=True``: only methods
    that produce scores, not stand-in baselines such as ``svd``)."""
    names = parse_list(text, "methods")
    for m in names:
        get_method(m, scores=scores)
    return list(dict.fromkeys(names))


def parse_tasks(text: str | Sequence[str]) -> list[TaskSpec]:
    return [get_task(n) for n in dict.fromkeys(parse_list(text, "tasks"))]


def check_at_least(value: int, flag: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise MtpruneError(f"{flag} must be at least {minimum}, not {value}")
    return int(value)


AUTO = "auto"  # --examples auto: as many examples as the reliability target needs (mtprune.examples_auto)


def check_examples(value, reliability: float | None = None, max_examples: int | None = None):
    """An example count (at least 1) or ``"auto"``; with ``"auto"`` the reliability target and the
    cap are checked too (one line: a target outside (0, 1), a cap below the first draw)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        from mtprune.examples_auto import check_auto

        check_auto(reliability, max_examples)
        return AUTO
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise MtpruneError(f"--examples is a count or auto, not {value!r}") from None
    return check_at_least(value, "--examples")


def parse_examples(text, reliability: float | None = None, max_examples: int | None = None) -> list:
    """``256``, ``10,100,auto`` or a list: counts and ``"auto"``, in order, without repeats."""
    items = parse_list(text if isinstance(text, str) else [str(x) for x in text], "example counts") \
        if not isinstance(text, (int, np.integer)) else [str(int(text))]
    return list(dict.fromkeys(check_examples(x, reliability, max_examples) for x in items))


def auto_key(examples, reliability: float, max_examples: int) -> dict:
    """What rows of ``--examples auto`` add to their keys (the target and the cap); ``{}`` for a
    count, so that rows of a count keep the keys they had."""
    return {"reliability": float(reliability), "max_examples": int(max_examples)} if examples == AUTO else {}


# ----------------------------------------------------------------------------------------------
# result tables


def row_key(parts: dict) -> str:
    """The key of a result row: a short stable hash of what the row depends on."""
    return io.stable_hash(parts, 20)


def write_table(df: pd.DataFrame, path) -> Path:
    """The table as CSV, atomically."""
    return io.atomic_write_text(path, df.to_csv(index=False))


def read_table(path, required: Sequence[str] = ()) -> pd.DataFrame:
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

    def __init__(self, path=None, resume: bool = True, columns: Sequence[str] = ()):
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
# evaluation settings and the runner


@dataclass(frozen=True)
class EvalSettings:
    """How every experiment evaluates: the first ``limit`` rows of each task's ``split`` (its
    validation split by default), in batches of ``batch_size``, with masks applied by hooks
    (``prune="soft"``) or on a physically pruned copy (``"hard"``: the same logits to float
    rounding, faster at high sparsity; sites that cannot be cut fall back to hooks)."""

    limit: int | None = None
    split: str | None = None
    batch_size: int = 32
    prune: str = "soft"
    attribution_batch_size: int = 32
    latency: bool = False  # time every evaluated model (a physically pruned one where possible)

    def __post_init__(self):
        if self.limit is not None:
            check_at_least(self.limit, "--limit")
        check_at_least(self.batch_size, "--batch-size")
        check_at_least(self.attribution_batch_size, "the attribution batch size")
        if self.prune not in PRUNE_MODES:
            raise MtpruneError(f"prune must be soft or hard, not {self.prune!r}")

    def to_dict(self) -> dict:
        return {"limit": self.limit, "split": self.split, "batch_size": self.batch_size, "prune": self.prune,
                "latency": self.latency}


@dataclass
class EvalOutcome:
    metrics: dict
    n: int
    seconds: float
    reused: bool = False
    latency_ms: float = float("nan")  # milliseconds per example on a fixed batch (EvalSettings.latency)
    intervals: dict = field(default_factory=dict)  # metric -> (low, high), 95%
    correct: np.ndarray | None = None  # bool per evaluation row (kept for the group being run; never in a CSV)


def split_size(task: TaskSpec, split: str | None = None) -> int | None:
    """Rows in a task's split (its training split by default) when there is a local file; else None."""
    split = split or task.train_split
    if split not in task.splits:
        return None
    path = data_path(task, split)
    if path is None:
        return None
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


class Runner:
    """One model; evaluation rows loaded once per (task, split); scores and evaluations memoised.

    ``rows`` gives a task's evaluation rows directly (``{task name: rows}``, tests and notebooks).
    """

    def __init__(self, adapter, settings: EvalSettings | None = None, log: Log | None = stderr_log,
                 rows: dict[str, list[dict]] | None = None):
        self.adapter = adapter
        self.settings = settings or EvalSettings()
        self.log = log or (lambda msg: None)
        self._rows: dict[tuple, list[dict]] = {}
        for name, given in (rows or {}).items():
            t = get_task(name)
            self._rows[(t.name, self.eval_split(t))] = [dict(r) for r in given][: self.settings.limit or None]
        self._evals: dict[tuple, EvalOutcome] = {}
        self._correct: dict[tuple, np.ndarray] = {}  # per-row correctness of the group being run
        self._scores: dict[str, object] = {}
        self._said: set = set()
        self._kinds: list[str] | None = None
        self._reliability: dict[int, tuple] = {}
        self._calib: dict[tuple, list[dict]] = {}
        self._repaired: dict[tuple, object] = {}
        self._capped: set = set()
        self._stand_in_state: dict[str, dict] = {}
        self.fingerprint = adapter.fingerprint()
        self.model_name = adapter.display_name
        self.stats = {"evaluations": 0, "evaluations_reused": 0, "eval_seconds": 0.0,
                      "scores_computed": 0, "scores_cached": 0, "attribution_seconds": 0.0}

    # -- data -------------------------------------------------------------------------------------
    def eval_split(self, task: TaskSpec) -> str:
        split = self.settings.split or task.default_split
        if split not in task.splits:
            raise MtpruneError(f"task {task.name} has no split {split!r}; its splits: {', '.join(task.splits)}")
        return split

    def eval_rows(self, task: TaskSpec) -> list[dict]:
        from mtprune.evaluation import eval_rows

        key = (task.name, self.eval_split(task))
        if key not in self._rows:
            self._rows[key] = eval_rows(task, key[1], self.settings.limit)
        return self._rows[key]

    def eval_size(self, task: TaskSpec) -> int:
        return len(self.eval_rows(task))

    # -- scores and masks ---------------------------------------------------------------------------
    def examples_used(self, task: str, examples: int, split: str | None = None) -> int:
        """``examples`` capped at the size of the task's attribution split (cb has 250 to give)."""
        size = split_size(get_task(task), split)
        if size is not None and examples > size:
            if (task, examples) not in self._capped:
                self._capped.add((task, examples))
                self.log(f"  {task} has {size} examples to attribute from: using all {size}, not {examples}")
            return size
        return examples

    @property
    def kinds(self) -> list[str]:
        """The model's unit kinds: one ``reliability_<kind>`` column each in every row."""
        if self._kinds is None:
            self._kinds = kinds_of(self.adapter)
        return self._kinds

    def reliability(self, scores) -> dict:
        """``scores.reliability()``, computed once per scores object of this runner."""
        key = id(scores)
        if key not in self._reliability:
            self._reliability[key] = (scores, scores.reliability())
        return self._reliability[key][1]

    def say_once(self, key, msg: str) -> None:
        """Log ``msg`` the first time ``key`` is seen."""
        if key not in self._said:
            self._said.add(key)
            self.log(msg)

    def scores(self, task: str, method: str, examples: int | str, seed: int = 0, variant: str = "abs",
               unsupervised: bool = False, split: str | None = None, steps: int = 20,
               reliability: float | None = None, max_examples: int | None = None):
        """Attribution scores through the disk cache (:func:`mtprune.attribution.attribute_cached`),
        with ``examples`` capped at the attribution split's size. ``examples="auto"``: the scores of
        the smallest doubling draw whose every kind reaches ``reliability``, up to ``max_examples``
        (:func:`mtprune.examples_auto.attribute_auto`); the choice is logged once. A method that reads
        no examples says so and is computed once."""
        from mtprune.attribution import AttributionSpec, attribute_cached
        from mtprune.examples_auto import DEFAULT_CAP, DEFAULT_TARGET, FIRST

        auto = examples == AUTO
        spec = AttributionSpec(task=task, method=method, variant=variant,
                               examples=FIRST if auto else self.examples_used(task, examples, split), seed=seed,
                               split=split, steps=steps, unsupervised=unsupervised, kinds="all")
        if auto and not spec.info.needs_data:
            self.say_once(("no examples", task, method), f"  {task} {method}: the method reads no examples, so "
                                                         "--examples auto has nothing to choose")
            auto = False
        target = DEFAULT_TARGET if reliability is None else reliability
        cap = DEFAULT_CAP if max_examples is None else max_examples
        memo = (spec.key(), target, cap) if auto else spec.key()
        if memo in self._scores:
            return self._scores[memo]
        t0 = time.perf_counter()
        if auto:
            from mtprune.examples_auto import attribute_auto

            scores, hit, _, chosen = attribute_auto(self.adapter, spec, target, cap,
                                                    batch_size=self.settings.attribution_batch_size)
            self.log(f"  {task} {method}{' unsupervised' if unsupervised else ''} seed={seed}, examples auto: "
                     f"{chosen.describe()}")
        else:
            scores, hit, _ = attribute_cached(self.adapter, spec, batch_size=self.settings.attribution_batch_size)
        dt = time.perf_counter() - t0
        self.stats["scores_cached" if hit else "scores_computed"] += 1
        self.stats["attribution_seconds"] += dt
        if not hit:
            self.log(f"  scores {task}/{method}{f' examples={scores.spec.examples}' if spec.info.needs_data else ''} "
                     f"seed={seed}{' unsupervised' if unsupervised else ''}: {dt:.1f} s")
        self._scores[memo] = scores
        return scores

    def calibration(self, task: str, n: int, seed: int = 0) -> list[dict]:
        """``n`` calibration rows of the task's train split (repair), drawn once per runner."""
        from mtprune.repair import calibration_rows

        key = (task, int(n), int(seed))
        if key not in self._calib:
            self._calib[key] = calibration_rows(task, n, seed=seed)
        return self._calib[key]

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, task: TaskSpec, mask: Mask | None = None, method: Method | None = None,
                 repair: "Repair | None" = None, need_correct: bool = False) -> EvalOutcome:
        """Metrics of ``task`` with ``mask`` applied (the dense model when None), or, for a stand-in
        baseline ``method`` (``scores=False``), with its stand-in for ``mask``'s site sizes; with
        ``repair``, on the hard-pruned model repaired on calibration rows. The outcome's ``correct``
        (each row right or wrong) is kept until :meth:`forget_rows`; ``need_correct`` evaluates again
        a memoised outcome whose rows were forgotten."""
        from mtprune.evaluation import evaluate
        from mtprune.pruning import hard_prune, hard_prune_problem

        head = self.adapter.head_for(task)
        split = self.eval_split(task)
        rows = self.eval_rows(task)
        stand_in = method is not None and not method.scores and mask is not None
        repairing = repair is not None and repair.refits and mask is not None and not mask.keeps_all()
        memo = (task.name, head, split, len(rows), mask.digest() if mask is not None else "dense",
                method.name if stand_in else None, repair if repairing else None)
        if memo in self._evals and (memo in self._correct or not need_correct):
            self.stats["evaluations_reused"] += 1
            hit = self._evals[memo]
            return EvalOutcome(hit.metrics, hit.n, 0.0, True, hit.latency_ms, hit.intervals, self._correct.get(memo))
        target, context, use_mask = self.adapter, None, None
        if stand_in:
            state = self._stand_in_state.setdefault(method.name, {})
            context = lambda: method.stand_in(self.adapter, mask, state)  # noqa: E731
        elif repairing:
            target = self.repaired(mask, repair)
        elif mask is not None and not mask.keeps_all():
            hard_ok = hard_prune_problem(self.adapter, mask) is None
            if hard_ok and (self.settings.prune == "hard" or self.settings.latency):
                target = hard_prune(self.adapter, mask)
            else:
                use_mask = mask
        res = evaluate(target, task, split, rows=rows, batch_size=self.settings.batch_size, context=context,
                       mask=use_mask)
        latency = self.latency(target, task) if self.settings.latency and use_mask is None and context is None \
            else float("nan")
        del target
        out = EvalOutcome(dict(res.metrics), res.n, res.seconds, latency_ms=latency, intervals=dict(res.intervals))
        self._evals[memo] = out
        self._correct[memo] = res.predictions.correct
        self.stats["evaluations"] += 1
        self.stats["eval_seconds"] += res.seconds
        return EvalOutcome(out.metrics, out.n, out.seconds, False, out.latency_ms, out.intervals, self._correct[memo])

    def forget_rows(self) -> None:
        """Drop the per-row correctness kept of the evaluations so far (after every group)."""
        self._correct.clear()

    def correct(self, point: "Point") -> np.ndarray:
        """Each evaluation row right or wrong with ``point``'s model (evaluated again when only its
        metrics are remembered: a row read back from a result table)."""
        mask = point.mask() if point.mask is not None else None
        return self.evaluate(point.target, mask, point.method, point.repair, need_correct=True).correct

    def latency(self, model, task: TaskSpec, repeats: int = 5) -> float:
        """Milliseconds per example of ``model`` on the task's first 32 evaluation rows (one batch),
        the median of ``repeats`` runs after a warm-up."""
        import torch

        batch = model.encode(self.eval_rows(task)[:32], task)
        times = []
        with torch.inference_mode():
            model.logits(batch, task)
            for _ in range(repeats):
                t0 = time.perf_counter()
                model.logits(batch, task)
                times.append(time.perf_counter() - t0)
        return 1000.0 * float(np.median(times)) / len(next(iter(batch.values())))

    def repaired(self, mask: Mask, repair: "Repair"):
        """The hard-pruned model of ``mask``, repaired on ``repair``'s calibration rows (the last
        two are kept: a shared mask is evaluated on several tasks)."""
        from mtprune.pipeline import prune

        key = (mask.digest(), repair)
        if key in self._repaired:
            return self._repaired[key]
        t0 = time.perf_counter()
        if repair.mix is None:
            calib = {t: self.calibration(t, repair.calib, repair.seed) for t in repair.tasks}
        else:
            if (repair.mix, repair.tasks[0]) not in self._calib:
                self._calib[(repair.mix, repair.tasks[0])] = repair.mix.draw(repair.tasks[0]).rows
            calib = self._calib[(repair.mix, repair.tasks[0])]
        done = prune(self.adapter, repair.tasks[0], mask=mask, repair_with=repair.settings(), calibration=calib)
        model = done.adapter
        self.stats["repair_seconds"] = self.stats.get("repair_seconds", 0.0) + time.perf_counter() - t0
        self.log(f"  {done.report.summary()}")
        if len(self._repaired) >= 2:
            self._repaired.pop(next(iter(self._repaired)))
        self._repaired[key] = model
        return model

    def params(self, mask: Mask | None = None) -> int:
        from mtprune.pruning import count_parameters

        return int(count_parameters(self.adapter, mask))


# ----------------------------------------------------------------------------------------------
# the row pipeline


@dataclass(frozen=True)
class Repair:
    """How a row's pruned model is repaired: the solver and its calibration rows (``calib`` rows of
    each of ``tasks``' train splits, drawn with ``seed``; or those of ``mix``, a
    :class:`mtprune.calibration.CalibrationMix` read for ``tasks[0]``), of which it reads at most
    ``tokens`` tokens (None: all; :attr:`mtprune.repair.RepairSettings.max_tokens`)."""

    solver: str  # a registered solver (mtprune.solvers)
    tasks: tuple[str, ...]
    calib: int = 1024
    seed: int = 0
    mix: object = None  # a CalibrationMix; None: the tasks' train splits (and the keys of before)
    tokens: int | None = CALIB_TOKENS

    def __post_init__(self):
        get_solver(self.solver)
        RepairSettings(self.solver, max_tokens=self.tokens)  # one line for a bad token cap

    def settings(self) -> RepairSettings:
        return RepairSettings(self.solver, max_tokens=self.tokens)

    @property
    def refits(self) -> bool:
        return get_solver(self.solver).refits

    def key(self) -> dict:
        if not self.refits:
            return {"repair": self.solver}
        # the token cap is in the key: rows repaired before it existed read every token, and a resumed
        # table must not mix the two
        out = {"repair": self.solver, "calib": self.calib, "calib_tasks": list(self.tasks), "calib_seed": self.seed,
               "calib_tokens": self.tokens}
        return out if self.mix is None else {**out, "calib_mix": self.mix.key()}


@dataclass
class Point:
    """One result row to be.

    ``target``: the task evaluated (read through the head that serves it); ``key``: the settings
    its numbers depend on besides the model and the evaluation rows; ``fields``: the row's own
    columns; ``mask``: builds the mask (None for the dense model), called only when the row must be
    computed; ``method``: the stand-in baseline to evaluate instead of pruning, if any;
    ``extra``: more columns from the mask (parameter counts...); ``repair``: how the pruned model
    is repaired before it is evaluated (None: it is not); ``scores``: the scores the mask came from
    (one, or a list for a mask of several tasks' scores; None for the dense model and baselines
    without scores), whose reliability and examples the row records (:func:`score_columns`).
    """

    target: TaskSpec
    key: dict
    fields: dict
    mask: Callable[[], Mask | None] | None = None
    method: Method | None = None
    extra: Callable[[Mask | None], dict] | None = None
    repair: Repair | None = None
    scores: Callable[[], object] | None = None


# ``tests(new, correct)``: columns of paired tests for the points at the indices ``new`` (those whose
# rows were just made), from ``correct(point)``, each evaluation row right or wrong with a point's model
Tests = Callable[[set, Callable[[Point], np.ndarray]], dict]


@dataclass
class Group:
    """Points that share one computation (one set of scores); logged as one line. ``tests`` adds
    paired tests between them (McNemar's, on the same evaluation rows) to the rows it makes; the
    per-row predictions they need are kept in memory for one group only."""

    label: str
    points: list[Point] = field(default_factory=list)
    tests: Tests | None = None


def point_key(runner: Runner, experiment: str, point: Point) -> str:
    parts = {"experiment": experiment, "model": runner.fingerprint, "target": point.target.name,
             "head": runner.adapter.head_for(point.target), "split": runner.eval_split(point.target),
             "n_eval": runner.eval_size(point.target), **point.key}
    if point.repair is not None and point.repair.refits:  # rows without repair keep their keys
        parts.update(point.repair.key())
    return row_key(parts)


def kinds_of(adapter) -> list[str]:
    """The unit kinds a model has (``ffn``, ``heads``, ``kv``), in :data:`mtprune.units.KINDS` order."""
    from mtprune.units import KINDS

    have = {s.kind for s in adapter.unit_sites()}
    return [k for k in KINDS if k in have]


def score_columns(kinds: Sequence[str], scores, mask: Mask | None, reliability: Callable | None = None) -> dict:
    """``reliability_<kind>`` for every kind: the expected Spearman correlation of the scores of the
    kind's groups the mask prunes with another draw of as many examples (groups weighted by their
    units; several tasks' scores: the lowest; NaN when unknown, not pruned, or without scores), and
    ``examples_used`` (the examples the scores read; several tasks': the fewest)."""
    from mtprune.units import group_parts

    out = {f"reliability_{k}": np.nan for k in kinds}
    if scores is None or mask is None:
        return out
    many = list(scores) if isinstance(scores, (list, tuple)) else [scores]
    pruned = set(mask.selected_groups())
    for k in kinds:
        per_task = []
        for sc in many:
            rel = (reliability or (lambda x: x.reliability()))(sc) if hasattr(sc, "reliability") else {}
            parts = [(r.spearman, sum(sc.n_units[g])) for g, r in rel.items()
                     if g in pruned and group_parts(g)[1] == k and np.isfinite(r.spearman)]
            w = sum(n for _, n in parts)
            per_task.append(sum(v * n for v, n in parts) / w if w else np.nan)
        if per_task and all(np.isfinite(per_task)):
            out[f"reliability_{k}"] = round(float(min(per_task)), 4)
    used = [int(sc.meta.get("examples", 0)) for sc in many if hasattr(sc, "meta")]
    if used and all(used):
        out["examples_used"] = min(used)
    return out


def _row(runner: Runner, point: Point, key: str) -> dict:
    mask = point.mask() if point.mask is not None else None
    res = runner.evaluate(point.target, mask, point.method, point.repair)
    row = dict(point.fields)
    if point.repair is not None:
        row["repair"] = point.repair.solver
    for m in METRICS:
        row[m] = res.metrics.get(m, np.nan)
        lo, hi = res.intervals.get(m, (np.nan, np.nan))
        row[f"{m}_low"], row[f"{m}_high"] = lo, hi
    row.update({
        "split": runner.eval_split(point.target), "n_eval": res.n,
        "actual_sparsity": round(float(mask.actual_sparsity()), 6) if mask is not None else 0.0,
        "kept_units": mask.kept() if mask is not None else np.nan,
        "params": runner.params(mask),
    })
    if point.extra is not None:
        row.update(point.extra(mask))
    found = score_columns(runner.kinds, point.scores() if point.scores is not None else None, mask,
                          runner.reliability)
    if "examples_used" in found and ("examples_used" not in row or row.get("examples") == AUTO):
        row["examples_used"] = found["examples_used"]  # a sweep's (capped) count stays as it was
    row.update({k: v for k, v in found.items() if k != "examples_used"})
    if runner.settings.latency:
        row["latency_ms"] = res.latency_ms
    row.update({"eval_seconds": round(res.seconds, 3), "model": runner.model_name,
                "model_fingerprint": runner.fingerprint, "key": key})
    return row


@dataclass
class _Tally:
    """How far :func:`run_points` is: rows done of all, since when, and who hears of it."""

    total: int
    progress: Progress | None = None
    done: int = 0
    t_start: float = field(default_factory=time.perf_counter)

    def report(self) -> None:
        if self.progress:
            self.progress(self.done, self.total)


def _plan(runner: Runner, table: ResultTable, experiment: str, groups: Sequence[Group],
          tally: _Tally) -> tuple[list[str], list[tuple[Group, list[str]]]]:
    """Every point's key, and the groups with a point the table lacks (those done are counted)."""
    keys: list[str] = []
    todo: list[tuple[Group, list[str]]] = []
    for group in groups:
        gkeys = [point_key(runner, experiment, p) for p in group.points]
        keys += gkeys
        if all(k in table for k in gkeys):
            tally.done += len(gkeys)
        else:
            todo.append((group, gkeys))
    return keys, todo


def _compute(runner: Runner, table: ResultTable, mine: tuple[Group, list[str]] | None, alone: bool,
             tally: _Tally) -> tuple[list[dict], str | None]:
    """This rank's group of a round: ``(new rows, error)``. In a world of one (``alone``) each row
    goes into the table as it is made and is reported to the progress callback, and an
    :class:`MtpruneError` goes up as it is; among several ranks the rows wait for the gather and an
    error is said to every rank, not left to hang the others."""
    from mtprune import distributed

    rows: list[dict] = []
    if mine is None:
        return rows, None
    try:
        with distributed.local():
            group, gkeys = mine
            made: dict[int, dict] = {}
            for i, (p, k) in enumerate(zip(group.points, gkeys)):
                if k not in table:
                    made[i] = _row(runner, p, k)
                    (table.put if alone else rows.append)(made[i])
                if alone:
                    tally.done += 1
                    tally.report()
            if group.tests is not None and made:
                for i, cols in group.tests(set(made), runner.correct).items():
                    if i in made:
                        made[i].update(cols)
    except MtpruneError as exc:
        if alone:
            raise
        return [], str(exc)
    finally:
        runner.forget_rows()
    return rows, None


def _share(table: ResultTable, rows: list[dict], error: str | None, world: int) -> list[str]:
    """Every rank's new rows of a round into every rank's table (in a world of one the gather is
    the identity), the table saved by rank 0; returns the ranks' errors."""
    from mtprune import distributed

    shared = [{"rows": rows, "error": error}]
    if world > 1:
        try:
            shared = distributed.gather_json(shared[0])
        except Exception as exc:  # a process died or left: what finished is saved
            raise MtpruneError(f"a process of the run stopped ({type(exc).__name__}); the rows finished before "
                               f"it are in {table.path or 'memory'}: run the same command again to resume") from None
    for part in shared:
        for row in part["rows"]:
            table.put(row)
    if distributed.group_rank() == 0:
        table.save()
    return [x["error"] for x in shared if x["error"]]


def _log_group(runner: Runner, table: ResultTable, group: Group, gkeys: list[str], t0: float,
               tally: _Tally) -> None:
    accs = [table.get(k).get("accuracy") for k in gkeys]
    runner.log(f"  {group.label}: " + " ".join(f"{a:.3f}" for a in accs)
               + f"  ({fmt_seconds(time.perf_counter() - t0)}; {tally.done}/{tally.total} rows, "
               f"{fmt_seconds(time.perf_counter() - tally.t_start)} so far)")


def run_points(runner: Runner, table: ResultTable, experiment: str, groups: Sequence[Group],
               progress: Progress | None = None) -> list[str]:
    """Make, key, reuse or evaluate every point of ``groups``; returns their keys in order.

    The table is saved after every group that computed something; each such group logs one line
    with its accuracies, its time and the time so far. The groups left to compute are dealt out
    round by round, one per rank: one process is a world of one, whose rounds are its groups
    (progress reported point by point). Under ``torchrun`` (a process group of two or more) each
    rank evaluates its own group alone (:func:`mtprune.distributed.local`); after every round the
    new rows reach every rank and rank 0 saves the table, so the rows of finished rounds survive a
    process that dies, and a rerun resumes. The rows are those of one process, row for row.
    """
    from mtprune import distributed

    tally = _Tally(sum(len(g.points) for g in groups), progress)
    keys, todo = _plan(runner, table, experiment, groups, tally)
    if tally.done:
        tally.report()
    world = distributed.group_size()
    me = distributed.group_rank()
    for start in range(0, len(todo), world):
        t0 = time.perf_counter()
        done = tally.done
        mine = todo[start + me] if start + me < len(todo) else None
        errors = _share(table, *_compute(runner, table, mine, world == 1, tally), world)
        if errors:
            raise MtpruneError(errors[0])
        for group, gkeys in todo[start:start + world]:
            done += len(gkeys)
            tally.done = done
            _log_group(runner, table, group, gkeys, t0, tally)
        if world > 1:
            tally.report()
    return keys


ALPHA = 0.05  # the level of the paired tests


def paired_test(cell: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """``(McNemar's exact p, accuracy difference cell - reference)`` of two models on the same rows
    (:func:`mtprune.evaluation.mcnemar`)."""
    from mtprune.evaluation import mcnemar

    cell, reference = np.asarray(cell, bool), np.asarray(reference, bool)
    if cell.shape != reference.shape:
        raise ValueError("paired tests need the same evaluation rows")
    p = mcnemar(int((reference & ~cell).sum()), int((cell & ~reference).sum()))
    return float(p), float(cell.mean() - reference.mean()) if len(cell) else float("nan")


def comparison_words(p: float, diff: float, reference: str, alpha: float = ALPHA) -> str:
    """``worse than <reference>`` / ``better than <reference>`` when McNemar's p is below ``alpha``,
    else ``no measurable difference from <reference>``; empty for an unknown p."""
    if not np.isfinite(p):
        return ""
    if p >= alpha:
        return f"no measurable difference from {reference}"
    return f"{'worse' if diff < 0 else 'better'} than {reference}"


def mask_maker(runner: Runner, scores: Callable[[], object], sparsity, scope: str = "layer",
               kinds: str = "ffn", stack: str = "all") -> Callable[[], Mask]:
    """A :attr:`Point.mask` builder: the mask of ``scores()`` (called lazily) at ``sparsity``."""
    return lambda: mask_from_scores(scores(), sparsity, scope=scope, kinds=kinds, stack=stack)


def budget_mask_maker(runner: Runner, scores: Callable[[], object], task: TaskSpec, budget, kinds: str = "all",
                      stack: str = "all", normalise: str = "sum") -> Callable[[], Mask]:
    """A :attr:`Point.mask` builder: the mask of ``scores()`` that spends ``budget`` (a
    :class:`mtprune.costs.Budget`) over both kinds and every layer (:func:`mtprune.pipeline.choose_mask`)."""
    from mtprune.pipeline import choose_mask

    return lambda: choose_mask(runner.adapter, task, scores(), budget=budget, kinds=kinds, stack=stack,
                               normalise=normalise)


def finish(table: ResultTable, keys: list[str], runner: Runner, t_start: float) -> pd.DataFrame:
    """The rows of ``keys`` as a frame, with the runner's statistics in ``attrs["stats"]``."""
    df = table.frame(keys)
    df.attrs["stats"] = dict(runner.stats, seconds=time.perf_counter() - t_start)
    return df


__all__ = [
    "ALPHA", "AUTO", "auto_key", "check_examples", "comparison_words", "kinds_of", "paired_test", "parse_examples",
    "score_columns", "EvalOutcome", "EvalSettings", "Group", "METRICS", "Point", "Repair", "ResultTable", "Runner",
    "check_at_least",
    "budget_mask_maker", "finish", "mask_maker", "method_names", "parse_ints", "parse_list", "parse_methods", "parse_sparsities",
    "parse_sparsity", "parse_tasks", "point_key", "read_table", "row_key", "run_points", "split_size",
    "stderr_log", "write_table",
]
