"""Reliability from fold sums: exact standard errors, the split-half estimate against independent
draws of a known model, rank intervals and keep chances; draws that extend one another."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from mtprune.reliability import (FOLDS, expected_jaccard, group_reliability, jaccard_from_spearman, keep_stability,
                                 rank_intervals, spearman_brown, spearman_reliability, standard_errors)


def test_standard_errors_by_hand():
    folds = np.array([[[1.0, 0.0]], [[3.0, 0.0]], [[2.0, 0.0]], [[2.0, 0.0]]])  # K=4, one layer, two units
    se = standard_errors(folds)
    # sd of (1, 3, 2, 2) with ddof 1 is sqrt(2/3); the total of four folds: sqrt(4) times that
    assert se[0, 0] == pytest.approx(2 * np.sqrt(2 / 3)) and se[0, 1] == 0.0
    assert spearman_brown(0.5) == pytest.approx(2 / 3) and spearman_brown(-0.2) == 0.0
    # Jaccard of top halves: independent draws 1/3 (chance), identical ones 1; rho 0.5 by the orthant formula
    assert jaccard_from_spearman(0.0, 0.5) == pytest.approx(1 / 3, abs=1e-6)
    assert jaccard_from_spearman(1.0, 0.5) == pytest.approx(1.0, abs=2e-3)
    r = 2 * np.sin(np.pi * 0.5 / 6)
    q = 0.5 + np.arcsin(r) / np.pi
    assert jaccard_from_spearman(0.5, 0.5) == pytest.approx(q / (2 - q), abs=1e-4)
    assert jaccard_from_spearman(0.5, 0.0) == 1.0


def _draw(mu, n, rng, noise=3.0):
    """Fold sums of ``n`` examples whose per-example scores are ``mu`` plus noise: [K, 1, units]."""
    per = mu[None, :] + noise * rng.normal(size=(n, len(mu)))
    bounds = [(i * n // FOLDS, (i + 1) * n // FOLDS) for i in range(FOLDS)]
    return np.stack([per[a:b].sum(0) for a, b in bounds])[:, None, :]


@pytest.mark.parametrize("n", [16, 64, 256])
def test_split_half_estimate_matches_independent_draws(n):
    """Units with known true scores: the estimate from one draw's folds agrees with the Spearman
    correlation of two independent draws (averaged over 40 pairs) within 0.05."""
    rng = np.random.default_rng(0)
    mu = rng.normal(size=300)
    measured, estimated = [], []
    for _ in range(40):
        a, b = _draw(mu, n, rng), _draw(mu, n, rng)
        measured.append(spearmanr(a.sum(0)[0], b.sum(0)[0]).statistic)
        estimated.append(spearman_reliability(a, [300])[0])
    assert abs(np.mean(estimated) - np.mean(measured)) < 0.05, (np.mean(estimated), np.mean(measured))
    # and the Jaccard of the halves kept by two draws
    jac = []
    for _ in range(20):
        a, b = _draw(mu, n, rng).sum(0)[0], _draw(mu, n, rng).sum(0)[0]
        ka, kb = set(np.argsort(-a)[:150]), set(np.argsort(-b)[:150])
        jac.append(len(ka & kb) / len(ka | kb))
    est = np.mean([expected_jaccard(_draw(mu, n, rng), [300], 0.5) for _ in range(10)])
    assert abs(est - np.mean(jac)) < 0.03, (est, np.mean(jac))


def test_group_reliability_weights_layers_and_skips_tiny_ones():
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(2, 50))
    folds = np.stack([mu + 0.1 * rng.normal(size=mu.shape) for _ in range(FOLDS)])
    folds[:, 1, 2:] = np.nan  # the second layer has two units left: no rank correlation
    r = group_reliability("encoder.ffn", folds, [50, 2])
    assert r.per_layer[0] > 0.95 and np.isnan(r.per_layer[1]) and r.spearman == pytest.approx(r.per_layer[0])
    assert r.to_dict()["per_layer"][1] is None


def test_rank_intervals_and_keep_chances():
    total = np.array([10.0, 9.0, 5.0, 1.0, 0.0])
    lo, hi = rank_intervals(total, np.full(5, 1e-6))
    assert lo.tolist() == hi.tolist() == [1, 2, 3, 4, 5]  # no noise: the ranks are certain
    lo, hi = rank_intervals(total, np.array([0.1, 0.1, 0.1, 3.0, 3.0]))
    assert lo[0] == 1 and hi[0] <= 2 and lo[3] <= 4 <= hi[3] and hi[3] - lo[3] >= 1
    jac, kept = keep_stability(total, np.full(5, 1e-6), 0.4)
    assert jac == 1.0 and kept.tolist() == [1, 1, 1, 0, 0]
    jac, kept = keep_stability(total, np.array([0.1, 0.1, 4.0, 4.0, 0.1]), 0.4)
    assert jac < 1.0 and kept[0] == 1.0 and 0 < kept[2] < 1 and kept[4] < kept[2]


def test_rank_intervals_contain_the_observed_ranks():
    """Centred on the observed totals: a unit's own rank lies inside its interval (the shrunk model
    once gave 'rank 12 (95% 4-11)')."""
    rng = np.random.default_rng(0)
    total = rng.gamma(0.5, size=40)
    se = np.full(40, total.std())  # noise as large as the spread: wide intervals
    lo, hi = rank_intervals(total, se)
    rank = (-total).argsort().argsort() + 1
    assert ((lo <= rank) & (rank <= hi)).mean() >= 0.95
    assert (hi - lo).mean() > 10
