"""Attribution: for one model and one task, how much the task needs every prunable unit.

Units are the adapter's unit sites (FFN neurons and attention heads of every layer, encoder and
decoder apart). A result, :class:`Scores`, holds one ``[layers x units]`` float32 array per group
(``encoder.ffn``, ``encoder.heads``, ``decoder.ffn``, ``decoder.heads``), NaN where a layer has
fewer units, plus the spec and the model's fingerprint.

Methods share one signature and are registered by name (:data:`METHODS`, :func:`register_method`)::

    fn(adapter, task, rows, spec, sites, *, batch_size, progress) -> {site.name: float array [n_units]}

* ``ap`` - gradient x activation (the paper's attribution). Every unit's activation ``h`` is
  multiplied by a per-example *gate* of ones; the gradient of ``sum_b P_b(gold)`` with respect to
  ``gate[b, i]`` is ``sum over tokens of h_i * dP_b/dh_i``: example ``b``'s attribution of unit
  ``i``, for every unit of every layer, from ONE forward and backward pass per batch. ``signed``
  sums these over examples (Eq. 6 as written); ``abs`` (the default) sums their magnitudes.
  ``P(gold)`` is the softmax of a classifier head, or ``exp`` of the gold label words'
  log-probability for text-to-text and causal LMs.
* ``ig`` - Integrated Gradients over the gates, zero baseline, ``steps`` right-Riemann points
  ``alpha = k/steps``; steps run together as one repeated batch, up to a token budget per pass
  (:data:`IG_PASS_TOKENS`, which also bounds memory).
  All units of the selected kinds are scaled together: the path is the joint one, from every
  selected unit off to every unit on, so the scores of all units add up to ``P(dense) - P(all
  selected units off)`` (completeness); with one step (``alpha = 1``) IG is ``ap`` exactly.
* ``activation`` - mean ``|h|`` over examples and (non-padding) tokens; for a head, over its
  dimensions too.
* ``random`` - seeded uniform noise; ``magnitude`` - the L2 norm of a unit's weights (its input
  rows of the up/gate or q/k/v projections and its column of the output projection).
* ``random-label`` - the paper's control: ``ap`` towards a target that is not the task's: a
  random non-label vocabulary word for label-word models, a seeded random linear head over the
  same pooled output for classifiers (``adapter.control_logprob``). Not the task's other label:
  with a two-label softmax ``dP(other) = -dP(gold)``, so with ``abs`` it would equal ``ap``.
* ``--unsupervised`` (``ap``, ``ig``): no labels; the sum over all candidate labels of ``|A|``
  (Eq. 10). By the same identity it is exactly twice ``ap abs`` on a two-label classifier head:
  the same ranking.

Distributed runs (torchrun) form the batches first and give every rank every N-th batch; the
partial sums are all-reduced, so the scores do not depend on the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from mtprune import __version__, distributed
from mtprune.errors import MtpruneError
from mtprune.tasks import TaskSpec, data_path, get_task, load_rows, sample_rows
from mtprune.units import UnitSite, group_sites, select_sites, site_hooks

Progress = Callable[[int, int], None]  # (examples done, examples in all) on this process

VARIANTS = ("abs", "signed")
UNIT_CHOICES = ("all", "ffn", "heads")
FORMAT = "mtprune.scores"
FORMAT_VERSION = 1  # bump when the meaning of stored scores changes: old cache entries miss
# IG runs several of its steps in one pass (the batch repeated) up to this many tokens (rows x
# length) per pass. On a CPU larger passes gain nothing once a pass has a few hundred tokens (and
# lose to memory traffic), so steps are batched there for small example batches only; a GPU
# wants large passes.
IG_PASS_TOKENS = {"cpu": 1024, "cuda": 65536}


# ----------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class MethodInfo:
    name: str
    fn: Callable
    needs_data: bool = True  # reads examples
    needs_labels: bool = True  # reads their gold labels (unless --unsupervised)
    uses_variant: bool = True  # abs / signed apply
    uses_steps: bool = False  # --steps applies
    uses_seed: bool = True  # the seed changes the result (sampling, noise, control target)
    unsupervised: bool = False  # supports --unsupervised
    description: str = ""


METHODS: dict[str, Callable] = {}
METHOD_INFO: dict[str, MethodInfo] = {}


def register_method(name: str, *, needs_data: bool = True, needs_labels: bool = True,
                    uses_variant: bool = True, uses_steps: bool = False, uses_seed: bool = True,
                    unsupervised: bool = False, description: str = ""):
    """Register ``fn(adapter, task, rows, spec, sites, *, batch_size, progress)`` under ``name``.

    ``fn`` returns ``{site.name: scores [n_units]}`` over *all* examples: a method that reads
    examples gets the full list, takes its share with :func:`batches_for` and adds the ranks'
    partial sums with :func:`mtprune.distributed.all_reduce_sum`.
    """

    def deco(fn):
        METHODS[name] = fn
        METHOD_INFO[name] = MethodInfo(name, fn, needs_data, needs_labels and needs_data, uses_variant,
                                       uses_steps, uses_seed, unsupervised,
                                       description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


# ----------------------------------------------------------------------------------------------
# the spec


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class AttributionSpec:
    """What to attribute; validated on construction. ``to_dict()`` is part of the cache key."""

    task: str
    method: str = "ap"
    variant: str = "abs"
    samples: int = 256
    seed: int = 0
    split: str | None = None  # None: the task's train split (TaskSpec.train_split)
    steps: int = 20
    unsupervised: bool = False
    units: str = "all"  # ffn | heads | all

    def __post_init__(self):
        task = get_task(self.task)  # MtpruneError for an unknown task
        if self.method not in METHODS:
            raise MtpruneError(f"unknown attribution method {self.method!r}; methods: {', '.join(METHODS)}")
        if self.variant not in VARIANTS:
            raise MtpruneError(f"unknown variant {self.variant!r}; variants: {', '.join(VARIANTS)}")
        if not _is_int(self.samples) or self.samples < 1:
            raise MtpruneError(f"the number of examples (--samples) must be at least 1, not {self.samples}")
        if not _is_int(self.seed) or self.seed < 0:
            raise MtpruneError(f"the seed must be a non-negative integer, not {self.seed}")
        if not _is_int(self.steps) or self.steps < 1:
            raise MtpruneError(f"the number of integration steps (--steps) must be at least 1, not {self.steps}")
        if self.units not in UNIT_CHOICES:
            raise MtpruneError(f"units must be one of {', '.join(UNIT_CHOICES)}, not {self.units!r}")
        if self.split is not None and self.split not in task.splits:
            raise MtpruneError(f"task {task.name} has no split {self.split!r}; its splits: {', '.join(task.splits)}")
        if self.unsupervised and not METHOD_INFO[self.method].unsupervised:
            ok = [n for n, m in METHOD_INFO.items() if m.unsupervised]
            raise MtpruneError(f"--unsupervised applies to {', '.join(ok)}, not to {self.method}")
        for name in ("samples", "seed", "steps"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "unsupervised", bool(self.unsupervised))

    @property
    def task_spec(self) -> TaskSpec:
        return get_task(self.task)

    @property
    def resolved_split(self) -> str:
        return self.split or self.task_spec.train_split

    @property
    def info(self) -> MethodInfo:
        return METHOD_INFO[self.method]

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
            d["samples"] = d["split"] = None
            d["unsupervised"] = False
        return d

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

    @property
    def groups(self) -> list[str]:
        return list(self.arrays)

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
        return df

    def to_csv(self, path: str | Path) -> Path:
        from mtprune.cache import atomic_write

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
            "checksum": _checksum(self.arrays),
        }
        head.update(extra or {})
        return {"mtprune": json.dumps(head, default=str)}

    def to_bytes(self, extra: dict | None = None) -> bytes:
        from safetensors.numpy import save

        tensors = {g: np.ascontiguousarray(a, dtype=np.float32) for g, a in self.arrays.items()}
        return save(tensors, metadata=self._metadata(extra))

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write a safetensors file (one tensor per group, JSON metadata), atomically."""
        from mtprune.cache import atomic_write_bytes

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
        if set(n_units) != set(arrays):
            raise MtpruneError(f"{path} is damaged: its groups do not match")
        order = [g for g in n_units]  # keep the written order of groups
        return cls(_spec_unchecked(head["spec"]), head["model_fingerprint"], {g: arrays[g] for g in order},
                   n_units, float(head.get("seconds", 0.0)), dict(head.get("meta") or {}))


def layout(sites: Sequence[UnitSite]) -> tuple[dict[str, tuple[int, int]], dict[str, list[int]]]:
    """Per group the array shape ``(n_layers, max_units)`` and the units of every layer."""
    shapes, n_units = {}, {}
    for g, ss in group_sites(sites).items():
        n_layers = max(s.layer for s in ss) + 1
        nu = [0] * n_layers
        for s in ss:
            nu[s.layer] = s.n_units
        shapes[g] = (n_layers, max(nu) if nu else 0)
        n_units[g] = nu
    return shapes, n_units


def assemble(spec, fingerprint, sites, per_site: dict[str, np.ndarray], seconds=0.0, meta=None) -> Scores:
    shapes, n_units = layout(sites)
    arrays = {g: np.full(shape, np.nan, dtype=np.float32) for g, shape in shapes.items()}
    for s in sites:
        v = np.asarray(per_site[s.name], dtype=np.float64).reshape(-1)
        if v.shape[0] != s.n_units:
            raise RuntimeError(f"method {spec.method} gave {v.shape[0]} scores for {s.name} ({s.n_units} units)")
        arrays[s.group][s.layer, : s.n_units] = v
    return Scores(spec, fingerprint, arrays, n_units, float(seconds), dict(meta or {}))


# ----------------------------------------------------------------------------------------------
# rows and batches


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


def sample_for(spec: AttributionSpec) -> list[dict]:
    """The spec's examples: ``samples`` rows of its split, drawn with its seed, class-balanced.

    With ``--unsupervised`` the draw is uniform and reads no labels. Rows without a label (-1)
    are skipped for supervised methods.
    """
    task = spec.task_spec
    split = spec.resolved_split
    ds, labels = _load_split(task, split)
    if spec.unsupervised:
        return sample_rows(ds, spec.samples, spec.seed, balanced=False)
    n_labeled = sum(1 for v in labels if v >= 0)
    if n_labeled == 0:
        raise MtpruneError(f"{task.name}/{split} has no labeled rows: use --unsupervised or another split")
    if spec.samples > n_labeled:
        raise MtpruneError(f"asked for {spec.samples} examples but {task.name}/{split} has only {n_labeled} labeled rows")
    if n_labeled < len(labels):  # hub test splits: -1 marks unlabeled rows
        ds = ds.select([i for i, v in enumerate(labels) if v >= 0]).flatten_indices()
    return sample_rows(ds, spec.samples, spec.seed)


def _row_len(task: TaskSpec, row: dict) -> int:
    return sum(len(str(row.get(f, ""))) for f in task.fields)


def batches_for(task: TaskSpec, rows: Sequence[dict], batch_size: int) -> list[list[dict]]:
    """This process's batches: rows sorted by length, cut into batches, every N-th batch for
    rank r of N (all of them in one process)."""
    order = sorted(range(len(rows)), key=lambda i: (_row_len(task, rows[i]), i))
    batches = [[rows[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    return distributed.shard(batches)


def _batch_len(batch: dict) -> int:
    for v in batch.values():
        if isinstance(v, torch.Tensor):
            return int(v.shape[0])
        if isinstance(v, (list, tuple)):
            return len(v)
    raise RuntimeError("cannot tell the batch size of an encoded batch")


def _batch_tokens(batch: dict) -> int:
    """Tokens in an encoded batch, padding included (rows x length)."""
    ids = batch.get("input_ids")
    if isinstance(ids, torch.Tensor):
        return int(ids.numel())
    prompts = batch.get("prompt_ids")
    if isinstance(prompts, list) and prompts:
        return len(prompts) * max(len(p) for p in prompts)
    return _batch_len(batch)


def _repeat_batch(batch: dict, k: int) -> dict:
    """The batch ``k`` times over along the batch dimension: rows ``[b0..bB, b0..bB, ...]``."""
    if k == 1:
        return batch
    out = {}
    for name, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            out[name] = torch.cat([v] * k, dim=0)
        elif isinstance(v, list):
            out[name] = v * k
        else:
            out[name] = v
    return out


# ----------------------------------------------------------------------------------------------
# the gradient engine


def label_probs(adapter, task: TaskSpec, batch: dict) -> torch.Tensor:
    """[B, n_labels] probabilities of the task's labels (softmax, or exp of label-word log-probs)."""
    logits = adapter.logits(batch, task).float()
    return logits.exp() if adapter.logits_are_logprobs else logits.softmax(-1)


def _objective_gold(adapter, task, batch, spec):
    if "labels" not in batch:
        raise MtpruneError(f"the examples of {task.name} have no labels: use --unsupervised")
    p = label_probs(adapter, task, batch)
    return p.gather(1, batch["labels"].view(-1, 1).to(p.device))


def _objective_all(adapter, task, batch, spec):
    return label_probs(adapter, task, batch)


def _objective_control(adapter, task, batch, spec):
    return adapter.control_logprob(batch, task, spec.seed).float().exp().view(-1, 1)


def _gate_grads(adapter, task, batch, spec, sites, objective, alphas: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """For each target of ``objective``: ``{site: d(sum_rows target)/d gate  [rows, n_units]}``
    with every gate of row r set to ``alphas[r]``. One forward; one backward per target."""
    dev = adapter.device
    rows = _batch_len(batch)
    gates = {
        s.name: alphas.to(device=dev, dtype=torch.float32).view(-1, 1).expand(rows, s.n_units).clone().requires_grad_(True)
        for s in sites
    }

    def fn(site, x):
        g = gates[site.name]
        if x.dim() < 3 or x.shape[0] != rows:
            raise RuntimeError(f"unexpected activation shape {tuple(x.shape)} at {site.name} (batch {rows})")
        return x * g.view(rows, *([1] * (x.dim() - 3)), site.n_units, 1).to(x.dtype)

    names = list(gates)
    with torch.inference_mode(False), torch.enable_grad(), site_hooks(adapter.model, sites, fn):
        out = objective(adapter, task, batch, spec)  # [rows, K]
        k = out.shape[1]
        res = []
        for t in range(k):
            grads = torch.autograd.grad(out[:, t].sum(), [gates[n] for n in names],
                                        retain_graph=t < k - 1, allow_unused=True)
            res.append({n: (g if g is not None else torch.zeros_like(gates[n])).detach()
                        for n, g in zip(names, grads)})
    return res


def gradient_scores(adapter, task, rows, spec, sites, *, objective, alphas: Sequence[float],
                    batch_size: int = 32, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Gradient x activation (``alphas == [1]``) or IG (``alphas = k/m``) summed over examples.

    Per example the attribution is the mean over ``alphas`` of the gate gradient. ``abs`` sums
    its magnitude over examples, ``signed`` the value. With several targets (``--unsupervised``)
    the targets' scores are added: ``sum_c sum_b |A_bc|`` (abs) or ``sum_c |sum_b A_bc|``
    (signed, Eq. 10 as written).
    """
    alphas_t = torch.tensor(list(alphas), dtype=torch.float32)
    m = len(alphas_t)
    acc: dict[str, torch.Tensor] = {}
    mine = batches_for(task, rows, batch_size)
    total = sum(len(b) for b in mine)
    done = 0
    for chunk_rows in mine:
        batch = adapter.encode(chunk_rows, task)
        b = _batch_len(batch)
        budget = IG_PASS_TOKENS.get(adapter.device.type, IG_PASS_TOKENS["cpu"])
        per_pass = max(1, min(m, budget // max(1, _batch_tokens(batch)))) if m > 1 else 1
        pe: list[dict[str, torch.Tensor]] | None = None  # per target, per site: [b, n] sums over alphas
        for s0 in range(0, m, per_pass):
            a = alphas_t[s0 : s0 + per_pass]
            k = len(a)
            rep = _repeat_batch(batch, k)
            grads = _gate_grads(adapter, task, rep, spec, sites, objective, a.repeat_interleave(b))
            summed = [{n: g.view(k, b, -1).sum(0).double() for n, g in gt.items()} for gt in grads]
            if pe is None:
                pe = summed
            else:
                for t, gt in enumerate(summed):
                    for n in gt:
                        pe[t][n] += gt[n]
        for t, gt in enumerate(pe):
            for n, g in gt.items():
                a_b = g / m  # per-example attribution [b, n]
                contrib = a_b.abs().sum(0) if spec.variant == "abs" else a_b.sum(0)
                key = f"{n}|{t}"
                acc[key] = acc[key] + contrib.cpu() if key in acc else contrib.cpu()
        done += len(chunk_rows)
        if progress:
            progress(done, total)
    if not acc:  # this rank had no batch: contribute zeros
        n_targets = task.num_labels if spec.unsupervised else 1
        acc = {f"{s.name}|{t}": torch.zeros(s.n_units, dtype=torch.float64) for s in sites for t in range(n_targets)}
    acc = distributed.all_reduce_sum(acc)
    out = {}
    for s in sites:
        per_target = [acc[k] for k in sorted((k for k in acc if k.split("|")[0] == s.name), key=lambda k: int(k.split("|")[1]))]
        stacked = torch.stack(per_target)  # [targets, n]
        if spec.variant == "signed" and len(per_target) > 1:
            stacked = stacked.abs()
        out[s.name] = stacked.sum(0).numpy()
    return out


# ----------------------------------------------------------------------------------------------
# the methods


@register_method("ap", uses_steps=False, unsupervised=True,
                 description="gradient x activation, all layers in one pass (default)")
def ap(adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
    """Gradient x activation towards P(gold) (or every label with --unsupervised)."""
    objective = _objective_all if spec.unsupervised else _objective_gold
    return gradient_scores(adapter, task, rows, spec, sites, objective=objective, alphas=[1.0],
                           batch_size=batch_size, progress=progress)


@register_method("ig", uses_steps=True, unsupervised=True,
                 description="Integrated Gradients over the unit activations (zero baseline)")
def ig(adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
    """Integrated Gradients over the gates, zero baseline, ``spec.steps`` points k/steps."""
    objective = _objective_all if spec.unsupervised else _objective_gold
    alphas = [(k + 1) / spec.steps for k in range(spec.steps)]
    return gradient_scores(adapter, task, rows, spec, sites, objective=objective, alphas=alphas,
                           batch_size=batch_size, progress=progress)


@register_method("random-label", needs_labels=False,
                 description="control: gradient x activation towards a target that is not the task's")
def random_label(adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
    """Gradient x activation towards a random non-label word / a seeded random head."""
    return gradient_scores(adapter, task, rows, spec, sites, objective=_objective_control, alphas=[1.0],
                           batch_size=batch_size, progress=progress)


@contextmanager
def _token_masks(adapter, sites):
    """Capture the attention mask each stack is called with: ``masks[stack]`` ([B, T] or None)."""
    model = adapter.model
    masks: dict[str, torch.Tensor | None] = {}
    stacks = {s.stack for s in sites}
    targets = {}
    if getattr(model.config, "is_encoder_decoder", False):
        if "encoder" in stacks:
            targets["encoder"] = model.get_encoder()
        if "decoder" in stacks:
            targets["decoder"] = model.get_decoder()
    else:
        targets = {st: model for st in stacks}
    handles = []

    def hook_for(stack):
        def pre(mod, args, kwargs):
            masks[stack] = kwargs.get("attention_mask")
        return pre

    try:
        for st, mod in targets.items():
            handles.append(mod.register_forward_pre_hook(hook_for(st), with_kwargs=True))
        yield masks
    finally:
        for h in handles:
            h.remove()


@register_method("activation", needs_labels=False, uses_variant=False,
                 description="mean |activation| over examples and tokens")
def activation(adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
    """Mean |h| over examples and non-padding tokens (and a head's dimensions)."""
    sums = {s.name: torch.zeros(s.n_units, dtype=torch.float64) for s in sites}
    counts = {s.name: torch.zeros(1, dtype=torch.float64) for s in sites}

    with _token_masks(adapter, sites) as masks:
        def fn(site, x):
            a = x.detach().abs().float().mean(-1)  # [..., n_units]
            m = masks.get(site.stack)
            if m is not None and a.dim() == 3 and tuple(m.shape) == tuple(a.shape[:2]):
                w = m.to(device=a.device, dtype=a.dtype)
                sums[site.name] += (a * w.unsqueeze(-1)).sum((0, 1)).double().cpu()
                counts[site.name] += float(w.sum())
            else:
                flat = a.reshape(-1, site.n_units)
                sums[site.name] += flat.sum(0).double().cpu()
                counts[site.name] += flat.shape[0]
            return None

        mine = batches_for(task, rows, batch_size)
        total = sum(len(b) for b in mine)
        done = 0
        with torch.no_grad(), site_hooks(adapter.model, sites, fn):
            for chunk in mine:
                adapter.logits(adapter.encode(chunk, task), task)
                done += len(chunk)
                if progress:
                    progress(done, total)
    red = distributed.all_reduce_sum({**{f"s|{k}": v for k, v in sums.items()},
                                      **{f"c|{k}": v for k, v in counts.items()}})
    return {s.name: (red[f"s|{s.name}"] / red[f"c|{s.name}"].clamp(min=1)).numpy() for s in sites}


@register_method("random", needs_data=False, uses_variant=False, description="seeded random scores")
def random_scores(adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
    """Uniform noise in [0, 1), seeded per (seed, site)."""
    out = {}
    for s in sites:
        rng = np.random.default_rng([spec.seed, zlib.crc32(s.name.encode())])
        out[s.name] = rng.random(s.n_units)
    return out


def _rows_sq(module: nn.Module) -> torch.Tensor:
    """Squared norm of each output row (Linear [out, in]; Conv1D stores [in, out])."""
    w = module.weight.detach().float()
    return w.pow(2).sum(1) if isinstance(module, nn.Linear) else w.pow(2).sum(0)


def _cols_sq(module: nn.Module) -> torch.Tensor:
    """Squared norm of each input column."""
    w = module.weight.detach().float()
    return w.pow(2).sum(0) if isinstance(module, nn.Linear) else w.pow(2).sum(1)


def unit_weight_norms(model: nn.Module, site: UnitSite) -> torch.Tensor:
    """L2 norm of each unit's weights: its ``width`` input columns of the out projection and its
    output rows of every in projection (grouped key/value heads count for each query head)."""
    n, w = site.n_units, site.width
    total = _cols_sq(model.get_submodule(site.out_proj)).view(n, w).sum(1)
    for ip in site.in_proj:
        rows = _rows_sq(model.get_submodule(ip.path))
        for chunk in rows.view(ip.chunks, -1):
            if chunk.numel() % w:
                continue
            per = chunk.view(-1, w).sum(1)
            if per.numel() == n:
                total = total + per
            elif per.numel() and n % per.numel() == 0:  # grouped k/v shared by n/kv query heads
                total = total + per.repeat_interleave(n // per.numel())
    return total.sqrt()


@register_method("magnitude", needs_data=False, uses_variant=False, uses_seed=False,
                 description="L2 norm of each unit's weights")
def magnitude(adapter, task, rows, spec, sites, *, batch_size=32, progress=None):
    """L2 norm of each unit's weights (in rows and out columns)."""
    return {s.name: unit_weight_norms(adapter.model, s).double().cpu().numpy() for s in sites}


# ----------------------------------------------------------------------------------------------
# the per-layer loop: the reference the fused pass is checked and timed against


def ap_per_layer(adapter, spec: AttributionSpec, rows: Sequence[dict], *, batch_size: int = 32,
                 by: str = "site") -> Scores:
    """``ap`` computed one pass per layer (``by="layer"``: both kinds of a layer per pass) or per
    site (``by="site"``: one layer's FFN neurons or heads per pass), as the knowledge-neurons code
    does. Same examples and batches as :func:`attribute`; for tests and the benchmark."""
    task = spec.task_spec
    sites = select_sites(adapter.unit_sites(), spec.units)
    objective = _objective_all if spec.unsupervised else _objective_gold
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
        per_site.update(gradient_scores(adapter, task, list(rows), spec, group, objective=objective,
                                        alphas=[1.0], batch_size=batch_size))
    return assemble(spec, adapter.fingerprint(), sites, per_site, time.perf_counter() - t0,
                    {"n_examples": len(rows), "passes": len(passes)})


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
    sites = select_sites(adapter.unit_sites(), spec.units)
    if not sites:
        raise MtpruneError(f"model {adapter.display_name} has no {spec.units} units to attribute")
    return sites


def attribute(adapter, spec: AttributionSpec, *, progress: Progress | None = None, batch_size: int = 32,
              rows: Sequence[dict] | None = None) -> Scores:
    """Score every unit of the spec's kinds for its task (no cache; see :func:`attribute_cached`).

    ``rows`` replaces the spec's sampled examples (all of them are used).
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
    try:
        per_site = METHODS[spec.method](adapter, task, rows, spec, sites, batch_size=batch_size, progress=progress)
    finally:
        adapter.model.train(was_training)
    t_compute = time.perf_counter() - t1
    label_counts: dict[int, int] = {}
    for r in rows:
        if _is_int(r.get("label")):
            label_counts[int(r["label"])] = label_counts.get(int(r["label"]), 0) + 1
    meta = {
        "n_examples": len(rows),
        "label_counts": {str(k): v for k, v in sorted(label_counts.items())},
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
    }
    return assemble(spec, adapter.fingerprint(), sites, per_site, time.perf_counter() - t0, meta)


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
        return attribute(adapter, spec, progress=progress, batch_size=batch_size)

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
            shapes, n_units = layout(select_sites(adapter.unit_sites(), spec.units))
            arrays = distributed.broadcast_arrays(scores.arrays if main else {}, shapes)
            if not main:
                scores = Scores(spec, adapter.fingerprint(), arrays, n_units, 0.0, {"from_rank": 0})
            return scores, True, path
        scores = compute()
        if main:
            cache.store(key, lambda tmp: writer(scores, tmp))
        return scores, False, path
