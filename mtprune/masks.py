"""Masks: which units of a model to keep, chosen from attribution scores.

A :class:`Mask` holds, per group (``encoder.ffn``, ``encoder.heads``, ``decoder.ffn``,
``decoder.heads``), a bool array ``[n_layers, max_units]`` in the layout of
:class:`mtprune.attribution.Scores`: ``keep[g][l, u]`` is True when unit ``u`` of layer ``l`` stays.
Positions past a layer's ``n_units`` are False.

:func:`mask_from_scores` keeps the top ``1 - sparsity`` of the units

* of every layer (``scope="layer"``, the paper's: the same sparsity in every layer), or
* of the whole model (``scope="global"``), pooled per group: FFN neurons compete with FFN neurons
  of the same stack, heads with heads; scores of different kinds are never compared.

``sparsity`` is one share for the chosen kinds, or one per kind (``{"ffn": 0.5, "heads": 0.25}``).
The number of pruned units is ``sparsity * n`` rounded half up (``n`` = the layer's units, or all
units of the group for a global mask). Ties are broken by position: the lower (layer, unit) index
is kept first. A NaN score inside a layer counts as the lowest score. At sparsity 1 every unit of
the selected kind goes; a layer may keep zero FFN neurons or zero heads (its output is then the out
projection's bias, in soft and hard pruning alike).

Groups present in the scores but not selected (``kinds``/``stack``) are kept whole. On a model
with grouped-query attention ``decoder.kv`` holds its key/value groups and ``decoder.heads``
its query heads, a view of the groups: ``kinds="all"`` prunes neurons and groups, and a mask
always prunes the query heads of the groups it prunes.

A mask saves as JSON (kept unit indices per layer, readable) or safetensors (bool arrays, the
rest as JSON metadata), chosen by the file's suffix, and loads back equal. Files that name a kind
by its old spelling (``decoder.groups``, ``kinds: groups``) load as ``decoder.kv`` / ``kv``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    import torch

import numpy as np

from mtprune import io
from mtprune.errors import MtpruneError
from mtprune.text import plural
from mtprune.units import (KIND_CHOICES, KIND_LABELS, KINDS, STACK_CHOICES, UnitSite, canonical_kinds, canonical_name,
                           chosen_groups, group_parts, view_groups)

SCOPES = ("layer", "global", "budget")  # budget: one cost budget over kinds and layers (mtprune.costs)
MASK_FORMAT = "mtprune mask v1"
MASK_SUFFIXES = (".json", ".safetensors")


def check_sparsity(p) -> float:
    """``p`` as a float in [0, 1], or a one-line :class:`MtpruneError`."""
    try:
        v = float(p)
    except (TypeError, ValueError):
        raise MtpruneError(f"sparsity must be a number in [0, 1], not {p!r}") from None
    if isinstance(p, bool) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise MtpruneError(f"sparsity must be in [0, 1], not {p!r}")
    return v


def n_pruned(p: float, n: int) -> int:
    """How many of ``n`` units a sparsity ``p`` prunes: ``p * n`` rounded half up."""
    return min(n, max(0, int(math.floor(p * n + 0.5 + 1e-9))))


def _words(group: str) -> str:
    """``encoder.ffn`` -> ``encoder FFN neurons``: a group as error messages name it."""
    stack, _, kind = str(group).partition(".")
    return f"{stack} {KIND_LABELS[kind]}" if kind in KIND_LABELS else str(group)


def _group_parts(group: str) -> tuple[str, str]:
    try:
        return group_parts(group)
    except ValueError as exc:
        raise MtpruneError(str(exc)) from None


def check_choices(scope: str = "layer", kinds: str = "all", stack: str = "all") -> None:
    """One clear line for a scope, kind filter or stack filter that is not one of the choices."""
    if scope not in SCOPES:
        raise MtpruneError(f"scope must be layer or global, not {scope!r}")
    if canonical_kinds(kinds) not in KIND_CHOICES:
        raise MtpruneError(f"kinds must be one of {', '.join(KIND_CHOICES)}, not {kinds!r}")
    if stack not in STACK_CHOICES:
        raise MtpruneError(f"stack must be encoder, decoder or all, not {stack!r}")


@dataclass(frozen=True, eq=False)
class Mask:
    """Which units to keep. ``keep[group]``: bool ``[n_layers, max_units]``; ``n_units[group]``:
    the units per layer of the model the mask was made for."""

    keep: dict
    n_units: dict
    sparsity: float
    scope: str = "layer"
    kinds: str = "ffn"
    stack: str = "all"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.keep, Mapping) or not isinstance(self.n_units, Mapping):
            raise MtpruneError("a mask needs keep and n_units mappings")
        # old spellings (decoder.groups, kinds "groups") read as today's (decoder.kv, "kv")
        object.__setattr__(self, "keep", {canonical_name(g): v for g, v in self.keep.items()})
        object.__setattr__(self, "n_units", {canonical_name(g): v for g, v in self.n_units.items()})
        object.__setattr__(self, "kinds", canonical_kinds(self.kinds))
        if set(self.keep) != set(self.n_units):
            raise MtpruneError(
                f"the mask lists kept units for {', '.join(sorted(self.keep)) or 'no group'} but unit counts for "
                f"{', '.join(sorted(self.n_units)) or 'no group'}: every group needs both"
            )
        if not self.keep:
            raise MtpruneError("a mask needs at least one unit group")
        check_choices(self.scope, self.kinds, self.stack)
        object.__setattr__(self, "sparsity", check_sparsity(self.sparsity))
        keep, n_units = {}, {}
        for g in sorted(self.keep):
            _group_parts(g)
            n = [int(x) for x in self.n_units[g]]
            if any(x < 0 for x in n):
                raise MtpruneError(f"the mask says a layer has a negative number of {_words(g)} ({_short(n)}); "
                                   "every layer has 0 or more")
            k = np.asarray(self.keep[g])
            if k.dtype != np.bool_:
                if not np.isin(k, (0, 1)).all():
                    raise MtpruneError(f"the mask's kept {_words(g)} must be true/false (or 1/0) values, one per unit")
                k = k.astype(bool)
            width = max(n, default=0)
            if k.ndim != 2 or k.shape != (len(n), width):
                raise MtpruneError(
                    f"the mask's kept {_words(g)} form a table of shape {tuple(k.shape)}, but its unit counts "
                    f"({len(n)} layers, at most {width} units in a layer) need one of shape ({len(n)}, {width})"
                )
            for layer, c in enumerate(n):
                if k[layer, c:].any():
                    raise MtpruneError(f"the mask keeps {_words(g)} of layer {layer} past its {c} units: "
                                       f"that layer has only units 0 to {c - 1}")
            keep[g], n_units[g] = k.copy(), n
        _prune_views(keep, n_units)
        for k in keep.values():
            k.setflags(write=False)
        object.__setattr__(self, "keep", keep)
        object.__setattr__(self, "n_units", n_units)
        object.__setattr__(self, "meta", dict(self.meta or {}))

    # -- facts --------------------------------------------------------------------------------------
    @property
    def groups(self) -> list[str]:
        return list(self.keep)

    def kinds_present(self) -> list[str]:
        """The kinds the mask has units of (in the order of :data:`mtprune.units.KINDS`)."""
        have = {group_parts(g)[1] for g in self.groups}
        return [k for k in KINDS if k in have]

    def digest(self) -> str:
        """A hash of which units the mask keeps: equal masks (whatever their metadata), equal digests."""
        return io.stable_hash({g: [list(k.shape), np.packbits(k).tobytes().hex()] for g, k in self.keep.items()}, 24)

    def kept(self, group: str | None = None) -> int:
        """Units kept (in one group, or in all)."""
        gs = [group] if group else self.groups
        return int(sum(self.keep[g].sum() for g in gs))

    def total(self, group: str | None = None) -> int:
        gs = [group] if group else self.groups
        return int(sum(sum(self.n_units[g]) for g in gs))

    def kept_per_layer(self, group: str) -> list[int]:
        return [int(x) for x in self.keep[group].sum(1)]

    def actual_sparsity(self, group: str | None = None) -> float:
        """Fraction of units pruned (over the selected groups when ``group`` is None)."""
        gs = [group] if group else self.selected_groups()
        tot = sum(self.total(g) for g in gs)
        return 1.0 - sum(self.kept(g) for g in gs) / tot if tot else 0.0

    def selected_groups(self) -> list[str]:
        return chosen_groups(self.groups, self.kinds, self.stack)

    def keeps_all(self) -> bool:
        return all(self.kept(g) == self.total(g) for g in self.groups)

    def summary(self) -> dict:
        return {
            "sparsity": self.sparsity,
            "scope": self.scope,
            "kinds": self.kinds,
            "stack": self.stack,
            "groups": {
                g: {"kept": self.kept_per_layer(g), "n_units": list(self.n_units[g])} for g in self.groups
            },
            "actual_sparsity": round(self.actual_sparsity(), 6),
        }

    def __eq__(self, other):
        if not isinstance(other, Mask):
            return NotImplemented
        return (
            self.to_header() == other.to_header()
            and self.groups == other.groups
            and all(np.array_equal(self.keep[g], other.keep[g]) for g in self.groups)
        )

    __hash__ = object.__hash__

    # -- applying -----------------------------------------------------------------------------------
    def check_sites(self, sites: Iterable[UnitSite]) -> None:
        """A one-line error unless every group of the mask has the sites' per-layer unit counts."""
        by_group: dict[str, dict[int, int]] = {}
        for s in sites:
            by_group.setdefault(s.group, {})[s.layer] = s.n_units
        for g in self.groups:
            have = by_group.get(g)
            if have is None:
                raise MtpruneError(
                    f"the mask was made for another model: it has {g} units, this model has none "
                    f"(its groups: {', '.join(sorted(by_group)) or 'none'})"
                )
            model_n = [have.get(i, -1) for i in range(max(have) + 1)]
            if model_n != self.n_units[g]:
                raise MtpruneError(
                    f"the mask was made for another model: {g} units per layer are "
                    f"{_short(self.n_units[g])} in the mask, {_short(model_n)} in this model"
                )

    def check_matches(self, adapter) -> None:
        """A one-line :class:`MtpruneError` when the adapter's units do not have the mask's shape."""
        self.check_sites(adapter.unit_sites())

    def keep_for_sites(self, sites: Iterable[UnitSite]) -> dict[str, torch.Tensor]:
        """``{site.name: bool tensor [n_units]}`` for the sites of the mask's groups."""
        import torch

        sites = list(sites)
        self.check_sites(sites)
        out = {}
        for s in sites:
            if s.group in self.keep:
                out[s.name] = torch.from_numpy(self.keep[s.group][s.layer, : s.n_units].copy())
        return out

    # -- serialising --------------------------------------------------------------------------------
    def to_header(self) -> dict:
        """Everything but the keep arrays, JSON-ready."""
        return {
            "format": MASK_FORMAT,
            "sparsity": self.sparsity,
            "scope": self.scope,
            "kinds": self.kinds,
            "stack": self.stack,
            "n_units": {g: list(v) for g, v in self.n_units.items()},
            "meta": _jsonable(self.meta),
        }

    def to_dict(self) -> dict:
        d = self.to_header()
        d["keep"] = {g: [np.flatnonzero(row).tolist() for row in k] for g, k in self.keep.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Mask":
        if not isinstance(d, dict) or d.get("format") != MASK_FORMAT:
            raise MtpruneError(f"not an mtprune mask (expected format {MASK_FORMAT!r})")
        try:
            n_units = {g: [int(x) for x in v] for g, v in d["n_units"].items()}
            keep = {}
            for g, rows in d["keep"].items():
                if g not in n_units:
                    raise MtpruneError(f"the mask lists kept {_words(g)} but gives no unit counts for them "
                                       f"(n_units has {', '.join(sorted(n_units)) or 'no group'})")
                n = n_units[g]
                k = np.zeros((len(n), max(n, default=0)), dtype=bool)
                if len(rows) != len(n):
                    raise MtpruneError(
                        f"the mask lists kept {_words(g)} for {plural(len(rows), 'layer')} but gives unit counts "
                        f"for {len(n)}: it needs one list of kept units per layer, {plural(len(n), 'list')} in all")
                for layer, idx in enumerate(rows):
                    idx = np.asarray(idx, dtype=np.int64)
                    if idx.size and (idx.min() < 0 or idx.max() >= n[layer]):
                        bad = int(idx.min() if idx.min() < 0 else idx.max())
                        raise MtpruneError(
                            f"the mask keeps unit {bad} of layer {layer} of its {_words(g)}, which is out of range: "
                            f"that layer has {plural(n[layer], 'unit')}, numbered 0 to {n[layer] - 1}")
                    k[layer, idx] = True
                keep[g] = k
            return cls(keep=keep, n_units=n_units, sparsity=d["sparsity"], scope=d.get("scope", "layer"),
                       kinds=_kinds_of(d), stack=d.get("stack", "all"), meta=d.get("meta") or {})
        except MtpruneError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MtpruneError(_malformed(exc)) from None


_EXPECTED = ("a mask holds sparsity, n_units (the units of every layer, per group) and keep (the kept units of "
             "every layer, per group)")


def _malformed(exc: Exception) -> str:
    """A plain sentence for a mask file whose contents do not have a mask's layout."""
    if isinstance(exc, KeyError):
        return f"the mask has no {exc.args[0]!r} entry: {_EXPECTED}"
    return f"the mask's entries are not laid out as a mask's ({str(exc)[:80] or type(exc).__name__}): {_EXPECTED}"


def _prune_views(keep: dict, n_units: dict) -> None:
    """Query heads inside a pruned key/value group are pruned with it (in place): a mask says what
    the model loses, and a group takes its heads along."""
    for view in view_groups(keep):
        owner = view.rsplit(".", 1)[0] + ".kv"
        if len(n_units[view]) != len(n_units[owner]):
            raise MtpruneError(f"the mask has {plural(len(n_units[view]), 'layer')} of {_words(view)} but "
                               f"{len(n_units[owner])} of {_words(owner)}: both need one entry per layer")
        for layer, (nh, ng) in enumerate(zip(n_units[view], n_units[owner])):
            if ng == 0:
                continue
            if nh % ng:
                raise MtpruneError(f"the mask gives layer {layer} {nh} query heads and {ng} key/value groups, but "
                                   "the heads must split evenly over the groups")
            keep[view][layer, :nh] &= np.repeat(keep[owner][layer, :ng], nh // ng)


def _short(v: list[int]) -> str:
    s = str(list(v))
    return s if len(s) <= 60 else s[:57] + "...]"


def _is_local_path(text: str) -> bool:
    """An absolute path of some machine (``/home/me/models/x``, ``C:\\models\\x``, ``~/x``, ``file:///x``)."""
    import re

    return bool(re.match(r"^(/|~[/\\]|[A-Za-z]:[/\\]|\\\\|file://)", text))


def portable(value):
    """``value`` (JSON-like: dicts, lists, strings...) with every absolute path replaced by its last
    part, the name of the file or directory (``/home/me/models/minilm-l6-mt6`` -> ``minilm-l6-mt6``):
    what a file that leaves this machine (an export, a model card) may say of where things came
    from. Relative names, hub ids (``org/model``) and other values are kept."""
    from pathlib import PureWindowsPath

    if isinstance(value, Mapping):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if isinstance(value, str) and _is_local_path(value):
        text = value[len("file://"):] if value.startswith("file://") else value
        return PureWindowsPath(text.rstrip("/\\")).name or text
    return value


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_default))


def _default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def _kinds_of(header: dict) -> str:
    """The kind filter of a stored mask (files before the ``kinds`` key called it ``units``)."""
    return header.get("kinds", header.get("units", "ffn"))


def scores_parts(scores) -> tuple[dict, dict, dict]:
    """(arrays, n_units, meta) from a Scores-like object or a mapping with those keys."""
    if isinstance(scores, Mapping) and "arrays" in scores:
        arrays, n_units = scores["arrays"], scores.get("n_units")
        spec, fp = scores.get("spec"), scores.get("model_fingerprint")
    else:
        arrays = getattr(scores, "arrays", None)
        n_units = getattr(scores, "n_units", None)
        spec, fp = getattr(scores, "spec", None), getattr(scores, "model_fingerprint", None)
    if not isinstance(arrays, Mapping) or not arrays:
        raise MtpruneError("scores need a non-empty 'arrays' mapping of group -> [layers, units]")
    arrays = {canonical_name(g): np.asarray(a, dtype=np.float64) for g, a in arrays.items()}
    if n_units is None:  # infer from NaN padding
        n_units = {g: [int(np.sum(~np.isnan(row))) for row in a] for g, a in arrays.items()}
    meta = {}
    if spec is not None:
        meta["scores_spec"] = spec.to_dict() if hasattr(spec, "to_dict") else spec
        task = meta["scores_spec"].get("task") if isinstance(meta["scores_spec"], dict) else None
        if task:
            meta["task"] = task
    if fp:
        meta["model_fingerprint"] = str(fp)
    return arrays, {canonical_name(g): [int(x) for x in v] for g, v in n_units.items()}, meta


def rank_order(values: np.ndarray) -> np.ndarray:
    """Indices of ``values`` best first: higher score first, NaN last, ties by lower index."""
    v = np.where(np.isnan(values), -np.inf, values)
    return np.lexsort((np.arange(len(v)), -v, np.isnan(values)))


def mask_from_scores(scores, sparsity, scope: str = "layer", kinds: str = "ffn", stack: str = "all",
                     meta: dict | None = None) -> Mask:
    """Keep the top ``1 - sparsity`` units of every layer (``layer``) or of each group (``global``).

    ``scores`` is a :class:`mtprune.attribution.Scores` or anything with ``arrays`` and ``n_units``
    (an object or a mapping). ``kinds`` picks FFN neurons, heads or both; ``stack`` the encoder,
    the decoder or both; other groups are kept whole. ``sparsity`` may also be one share per kind
    (``{"ffn": 0.5, "heads": 0.25}``): then the kinds named are pruned, each at its own share, and
    ``kinds`` is ignored; the mask records the shares in ``meta["sparsity_per_kind"]``.
    """
    if isinstance(sparsity, Mapping):
        return _per_kind_mask(scores, sparsity, scope, stack, meta)
    p = check_sparsity(sparsity)
    kinds = canonical_kinds(kinds)
    if scope == "budget":
        raise MtpruneError("a budget mask comes from mtprune.costs.search_mask, not from a sparsity")
    check_choices(scope, kinds, stack)
    arrays, n_units, smeta = scores_parts(scores)
    if set(arrays) != set(n_units):
        raise MtpruneError(f"scores groups differ: arrays {sorted(arrays)}, n_units {sorted(n_units)}")
    chosen = chosen_groups(arrays, kinds, stack)
    if not chosen:
        raise MtpruneError(
            f"the scores have no {kinds if kinds != 'all' else ''} units"
            f"{'' if stack == 'all' else ' in the ' + stack} to prune (their groups: {', '.join(sorted(arrays))})"
        )
    keep = {}
    for g, a in arrays.items():
        n = n_units[g]
        width = max(n, default=0)
        if a.ndim != 2 or a.shape[0] != len(n) or a.shape[1] < width:
            raise MtpruneError(f"scores group {g}: array shape {a.shape} does not fit unit counts {_short(n)}")
        k = np.zeros((len(n), width), dtype=bool)
        if g not in chosen:
            for layer, c in enumerate(n):
                k[layer, :c] = True
        elif scope == "layer":
            for layer, c in enumerate(n):
                k[layer, rank_order(a[layer, :c])[: c - n_pruned(p, c)]] = True
        else:
            flat_l = np.concatenate([np.full(c, layer) for layer, c in enumerate(n)]).astype(int) if n else np.zeros(0, int)
            flat_u = np.concatenate([np.arange(c) for c in n]).astype(int) if n else np.zeros(0, int)
            vals = a[flat_l, flat_u] if flat_l.size else np.zeros(0)
            total = int(sum(n))
            best = rank_order(vals)[: total - n_pruned(p, total)]  # the flat order is (layer, unit): ties keep earlier first
            k[flat_l[best], flat_u[best]] = True
        keep[g] = k
    return Mask(keep=keep, n_units=n_units, sparsity=p, scope=scope, kinds=kinds, stack=stack,
                meta={**smeta, **(meta or {})})


def _per_kind_mask(scores, sparsity: Mapping, scope: str, stack: str, meta: dict | None) -> Mask:
    arrays, _, _ = scores_parts(scores)
    have = {group_parts(g)[1] for g in arrays}
    sparsity = {canonical_kinds(k): v for k, v in sparsity.items()}
    unknown = [k for k in sparsity if k not in KINDS]
    if unknown:
        raise MtpruneError(f"unknown unit kind {unknown[0]!r}; kinds: {', '.join(KINDS)}")
    per = {k: check_sparsity(sparsity[k]) for k in KINDS if k in sparsity and k in have}
    if not per:
        raise MtpruneError(f"no unit kind to prune: the scores have none of {', '.join(sparsity)}")
    extra = {**(meta or {}), "sparsity_per_kind": per}
    parts = {k: mask_from_scores(scores, p, scope=scope, kinds=k, stack=stack, meta=extra) for k, p in per.items()}
    if len(parts) == 1:
        (m,) = parts.values()
        return m
    first = next(iter(parts.values()))
    keep = {g: parts[group_parts(g)[1]].keep[g] if group_parts(g)[1] in parts else first.keep[g] for g in first.groups}
    return Mask(keep=keep, n_units=first.n_units, sparsity=per.get("ffn", next(iter(per.values()))), scope=scope,
                kinds="all", stack=stack, meta=first.meta)


def kinds_in(scores_or_mask) -> list[str]:
    """The kinds (``ffn``, ``heads``, ``kv``) scores or a mask have units of, FFN first."""
    if isinstance(scores_or_mask, Mask):
        groups = scores_or_mask.groups
    else:
        groups = scores_parts(scores_or_mask)[0]
    have = {group_parts(g)[1] for g in groups}
    return [k for k in KINDS if k in have]


# ----------------------------------------------------------------------------------------------
# files


def _suffix(path: Path) -> str:
    s = path.suffix.lower()
    if s not in MASK_SUFFIXES:
        raise MtpruneError(f"a mask file must end in .json or .safetensors, not {path.name!r}")
    return s


def mask_to_bytes(mask: Mask, fmt: str = "json") -> bytes:
    """The bytes of a mask file: ``json`` (kept indices per layer) or ``safetensors`` (bool arrays)."""
    if fmt == "json":
        return json.dumps(mask.to_dict(), indent=1).encode()
    if fmt != "safetensors":
        raise MtpruneError(f"a mask is stored as json or safetensors, not {fmt!r}")
    from safetensors.numpy import save

    tensors = {f"keep.{g}": np.ascontiguousarray(k, dtype=np.uint8) for g, k in mask.keep.items()}
    return save(tensors, metadata={"mtprune_mask": json.dumps(mask.to_header())})


def save_mask(mask: Mask, path: str | os.PathLike) -> Path:
    """Write ``mask`` as JSON or safetensors (by suffix), atomically."""
    path = Path(path)
    return io.atomic_write_bytes(path, mask_to_bytes(mask, _suffix(path)[1:]))


def load_mask(path: str | os.PathLike) -> Mask:
    """Read a mask written by :func:`save_mask`; a one-line error when it does not parse."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise MtpruneError(f"mask file {path} does not exist")
    if suffix == ".json":
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MtpruneError(f"mask file {path} is not valid JSON: {exc}") from None
        try:
            return Mask.from_dict(d)
        except MtpruneError as exc:
            raise MtpruneError(f"mask file {path}: {exc}") from None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            header = json.loads((f.metadata() or {}).get("mtprune_mask", "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise MtpruneError(f"mask file {path} does not parse as safetensors: {type(exc).__name__}: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != MASK_FORMAT:
        raise MtpruneError(f"mask file {path} is not an mtprune mask (no mask metadata)")
    try:
        keep = {k[len("keep."):]: np.asarray(t).astype(bool) for k, t in tensors.items() if k.startswith("keep.")}
        return Mask(keep=keep, n_units=header["n_units"], sparsity=header["sparsity"],
                    scope=header.get("scope", "layer"), kinds=_kinds_of(header),
                    stack=header.get("stack", "all"), meta=header.get("meta") or {})
    except MtpruneError as exc:
        raise MtpruneError(f"mask file {path}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MtpruneError(f"mask file {path}: {_malformed(exc)}") from None


def mask_from_bytes(name: str, data: bytes) -> Mask:
    """A mask from a file's name and bytes (an upload): one clear line when it is not a mask."""
    suffix = Path(name or "").suffix.lower()
    if suffix not in MASK_SUFFIXES:
        raise MtpruneError(f"{name} is not a mask file: upload a .json or .safetensors mask")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return load_mask(path)
        except MtpruneError as exc:
            raise MtpruneError(str(exc).replace(str(path), name)) from None
