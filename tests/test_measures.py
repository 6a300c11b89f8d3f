"""Budget measures: the registry, each measure's costs against hand counts, and the one place a
model's unit costs for a task are prepared."""

import numpy as np
import pytest

from mtprune import costs as C
from mtprune.costs import Budget, parse_budgets, prepare_costs, unit_costs
from mtprune.errors import MtpruneError
from mtprune.measures import all_measures, get_measure, measure_names
from mtprune.tasks import get_task


def test_the_registry_offers_every_measure_with_its_facts():
    assert measure_names()[:3] == ["flops", "params", "latency"]
    assert get_measure("flops").per_length and not get_measure("params").per_length
    assert get_measure("latency").measured and not get_measure("flops").measured
    assert all(m.label and m.help for m in all_measures().values())
    with pytest.raises(MtpruneError, match="unknown budget measure 'bytes'"):
        get_measure("bytes")


def test_budgets_are_parsed_once_into_objects():
    assert parse_budgets("flops:0.8,0.7,params:50%") == (Budget("flops", 0.8), Budget("flops", 0.7),
                                                          Budget("params", 0.5))
    assert parse_budgets([Budget("flops", 0.6), "flops:0.6"]) == (Budget("flops", 0.6),)
    assert Budget("params", 0.35).percent == 35 and str(Budget("params", 0.35)) == "params:0.35"
    with pytest.raises(MtpruneError, match="starts with a measure"):
        parse_budgets("0.5,flops:0.6")
    with pytest.raises(MtpruneError, match="unknown budget 'bytes'"):
        parse_budgets("bytes:0.5")


def test_params_costs_count_a_bert_units_weights(tiny_multitask):
    """tiny BERT: hidden d, FFN width f, h heads of w: a neuron holds d (up row) + 1 (its bias)
    + d (down column); a head 3 (w d + w) (its Q, K, V rows and biases) + w d (its O columns)."""
    cfg = tiny_multitask.model.config
    d, h = cfg.hidden_size, cfg.num_attention_heads
    w = d // h
    c = unit_costs(tiny_multitask, "params")
    assert set(c) == {"encoder.ffn", "encoder.heads"}
    np.testing.assert_array_equal(c["encoder.ffn"], [2 * d + 1] * cfg.num_hidden_layers)
    np.testing.assert_array_equal(c["encoder.heads"], [3 * (w * d + w) + w * d] * cfg.num_hidden_layers)
    with pytest.raises(ValueError, match="need a sequence length"):
        unit_costs(tiny_multitask, "flops")


def test_prepare_costs_measures_once_per_model_task_and_measure(tiny_multitask, monkeypatch):
    calls = []
    monkeypatch.setattr(C, "_PREPARED", {})
    monkeypatch.setattr(C, "average_length", lambda adapter, task, split=None, n=512: calls.append(task.name) or 10.0)
    sst2 = get_task("sst2")
    f = prepare_costs(tiny_multitask, sst2, "flops")
    assert f.seq_len == 10.0 and f.measure == "flops"
    np.testing.assert_allclose(f.costs["encoder.ffn"], unit_costs(tiny_multitask, "flops", 10.0)["encoder.ffn"])
    assert prepare_costs(tiny_multitask, "sst2", Budget("flops", 0.5)) is f and calls == ["sst2"]
    p = prepare_costs(tiny_multitask, sst2, "params")
    assert p.seq_len is None and calls == ["sst2"]  # parameters do not depend on the length
