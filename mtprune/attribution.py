"""Attribution: for one model and one task, how much the task needs every prunable unit.

Units are the adapter's unit sites (FFN neurons and attention heads of every layer, encoder and
decoder apart). A result, :class:`Scores`, holds one ``[layers x units]`` float32 array per group
(``encoder.ffn``, ``encoder.heads``, ``decoder.ffn``, ``decoder.heads``), NaN where a layer has
fewer units, plus the spec and the model's fingerprint.

What is computed is said by an :class:`AttributionSpec` (task, method, examples, seed...); how, by
the method's object in :mod:`mtprune.methods` (``ap`` by default). :func:`attribute` computes,
:func:`attribute_cached` goes through the disk cache (:mod:`mtprune.cache`), keyed by everything
the scores depend on: the model's fingerprint, the spec (settings the method ignores left out),
the data file and the library's version.

Distributed runs (torchrun): every rank computes its share of the batches and the partial sums
are all-reduced (:mod:`mtprune.batching`, :mod:`mtprune.methods.engine`); rank 0 alone reads and writes the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mtprune import __version__, distributed
from mtprune.text import plural
from mtprune.errors import MtpruneError
from mtprune.formats.base import prunable
from mtprune.methods import Method, get_method
from mtprune.methods.engine import Progress, gradient_scores, objective_all, objective_gold
from mtprune.tasks import TaskSpec, data_path, draw_order, get_task, load_rows
from mtprune.units import KIND_CHOICES, UnitSite, canonical_kinds, canonical_name, layout, select_sites

VARIANTS = ("abs", "signed")
FORMAT = "mtprune.scores"
FORMAT_VERSION = 2  # bump when the meaning of stored scores changes: old cache entries miss
# 2: fold sums kept beside the totals; examples in the seed's draw order (a larger draw extends a smaller one)
MIN_HALF = 64  # draws are extended from their first half down to this many examples
FOLD_SUFFIX = ".folds"  # the tensor of a group's fold sums in a scores file: "encoder.ffn.folds"


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class AttributionSpec:
    """What to attribute; validated on construction. ``key_dict()`` is part of the cache key."""

    task: str
    method: str = "ap"
    variant: str = "abs"
    examples: int = 256
    seed: int = 0
    split: str | None = None  # None: the task's train split (TaskSpec.train_split)
    steps: int = 20
    unsupervised: bool = False
    kinds: str = "all"  # ffn | heads | kv | all

    def __post_init__(self):
        task = get_task(self.task)  # MtpruneError for an unknown task
        method = get_method(self.method, scores=True)
        if self.variant not in VARIANTS:
            raise MtpruneError(f"unknown variant {self.variant!r}; variants: {', '.join(VARIANTS)}")
        if not _is_int(self.examples) or self.examples < 1:
            raise MtpruneError(f"the number of examples (--examples) must be at least 1, not {self.examples}")
        if not _is_int(self.seed) or self.seed < 0:
            raise MtpruneError(f"the seed must be a non-negative integer, not {self.seed}")
        if not _is_int(self.steps) or self.steps < 1:
            raise MtpruneError(f"the number of integration steps (--steps) must be at least 1, not {self.steps}")
        object.__setattr__(self, "kinds", canonical_kinds(self.kinds))  # groups: the old spelling of kv
        if self.kinds not in KIND_CHOICES:
            raise MtpruneError(f"kinds must be one of {', '.join(KIND_CHOICES)}, not {self.kinds!r}")
        if self.split is not None and self.split not in task.splits:
            raise MtpruneError(f"task {task.name} has no split {self.split!r}; its splits: {', '.join(task.splits)}")
        if self.unsupervised and not method.unsupervised:
            from mtprune.methods import all_methods

            ok = [n for n, m in all_methods().items() if m.unsupervised]
            raise MtpruneError(f"--unsupervised applies to {', '.join(ok)}, not to {self.method}")
        for name in ("examples", "seed", "steps"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "unsupervised", bool(self.unsupervised))

    @property
    def task_spec(self) -> TaskSpec:
        return get_task(self.task)

    @property
    def resolved_split(self) -> str:
        return self.split or self.task_spec.train_split

    @property
    def info(self) -> Method:
        """The method's object (its facts: needs_data, uses_steps...)."""
        return get_method(self.method)

    def to_dict(self) -> dict:
        return asdict(self)

    def key_dict(self) -> dict:
        """``to_dict()`` with the split resolved and the settings the method ignores set to None,
        so that ``--steps 5 --method ap`` and ``--method ap`` share a cache entry."""
        d = self.to_dict()
        info = self.info
        d["split"] = self.resolved_split
        if not info.uses_steps:
            d["steps"] = None
        if not info.uses_variant:
            d["variant"] = None
        if not info.uses_seed:
            d["seed"] = None
        if not info.needs_data:
            d["examples"] = d["split"] = None
            d["unsupervised"] = False
        return d

    def key(self) -> str:
        """A stable text naming the spec (session caches, widget keys)."""
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    def for_task(self, task: str) -> "AttributionSpec":
        """The same settings for another task (its train split when this split is one it lacks)."""
        split = self.split if self.split in get_task(task).splits else None
        return replace(self, task=task, split=split)

    def describe(self) -> str:
        """One line: ``gradient x activation (AP), abs; 64 sst2/train examples; seed 0``."""
        info = self.info
        parts = [f"{info.label}, {self.variant}" if info.uses_variant else info.label]
        if info.needs_data:
            parts.append(f"{self.examples} {self.task}/{self.resolved_split} example{'' if self.examples == 1 else 's'}")
        if info.uses_seed:
            parts.append(f"seed {self.seed}")
        if info.uses_steps:
            parts.append(f"{self.steps} steps")
        if self.unsupervised:
            parts.append("label-free")
        return "; ".join(parts)

    @classmethod
    def from_dict(cls, d: dict) -> "AttributionSpec":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _spec_unchecked(d: dict) -> AttributionSpec:
    """A spec read back from a file, also when its method is not registered in this process."""
    try:
        return AttributionSpec.from_dict(d)
    except MtpruneError:
        spec = object.__new__(AttributionSpec)
        defaults = {f.name: f.default for f in fields(AttributionSpec)}
        for k, v in defaults.items():
            object.__setattr__(spec, k, d.get(k, v))
        return spec


# ----------------------------------------------------------------------------------------------
# the result


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k], dtype="<f4")
        h.update(k.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Scores:
    """Scores of every unit: ``arrays[group]`` is float32 ``[n_layers, max_units]``, NaN past a
    layer's ``n_units[group][layer]`` units. Higher means the task needs the unit more."""

    spec: AttributionSpec
    model_fingerprint: str
    arrays: dict[str, np.ndarray]
    n_units: dict[str, list[int]]
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)
    # the sums over K disjoint folds of the examples, float32 [K, n_layers, max_units] per group
    # (None: a method that reads no examples, or an entry written before folds were kept)
    folds: dict[str, np.ndarray] | None = None

    @property
    def groups(self) -> list[str]:
        return list(self.arrays)

    @property
    def has_folds(self) -> bool:
        return bool(self.folds) and all(f.shape[0] >= 2 for f in self.folds.values())

    def standard_errors(self) -> dict[str, np.ndarray] | None:
        """``{group: [layers, units]}``: each total's standard error from its fold sums; None
        without folds (reliability unknown)."""
        from mtprune.reliability import standard_errors

        return {g: standard_errors(f) for g, f in self.folds.items()} if self.has_folds else None

    def reliability(self) -> dict:
        """``{group: GroupReliability}``: the expected Spearman correlation of each group's (and
        layer's) scores with those of an independent draw of as many examples; ``{}`` without folds."""
        from mtprune.reliability import group_reliability

        if not self.has_folds:
            return {}
        return {g: group_reliability(g, self.folds[g], self.n_units[g]) for g in self.arrays}

    def reliability_summary(self) -> dict:
        """What files and printouts say of the scores' reliability: examples used, folds, and per
        group the expected Spearman with another draw and its layers'; why it is unknown otherwise."""
        n = self.meta.get("examples")
        if not self.spec.info.needs_data:
            return {"examples": 0, "reliability": None,
                    "why": f"{self.spec.method} reads no examples: another draw gives the same scores"}
        if not self.has_folds:
            return {"examples": n, "reliability": None,
                    "why": "reliability unknown: these scores were computed without fold sums"}
        return {"examples": n, "folds": int(next(iter(self.folds.values())).shape[0]),
                "reliability": {g: r.to_dict() for g, r in self.reliability().items()}}

    def site_scores(self) -> dict[str, np.ndarray]:
        """``{"encoder.3.ffn": scores [n_units]}``: the layout of ``adapter.unit_sites()``."""
        out = {}
        for g, arr in self.arrays.items():
            stack, kind = g.split(".")
            for layer, n in enumerate(self.n_units[g]):
                out[f"{stack}.{layer}.{kind}"] = arr[layer, :n].copy()
        return out

    def to_frame(self):
        """A long table: group, layer, unit, score, rank (1 = most needed, within its layer),
        group_rank (within the whole group)."""
        import pandas as pd

        parts = []
        for g, arr in self.arrays.items():
            for layer, n in enumerate(self.n_units[g]):
                if n == 0:
                    continue
                parts.append(pd.DataFrame({"group": g, "layer": layer, "unit": np.arange(n),
                                           "score": arr[layer, :n].astype(np.float64)}))
        if not parts:
            return pd.DataFrame(columns=["group", "layer", "unit", "score", "rank", "group_rank"])
        df = pd.concat(parts, ignore_index=True)
        df["rank"] = df.groupby(["group", "layer"])["score"].rank(ascending=False, method="first").astype(int)
        df["group_rank"] = df.groupby("group")["score"].rank(ascending=False, method="first").astype(int)
        if self.has_folds:
            df = df.merge(self._uncertainty_frame(), on=["group", "layer", "unit"], how="left")
        return df

    def _uncertainty_frame(self):
        """group, layer, unit, se (the score's standard error) and the 95% interval of its rank in
        the layer (rank_low, rank_high)."""
        import pandas as pd

        from mtprune.reliability import rank_intervals

        rows = []
        for g, se in self.standard_errors().items():
            for layer, n in enumerate(self.n_units[g]):
                if n == 0:
                    continue
                lo, hi = rank_intervals(self.arrays[g][layer, :n].astype(np.float64), se[layer, :n], seed=layer)
                rows.append(pd.DataFrame({"group": g, "layer": layer, "unit": np.arange(n), "se": se[layer, :n],
                                          "rank_low": lo.astype(int), "rank_high": hi.astype(int)}))
        return pd.concat(rows, ignore_index=True)

    def to_csv(self, path: str | Path) -> Path:
        from mtprune.io import atomic_write

        df = self.to_frame()
        return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, float_format="%.9g"))

    # -- safetensors -------------------------------------------------------------------------------
    def _metadata(self, extra: dict | None = None) -> dict[str, str]:
        head = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "spec": self.spec.to_dict(),
            "model_fingerprint": self.model_fingerprint,
            "n_units": self.n_units,
            "seconds": self.seconds,
            "meta": self.meta,
            "checksum": _checksum({**self.arrays, **self._fold_tensors()}),
            "reliability": self.reliability_summary(),
        }
        head.update(extra or {})
        return {"mtprune": json.dumps(head, default=str)}

    def to_bytes(self, extra: dict | None = None) -> bytes:
        from safetensors.numpy import save

        tensors = {g: np.ascontiguousarray(a, dtype=np.float32) for g, a in {**self.arrays, **self._fold_tensors()}.items()}
        return save(tensors, metadata=self._metadata(extra))

    def _fold_tensors(self) -> dict[str, np.ndarray]:
        return {f"{g}{FOLD_SUFFIX}": np.ascontiguousarray(f, dtype=np.float32) for g, f in (self.folds or {}).items()}

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write a safetensors file (one tensor per group, JSON metadata), atomically."""
        from mtprune.io import atomic_write_bytes

        return atomic_write_bytes(path, self.to_bytes(extra))

    @classmethod
    def load(cls, path: str | Path, expect_key: str | None = None) -> "Scores":
        """Read a file written by :meth:`save`; MtpruneError when it is not one or is damaged."""
        from safetensors import safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="numpy") as f:
                md = f.metadata() or {}
                arrays = {k: f.get_tensor(k) for k in f.keys()}
            head = json.loads(md["mtprune"])
        except Exception as exc:
            raise MtpruneError(f"{path} is not a readable mtprune scores file ({type(exc).__name__}: {exc})") from None
        if head.get("format") != FORMAT:
            raise MtpruneError(f"{path} is not an mtprune scores file")
        if head.get("checksum") != _checksum(arrays):
            raise MtpruneError(f"{path} is damaged: its arrays do not match their checksum")
        if expect_key is not None and head.get("cache_key") != expect_key:
            raise MtpruneError(f"{path} holds another cache entry")
        n_units = {g: [int(x) for x in v] for g, v in head["n_units"].items()}
        folds = {k[: -len(FOLD_SUFFIX)]: v for k, v in arrays.items() if k.endswith(FOLD_SUFFIX)}
        arrays = {k: v for k, v in arrays.items() if not k.endswith(FOLD_SUFFIX)}
        if set(n_units) != set(arrays) or not set(folds) <= set(arrays):
            raise MtpruneError(f"{path} is damaged: its groups do not match")
        order = [g for g in n_units]  # keep the written order of groups (old spellings: today's names)
        return cls(_spec_unchecked(head["spec"]), head["model_fingerprint"], {canonical_name(g): arrays[g] for g in order},
                   {canonical_name(g): n for g, n in n_units.items()}, float(head.get("seconds", 0.0)),
                   dict(head.get("meta") or {}), {canonical_name(g): f for g, f in folds.items()} or None)


def _layout_arrays(spec, sites, per_site: dict[str, np.ndarray]) -> tuple[dict, dict]:
    shapes, n_units = layout(sites)
    arrays = {g: np.full(shape, np.nan, dtype=np.float32) for g, shape in shapes.items()}
    for s in sites:
        v = np.asarray(per_site[s.name], dtype=np.float64).reshape(-1)
        if v.shape[0] != s.n_units:
            raise RuntimeError(f"method {spec.method} gave {v.shape[0]} scores for {s.name} ({s.n_units} units)")
        arrays[s.group][s.layer, : s.n_units] = v
    return arrays, n_units


def assemble(spec, fingerprint, sites, per_site: dict[str, np.ndarray], seconds=0.0, meta=None,
             folds: list[dict[str, np.ndarray]] | None = None) -> Scores:
    """Scores from ``{site name: [n_units]}`` totals (and, with ``folds``, the same for each fold of
    the examples: the totals are then their sums)."""
    arrays, n_units = _layout_arrays(spec, sites, per_site)
    stacked = None
    if folds:
        parts = [_layout_arrays(spec, sites, f)[0] for f in folds]
        stacked = {g: np.stack([p[g] for p in parts]) for g in arrays}
    return Scores(spec, fingerprint, arrays, n_units, float(seconds), dict(meta or {}), stacked)


# ----------------------------------------------------------------------------------------------
# examples


def _labels_of(ds) -> list[int]:
    try:
        return [int(v) for v in ds.with_format("arrow")["label"].to_pylist()]
    except Exception:
        return [int(v) for v in ds["label"]]


_SPLITS: dict[tuple, tuple] = {}  # (task, split, data identity) -> (dataset, labels): a few, per process


def _load_split(task: TaskSpec, split: str):
    """The split and its label column, kept in memory while the data file is unchanged (the
    dashboard and sweeps attribute the same split many times; reading SST-2's 67k rows takes
    seconds)."""
    key = (task.name, split, json.dumps(data_identity(task, split), sort_keys=True))
    hit = _SPLITS.get(key)
    if hit is None:
        ds = load_rows(task, split)
        hit = (ds, _labels_of(ds))
        if len(_SPLITS) >= 8:
            _SPLITS.pop(next(iter(_SPLITS)))
        _SPLITS[key] = hit
    return hit


def labelled_rows(spec: AttributionSpec) -> int:
    """How many examples the spec's split can give: its labelled rows (every row, label-free)."""
    ds, labels = _load_split(spec.task_spec, spec.resolved_split)
    return len(labels) if spec.unsupervised else sum(1 for v in labels if v >= 0)


def sample_for(spec: AttributionSpec) -> list[dict]:
    """The spec's examples: the first ``examples`` rows of its split's draw order for its seed,
    class-balanced (:func:`mtprune.tasks.draw_order`: a larger draw starts with a smaller one's rows).

    With ``--unsupervised`` the draw is uniform and reads no labels. Rows without a label (-1)
    are skipped for supervised methods.
    """
    task = spec.task_spec
    split = spec.resolved_split
    ds, labels = _load_split(task, split)
    if spec.unsupervised:
        return draw_order(ds, spec.examples, spec.seed, balanced=False)
    n_labeled = sum(1 for v in labels if v >= 0)
    if n_labeled == 0:
        raise MtpruneError(f"{task.name}/{split} has no labeled rows: use --unsupervised or another split")
    if spec.examples > n_labeled:
        raise MtpruneError(f"asked for {spec.examples} examples but {task.name}/{split} has only {plural(n_labeled, 'labeled row')}")
    if n_labeled < len(labels):  # hub test splits: -1 marks unlabeled rows
        ds = ds.select([i for i, v in enumerate(labels) if v >= 0]).flatten_indices()
    return draw_order(ds, spec.examples, spec.seed)


# ----------------------------------------------------------------------------------------------
# the per-layer loop: the reference the fused pass is checked and timed against


def ap_per_layer(adapter, spec: AttributionSpec, rows: Sequence[dict], *, batch_size: int = 32,
                 by: str = "site") -> Scores:
    """``ap`` computed one pass per layer (``by="layer"``: both kinds of a layer per pass) or per
    site (``by="site"``: one layer's FFN neurons or heads per pass), as the knowledge-neurons code
    does. Same examples and batches as :func:`attribute`; for tests and the benchmark."""
    task = spec.task_spec
    sites = select_sites(adapter.unit_sites(), spec.kinds)
    objective = objective_all if spec.unsupervised else objective_gold
    if by == "site":
        passes = [[s] for s in sites]
    else:
        by_layer: dict[tuple[str, int], list[UnitSite]] = {}
        for s in sites:
            by_layer.setdefault((s.stack, s.layer), []).append(s)
        passes = list(by_layer.values())
    per_site: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for group in passes:
        for name, v in gradient_scores(adapter, task, list(rows), spec, group, objective=objective,
                                       alphas=[1.0], batch_size=batch_size).items():
            per_site[name] = per_site.get(name, 0) + np.asarray(v, dtype=np.float64)
    return assemble(spec, adapter.fingerprint(), sites, per_site, time.perf_counter() - t0,
                    {"examples": len(rows), "passes": len(passes)})


# ----------------------------------------------------------------------------------------------
# entry points


def threads_for_load() -> int:
    """torch's CPU thread count, capped at the cores the 1-minute load average leaves free (at
    least 1). With OpenMP's default spinning waiters, threads that wait for a descheduled partner
    make a busy machine several times slower than one thread (measured on 2 shared cores at load
    4: 24 s with 2 threads, 4 s with 1, for the same ``ap``); ``mtprune attribute`` sets
    ``OMP_WAIT_POLICY=PASSIVE`` instead, which a process that has loaded torch already cannot."""
    n = torch.get_num_threads()
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return n
    free = (os.cpu_count() or 1) - int(round(load))
    return max(1, min(n, free))


def check_supported(adapter, spec: AttributionSpec) -> list[UnitSite]:
    """Raise MtpruneError unless the adapter can serve the spec; return the selected sites."""
    adapter.head_for(spec.task_spec)  # no head / wrong label count: one clear line
    sites = select_sites(prunable(adapter).unit_sites(), spec.kinds)  # an evaluate-only model: one line
    if not sites:
        raise MtpruneError(f"model {adapter.display_name} has no {spec.kinds} units to attribute")
    return sites


def attribute(adapter, spec: AttributionSpec, *, progress: Progress | None = None, batch_size: int = 32,
              rows: Sequence[dict] | None = None, start: Scores | None = None) -> Scores:
    """Score every unit of the spec's kinds for its task (no cache; see :func:`attribute_cached`).

    ``rows`` replaces the spec's sampled examples (all of them are used). ``start``: the scores of
    the first half of the examples, in ``FOLDS`` folds: only the second half is read, and each fold
    of the whole is two folds of a half (:func:`extend_folds`).
    """
    if not _is_int(batch_size) or batch_size < 1:
        raise MtpruneError(f"the batch size must be at least 1, not {batch_size}")
    t0 = time.perf_counter()
    task = spec.task_spec
    info = spec.info
    sites = check_supported(adapter, spec)
    if info.needs_data:
        if rows is None:
            rows = sample_for(spec)
        else:
            rows = [dict(r) for r in rows]
            if not rows:
                raise MtpruneError("no examples to attribute")
        if info.needs_labels and not spec.unsupervised:
            bad = [r.get("label") for r in rows if not _is_int(r.get("label")) or not 0 <= r["label"] < task.num_labels]
            if bad:
                raise MtpruneError(
                    f"{len(bad)} example(s) have no valid {task.name} label (e.g. {bad[0]!r}): use --unsupervised"
                )
    else:
        rows = []
    t_data = time.perf_counter() - t0
    was_training = adapter.model.training
    adapter.model.eval()
    t1 = time.perf_counter()
    if start is not None:
        try:
            return extend_folds(adapter, spec, start, rows, sites, batch_size=batch_size, progress=progress,
                                meta={"seconds_data": t_data})
        finally:
            adapter.model.train(was_training)
    try:
        folds = fold_scores(adapter, spec, rows, sites, batch_size=batch_size, progress=progress)
        if info.additive or len(folds) == 1:
            per_site = {name: np.sum([np.asarray(f[name], dtype=np.float64) for f in folds], axis=0) for name in folds[0]}
        else:  # a mean: the whole in one call; the folds, weighted by their examples, give its spread
            per_site = info.attribute(adapter, task, rows, spec, sites, batch_size=batch_size)
    finally:
        adapter.model.train(was_training)
    t_compute = time.perf_counter() - t1
    meta = {
        "examples": len(rows),
        "label_counts": _label_counts(rows),
        "split": spec.resolved_split if info.needs_data else None,
        "version": __version__,
        "format_version": FORMAT_VERSION,
        "model": adapter.display_name,
        "format": adapter.format,
        "head": adapter.head_for(task),
        "world_size": distributed.world_size(),
        "batch_size": batch_size,
        "device": str(adapter.device),
        "seconds_data": t_data,
        "seconds_compute": t_compute,
        "examples_per_s": (len(rows) / t_compute) if rows and t_compute > 0 else None,
        "folds": len(folds) if len(folds) > 1 else 0,
    }
    return assemble(spec, adapter.fingerprint(), sites, per_site, time.perf_counter() - t0, meta,
                    folds if len(folds) > 1 else None)


def half_of(spec: AttributionSpec) -> int | None:
    """The examples of the draw whose scores this spec's extend (``examples / 2``), or None when
    they are computed whole: a method whose scores are sums over examples, at least twice
    ``MIN_HALF`` examples, in folds that pair up (a multiple of ``2 * FOLDS``)."""
    from mtprune.reliability import FOLDS

    info = spec.info
    n = spec.examples
    if info.needs_data and info.additive and n % (2 * FOLDS) == 0 and n // 2 >= MIN_HALF:
        return n // 2
    return None


def _pairs(folds: np.ndarray) -> np.ndarray:
    """``[K, ...] -> [K / 2, ...]``: folds summed two by two (NaN padding stays NaN)."""
    return folds[0::2].astype(np.float64) + folds[1::2]


def extend_folds(adapter, spec: AttributionSpec, start: Scores, rows: Sequence[dict], sites, *, batch_size: int,
                 progress: Progress | None = None, meta: dict | None = None) -> Scores:
    """The scores of ``rows`` (``2 m`` examples) from ``start`` (those of their first ``m``, in
    ``FOLDS`` folds): the last ``m`` are read in ``FOLDS`` folds, and the whole's folds are the two
    halves' folds summed in pairs, so fold ``i`` covers the same rows as :func:`fold_bounds` gives."""
    m = int(start.meta["examples"])
    if not start.has_folds or 2 * m != len(rows):
        raise ValueError("start must hold the folds of the first half of the rows")
    t0 = time.perf_counter()
    step = (lambda done, total: progress(m + done, len(rows))) if progress else None
    new = fold_scores(adapter, spec, rows[m:], sites, batch_size=batch_size, progress=step)
    later = assemble(spec, adapter.fingerprint(), sites, new[0], folds=new).folds
    folds = {g: np.concatenate([_pairs(start.folds[g]), _pairs(later[g])]).astype(np.float32) for g in later}
    arrays = {g: f.astype(np.float64).sum(0).astype(np.float32) for g, f in folds.items()}
    t_compute = time.perf_counter() - t0
    info = {**start.meta, **(meta or {}), "examples": len(rows), "label_counts": _label_counts(rows),
            "seconds_compute": t_compute, "extends": m, "folds": len(next(iter(folds.values())))}
    info["examples_per_s"] = m / t_compute if t_compute > 0 else None
    return Scores(spec, adapter.fingerprint(), arrays, start.n_units, start.seconds + t_compute, info, folds)


def _label_counts(rows) -> dict[str, int]:
    counts: dict[int, int] = {}
    for r in rows:
        if _is_int(r.get("label")):
            counts[int(r["label"])] = counts.get(int(r["label"]), 0) + 1
    return {str(k): v for k, v in sorted(counts.items())}


def fold_bounds(n: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the ``FOLDS`` contiguous folds of ``n`` examples (fewer for fewer)."""
    from mtprune.reliability import FOLDS

    k = max(1, min(FOLDS, n))
    return [(i * n // k, (i + 1) * n // k) for i in range(k)]


def fold_scores(adapter, spec: AttributionSpec, rows: Sequence[dict], sites, *, batch_size: int = 32,
                progress: Progress | None = None) -> list[dict[str, np.ndarray]]:
    """The method's ``{site: scores}`` over each of ``FOLDS`` disjoint, contiguous folds of ``rows``
    (fewer when there are fewer rows; one call for a method that reads no examples): every example
    is read once, and the totals are the folds' sums (a mean method's folds are weighted by their
    share of the examples). A gradient method keeps the folds apart within its batches
    (:meth:`Method.attribute_folds`), so folds cost no extra passes."""
    info = spec.info
    n = len(rows)
    bounds = fold_bounds(n) if info.needs_data else [(0, n)]
    if len(bounds) <= 1:
        return [info.attribute(adapter, spec.task_spec, list(rows), spec, sites, batch_size=batch_size,
                               progress=progress)]
    fold_of = [i for i, (lo, hi) in enumerate(bounds) for _ in range(lo, hi)]
    parts = info.attribute_folds(adapter, spec.task_spec, list(rows), spec, sites, fold_of, batch_size=batch_size,
                                 progress=progress)
    return [{k: np.asarray(v, dtype=np.float64) for k, v in part.items()} for part in parts]


def data_identity(task: TaskSpec, split: str) -> dict:
    """What identifies a split's data cheaply: the local file's name, size and mtime, or the hub id."""
    p = data_path(task, split)
    if p is not None:
        st = p.stat()
        return {"file": f"{task.name}/{p.name}", "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"hub": list(task.hub) if task.hub else None, "split": split}


def cache_key_parts(adapter, spec: AttributionSpec) -> dict:
    """Everything a result depends on: the cache key is the hash of this."""
    return {
        "kind": "scores",
        "format_version": FORMAT_VERSION,
        "version": __version__,
        "model": adapter.fingerprint(),
        "spec": spec.key_dict(),
        "data": data_identity(spec.task_spec, spec.resolved_split) if spec.info.needs_data else None,
    }


def lookup_cached(adapter, spec: AttributionSpec, *, cache_dir: str | Path | None = None) -> tuple[Scores, Path] | None:
    """The cached scores of ``spec`` and their path, or None; never computes, never writes."""
    from mtprune.cache import DiskCache

    check_supported(adapter, spec)
    cache = DiskCache(cache_dir, namespace="scores")
    key = cache.key(cache_key_parts(adapter, spec))
    path = cache.path(key)
    if not path.is_file():
        return None
    try:
        scores = Scores.load(path, expect_key=key)
    except MtpruneError:
        return None  # damaged: the next attribute_cached recomputes it
    return replace(scores, spec=spec), path


def attribute_cached(adapter, spec: AttributionSpec, *, progress: Progress | None = None, batch_size: int = 32,
                     cache_dir: str | Path | None = None) -> tuple[Scores, bool, Path]:
    """``(scores, cache_hit, path)``: the cached scores of ``spec``, computed and stored on a miss.

    Two processes asking for the same key compute it once (a file lock); a damaged entry is
    recomputed. Under torchrun every rank computes its share, rank 0 alone reads and writes.
    """
    from mtprune.cache import DiskCache

    if not _is_int(batch_size) or batch_size < 1:
        raise MtpruneError(f"the batch size must be at least 1, not {batch_size}")
    cache = DiskCache(cache_dir, namespace="scores")
    cache.ensure_writable()
    check_supported(adapter, spec)
    parts = cache_key_parts(adapter, spec)
    key = cache.key(parts)

    def reader(p):
        return Scores.load(p, expect_key=key)

    def writer(scores, tmp):
        Path(tmp).write_bytes(scores.to_bytes({"cache_key": key, "cache_key_parts": parts}))

    def compute():
        half = half_of(spec)  # a draw of n extends the cached draw of n / 2: nothing is read twice
        start = None
        if half is not None:
            start, _, _ = attribute_cached(adapter, replace(spec, examples=half), progress=progress,
                                           batch_size=batch_size, cache_dir=cache_dir)
        return attribute(adapter, spec, progress=progress, batch_size=batch_size, start=start)

    if not distributed.is_active():
        scores, hit, path = cache.get_or_compute(key, compute, reader, writer)
    else:
        scores, hit, path = _cached_distributed(adapter, spec, cache, key, compute, reader, writer)
    if hit:
        scores = replace(scores, spec=spec)
    return scores, hit, path


def _cached_distributed(adapter, spec, cache, key, compute, reader, writer):
    from contextlib import ExitStack

    main = distributed.is_main()
    path = cache.path(key)
    with ExitStack() as stack:
        scores = None
        if main:
            stack.enter_context(cache.lock(key))  # rank 0 holds the key's lock until written
            scores = cache.load(key, reader)
        hit = bool(distributed.broadcast_int(1 if scores is not None else 0))
        if hit:
            shapes, n_units = layout(select_sites(adapter.unit_sites(), spec.kinds))
            arrays = distributed.broadcast_arrays(scores.arrays if main else {}, shapes)
            if not main:
                scores = Scores(spec, adapter.fingerprint(), arrays, n_units, 0.0, {"from_rank": 0})
            return scores, True, path
        scores = compute()
        if main:
            cache.store(key, lambda tmp: writer(scores, tmp))
        return scores, False, path
