"""Where a repair's calibration rows come from: one or several sources with weights.

A :class:`CalibrationMix` is parsed once at the edge (``--calib-file A --calib-file B``,
``--calib-mix task:0.5,imdb/test:0.5``, ``mtprune unseen --calib target``) and carried as an
object: its sources (a task's split or a JSONL file, a weight each), the rows drawn in all and the
seed. :meth:`CalibrationMix.draw` draws them deterministically, ``n`` shared out over the sources
in proportion to their weights (largest remainders; a source with fewer rows gives all it has, and
the description says so), and says what it drew (:meth:`Drawn.describe`), which the pruned model's
description records. No labels are read: repair fits the pruned model's outputs to the dense
model's, so a deployment domain's own unlabelled text can serve (label-free domain adaptation).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from mtprune.errors import MtpruneError

TASK = "task"  # in --calib-mix: the rows of the task being pruned (its --calib-split, default train)
FILE_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class CalibSource:
    """One place rows come from: ``task``'s ``split`` or the JSONL ``file``, with ``weight``.

    ``read_as`` names the task whose fields and head read the rows (None: the task being pruned), and
    ``head`` the task head it is read through when not its own (scitail through qnli's)."""

    weight: float = 1.0
    task: str | None = None
    split: str | None = None
    file: str | None = None
    read_as: str | None = None
    head: str | None = None

    def __post_init__(self):
        from mtprune.tasks import get_task

        if (self.task is None) == (self.file is None):
            raise MtpruneError("a calibration source is a task's split or a file, not both or neither")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise MtpruneError(f"calibration weight {w!r} of {self.label}: a weight is a number, 0 or more")
        object.__setattr__(self, "weight", float(w))
        if self.task is not None:
            spec = get_task(self.task)
            split = self.split or spec.train_split
            if split not in spec.splits:
                raise MtpruneError(f"calibration source {self.task}/{split}: task {self.task} has no split "
                                   f"{split!r}; its splits: {', '.join(spec.splits)}")
            object.__setattr__(self, "split", split)
        for name in (self.read_as, self.head):
            if name is not None:
                get_task(name)

    @property
    def label(self) -> str:
        """``sst2/train`` or the file's path."""
        return str(self.file) if self.file is not None else f"{self.task}/{self.split or 'train'}"

    def reader(self, task):
        """The task (a :class:`~mtprune.tasks.TaskSpec`) whose fields and head read these rows."""
        from mtprune.tasks import get_task

        spec = get_task(self.read_as) if self.read_as is not None else task
        return spec.read_through(self.head) if self.head is not None else spec

    def key(self) -> list:
        """What a result row's key records of this source (a file: its content's digest too)."""
        out = [self.label, self.weight, self.read_as, self.head]
        if self.file is not None:
            out.append(_file_digest(self.file))
        return out


@dataclass(frozen=True)
class Drawn:
    """Rows drawn from a mix: ``rows`` (``{TaskSpec: rows}``, each read by its task) and ``counts``
    (rows drawn from each source, in the mix's order)."""

    mix: "CalibrationMix"
    rows: dict
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.counts)

    def describe(self) -> dict:
        """What the pruned model's description records: rows asked for and drawn, the seed, and each
        source with its share of the weights and the rows it gave."""
        shares = self.mix.shares()
        sources = []
        for s, share, k, want in zip(self.mix.sources, shares, self.counts, self.mix.counts()):
            entry = {"source": s.label, "weight": round(share, 6), "rows": int(k)}
            if s.read_as is not None:
                entry["read_as"] = s.read_as
            if s.head is not None:
                entry["head"] = s.head
            if k < want:
                entry["asked"] = int(want)  # the source had fewer rows than its share
            sources.append(entry)
        return {"rows": self.total, "asked": self.mix.n, "seed": self.mix.seed, "sources": sources}

    def summary(self) -> str:
        return summary_line(self.describe())


@dataclass(frozen=True)
class CalibrationMix:
    """Calibration rows from ``sources`` in proportion to their weights: ``n`` in all, drawn with
    ``seed``. Weights need not sum to 1 (they are shares of their sum), but the sum must be above 0."""

    sources: tuple[CalibSource, ...]
    n: int = 1024
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        if not self.sources or not all(isinstance(s, CalibSource) for s in self.sources):
            raise MtpruneError("a calibration mix needs one source or more")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise MtpruneError(f"--calib must be at least 1, not {self.n}")
        if not sum(s.weight for s in self.sources) > 0:
            raise MtpruneError("the calibration weights sum to zero: give at least one source a weight above 0")
        seen = set()
        for s in self.sources:
            if (s.label, s.read_as, s.head) in seen:
                raise MtpruneError(f"calibration source {s.label} is named twice")
            seen.add((s.label, s.read_as, s.head))

    @classmethod
    def of_task(cls, task, n: int = 1024, split: str | None = None, seed: int = 0) -> "CalibrationMix":
        """The task's own rows (its ``split``, default train)."""
        name = task if isinstance(task, str) else task.name
        return cls((CalibSource(task=name, split=split),), n, seed)

    @classmethod
    def of_files(cls, files, n: int = 1024, seed: int = 0) -> "CalibrationMix":
        """Equal shares of JSONL files."""
        return cls(tuple(CalibSource(file=str(_check_file(f))) for f in files), n, seed)

    def shares(self) -> list[float]:
        total = sum(s.weight for s in self.sources)
        return [s.weight / total for s in self.sources]

    def counts(self) -> tuple[int, ...]:
        """Rows asked of each source: ``n`` shared by weight, the remainders to the largest fractions
        (ties to the first)."""
        exact = [self.n * w for w in self.shares()]
        counts = [int(math.floor(x)) for x in exact]
        order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
        for i in order[: self.n - sum(counts)]:
            counts[i] += 1
        return tuple(counts)

    def draw(self, task) -> Drawn:
        """The rows of every source for ``task`` (a name or spec: the task being pruned), each read
        by its task: ``{TaskSpec: rows}`` with only the reader's fields. Every source is checked for
        the fields before any is drawn."""
        from mtprune.tasks import get_task

        task = get_task(task) if isinstance(task, str) else task
        loaded = [(s, _load(s, s.reader(task)) if k else None, k) for s, k in zip(self.sources, self.counts())]
        rows: dict = {}
        counts = []
        for s, ds, k in loaded:
            got = _draw(ds, k, self.seed, s.reader(task)) if k else []
            counts.append(len(got))
            if got:
                rows.setdefault(s.reader(task), []).extend(got)
        if not rows:
            raise MtpruneError("the calibration set is empty")
        return Drawn(self, rows, tuple(counts))

    def key(self) -> dict:
        """What a result row's key records of the mix."""
        return {"n": self.n, "seed": self.seed, "sources": [s.key() for s in self.sources]}

    def describe(self) -> str:
        return ", ".join(f"{s.label} ({share:.2g})" for s, share in zip(self.sources, self.shares()))


def summary_line(described: dict) -> str:
    """``calibration: 512 rows of sst2/train (weight 0.5), 512 of imdb/test (weight 0.5)`` from
    :meth:`Drawn.describe`."""
    parts = []
    for i, s in enumerate(described.get("sources", [])):
        short = f" (of {s['asked']} asked: all it has)" if "asked" in s else ""
        parts.append(f"{s['rows']} {'rows of ' if i == 0 else 'of '}{s['source']} (weight {s['weight']:.3g}){short}")
    return "calibration: " + ", ".join(parts)


# ----------------------------------------------------------------------------------------------
# parsing at the edge


def parse_mix(task, spec: str | None = None, files=(), n: int = 1024, split: str | None = None,
              seed: int = 0) -> CalibrationMix:
    """The mix of ``--calib-mix SPEC`` or of the ``--calib-file``\\ s (equal shares), or the task's own
    ``split`` (default train) when neither is given. ``SPEC`` is ``SOURCE:WEIGHT,...``; a source is
    ``task`` (the task being pruned, its ``split``), a task name with an optional split
    (``imdb/test``), or a JSONL file; a weight left out is 1."""
    from mtprune.tasks import get_task

    task = get_task(task) if isinstance(task, str) else task
    files = [f for f in (files or ()) if f is not None]
    if spec is not None and files:
        raise MtpruneError("give --calib-file or --calib-mix, not both (a file can be a source of --calib-mix)")
    if files:
        return CalibrationMix.of_files(files, n, seed)
    if spec is None:
        return CalibrationMix.of_task(task, n, split, seed)
    items = [x.strip() for x in str(spec).split(",") if x.strip()]
    if not items:
        raise MtpruneError("--calib-mix names no source: write SOURCE:WEIGHT,..., as task:0.5,imdb/test:0.5")
    return CalibrationMix(tuple(_parse_item(task, item, split) for item in items), n, seed)


def _parse_item(task, item: str, split: str | None) -> CalibSource:
    name, sep, weight_text = item.rpartition(":")
    if not sep:
        name, weight_text = item, "1"
    name = name.strip()
    try:
        weight = float(weight_text)
    except ValueError:
        raise MtpruneError(f"--calib-mix {item!r}: the weight {weight_text.strip()!r} is not a number "
                           f"(write SOURCE:WEIGHT, as task:0.5)") from None
    if not math.isfinite(weight) or weight < 0:
        raise MtpruneError(f"--calib-mix {item!r}: a weight is a finite number, 0 or more")
    if not name:
        raise MtpruneError(f"--calib-mix {item!r} names no source")
    if name == TASK:
        return CalibSource(weight, task=task.name, split=split)
    if name.lower().endswith(FILE_SUFFIXES) or Path(name).is_file():
        return CalibSource(weight, file=str(_check_file(name)))
    return _task_source(task, name, weight)


def _task_source(task, name: str, weight: float) -> CalibSource:
    from mtprune.tasks import TASKS

    src, _, split = name.partition("/")
    if src not in TASKS:
        raise MtpruneError(f"--calib-mix source {name!r}: not '{TASK}', a task (as imdb/test) or a JSONL file "
                           f"that exists")
    other = TASKS[src]
    if other.name != task.name and task.name in other.label_source:
        # a domain of the pruned task read through its head (scitail through qnli's): its own fields
        return CalibSource(weight, task=src, split=split or None, read_as=src, head=task.name)
    return CalibSource(weight, task=src, split=split or None)


def _check_file(path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise MtpruneError(f"calibration file {path} does not exist")
    return p


def _file_digest(path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        raise MtpruneError(f"could not read calibration file {path}") from None


# ----------------------------------------------------------------------------------------------
# drawing


def _load(source: CalibSource, reader):
    """The source's rows as a dataset, checked for ``reader``'s fields (labels are not needed)."""
    import datasets

    from mtprune.tasks import get_task, load_rows

    if source.file is not None:
        datasets.disable_progress_bars()
        try:
            ds = datasets.load_dataset("json", data_files=str(source.file), split="train")
        except Exception as exc:  # datasets raises many types; the user needs one line
            raise MtpruneError(f"could not read calibration rows from {source.file}: {exc}") from None
    else:
        ds = load_rows(get_task(source.task), source.split)
    missing = [f for f in reader.fields if f not in ds.column_names]
    if missing:
        raise MtpruneError(f"{source.label}: the calibration rows lack the field(s) {', '.join(missing)} that "
                           f"task {reader.name} needs")
    if len(ds) == 0:
        raise MtpruneError(f"the calibration set {source.label} is empty")
    return ds


def _draw(ds, k: int, seed: int, reader) -> list[dict]:
    """``k`` rows (all of them when fewer) in the seed's uniform order, with ``reader``'s fields only."""
    from mtprune.tasks import sample_rows

    rows = sample_rows(ds, min(int(k), len(ds)), seed=seed, balanced=False)
    return [{f: r[f] for f in reader.fields} for r in rows]


def other_split(task, measured: str) -> str:
    """A split of ``task`` with data other than ``measured`` (train first, then the task's order):
    where an unseen domain's own unlabelled calibration text comes from. One line when none is left."""
    from mtprune.tasks import available_splits, get_task

    task = get_task(task) if isinstance(task, str) else task
    have = [s for s in available_splits(task) if s != measured]
    if not have:
        raise MtpruneError(f"{task.name} has no split apart from {measured}, which it is measured on: no text of "
                           f"its own to calibrate on (calibrate on the source's rows, or leave {task.name} out)")
    return "train" if "train" in have else have[0]
