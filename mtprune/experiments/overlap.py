"""Task overlap: how many of the units two tasks keep are the same.

For two masks at one sparsity, the Jaccard similarity of their kept sets, ``|A & B| / |A | B|``,
per layer (per unit group) and over the whole model (all pruned groups pooled). The union of two
empty sets has no Jaccard similarity: NaN. Groups a mask keeps whole (heads, when only FFN neurons
are pruned) are left out of the comparison, since they would count as perfect agreement.

Two independent random masks that each keep a fraction ``q`` of a layer's ``n`` units agree, in
expectation, on ``q / (2 - q)`` (for large ``n``): :func:`random_jaccard`, the chance level.

Chance is the bottom of the scale; its top is what one task shares with itself. Two draws of a
task's examples do not keep the same units either: the **within-task floor** (:func:`within_task_floor`)
is the Jaccard of the task's kept set with that of another draw of as many examples, at the same
sparsity, scope and kinds. It is simulated from the scores' reliability (the split-half Spearman of
their fold sums, layer by layer: :mod:`mtprune.reliability`) in the Gaussian copula that
:func:`mtprune.reliability.expected_jaccard` uses (which agrees with measured second draws within 0.02
on the default model): the scores' ranks as normal scores ``z``, another draw ``r z + sqrt(1 - r^2) e``
with ``r`` the layer's reliability as a Pearson correlation. ``DRAWS`` other draws, each made into a
mask by :func:`mtprune.masks.mask_from_scores` exactly as the task's own, the Jaccard with the task's
mask pooled over the compared groups as :func:`model_jaccard` pools it; its mean is the floor.

Two tasks' overlap is **distinguishable from the floor** (``distinct``) when it is below what each
of the two tasks shares with another draw of itself in at least 95% of the simulated draws:
``p_floor``, the larger of the two one-sided empirical p-values ``(1 + #{simulated <= J}) / (DRAWS + 1)``,
is below 0.05. The two tasks then keep different units by more than the draw of examples explains;
otherwise their overlap is as large as a second draw of one task could give, and the difference
between their masks may be noise. (One test per pair, not corrected for the number of pairs.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Mapping

import numpy as np
import pandas as pd

from mtprune.errors import MtpruneError
from mtprune.examples_auto import DEFAULT_CAP, DEFAULT_TARGET


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
    examples: int | str = 256  # or "auto": as many as `reliability` needs (mtprune.examples_auto)
    variant: str = "abs"
    seed: int = 0
    reliability: float = DEFAULT_TARGET  # examples "auto": the reliability every kind must reach
    max_examples: int = DEFAULT_CAP  # examples "auto": at most this many

    def __post_init__(self):
        from mtprune.experiments.core import check_examples, parse_list, parse_methods, parse_sparsity
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
        object.__setattr__(self, "examples", check_examples(self.examples, self.reliability, self.max_examples))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Floor:
    """One task's within-task floor: the Jaccard of its kept set with those of ``DRAWS`` simulated
    other draws (``samples``), their mean (``value``) and 5% quantile (``low``)."""

    samples: np.ndarray

    @property
    def value(self) -> float:
        return float(np.mean(self.samples)) if self.samples.size else float("nan")

    @property
    def low(self) -> float:
        return float(np.quantile(self.samples, 0.05)) if self.samples.size else float("nan")

    def p_below(self, jac: float) -> float:
        """The one-sided empirical p-value of an overlap ``jac`` this far below the floor."""
        if not self.samples.size or not np.isfinite(jac):
            return float("nan")
        return float((1 + np.sum(self.samples <= jac)) / (self.samples.size + 1))


def _normal_scores(a: np.ndarray, n_units: list[int], scope: str) -> np.ndarray:
    """The scores' ranks as standard normal quantiles (``Phi^-1((rank - 1/2) / n)``, ties averaged),
    within each layer (``layer`` scope) or over the whole group (``global``); NaN padding stays."""
    from scipy.stats import norm, rankdata

    z = np.full(a.shape, np.nan)
    valid = np.arange(a.shape[1])[None, :] < np.asarray(n_units)[:, None]
    if scope == "layer":
        for layer, n in enumerate(n_units):
            if n:
                z[layer, :n] = norm.ppf((rankdata(np.nan_to_num(a[layer, :n])) - 0.5) / n)
    elif valid.any():
        z[valid] = norm.ppf((rankdata(np.nan_to_num(a[valid])) - 0.5) / valid.sum())
    return z


def _other_draws(scores, groups: list[str], rel: dict, scope: str, draws: int, seed: int) -> dict[str, np.ndarray]:
    """``{group: [draws, layers, width]}``: the scores of ``draws`` other draws of as many examples,
    in the Gaussian copula of :func:`mtprune.reliability.jaccard_from_spearman`: this draw's normal
    scores ``z`` and, in a layer of reliability ``rho`` (Pearson ``r = 2 sin(pi rho / 6)``), another
    draw ``r z + sqrt(1 - r^2) e`` with ``e`` standard normal (their correlation is ``r``)."""
    rng = np.random.default_rng(seed)
    out = {}
    for g in groups:
        z = _normal_scores(np.asarray(scores.arrays[g], dtype=np.float64), scores.n_units[g], scope)
        rho = np.asarray(rel[g].per_layer, dtype=np.float64)
        rho = np.where(np.isfinite(rho), rho, rel[g].spearman if np.isfinite(rel[g].spearman) else 0.0)
        r = np.clip(2 * np.sin(np.pi * np.clip(rho, 0.0, 1.0) / 6), 0.0, 1.0)[None, :, None]
        out[g] = r * z[None] + np.sqrt(1 - r ** 2) * rng.standard_normal((draws, *z.shape))
    return out


def within_task_floor(scores, sparsity: float, scope: str = "layer", kinds: str = "ffn",
                      groups: list[str] | None = None, draws: int | None = None, seed: int = 0) -> Floor | None:
    """The Jaccard of the task's mask with the masks of ``draws`` simulated other draws of as many
    examples (the module's docstring), pooled over ``groups`` (default: those the mask prunes); None
    for scores without fold sums (a method that reads no examples, or scores cached before folds)."""
    from mtprune.masks import mask_from_scores
    from mtprune.reliability import DRAWS

    if not getattr(scores, "has_folds", False):
        return None
    draws = draws or DRAWS
    own = mask_from_scores(scores, sparsity, scope=scope, kinds=kinds)
    rel = scores.reliability()
    groups = [g for g in (groups or own.selected_groups()) if g in rel]
    if not groups:
        return None
    other = _other_draws(scores, groups, rel, scope, draws, seed)
    fixed = {g: a for g, a in scores.arrays.items() if g not in other}
    samples = [model_jaccard(own, mask_from_scores({"arrays": {**fixed, **{g: o[d] for g, o in other.items()}},
                                                    "n_units": scores.n_units}, sparsity, scope=scope, kinds=kinds),
                             groups) for d in range(draws)]
    return Floor(np.array(samples))


@dataclass(frozen=True)
class OverlapResult:
    """The masks compared, their task x task Jaccard matrix, the per-layer table, and, when the
    masks' scores are known, each task's within-task floor and every pair against it (``pairs``)."""

    masks: dict
    matrix: pd.DataFrame
    per_layer: pd.DataFrame
    floors: dict = field(default_factory=dict)  # task -> Floor (or None: unknown)
    pairs: pd.DataFrame | None = None

    @property
    def chance(self) -> float:
        """The mean chance level of random masks keeping as many units, over pairs and layers."""
        return float(mean_layer_jaccard(self.per_layer)["chance"].mean())

    def mean_kept_fraction(self) -> float:
        kept = [1.0 - m.actual_sparsity() for m in self.masks.values() if hasattr(m, "actual_sparsity")]
        return float(np.mean(kept)) if kept else float("nan")


def pair_table(matrix: pd.DataFrame, per_layer: pd.DataFrame, floors: Mapping[str, Floor | None]) -> pd.DataFrame:
    """One row per task pair: its Jaccard, chance, each task's floor (mean and 5% quantile),
    ``p_floor`` and ``distinct`` (the module's docstring), and the verdict in words."""
    chance = per_layer.groupby(["task_a", "task_b"])["chance"].mean() if len(per_layer) else pd.Series(dtype=float)
    recs = []
    for a, b in combinations(list(matrix.index), 2):
        jac = float(matrix.loc[a, b])
        fa, fb = floors.get(a), floors.get(b)
        p = max(fa.p_below(jac), fb.p_below(jac)) if fa is not None and fb is not None else float("nan")
        distinct = bool(p < 0.05) if p == p else False
        verdict = ("floor unknown (scores without fold sums)" if p != p else
                   "distinct: below both tasks' floors" if distinct else "within the floors: not distinguishable")
        recs.append({"task_a": a, "task_b": b, "jaccard": jac, "chance": float(chance.get((a, b), np.nan)),
                     "floor_a": fa.value if fa else np.nan, "floor_b": fb.value if fb else np.nan,
                     "floor_a_low": fa.low if fa else np.nan, "floor_b_low": fb.low if fb else np.nan,
                     "p_floor": p, "distinct": distinct, "verdict": verdict})
    return pd.DataFrame.from_records(recs)


def compare_masks(masks: Mapping[str, object], scores: Mapping[str, object] | None = None,
                  draws: int | None = None) -> OverlapResult:
    """The overlap of given masks (from files, or built by the caller); with the tasks' ``scores``
    (those the masks came from), each task's within-task floor at the mask's sparsity, scope and
    kinds, and every pair tested against the floors."""
    if len(masks) < 2:
        raise MtpruneError("overlap needs at least two masks")
    matrix, per_layer = overlap_matrix(masks), overlap_by_layer(masks)
    floors = {}
    groups = _groups(masks)
    for t, m in masks.items():
        sc = (scores or {}).get(t)
        floors[t] = None if sc is None else within_task_floor(
            sc, m.sparsity, getattr(m, "scope", "layer"), getattr(m, "kinds", "ffn"), groups, draws)
    return OverlapResult(dict(masks), matrix, per_layer, floors, pair_table(matrix, per_layer, floors))


def run_overlap(adapter, cfg: OverlapConfig, *, scores: Mapping[str, object] | None = None, log=None,
                draws: int | None = None) -> OverlapResult:
    """Every task's mask from its own scores (``scores[task]`` when given, else computed through the
    disk cache; ``examples="auto"``: as many as the reliability target needs), compared pairwise and
    against each task's within-task floor."""
    from mtprune.experiments.core import Runner
    from mtprune.masks import mask_from_scores

    scores = dict(scores or {})
    runner = None
    for t in cfg.tasks:
        if t not in scores:
            runner = runner or Runner(adapter, log=log)
            scores[t] = runner.scores(t, cfg.method, cfg.examples, seed=cfg.seed, variant=cfg.variant,
                                      reliability=cfg.reliability, max_examples=cfg.max_examples)
    masks = {t: mask_from_scores(scores[t], cfg.sparsity, scope=cfg.scope, kinds=cfg.kinds) for t in cfg.tasks}
    return compare_masks(masks, scores, draws)


def readable_pairs(pairs: pd.DataFrame | None) -> pd.DataFrame:
    """:attr:`OverlapResult.pairs` for reading: the pair, its Jaccard, chance, both floors, p and the verdict."""
    if pairs is None or pairs.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "pair": pairs["task_a"] + " · " + pairs["task_b"], "Jaccard": pairs["jaccard"].round(3),
        "chance": pairs["chance"].round(3),
        "floors": [f"{a:.3f} / {b:.3f}" if a == a and b == b else "unknown"
                   for a, b in zip(pairs["floor_a"], pairs["floor_b"])],
        "p (below the floors)": pairs["p_floor"].round(4), "verdict": pairs["verdict"]})
