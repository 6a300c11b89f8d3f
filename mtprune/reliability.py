"""How far scores can be trusted, from the pass that made them.

Attribution keeps, beside each unit's total over ``n`` examples, its sums over ``K`` disjoint folds
of those examples (:attr:`mtprune.attribution.Scores.folds`, ``[K, layers, units]`` per group).
From them, for every site (one layer's units of one kind):

* :func:`standard_errors`: each total's standard error, ``sqrt(K) * sd(fold sums)``;
* :func:`spearman_reliability`: the expected Spearman correlation between these scores and those of
  an independent draw of the same ``n`` examples. Split-half: the folds are split into two halves
  of ``n / 2`` examples each (every split of ``K`` folds into two equal halves, up to symmetry), the
  halves' rank correlation ``r`` is averaged and stepped up to the full size, as Spearman-Brown's
  ``2 r / (1 + r)`` does (a test of twice the length in classical test theory) but with the growth
  the folds' quarters show (rank correlations grow more slowly than Spearman-Brown assumes);
* :func:`jaccard_from_spearman` / :meth:`GroupReliability.jaccard`: the expected Jaccard between
  the units two independent draws keep at a sparsity, from the reliability: two draws' scores as a
  bivariate normal (Gaussian copula) whose rank correlation is the reliability (Pearson
  ``2 sin(pi rho / 6)``), the kept share above the same quantile in both (on the default model and
  sst2 this agrees with two measured draws within 0.02 for FFN neurons at 64, 256 and 1,024
  examples: benchmarks/bench_stability.py);
* :func:`keep_stability`: each unit's chance to be kept by another draw, from draws of a normal
  model: each unit's expected total shrunk towards its layer's mean so that its spread is the
  scores' spread less the noise, and noise of the unit's standard error on each draw;
* :func:`rank_intervals`: a 95% interval of each unit's rank in its layer (1 = most needed), from
  the same noise around the observed totals. (Measured on sst2, 4 draws of 64 and 256 examples:
  the keep chances are calibrated within about 0.1 in every band: units given 0.9 or more are
  kept by another draw 0.98-1.0 of the time, units given under 0.1 0.01-0.17 of the time.)

A group's reliability is the mean over its layers, weighted by their units. Nothing here knows a
model: it reads arrays.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

FOLDS = 8  # folds of the examples kept per score entry
DRAWS = 200  # simulated draws for Jaccard, keep chances and rank intervals


def short_names(groups) -> dict[str, str]:
    """``{"encoder.ffn": "ffn", ...}`` when every group is of one stack (else the full names)."""
    groups = list(groups)
    one_stack = len({g.split(".")[0] for g in groups}) <= 1
    return {g: g.split(".")[-1] if one_stack else g for g in groups}


def standard_errors(folds: np.ndarray) -> np.ndarray:
    """``[layers, units]``: the standard error of each unit's total from its fold sums ``[K, ...]``."""
    k = folds.shape[0]
    return np.sqrt(k) * np.nanstd(folds.astype(np.float64), axis=0, ddof=1)


def _halves(k: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every split of ``k`` folds into two equal halves, each once (fold 0 always in the first)."""
    out = []
    for first in itertools.combinations(range(1, k), k // 2 - 1):
        a = (0, *first)
        out.append((a, tuple(i for i in range(k) if i not in a)))
    return out


def spearman_brown(r: float, factor: float = 2.0) -> float:
    """The reliability of a score ``factor`` times as long, from the reliability ``r`` of one part."""
    if not np.isfinite(r):
        return float("nan")
    r = max(r, 0.0)
    return factor * r / (1 + (factor - 1) * r)


def _quarters(k: int, count: int = 35, seed: int = 0) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``count`` seeded pairs of disjoint quarters of ``k`` folds (``k / 4`` folds each)."""
    rng = np.random.default_rng(seed)
    q = k // 4
    return [(tuple(p[:q]), tuple(p[q : 2 * q])) for p in (rng.permutation(k) for _ in range(count))]


def _mean_rank_correlation(f: np.ndarray, splits) -> float:
    """The mean Spearman correlation of the fold sums of each split's two parts (NaN: none defined)."""
    from scipy.stats import rankdata

    a = rankdata(np.stack([f[list(x)].sum(0) for x, _ in splits]), axis=1)
    b = rankdata(np.stack([f[list(y)].sum(0) for _, y in splits]), axis=1)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    ok = den > 0
    return float(np.mean((a * b).sum(1)[ok] / den[ok])) if ok.any() else float("nan")


def _odds(r: float) -> float:
    r = float(np.clip(r, 1e-3, 0.999))
    return r / (1 - r)


def spearman_reliability(folds: np.ndarray, n_units: list[int]) -> np.ndarray:
    """``[layers]``: each layer's expected Spearman correlation with an independent draw of the same
    size; NaN for a layer of fewer than three units.

    Split halves give the correlation ``r_h`` of two draws of ``n / 2``, split quarters ``r_q`` of
    two draws of ``n / 4``. The Spearman-Brown step assumes the odds ``r / (1 - r)`` double when the
    examples do; rank correlations of sums of heavy-tailed per-example scores grow more slowly (on
    the default model, measured: by 2^0.74 from 64 to 256 examples, 2^0.91 from 1,024 to 4,096), so
    the step uses the exponent ``a`` the group's quarters and halves show (``odds_h / odds_q = 2^a``,
    pooled over layers), shrunk halfway towards Spearman-Brown's 1 (one draw's exponent is noisy):
    ``odds_n = odds_h * 2^((1 + a) / 2)``, ``a`` in [0, 1]. Measured against two draws on sst2,
    rte and qnli at 64, 256 and 1,024 examples (benchmarks/bench_stability.py, README)."""
    k = folds.shape[0]
    out = np.full(len(n_units), np.nan)
    if k < 2:
        return out
    halves = _halves(k)
    quarters = _quarters(k) if k >= 4 else []
    rh, rq = np.full(len(n_units), np.nan), np.full(len(n_units), np.nan)
    for layer, n in enumerate(n_units):
        if n < 3:
            continue
        f = folds[:, layer, :n].astype(np.float64)
        rh[layer] = _mean_rank_correlation(f, halves)
        if quarters:
            rq[layer] = _mean_rank_correlation(f, quarters)
    both = np.isfinite(rh) & np.isfinite(rq)
    a = 1.0
    if both.any():
        w = np.asarray(n_units, dtype=np.float64)[both]
        logs = np.log([_odds(h) / _odds(q) for h, q in zip(rh[both], rq[both])]) / np.log(2)
        a = float(np.clip(np.sum(w * logs) / w.sum(), 0.0, 1.0))
    step = 2 ** ((1.0 + a) / 2)  # Spearman-Brown's factor: the odds grow by it
    for layer in np.flatnonzero(np.isfinite(rh)):
        out[layer] = 0.0 if rh[layer] <= 0 else spearman_brown(float(np.clip(rh[layer], 1e-3, 0.999)), step)
    return out


def _true_scores(total: np.ndarray, se: np.ndarray) -> np.ndarray:
    """Each unit's expected total: shrunk towards the layer's mean so that the spread is the
    observed spread less the noise (the totals' variance is the true variance plus the noise's)."""
    m = total.mean()
    var = total.var()
    noise = float(np.mean(se ** 2))
    shrink = np.sqrt(max(var - noise, 0.0) / var) if var > 0 else 0.0
    return m + shrink * (total - m)


def _draws(total: np.ndarray, se: np.ndarray, draws: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _true_scores(total, se)[None, :] + rng.normal(size=(draws, len(total))) * se[None, :]


def _top(x: np.ndarray, n_keep: int) -> np.ndarray:
    """Boolean rows: the ``n_keep`` largest of each row."""
    keep = np.zeros(x.shape, dtype=bool)
    if n_keep > 0:
        idx = np.argpartition(-x, n_keep - 1, axis=1)[:, :n_keep]
        np.put_along_axis(keep, idx, True, axis=1)
    return keep


def jaccard_from_spearman(rho: float, sparsity: float) -> float:
    """The expected Jaccard of the units two draws keep at ``sparsity`` when their scores have rank
    correlation ``rho`` (a Gaussian copula); NaN for an unknown ``rho``."""
    from scipy.stats import multivariate_normal, norm

    if not np.isfinite(rho):
        return float("nan")
    keep = 1.0 - float(sparsity)
    if keep <= 0.0 or keep >= 1.0:
        return 1.0
    r = float(np.clip(2 * np.sin(np.pi * max(rho, 0.0) / 6), 0.0, 0.999999))
    z = norm.ppf(1 - keep)
    both = 1 - 2 * norm.cdf(z) + multivariate_normal(mean=[0, 0], cov=[[1, r], [r, 1]]).cdf([z, z])
    return float(both / (2 * keep - both))


def keep_stability(total: np.ndarray, se: np.ndarray, sparsity: float, draws: int = DRAWS,
                   seed: int = 0) -> tuple[float, np.ndarray]:
    """``(expected Jaccard of the kept sets of two independent draws, each unit's chance to be
    kept)`` for one layer's ``total`` and ``se`` at ``sparsity`` (the share pruned)."""
    n = len(total)
    n_keep = n - int(round(sparsity * n))
    if n == 0 or n_keep in (0, n):
        return 1.0, np.full(n, float(n_keep == n))
    kept = _top(_draws(total, se, 2 * draws, seed), n_keep)
    a, b = kept[:draws], kept[draws:]
    jac = (a & b).sum(1) / (a | b).sum(1)
    return float(jac.mean()), kept.mean(0)


def rank_intervals(total: np.ndarray, se: np.ndarray, draws: int = DRAWS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)``: each unit's 95% interval of its rank in the layer (1 = most needed), over
    draws of each total with the noise of its standard error, centred on the observed totals (not
    shrunk, as :func:`keep_stability`'s are): the observed rank lies inside but for draws that all
    disagree with it."""
    rng = np.random.default_rng(seed)
    x = np.asarray(total, dtype=np.float64)[None, :] + rng.normal(size=(draws, len(total))) * np.asarray(se)[None, :]
    ranks = (-x).argsort(1).argsort(1) + 1
    return np.percentile(ranks, 2.5, axis=0, method="lower"), np.percentile(ranks, 97.5, axis=0, method="higher")


@dataclass(frozen=True)
class GroupReliability:
    """One group's reliability: ``spearman`` (the expected Spearman with an independent draw, the
    mean of its layers weighted by their units) and ``per_layer``."""

    group: str
    spearman: float
    per_layer: tuple[float, ...]

    def jaccard(self, sparsity: float) -> float:
        """The expected Jaccard of the kept sets of two independent draws at ``sparsity``: the mean
        over layers of :func:`jaccard_from_spearman`."""
        vals = [jaccard_from_spearman(r, sparsity) for r in self.per_layer if np.isfinite(r)]
        return float(np.mean(vals)) if vals else float("nan")

    def to_dict(self) -> dict:
        return {"spearman": _round(self.spearman), "per_layer": [_round(v) for v in self.per_layer],
                "jaccard_at_half": _round(self.jaccard(0.5))}


def _round(v: float):
    return None if not np.isfinite(v) else round(float(v), 4)


def group_reliability(group: str, folds: np.ndarray, n_units: list[int]) -> GroupReliability:
    per = spearman_reliability(folds, n_units)
    w = np.array([n if np.isfinite(r) else 0 for n, r in zip(n_units, per)], dtype=np.float64)
    mean = float(np.nansum(per * w) / w.sum()) if w.sum() > 0 else float("nan")
    return GroupReliability(group, mean, tuple(float(v) for v in per))


def expected_jaccard(folds: np.ndarray, n_units: list[int], sparsity: float) -> float:
    """The expected Jaccard of the kept sets of two independent draws at ``sparsity`` for a group's
    fold sums ``[K, layers, units]`` (:meth:`GroupReliability.jaccard`)."""
    return group_reliability("", folds, n_units).jaccard(sparsity)
