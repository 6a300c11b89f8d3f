import json

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


TASKS_JSON = None


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sst2", "mrpc", "qnli", "rte", "cb", "boolq"])
def test_default_model_reproduces_validation_accuracy(default_adapter, shared_home, task):
    expected = json.loads((shared_home / "models/minilm-l6-mt6/tasks.json").read_text())["tasks"][task]
    res = evaluate(default_adapter, task, "validation", batch_size=64)
    assert res.n == {"sst2": 872, "mrpc": 408, "qnli": 5463, "rte": 277, "cb": 56, "boolq": 1000}[task]
    assert abs(res.accuracy - expected["validation_accuracy"]) <= 0.005


def test_unseen_domain_through_sst2_head(default_adapter, shared_home):
    res = evaluate(default_adapter, "yelp", "test", limit=200)
    assert res.head == "sst2" and res.n == 200
    assert res.accuracy > 0.75  # sentiment transfers to Yelp reviews
