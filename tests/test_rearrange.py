"""Mask rearrangement (Kwon et al.): the greedy step, the mini-batch gradients, and the mask it makes."""

import itertools

import numpy as np
import pytest

from mtprune.errors import MtpruneError
from mtprune.masks import mask_from_scores
from mtprune.rearrange import batch_gradients, greedy_rearrange, rearrange


def _cost(grads, keep):
    return float((grads[~keep].sum(0) ** 2).sum())


def test_greedy_keeps_the_count_and_finds_cancelling_units():
    # the diagonal prunes the two smallest (units 2 and 0), whose gradients add up; units 0 and 1
    # cancel, so pruning them together costs almost nothing
    g = np.array([[1.0, 0.0], [-1.0, 0.1], [0.8, 0.0]])
    keep = np.array([False, True, False])
    new = greedy_rearrange(keep, g)
    assert new.sum() == keep.sum()
    assert _cost(g, keep) == pytest.approx(3.24) and _cost(g, new) == pytest.approx(0.01)
    best = min(_cost(g, np.array([i not in c for i in range(3)])) for c in itertools.combinations(range(3), 2))
    assert _cost(g, new) == pytest.approx(best)
    assert new.tolist() == [False, False, True]


def test_greedy_leaves_full_and_empty_layers_alone():
    g = np.random.default_rng(0).normal(size=(6, 4))
    for keep in (np.ones(6, bool), np.zeros(6, bool)):
        assert (greedy_rearrange(keep, g) == keep).all()


def test_greedy_is_never_worse_than_the_diagonal_on_random_gradients():
    rng = np.random.default_rng(1)
    for _ in range(20):
        g = rng.normal(size=(12, 8)) + rng.normal(size=(1, 8))
        keep = np.zeros(12, bool)
        keep[np.argsort(-(g ** 2).sum(1))[:6]] = True  # the diagonal keeps the largest
        assert _cost(g, greedy_rearrange(keep, g)) <= _cost(g, keep) + 1e-9


def test_mini_batch_gradients_add_up_to_the_signed_whole(tiny_multitask):
    from mtprune.tasks import get_task

    task = get_task("sst2")
    rows = [{"sentence": s, "label": i % 2} for i, s in enumerate(["good", "bad film", "a fine, warm story", "dull"] * 3)]
    grads = batch_gradients(tiny_multitask, task, rows, ["encoder.ffn", "encoder.heads"], batch_size=5, mini_batch=4)
    assert grads["encoder.ffn"].shape[0] == 3  # 12 rows in mini-batches of 4
    whole = batch_gradients(tiny_multitask, task, rows, ["encoder.ffn"], batch_size=12, mini_batch=12)
    np.testing.assert_allclose(grads["encoder.ffn"].sum(0), whole["encoder.ffn"][0], rtol=1e-5, atol=1e-8)


def test_rearranged_budget_mask_keeps_per_layer_counts(tiny_multitask):
    from mtprune.attribution import AttributionSpec, attribute
    from mtprune.pipeline import choose_mask

    rows = [{"sentence": s, "label": i % 2} for i, s in enumerate(["good", "bad film", "a fine, warm story", "dull"] * 4)]
    scores = attribute(tiny_multitask, AttributionSpec(task="sst2", method="fisher", examples=16, kinds="all"), rows=rows)
    mask = choose_mask(tiny_multitask, "sst2", scores, budget="flops:0.6")
    new = rearrange(tiny_multitask, "sst2", mask, rows, batch_size=8, mini_batch=4)
    for g in mask.groups:
        assert new.kept_per_layer(g) == mask.kept_per_layer(g)
    assert new.meta["rearranged"]["rows"] == 16 and new.meta["budget"] == mask.meta["budget"]
    with pytest.raises(MtpruneError, match="budget"):
        rearrange(tiny_multitask, "sst2", mask_from_scores(scores, 0.5, kinds="all"), rows)
    with pytest.raises(MtpruneError, match="labelled"):
        rearrange(tiny_multitask, "sst2", mask, [{"sentence": "no label"}])
