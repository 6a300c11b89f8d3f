"""Helpers the dashboard pages share, free of streamlit: choices for the sidebar, cache keys,
small tables, per-kind masks, evaluation of a mask against the dense model, and the bytes of every
download. The pages (``app.py``, ``pages/``) stay thin: they call these and the library.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from mtprune import assets
from mtprune.errors import MtpruneError
from mtprune.tasks import BENCHMARK, TASKS, TaskSpec, available_splits, get_task

OTHER_MODEL = "a local directory..."
KIND_ORDER = ("ffn", "heads")
METHOD_HELP = {
    "ap": "gradient x activation (attribution patching): how much the loss would change without the unit",
    "ig": "integrated gradients: gradient x activation averaged along a path from zero",
    "activation": "the unit's mean activation on the task's examples",
    "magnitude": "the size of the unit's weights (no data)",
    "random": "random scores (a baseline)",
    "random-label": "attribution towards a random control target (a baseline)",
}
METHOD_LABELS = {
    "ap": "gradient x activation (AP)",
    "ig": "integrated gradients",
    "activation": "activation",
    "magnitude": "weight magnitude",
    "random": "random",
    "random-label": "random label (control)",
}


# ----------------------------------------------------------------------------------------------
# sidebar choices


def model_options() -> list[str]:
    """``default``, the other models under ``MTPRUNE_HOME/models``, then the local-directory entry."""
    try:
        names = [m["name"] for m in assets.list_models()]
    except MtpruneError:
        names = []
    if "default" in names:
        names.remove("default")
    return ["default", *names, OTHER_MODEL]


def model_signature(name: str) -> tuple[str, str]:
    """(resolved source, signature) of a model argument: the signature changes when the files do.

    The dashboard caches loaded models under both, so editing a directory reloads it.
    """
    resolved = assets.resolve_model(name.strip())
    p = Path(resolved)
    if not p.exists():
        return resolved, "hub"
    if not p.is_dir():
        raise MtpruneError(f"{name} is not a model directory")
    parts = []
    for f in sorted(p.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".model", ".txt")):
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return resolved, hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()


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
    local = available_splits(task)
    return local or list(task.splits)


def default_eval_split(task: TaskSpec | str) -> str:
    task = get_task(task) if isinstance(task, str) else task
    opts = split_options(task)
    return task.default_split if task.default_split in opts else opts[-1]


def attribution_methods() -> list[str]:
    try:
        from mtprune import attribution

        names = getattr(attribution, "METHODS", None) or getattr(attribution, "methods", None)
        if callable(names):
            names = names()
        if names:
            return list(names)
    except ImportError:
        pass
    return list(METHOD_LABELS)


def attribution_variants() -> list[str]:
    try:
        from mtprune import attribution

        v = getattr(attribution, "VARIANTS", None)
        if v:
            return list(v)
    except ImportError:
        pass
    return ["abs", "signed"]


def unseen_targets(task: TaskSpec | str, adapter=None, cross_task: bool = True) -> list[str]:
    """Sets a mask from ``task`` can be evaluated on: the unseen domains its head reads (imdb,
    yelp... for sst2; scitail for rte and qnli; sick for cb), then (``cross_task``) the other
    benchmark tasks the model serves, read through their own heads."""
    task = get_task(task) if isinstance(task, str) else task
    head = adapter.head_for(task) if adapter is not None else task.heads[0]
    unseen = [t.name for t in TASKS.values() if t.name != task.name and t.label_source and head in t.label_source]
    cross = []
    if cross_task:
        cross = [t for t in BENCHMARK if t != task.name and (adapter is None or adapter.supports(t))]
    return unseen + cross


# ----------------------------------------------------------------------------------------------
# model facts


def units_table(adapter) -> pd.DataFrame:
    """One row per layer, one column per unit group (``encoder FFN neurons``...)."""
    from mtprune.plots import group_label
    from mtprune.units import group_sites

    cols = {}
    for g, sites in group_sites(adapter.unit_sites()).items():
        cols[group_label(g)] = {s.layer: s.n_units for s in sites}
    df = pd.DataFrame(cols)
    df.index.name = "layer"
    return df.fillna(0).astype(int)


def model_facts(adapter) -> dict:
    from mtprune.units import group_sites

    groups = group_sites(adapter.unit_sites())
    return {
        "name": adapter.display_name,
        "format": adapter.format,
        "architecture": type(adapter.model).__name__,
        "parameters": adapter.num_parameters(),
        "layers": max((len(v) for v in groups.values()), default=0),
        "groups": {g: [s.n_units for s in v] for g, v in groups.items()},
        "tasks": adapter.task_names(),
    }


def human_count(n: int | float) -> str:
    n = float(n)
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.{1 if abs(n) < 100 * div else 0}f}{unit}"
    return f"{int(n)}"


def recorded_metric(adapter, task: TaskSpec | str) -> float | None:
    """The validation accuracy the model's ``tasks.json`` records for the task's head, if any."""
    meta = getattr(adapter, "tasks_meta", None) or {}
    try:
        head = adapter.head_for(task)
    except MtpruneError:
        return None
    v = (meta.get("tasks") or {}).get(head, {}).get("validation_accuracy")
    return float(v) if v is not None else None


# ----------------------------------------------------------------------------------------------
# attribution specs and scores


def make_spec(task: str, method: str = "ap", variant: str = "abs", samples: int = 64, seed: int = 0,
              split: str | None = None, steps: int = 20, unsupervised: bool = False, units: str = "all"):
    from mtprune.attribution import AttributionSpec

    return AttributionSpec(task=task, method=method, variant=variant, samples=int(samples), seed=int(seed),
                           split=split, steps=int(steps), unsupervised=bool(unsupervised), units=units)


def spec_key(spec) -> str:
    """A stable text key of a spec (session caches, widget keys)."""
    d = spec.to_dict() if hasattr(spec, "to_dict") else dict(vars(spec))
    return json.dumps(d, sort_keys=True, default=str)


def replace_task(spec, task: str):
    """The same attribution settings for another task (its train split when the spec's split is
    one the other task lacks)."""
    from dataclasses import replace

    split = spec.split if spec.split in get_task(task).splits else None
    return replace(spec, task=task, split=split)


def describe_spec(spec) -> str:
    label = METHOD_LABELS.get(spec.method, spec.method)
    split = spec.split or "train"
    parts = [f"{label}, {spec.variant}", f"{spec.samples} {spec.task}/{split} examples", f"seed {spec.seed}"]
    if spec.method == "ig":
        parts.append(f"{spec.steps} steps")
    if spec.unsupervised:
        parts.append("label-free")
    return "; ".join(parts)


def lookup_scores(adapter, spec):
    """Scores already in the library's disk cache for ``spec`` on this model, or None.

    Never computes. Uses ``attribution.lookup_cached`` when the library offers it, else reads the
    entry ``attribute_cached`` would (same key, same reader).
    """
    from dataclasses import replace

    from mtprune import attribution
    from mtprune.cache import DiskCache

    fn = getattr(attribution, "lookup_cached", None)
    if fn is not None:
        out = fn(adapter, spec)
        return out[0] if isinstance(out, tuple) else out
    attribution.check_supported(adapter, spec)
    cache = DiskCache(namespace="scores")
    key = cache.key(attribution.cache_key_parts(adapter, spec))
    scores = cache.load(key, lambda p: attribution.Scores.load(p, expect_key=key))
    return replace(scores, spec=spec) if scores is not None else None


def method_info(method: str):
    """The library's MethodInfo (uses_steps, unsupervised, uses_variant...), or None."""
    try:
        from mtprune import attribution
    except ImportError:
        return None
    return getattr(attribution, "METHOD_INFO", {}).get(method)


def compute_scores(adapter, spec, progress: Callable | None = None):
    """``attribute_cached``: (scores, cache_hit)."""
    from mtprune.attribution import attribute_cached

    scores, hit, _path = attribute_cached(adapter, spec, progress=progress)
    return scores, hit


def groups_in(scores_or_mask) -> list[str]:
    """Groups in display order: encoder before decoder, FFN before heads."""
    have = list(getattr(scores_or_mask, "arrays", None) or getattr(scores_or_mask, "keep"))
    order = [f"{s}.{k}" for s in ("encoder", "decoder") for k in KIND_ORDER]
    return [g for g in order if g in have] + [g for g in have if g not in order]


def kinds_in(scores_or_mask) -> list[str]:
    ks = {g.split(".", 1)[1] for g in groups_in(scores_or_mask)}
    return [k for k in KIND_ORDER if k in ks]


def scores_csv(scores) -> bytes:
    """One row per unit: group, layer, unit, score, rank in layer."""
    if hasattr(scores, "to_frame"):
        df = scores.to_frame()
    else:
        from mtprune.plots import layer_ranks

        rows = []
        for g in groups_in(scores):
            a = np.asarray(scores.arrays[g], dtype=float)
            r = layer_ranks(a)
            for layer, unit in zip(*np.nonzero(~np.isnan(a))):
                rows.append((g, int(layer), int(unit), float(a[layer, unit]), int(r[layer, unit])))
        df = pd.DataFrame(rows, columns=["group", "layer", "unit", "score", "rank"])
    return df.to_csv(index=False).encode("utf-8")


# ----------------------------------------------------------------------------------------------
# masks


def kind_mask(scores, sparsity: dict[str, float], scope: str = "layer", stack: str = "all"):
    """A mask with its own sparsity per unit kind: ``{"ffn": 0.5, "heads": 0.25}``.

    Kinds not named (or at 0) are kept whole. The mask's ``sparsity`` field holds the FFN rate
    when there is one (else the heads rate); both rates are in ``meta["sparsity_per_kind"]``.
    """
    from mtprune.masks import Mask, mask_from_scores

    kinds = [k for k in kinds_in(scores) if k in sparsity]
    if not kinds:
        raise MtpruneError("no unit kind to prune: the scores have neither FFN neurons nor heads")
    per = {k: float(sparsity[k]) for k in kinds}
    parts = {k: mask_from_scores(scores, per[k], scope=scope, units=k, stack=stack) for k in kinds}
    if len(parts) == 1:
        (k, m), = parts.items()
        return Mask(keep=m.keep, n_units=m.n_units, sparsity=m.sparsity, scope=scope, units=k, stack=stack,
                    meta={**m.meta, "sparsity_per_kind": per})
    first = next(iter(parts.values()))
    keep = {}
    for g in first.groups:
        kind = g.split(".", 1)[1]
        keep[g] = parts[kind].keep[g] if kind in parts else first.keep[g]
    main = per.get("ffn", next(iter(per.values())))
    return Mask(keep=keep, n_units=first.n_units, sparsity=main, scope=scope, units="all", stack=stack,
                meta={**first.meta, "sparsity_per_kind": per})


def mask_digest(mask) -> str:
    return hashlib.blake2b(json.dumps(mask.to_dict(), sort_keys=True).encode(), digest_size=10).hexdigest()


def mask_table(mask) -> pd.DataFrame:
    """Kept units per layer and group (``kept / total``)."""
    from mtprune.plots import group_label

    cols = {}
    for g in groups_in(mask):
        kept = mask.kept_per_layer(g)
        cols[group_label(g)] = [f"{k} / {n}" for k, n in zip(kept, mask.n_units[g])]
    width = max((len(v) for v in cols.values()), default=0)
    df = pd.DataFrame({k: v + [""] * (width - len(v)) for k, v in cols.items()})
    df.index.name = "layer"
    return df


def mask_bytes(mask, fmt: str = "json") -> bytes:
    """The mask file's bytes, as :func:`mtprune.masks.save_mask` writes it (``json``/``safetensors``)."""
    from mtprune.masks import save_mask

    with tempfile.TemporaryDirectory() as d:
        path = save_mask(mask, Path(d) / f"mask.{fmt}")
        return path.read_bytes()


def read_mask_upload(name: str, data: bytes):
    """A :class:`Mask` from an uploaded file's name and bytes; a one-line error when it is none."""
    from mtprune.masks import load_mask

    suffix = Path(name or "").suffix.lower()
    if suffix not in (".json", ".safetensors"):
        raise MtpruneError(f"{name} is not a mask file: upload a .json or .safetensors mask")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return load_mask(path)
        except MtpruneError as exc:
            raise MtpruneError(str(exc).replace(str(path), name)) from None


def hard_prune_problem(adapter, mask) -> str | None:
    """Why ``mask`` cannot be hard-pruned on this model (heads of T5 or of grouped key/value
    attention can only be masked), or None."""
    bad = []
    for s in adapter.unit_sites():
        k = mask.keep.get(s.group)
        if k is not None and not s.hard_prunable and not k[s.layer, : s.n_units].all():
            bad.append(s.name)
    if not bad:
        return None
    return (f"{len(bad)} layer(s) lose attention heads that this model cannot remove physically "
            f"({bad[0]}...): set the heads slider to 0% to download a hard-pruned model")


def pruned_model_zip(adapter, mask) -> bytes:
    """A zip of the hard-pruned model directory (``mtprune`` and transformers load it back)."""
    from mtprune.pruning import hard_prune, save_pruned

    small = hard_prune(adapter, mask)
    with tempfile.TemporaryDirectory() as d:
        out = save_pruned(small, Path(d) / "pruned", mask)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(out.rglob("*")):
                if f.is_file():
                    z.write(f, f"pruned/{f.relative_to(out)}")
        return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# evaluation


@dataclass(frozen=True)
class Comparison:
    """Dense against pruned on one task split."""

    task: str
    split: str
    n: int
    dense: dict
    pruned: dict

    @property
    def metrics(self) -> list[str]:
        return list(self.dense)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"dense": self.dense, "pruned": self.pruned}).assign(
            change=lambda d: d["pruned"] - d["dense"])


def eval_rows(task: TaskSpec | str, split: str, limit: int | None):
    from mtprune.tasks import load_rows, rows_as_list

    task = get_task(task) if isinstance(task, str) else task
    return rows_as_list(load_rows(task, split), limit)


def evaluate_mask(adapter, task: TaskSpec | str, split: str, limit: int | None, mask=None,
                  progress: Callable[[int, int], None] | None = None):
    """:func:`mtprune.evaluation.evaluate` of the dense model (``mask=None``) or the soft-pruned one."""
    from mtprune.evaluation import evaluate

    ctx = None
    if mask is not None:
        from mtprune.pruning import soft_prune

        mask.check_matches(adapter)
        ctx = lambda: soft_prune(adapter, mask)  # noqa: E731
    rows = eval_rows(task, split, limit)
    return evaluate(adapter, task, split, rows=rows, progress=progress, context=ctx)


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


# ----------------------------------------------------------------------------------------------
# experiments (sweeps, unseen domains) with their tables cached on disk


def experiment_csv(kind: str, adapter) -> Path:
    """The CSV where the dashboard keeps ``kind`` results of this model (rows are keyed and
    resumed by :mod:`mtprune.experiments`, so a second visit, even after a restart, reads them)."""
    d = assets.cache_dir() / "dashboard"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{kind}-{adapter.fingerprint()[:16]}.csv"


def sweep_config(spec, methods: Sequence[str], sparsities: Sequence[float], scope: str = "layer",
                 units: str = "ffn", trials: int = 1):
    """A one-task :class:`mtprune.experiments.SweepConfig` with the sidebar's attribution settings."""
    from mtprune.experiments import SweepConfig

    return SweepConfig(tasks=(spec.task,), methods=tuple(methods), sparsities=tuple(float(p) for p in sparsities),
                       units=units, scope=scope, samples=(int(spec.samples),), trials=int(trials),
                       variant=spec.variant, seed=int(spec.seed), unsupervised=(bool(spec.unsupervised),),
                       attribution_split=spec.split, steps=int(spec.steps)).validate()


def unseen_series(df: pd.DataFrame, sparsity: float, metric: str = "accuracy"):
    """(target labels, {series: values}) for bars from :func:`mtprune.experiments.run_unseen` rows:
    the dense model, then every (mask source, method) at ``sparsity`` (trials averaged)."""
    if df.empty:
        return [], {}
    d = df.copy()
    targets = list(dict.fromkeys(d["target"]))
    dense = d[d["sparsity"] == 0].groupby("target")[metric].first()
    at = d[np.isclose(d["sparsity"].astype(float), float(sparsity))]
    series = {"dense": [float(dense.get(t, np.nan)) for t in targets]}
    for (src, method), g in at.groupby(["mask_from", "method"], sort=False):
        own = " (its own mask)" if (g["mask_from"] == g["target"]).all() else ""
        name = f"{method} mask from {src}{own}" if not own else f"{method}, {src}'s own mask"
        means = g.groupby("target")[metric].mean()
        series[name] = [float(means.get(t, np.nan)) for t in targets]
    return targets, series


__all__ = [name for name in dir() if not name.startswith("_") and name not in ("annotations", "os")]
