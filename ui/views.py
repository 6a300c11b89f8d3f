"""What the pages show, free of streamlit: choices for the sidebar, labels, small tables and
progress mapping. The library computes; this module words and arranges."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from mtprune import assets
from mtprune.errors import MtpruneError
from mtprune.plots import group_label
from mtprune.tasks import BENCHMARK, TASKS, TaskSpec, available_splits, get_task

OTHER_MODEL = "a local directory..."

# ----------------------------------------------------------------------------------------------
# sidebar choices


def model_options() -> list[str]:
    """``default``, the other models under ``MTPRUNE_HOME/models``, then the local-directory entry."""
    try:
        names = [name for name, _ in assets.model_dirs()]
    except MtpruneError:
        names = []
    return ["default", *[n for n in names if n != "default"], OTHER_MODEL]


def task_options(adapter=None) -> list[str]:
    """Every task, those the model can serve first (benchmark order, then others)."""
    order = list(BENCHMARK) + [t for t in TASKS if t not in BENCHMARK]
    if adapter is None:
        return order
    ok = [t for t in order if adapter.supports(t)]
    return ok + [t for t in order if t not in ok]


def task_label(name: str, adapter=None) -> str:
    t = get_task(name)
    label = f"{name}: {t.description}" if t.description else name
    if adapter is not None and not adapter.supports(t):
        label += " (no head)"
    return label


def split_options(task: TaskSpec | str) -> list[str]:
    """The task's splits with local data first; all its splits when none is local."""
    task = get_task(task) if isinstance(task, str) else task
    return available_splits(task) or list(task.splits)


def default_eval_split(task: TaskSpec | str) -> str:
    task = get_task(task) if isinstance(task, str) else task
    opts = split_options(task)
    return task.default_split if task.default_split in opts else opts[-1]


def unseen_targets(task: TaskSpec | str, adapter=None, cross_task: bool = True) -> list[str]:
    """Sets a mask from ``task`` can be evaluated on: the unseen domains its head reads (imdb,
    yelp... for sst2; scitail for rte and qnli; sick for cb), then (``cross_task``) the other
    benchmark tasks the model serves, read through their own heads."""
    task = get_task(task) if isinstance(task, str) else task
    head = adapter.head_for(task) if adapter is not None else task.task_heads[0]
    unseen = [t.name for t in TASKS.values() if t.name != task.name and t.label_source and head in t.label_source]
    cross = []
    if cross_task:
        cross = [t for t in BENCHMARK if t != task.name and (adapter is None or adapter.supports(t))]
    return unseen + cross


# ----------------------------------------------------------------------------------------------
# tables and words


def units_table(info: dict) -> pd.DataFrame:
    """One row per layer, one column per unit group, from ``adapter.info()``."""
    df = pd.DataFrame({group_label(g): pd.Series(n) for g, n in info["units"].items()})
    df.index.name = "layer"
    return df.fillna(0).astype(int)


def units_line(info: dict) -> str:
    """``1536 FFN neurons, 12 heads`` per layer (a range where layers differ)."""
    parts = []
    for g, n in info["units"].items():
        if g.startswith("encoder") or len(info["units"]) <= 2:
            count = n[0] if len(set(n)) == 1 else f"{min(n)}-{max(n)}"
            parts.append(f"{count} {'heads' if g.endswith('heads') else 'FFN neurons'}")
    return ", ".join(parts)


def mask_table(mask) -> pd.DataFrame:
    """Kept units per layer and group (``kept / total``)."""
    from mtprune.units import ordered_groups

    cols = {}
    for g in ordered_groups(mask.groups):
        cols[group_label(g)] = [f"{k} / {n}" for k, n in zip(mask.kept_per_layer(g), mask.n_units[g])]
    width = max((len(v) for v in cols.values()), default=0)
    df = pd.DataFrame({k: v + [""] * (width - len(v)) for k, v in cols.items()})
    df.index.name = "layer"
    return df


def recorded_metric(adapter, task: TaskSpec | str) -> float | None:
    """The validation accuracy the model's ``tasks.json`` records for the task's head, if any."""
    meta = getattr(adapter, "tasks_meta", None) or {}
    try:
        head = adapter.head_for(task)
    except MtpruneError:
        return None
    v = (meta.get("tasks") or {}).get(head, {}).get("validation_accuracy")
    return float(v) if v is not None else None


def split_progress(progress: Callable[[float, str], None] | None, parts: Sequence[str]):
    """Progress callbacks ``(done, total)`` for consecutive parts of one job, mapped onto one bar
    ``progress(fraction, text)``."""
    n = len(parts)

    def make(i, label):
        def cb(done, total, *_):
            if progress is not None:
                frac = (i + (done / total if total else 1.0)) / n
                progress(min(max(frac, 0.0), 1.0), f"{label}: {done} / {total}")
        return cb

    return [make(i, p) for i, p in enumerate(parts)]


def experiment_csv(kind: str, adapter) -> Path:
    """The CSV where the dashboard keeps ``kind`` results of this model (rows are keyed and
    resumed by :mod:`mtprune.experiments`, so a second visit, even after a restart, reads them)."""
    d = assets.cache_dir() / "dashboard"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{kind}-{adapter.fingerprint()[:16]}.csv"


def sweep_config(spec, methods: Sequence[str], sparsities: Sequence[float], scope: str = "layer",
                 kinds: str = "ffn", trials: int = 1):
    """A one-task :class:`mtprune.experiments.SweepConfig` with the sidebar's attribution settings."""
    from mtprune.experiments import SweepConfig

    return SweepConfig(tasks=(spec.task,), methods=tuple(methods), sparsities=tuple(float(p) for p in sparsities),
                       kinds=kinds, scope=scope, examples=(int(spec.examples),), trials=int(trials),
                       variant=spec.variant, seed=int(spec.seed), unsupervised=(bool(spec.unsupervised),),
                       attribution_split=spec.split, steps=int(spec.steps))
