"""The task registry: input fields, label names, splits and metrics of every task, and its loader.

Rows come from local JSONL files (``<MTPRUNE_HOME>/data/<task>/<split>.jsonl``) or, when there is no
local copy, from the hub (``nyu-mll/glue``, ``aps/super_glue``), both through ``datasets``.
Unseen-domain sets (imdb, yelp, scitail, ...) carry no head of their own: they are read through
the labels and head of a benchmark task (``label_source``).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mtprune import assets
from mtprune.errors import MtpruneError

SENTIMENT = ("negative", "positive")
ENTAIL2 = ("entailment", "not_entailment")
CB_LABELS = ("entailment", "contradiction", "neutral")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    fields: tuple[str, ...]
    labels: tuple[str, ...]
    splits: tuple[str, ...]
    metrics: tuple[str, ...] = ("accuracy",)
    label_source: tuple[str, ...] = ()  # heads that can serve this task, best first; () = its own
    hub: tuple[str, str] | None = None  # (dataset path, config) for the hub loader
    suite: str = "benchmark"  # benchmark | extra | unseen
    t5_prefix: str = ""  # T5's own task prefix; "" means the task's name
    t5_field_order: tuple[str, ...] = ()  # T5's field order where it differs from ``fields``
    description: str = ""

    def __post_init__(self):
        if not self.fields or len(self.labels) < 2 or not self.splits:
            raise ValueError(f"task {self.name}: fields, two or more labels and a split are needed")
        unknown = set(self.metrics) - {"accuracy", "f1", "mcc"}
        if unknown:
            raise ValueError(f"task {self.name}: unknown metrics {sorted(unknown)}")

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def task_heads(self) -> tuple[str, ...]:
        """The task heads (classifier heads, label words) that can serve this task: its own for a
        benchmark task, another task's for an unseen domain (imdb is read through sst2's)."""
        return self.label_source or (self.name,)

    def read_through(self, head: str) -> "TaskSpec":
        """This task read through ``head`` (scitail through qnli's head rather than rte's)."""
        if head == self.name and not self.label_source:
            return self
        return replace(self, label_source=(head,))

    @property
    def default_split(self) -> str:
        for name in ("validation", "validation_matched", "test"):
            if name in self.splits:
                return name
        return self.splits[0]

    @property
    def train_split(self) -> str:
        """The split attribution draws its examples from by default (train, else the first)."""
        return "train" if "train" in self.splits else self.default_split

    def to_dict(self) -> dict:
        return asdict(self)


def _t(name, fields, labels, splits, **kw) -> TaskSpec:
    return TaskSpec(name=name, fields=tuple(fields), labels=tuple(labels), splits=tuple(splits), **kw)


_GLUE = "nyu-mll/glue"
_SUPERGLUE = "aps/super_glue"
TV = ("train", "validation")

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        _t("sst2", ["sentence"], SENTIMENT, TV, hub=(_GLUE, "sst2"), description="movie review sentiment"),
        _t("mrpc", ["sentence1", "sentence2"], ("not_equivalent", "equivalent"), TV + ("test",),
           metrics=("accuracy", "f1"), hub=(_GLUE, "mrpc"), description="paraphrase detection"),
        _t("qnli", ["question", "sentence"], ENTAIL2, TV, hub=(_GLUE, "qnli"),
           description="does the sentence answer the question"),
        _t("rte", ["sentence1", "sentence2"], ENTAIL2, TV, hub=(_GLUE, "rte"),
           description="textual entailment"),
        _t("cb", ["premise", "hypothesis"], CB_LABELS, TV, hub=(_SUPERGLUE, "cb"),
           t5_field_order=("hypothesis", "premise"), description="CommitmentBank, 3-way entailment"),
        _t("boolq", ["question", "passage"], ("False", "True"), TV, hub=(_SUPERGLUE, "boolq"),
           description="yes/no questions about a passage"),
        _t("cola", ["sentence"], ("unacceptable", "acceptable"), TV, metrics=("accuracy", "mcc"),
           hub=(_GLUE, "cola"), suite="extra", description="grammatical acceptability"),
        _t("mnli", ["premise", "hypothesis"], ("entailment", "neutral", "contradiction"),
           ("train", "validation_matched"), hub=(_GLUE, "mnli"), suite="extra",
           description="multi-genre NLI, 3-way"),
        _t("ag_news", ["text"], ("World", "Sports", "Business", "Sci/Tech"), ("train", "test"),
           hub=("fancyzhx/ag_news", "default"), suite="extra", description="news topic, 4 classes"),
        # unseen domains, through a benchmark task's head
        _t("imdb", ["sentence"], SENTIMENT, ("validation", "test"), label_source=("sst2",), suite="unseen",
           description="IMDB movie reviews"),
        _t("yelp", ["sentence"], SENTIMENT, ("validation", "test"), label_source=("sst2",), suite="unseen",
           description="Yelp reviews"),
        _t("amazon", ["sentence"], SENTIMENT, ("validation", "test"), label_source=("sst2",),
           suite="unseen", description="Amazon reviews"),
        _t("mr", ["sentence"], SENTIMENT, TV, label_source=("sst2",), suite="unseen",
           description="movie review snippets"),
        _t("cr", ["sentence"], SENTIMENT, TV, label_source=("sst2",), suite="unseen",
           description="customer reviews"),
        _t("vader_movie", ["sentence"], SENTIMENT, ("test",), label_source=("sst2",), suite="unseen",
           description="VADER movie review sentences"),
        _t("vader_amazon", ["sentence"], SENTIMENT, ("test",), label_source=("sst2",), suite="unseen",
           description="VADER product review sentences"),
        _t("vader_nyt", ["sentence"], SENTIMENT, ("test",), label_source=("sst2",), suite="unseen",
           description="VADER New York Times opinion sentences"),
        _t("vader_tweets", ["sentence"], SENTIMENT, ("test",), label_source=("sst2",), suite="unseen",
           description="VADER tweets"),
        _t("scitail", ["premise", "hypothesis"], ENTAIL2, ("test",), label_source=("rte", "qnli"),
           suite="unseen", description="science entailment"),
        _t("sick", ["premise", "hypothesis"], CB_LABELS, ("train", "validation", "test"),
           label_source=("cb",), suite="unseen", description="SICK entailment, 3-way as CB"),
    ]
}

BENCHMARK = ("sst2", "mrpc", "qnli", "rte", "cb", "boolq")


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise MtpruneError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def parse_tasks(text: str) -> list[TaskSpec]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise MtpruneError("no tasks given")
    return [get_task(n) for n in names]


def data_path(task: TaskSpec, split: str) -> Path | None:
    root = assets.data_dir()
    if root is None:
        return None
    path = root / task.name / f"{split}.jsonl"
    return path if path.is_file() else None


def available_splits(task: TaskSpec) -> list[str]:
    return [s for s in task.splits if data_path(task, s) is not None]


def _check_split(task: TaskSpec, split: str) -> None:
    if split not in task.splits:
        raise MtpruneError(f"task {task.name} has no split {split!r}; its splits: {', '.join(task.splits)}")


def load_rows(task: TaskSpec | str, split: str | None = None, data_file: str | Path | None = None):
    """All rows of one split as a ``datasets.Dataset``, checked against the task's schema.

    ``data_file`` reads a JSONL file of the user's own instead of the registry's.
    """
    import datasets

    task = get_task(task) if isinstance(task, str) else task
    split = split or task.default_split
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    if data_file is not None:
        path = Path(data_file)
        if not path.is_file():
            raise MtpruneError(f"data file {data_file} does not exist")
        source = str(path)
    else:
        _check_split(task, split)
        local = data_path(task, split)
        source = str(local) if local is not None else None
    try:
        if source is not None:
            ds = datasets.load_dataset("json", data_files=source, split="train")
        elif task.hub is not None:
            hub_split = split
            ds = datasets.load_dataset(task.hub[0], task.hub[1], split=hub_split)
        else:
            raise MtpruneError(f"no data for {task.name}/{split}: set MTPRUNE_HOME to a folder with data/")
    except MtpruneError:
        raise
    except Exception as exc:  # datasets raises many types; the user needs one line
        where = source or f"{task.hub[0]} ({task.hub[1]})"
        raise MtpruneError(f"could not read {task.name}/{split} from {where}: {exc}") from None
    validate_rows(ds, task, where=source or task.name)
    return ds


def validate_rows(ds, task: TaskSpec, where: str = "") -> None:
    missing = [f for f in (*task.fields, "label") if f not in ds.column_names]
    if missing:
        raise MtpruneError(
            f"{where or task.name}: rows lack the field(s) {', '.join(missing)} that task {task.name} needs"
        )
    labels = _labels(ds)
    bad = [v for v in labels if not isinstance(v, int) or not (0 <= v < task.num_labels)]
    # hub test splits carry -1 labels: those rows are unlabeled, not wrong
    bad = [v for v in bad if v != -1]
    if bad:
        raise MtpruneError(
            f"{where or task.name}: label id {bad[0]!r} is out of range for task {task.name} "
            f"(0..{task.num_labels - 1})"
        )


def _labels(ds) -> list:
    """The label column as a Python list, read column-wise (fast on 67k rows)."""
    if not hasattr(ds, "data"):
        return [r["label"] for r in ds]
    if getattr(ds, "_indices", None) is not None:  # a select()ed view: ds.data is the whole table
        ds = ds.flatten_indices()
    return ds.data.column("label").to_pylist()


def _check_count(n: int, total: int) -> None:
    if n < 1:
        raise MtpruneError(f"the number of examples must be at least 1, not {n}")
    if n > total:
        raise MtpruneError(f"asked for {n} example{'' if n == 1 else 's'} but the split has only {total}")


def _balanced_order(ds, n: int, rng: random.Random) -> list[int]:
    """The first ``n`` indices of a round robin over labels, each label's rows in ``rng``'s order."""
    by_label: dict[int, list[int]] = {}
    for i, lab in enumerate(_labels(ds)):
        by_label.setdefault(lab, []).append(i)
    pools = [rng.sample(v, len(v)) for _, v in sorted(by_label.items())]
    idx = []
    while len(idx) < n:
        for pool in pools:
            if pool and len(idx) < n:
                idx.append(pool.pop())
    return idx


def draw_order(ds, n: int, seed: int = 0, balanced: bool = True) -> list[dict]:
    """The first ``n`` rows of the seed's draw order: class-balanced (round-robin over labels, each
    label's rows in a seeded order) or uniform (a seeded permutation). The order does not depend on
    ``n``: a draw of ``n`` is the first ``n`` rows of a draw of more (attribution adds examples to
    those it has scored), and a balanced draw's rows are those of :func:`sample_rows`."""
    _check_count(n, len(ds))
    rng = random.Random(seed)
    if not balanced:
        idx = list(range(len(ds)))
        rng.shuffle(idx)
        return [dict(ds[i]) for i in idx[:n]]
    return [dict(ds[i]) for i in _balanced_order(ds, n, rng)]


def sample_rows(ds, n: int | None, seed: int = 0, balanced: bool = True) -> list[dict]:
    """``n`` rows drawn with ``seed``; class-balanced (round-robin over labels) when ``balanced``.

    Balanced sampling keeps 10 or 100 examples meaningful: every label is represented as evenly as
    the split allows. ``n=None`` returns all rows in order.
    """
    if n is None:
        return [dict(r) for r in ds]
    _check_count(n, len(ds))
    rng = random.Random(seed)
    if not balanced:
        idx = rng.sample(range(len(ds)), n)
    else:
        idx = _balanced_order(ds, n, rng)
        rng.shuffle(idx)
    return [dict(ds[i]) for i in idx]


def rows_as_list(ds, limit: int | None = None) -> list[dict]:
    n = len(ds) if limit is None else min(limit, len(ds))
    if limit is not None and limit < 1:
        raise MtpruneError(f"--limit must be at least 1, not {limit}")
    return [dict(ds[i]) for i in range(n)]


@dataclass(frozen=True)
class TaskInfo:
    """What ``mtprune tasks`` prints for one task."""

    name: str
    suite: str
    fields: tuple[str, ...]
    labels: tuple[str, ...]
    splits: tuple[str, ...]
    local_splits: tuple[str, ...]
    metrics: tuple[str, ...]
    task_heads: tuple[str, ...] = field(default=())
    description: str = ""


def task_table() -> list[TaskInfo]:
    return [
        TaskInfo(t.name, t.suite, t.fields, t.labels, t.splits, tuple(available_splits(t)), t.metrics,
                 t.task_heads, t.description)
        for t in TASKS.values()
    ]
