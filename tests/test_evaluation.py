import json
from pathlib import Path

import numpy as np
import pytest

from mtprune.errors import MtpruneError
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


# ----------------------------------------------------------------------------------------------
# intervals and paired comparisons, against values computed by hand


def test_wilson_interval_by_hand():
    from mtprune.evaluation import wilson

    # 7 of 10, z = 1.959964: centre (7 + z^2/2) / (10 + z^2), half-width z sqrt(7*3/10 + z^2/4) / (10 + z^2)
    z = 1.959963984540054
    centre = (7 + z * z / 2) / (10 + z * z)
    half = z * np.sqrt(7 * 3 / 10 + z * z / 4) / (10 + z * z)
    lo, hi = wilson(7, 10)
    assert lo == pytest.approx(centre - half, abs=1e-9) and hi == pytest.approx(centre + half, abs=1e-9)
    assert wilson(0, 5)[0] == 0.0 and wilson(5, 5)[1] == pytest.approx(1.0)


def test_mcnemar_exact_by_hand():
    from mtprune.evaluation import mcnemar

    # 5 right -> wrong, 1 wrong -> right: two-sided P(X <= 1 | n=6, 1/2) * 2 = 2 * 7/64
    assert mcnemar(5, 1) == pytest.approx(14 / 64)
    assert mcnemar(1, 5) == pytest.approx(14 / 64)
    assert mcnemar(0, 0) == 1.0
    assert mcnemar(10, 0) == pytest.approx(2 / 1024)


def _result(correct, task="sst2"):
    from mtprune.evaluation import EvalResult, Predictions, intervals

    gold = np.zeros(len(correct), int)
    pred = np.where(np.asarray(correct, bool), 0, 1)
    probs = np.stack([np.where(pred == 0, 0.9, 0.1), np.where(pred == 0, 0.1, 0.9)], 1)
    t = get_task(task)
    acc = float(np.mean(correct))
    return EvalResult(task, "validation", len(correct), acc, {"accuracy": acc}, intervals=intervals(t, pred, gold),
                      predictions=Predictions(gold, pred, probs))


def test_compare_gives_flips_a_p_value_and_a_verdict():
    from mtprune.evaluation import compare

    dense = _result([1] * 40 + [0] * 10)
    same = _result([1] * 39 + [0] + [1] + [0] * 9)  # one flip each way
    c = compare(dense, same)
    assert (c.a_only, c.b_only, c.verdict) == (1, 1, "no measurable change") and c.p_value == 1.0
    worse = _result([0] * 12 + [1] * 28 + [0] * 10)  # 12 right -> wrong, none back
    c = compare(dense, worse)
    assert (c.a_only, c.b_only) == (12, 0) and c.verdict == "lower"
    assert c.p_value == pytest.approx(2 / 2 ** 12)
    assert c.difference == pytest.approx(-12 / 50)
    lo, hi = c.difference_interval
    assert lo < -12 / 50 < hi < 0  # the whole interval below zero
    assert "Pruned is lower" in c.sentence() and "McNemar" in c.sentence()
    with pytest.raises(MtpruneError, match="not on the same rows"):
        compare(dense, _result([1] * 10))


def test_bootstrap_interval_of_f1_holds_the_value(shared_home, default_adapter):
    res = evaluate(default_adapter, "mrpc", "validation", limit=120, batch_size=64)
    lo, hi = res.interval("f1")
    assert lo < res.metrics["f1"] < hi and 0 < hi - lo < 0.3
    lo, hi = res.interval("accuracy")
    assert lo < res.accuracy < hi
    assert res.to_dict()["intervals"]["accuracy"] == [round(lo, 6), round(hi, 6)]
    assert res.describe().startswith(f"{res.accuracy:.3f} (") and "n=120" in res.describe()
