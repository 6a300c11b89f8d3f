import json
from pathlib import Path

import numpy as np
import pytest

from mtprune.evaluation import compute_metrics, evaluate, f1_binary, matthews
from mtprune.tasks import get_task


def test_metrics_by_hand():
    gold = np.array([1, 1, 1, 0, 0, 0])
    pred = np.array([1, 1, 0, 0, 0, 1])
    # tp=2 fp=1 fn=1: F1 = 4/6; MCC = (2*2 - 1*1)/sqrt(3*3*3*3) = 3/9
    assert f1_binary(pred, gold) == pytest.approx(2 / 3)
    assert matthews(pred, gold) == pytest.approx(1 / 3)
    assert matthews(np.ones(4, int), np.array([1, 0, 1, 0])) == 0.0
    m = compute_metrics(get_task("cola"), pred, gold)
    assert set(m) == {"accuracy", "mcc"} and m["accuracy"] == pytest.approx(4 / 6)


def test_evaluate_in_memory_rows_is_order_independent(tiny_multitask, sst2_rows):
    a = evaluate(tiny_multitask, "sst2", rows=sst2_rows, batch_size=4)
    b = evaluate(tiny_multitask, "sst2", rows=list(reversed(sst2_rows)), batch_size=1)
    assert a.n == 6 and a.accuracy == b.accuracy
    seen = []
    evaluate(tiny_multitask, "sst2", rows=sst2_rows, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(4, 6), (6, 6)]


EXPECTED = json.loads((Path(__file__).parent / "expected" / "default_model_first200.json").read_text())


@pytest.mark.parametrize("task", ["sst2", "mrpc", "qnli", "boolq"])
def test_default_model_on_the_first_200_rows(default_adapter, task):
    """The first 200 validation rows of the larger benchmark tasks give the stored logits and
    accuracy (tests/expected/default_model_first200.json): what the whole split would add is time.
    (rte and cb are small enough to check whole, below.)"""
    from mtprune.evaluation import eval_rows, predict_logits

    want = EXPECTED["tasks"][task]
    assert default_adapter.fingerprint() == EXPECTED["model_fingerprint"]
    rows = eval_rows(task, "validation", 200)
    logits = predict_logits(default_adapter, get_task(task), rows, batch_size=64).double().numpy()
    assert len(rows) == want["n"]
    np.testing.assert_allclose(logits[:3], want["first_logits"], atol=1e-3)
    np.testing.assert_allclose(logits.sum(0), want["logit_sum"], rtol=1e-4, atol=1e-2)
    gold = np.array([r["label"] for r in rows])
    assert int((logits.argmax(1) == gold).sum()) == want["correct"]


@pytest.mark.parametrize("task", ["rte", "cb"])
def test_default_model_reproduces_the_recorded_validation_accuracy(default_adapter, shared_home, task):
    """Whole splits where they are small: the accuracy tasks.json records for the model."""
    expected = json.loads((shared_home / "models/minilm-l6-mt6/tasks.json").read_text())["tasks"][task]
    res = evaluate(default_adapter, task, "validation", batch_size=64)
    assert res.n == {"rte": 277, "cb": 56}[task]
    assert abs(res.accuracy - expected["validation_accuracy"]) <= 0.005


def test_unseen_domain_through_sst2_head(default_adapter, shared_home):
    res = evaluate(default_adapter, "yelp", "test", limit=200)
    assert res.head == "sst2" and res.n == 200
    assert res.accuracy > 0.75  # sentiment transfers to Yelp reviews
