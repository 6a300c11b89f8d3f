"""Task overlap: how many of the units two tasks keep are the same.

For two masks at one sparsity, the Jaccard similarity of their kept sets, ``|A & B| / |A | B|``,
per layer (per unit group) and over the whole model (all pruned groups pooled). The union of two
empty sets has no Jaccard similarity: NaN. Groups a mask keeps whole (heads, when only FFN neurons
are pruned) are left out of the comparison, since they would count as perfect agreement.

Two independent random masks that each keep a fraction ``q`` of a layer's ``n`` units agree, in
expectation, on ``q / (2 - q)`` (for large ``n``): :func:`random_jaccard`, the chance level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Mapping

import numpy as np
import pandas as pd

from mtprune.errors import MtpruneError


def jaccard(a, b) -> float:
    """``|a & b| / |a | b|`` of two bool arrays of one shape; NaN when both are empty."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise MtpruneError(f"cannot compare masks of shapes {a.shape} and {b.shape}")
    union = int(np.logical_or(a, b).sum())
    return float(np.logical_and(a, b).sum()) / union if union else float("nan")


def random_jaccard(q: float) -> float:
    """Expected Jaccard similarity of two random kept sets of fraction ``q`` (large layers)."""
    q = float(q)
    if not 0.0 <= q <= 1.0:
        raise MtpruneError(f"a kept fraction must be in [0, 1], not {q}")
    return q / (2.0 - q) if q > 0 else float("nan")


def _keep(mask) -> dict[str, np.ndarray]:
    keep = getattr(mask, "keep", mask)
    if not isinstance(keep, Mapping) or not keep:
        raise MtpruneError("a mask needs a non-empty {group: bool [layers, units]} mapping")
    return {g: np.asarray(k, dtype=bool) for g, k in keep.items()}


def _groups(masks: Mapping[str, object]) -> list[str]:
    """The groups every mask has, pruned in at least one of them (when masks say which)."""
    common = None
    for m in masks.values():
        gs = set(_keep(m))
        common = gs if common is None else common & gs
    if not common:
        raise MtpruneError("the masks share no unit group")
    selected = set()
    for m in masks.values():
        sel = getattr(m, "selected_groups", None)
        selected |= set(sel() if callable(sel) else common)
    out = sorted(g for g in common if g in selected)
    if not out:
        raise MtpruneError("the masks prune no group they share")
    for g in out:
        shapes = {_keep(m)[g].shape for m in masks.values()}
        if len(shapes) > 1:
            raise MtpruneError(f"the masks are for different models: {g} has shapes {sorted(shapes)}")
    return out


def layer_jaccard(a, b, groups: list[str] | None = None) -> dict[str, np.ndarray]:
    """``{group: [n_layers] Jaccard similarities}`` of two masks' kept sets, layer by layer."""
    ka, kb = _keep(a), _keep(b)
    groups = groups or _groups({"a": a, "b": b})
    out = {}
    for g in groups:
        x, y = ka[g], kb[g]
        if x.shape != y.shape:
            raise MtpruneError(f"the masks are for different models: {g} has shapes {x.shape} and {y.shape}")
        inter = np.logical_and(x, y).sum(1)
        union = np.logical_or(x, y).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[g] = np.where(union > 0, inter / np.maximum(union, 1), np.nan).astype(float)
    return out


def model_jaccard(a, b, groups: list[str] | None = None) -> float:
    """The Jaccard similarity of two masks over all units of the compared groups together."""
    ka, kb = _keep(a), _keep(b)
    groups = groups or _groups({"a": a, "b": b})
    inter = sum(int(np.logical_and(ka[g], kb[g]).sum()) for g in groups)
    union = sum(int(np.logical_or(ka[g], kb[g]).sum()) for g in groups)
    return inter / union if union else float("nan")


def overlap_matrix(masks: Mapping[str, object]) -> pd.DataFrame:
    """Task x task Jaccard similarities over the whole model (1 on the diagonal, NaN if empty)."""
    if len(masks) < 1:
        raise MtpruneError("overlap needs at least one mask")
    names = list(masks)
    groups = _groups(masks)
    m = pd.DataFrame(np.nan, index=names, columns=names, dtype=float)
    for i, a in enumerate(names):
        m.loc[a, a] = model_jaccard(masks[a], masks[a], groups)
        for b in names[i + 1:]:
            v = model_jaccard(masks[a], masks[b], groups)
            m.loc[a, b] = m.loc[b, a] = v
    m.index.name = "task"
    return m


def overlap_by_layer(masks: Mapping[str, object]) -> pd.DataFrame:
    """One row per task pair, group and layer: kept counts, intersection, union, Jaccard, and the
    chance level of random masks keeping as many units."""
    names = list(masks)
    if len(names) < 2:
        raise MtpruneError("overlap by layer needs at least two masks")
    groups = _groups(masks)
    keeps = {n: _keep(masks[n]) for n in names}
    n_units = {}
    for n in names:
        nu = getattr(masks[n], "n_units", None)
        if nu is not None:
            n_units = nu
            break
    recs = []
    for a, b in combinations(names, 2):
        for g in groups:
            x, y = keeps[a][g], keeps[b][g]
            for layer in range(x.shape[0]):
                total = int(n_units[g][layer]) if g in n_units else x.shape[1]
                inter = int(np.logical_and(x[layer], y[layer]).sum())
                union = int(np.logical_or(x[layer], y[layer]).sum())
                ka, kb = int(x[layer].sum()), int(y[layer].sum())
                recs.append({
                    "task_a": a, "task_b": b, "group": g, "layer": layer, "kept_a": ka, "kept_b": kb,
                    "units": total, "intersection": inter, "union": union,
                    "jaccard": inter / union if union else np.nan,
                    "chance": _chance(ka, kb, total),
                })
    return pd.DataFrame.from_records(recs)


def _chance(ka: int, kb: int, n: int) -> float:
    """Expected Jaccard of random sets of sizes ``ka`` and ``kb`` out of ``n`` (first order:
    E|A & B| = ka kb / n, |A | B| = ka + kb - that)."""
    if n <= 0:
        return float("nan")
    inter = ka * kb / n
    union = ka + kb - inter
    return inter / union if union > 0 else float("nan")


def mean_layer_jaccard(per_layer: pd.DataFrame) -> pd.DataFrame:
    """Mean Jaccard over task pairs, per group and layer (with the chance level)."""
    return (per_layer.groupby(["group", "layer"])[["jaccard", "chance"]].mean().reset_index())


# ----------------------------------------------------------------------------------------------
# the experiment


@dataclass(frozen=True)
class OverlapConfig:
    """The tasks whose masks are compared, and how each mask is made from its task's scores."""

    tasks: tuple[str, ...]
    method: str = "ap"
    sparsity: float = 0.5
    kinds: str = "ffn"
    scope: str = "layer"
    examples: int = 256
    variant: str = "abs"
    seed: int = 0

    def __post_init__(self):
        from mtprune.experiments.core import check_at_least, parse_list, parse_methods, parse_sparsity
        from mtprune.masks import check_choices
        from mtprune.tasks import get_task

        tasks = parse_list(self.tasks, "tasks") if isinstance(self.tasks, str) else list(self.tasks)
        tasks = tuple(dict.fromkeys(get_task(t).name for t in tasks))
        if len(tasks) < 2:
            raise MtpruneError("overlap needs at least two tasks")
        object.__setattr__(self, "tasks", tasks)
        parse_methods([self.method], scores=True)
        object.__setattr__(self, "sparsity", parse_sparsity(self.sparsity))
        check_choices(self.scope, self.kinds)
        check_at_least(self.examples, "--examples")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class OverlapResult:
    """The masks compared, their task x task Jaccard matrix and the per-layer table."""

    masks: dict
    matrix: pd.DataFrame
    per_layer: pd.DataFrame

    @property
    def chance(self) -> float:
        """The mean chance level of random masks keeping as many units, over pairs and layers."""
        return float(mean_layer_jaccard(self.per_layer)["chance"].mean())

    def mean_kept_fraction(self) -> float:
        kept = [1.0 - m.actual_sparsity() for m in self.masks.values() if hasattr(m, "actual_sparsity")]
        return float(np.mean(kept)) if kept else float("nan")


def compare_masks(masks: Mapping[str, object]) -> OverlapResult:
    """The overlap of given masks (from files, or built by the caller)."""
    if len(masks) < 2:
        raise MtpruneError("overlap needs at least two masks")
    return OverlapResult(dict(masks), overlap_matrix(masks), overlap_by_layer(masks))


def run_overlap(adapter, cfg: OverlapConfig, *, scores: Mapping[str, object] | None = None, log=None) -> OverlapResult:
    """Every task's mask from its own scores (``scores[task]`` when given, else computed through the
    disk cache), compared pairwise."""
    from mtprune.experiments.core import Runner
    from mtprune.masks import mask_from_scores

    scores = dict(scores or {})
    runner = None
    for t in cfg.tasks:
        if t not in scores:
            runner = runner or Runner(adapter, log=log)
            scores[t] = runner.scores(t, cfg.method, cfg.examples, seed=cfg.seed, variant=cfg.variant)
    masks = {t: mask_from_scores(scores[t], cfg.sparsity, scope=cfg.scope, kinds=cfg.kinds) for t in cfg.tasks}
    return compare_masks(masks)
