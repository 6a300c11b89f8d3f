"""Unit costs (parameters, FLOPs checked against torch's FLOP counter, latency), budgets and the
budgeted mask search on hand-made scores."""

import numpy as np
import pytest

from mtprune.costs import Budget, kept_cost, kept_share, search_mask, total_cost, unit_costs
from mtprune.errors import MtpruneError
from mtprune.masks import mask_from_scores
from mtprune.measures.flops import unit_flops
from mtprune.measures.latency import latency_table
from mtprune.pruning import count_parameters, hard_prune
from mtprune.tasks import get_task
from mtprune_dev.flops import count_flops
from tests.conftest import random_scores

SST2 = get_task("sst2")


def test_budget_parsing():
    assert Budget.parse("flops:0.6") == Budget("flops", 0.6)
    assert Budget.parse(" params : 50% ") == Budget("params", 0.5)
    assert str(Budget.parse("latency:0.60")) == "latency:0.6"
    for bad, msg in [("flops:1.5", r"\(0, 1\]"), ("flops:0", r"\(0, 1\]"), ("speed:0.5", "unknown budget 'speed'"),
                     ("0.6", "measure:fraction"), ("flops:abc", "not a number"), ("flops:nan", r"\(0, 1\]")]:
        with pytest.raises(MtpruneError, match=msg):
            Budget.parse(bad)


@pytest.mark.parametrize("fixture", ["tiny_multitask", "tiny_seqcls"])
def test_flops_match_the_flop_counter(fixture, request, sst2_rows):
    a = request.getfixturevalue(fixture)
    rows = [{"sentence": "a very good movie and a bad film", "label": 1}]
    batch = a.encode(rows, SST2)
    t = batch["input_ids"].shape[1]
    costs = unit_flops(a, t)
    mask = mask_from_scores(random_scores(a), {"ffn": 0.5, "heads": 0.5})
    small = hard_prune(a, mask)
    removed = sum((costs[g] * (np.array(mask.n_units[g]) - mask.keep[g].sum(1))).sum() for g in mask.groups)
    assert count_flops(a, batch, SST2) - count_flops(small, a.encode(rows, SST2), SST2) == removed


def test_params_costs_match_count_parameters(tiny_multitask):
    a = tiny_multitask
    costs = unit_costs(a, "params")
    mask = mask_from_scores(random_scores(a), {"ffn": 0.3, "heads": 0.5})
    assert a.num_parameters() - count_parameters(a, mask) == \
        total_cost(costs, mask.n_units) - kept_cost(mask, costs)


def test_kept_share_counts_the_kinds_a_mask_leaves_alone(tiny_multitask):
    """An FFN-only mask at 50% keeps every head: its share of the prunable FLOPs is more than half,
    and equals what counting the FLOPs of the hard-pruned model says."""
    from mtprune.units import layout

    a = tiny_multitask
    costs = unit_flops(a, 20)
    _, n_units = layout(a.unit_sites())
    total = total_cost(costs, n_units)
    heads, ffn = total_cost(costs, n_units, "heads"), total_cost(costs, n_units, "ffn")
    ffn_scores = random_scores(a)
    ffn_scores = {k: {g: v for g, v in d.items() if g.endswith("ffn")} for k, d in ffn_scores.items()}
    mask = mask_from_scores(ffn_scores, 0.5, kinds="ffn")  # scores of the FFN alone (attribute --kinds ffn)
    assert set(mask.groups) == {"encoder.ffn"}
    assert kept_share(mask, costs, n_units) == pytest.approx((heads + ffn / 2) / total, abs=1e-12)
    assert kept_share(mask, costs, n_units) > 0.5
    both = mask_from_scores(random_scores(a), {"ffn": 0.5, "heads": 0.5})
    assert kept_share(both, costs, n_units) == pytest.approx(0.5, abs=1e-12)
    assert kept_share(None, costs, n_units) == 1.0


def _scores(heads, ffn):
    return {"arrays": {"encoder.heads": np.array([heads], float), "encoder.ffn": np.array([ffn], float)},
            "n_units": {"encoder.heads": [len(heads)], "encoder.ffn": [len(ffn)]}}


COSTS = {"encoder.heads": np.array([10.0]), "encoder.ffn": np.array([1.0])}  # 2 heads, 4 neurons: total 24


def test_search_spends_the_budget_where_the_score_is():
    # normalised per kind: heads 0.6 / 0.4, neurons 0.4 / 0.3 / 0.2 / 0.1
    s = _scores([6, 4], [4, 3, 2, 1])
    m = search_mask(s, "flops:0.5", COSTS)  # 12 of 24: one head (10) + two neurons (2)
    assert m.keep["encoder.heads"].tolist() == [[True, False]]
    assert m.keep["encoder.ffn"].tolist() == [[True, True, False, False]]
    assert m.scope == "budget" and m.meta["budget"] == "flops:0.5" and m.meta["cost_kept"] == 12
    assert m.meta["cost_fraction_kept"] == pytest.approx(0.5) and m.sparsity == pytest.approx(3 / 6)
    # less room: the four neurons (1.0 of their kind) beat one head (0.6)
    m = search_mask(s, "flops:0.4", COSTS)  # 9.6 of 24
    assert m.keep["encoder.heads"].sum() == 0 and m.keep["encoder.ffn"].sum() == 4
    # compared as they are, one head (6) beats four neurons (10? no: 4 + 3 + 2 + 1 = 10): neurons win again;
    # with heads worth more, a head wins
    m = search_mask(_scores([60, 40], [4, 3, 2, 1]), "flops:0.45", COSTS, normalise="none")
    assert m.keep["encoder.heads"].tolist() == [[True, False]] and m.keep["encoder.ffn"].sum() == 0
    assert kept_cost(m, COSTS) <= 0.45 * 24


def test_search_with_one_kind_and_unreachable_budgets():
    s = _scores([6, 4], [4, 3, 2, 1])
    m = search_mask(s, "flops:0.9", COSTS, kinds="ffn")  # heads kept whole: 20 + 1 neuron = 21 <= 21.6
    assert m.keep["encoder.heads"].all() and m.keep["encoder.ffn"].sum() == 1
    with pytest.raises(MtpruneError, match=r"smallest reachable budget is flops:0.834"):
        search_mask(s, "flops:0.5", COSTS, kinds="ffn")
    with pytest.raises(MtpruneError, match="normalisation"):
        search_mask(s, "flops:0.5", COSTS, normalise="max")
    full = search_mask(s, "flops:1", COSTS)
    assert full.keeps_all()


def test_search_on_a_real_layout(tiny_multitask):
    a = tiny_multitask
    costs = unit_costs(a, "flops", 12)
    for f in (0.3, 0.6, 0.9):
        m = search_mask(random_scores(a), f"flops:{f}", costs)
        assert kept_cost(m, costs) <= f * total_cost(costs, m.n_units) + 1e-6
        small = hard_prune(a, m)  # budget masks prune like any other
        assert small.num_parameters() == count_parameters(a, m)


def test_latency_table_is_measured_once(tiny_multitask, tmp_path, monkeypatch):
    """Timed on a fake clock that a model's forward pass advances by 1 ns per parameter, the
    table's numbers follow from the model's shapes. Halving the FFN of the 2-layer, 32-wide BERT
    removes 2 x 24 neurons of 32 + 1 (in row, bias) + 32 (out column) = 65 parameters each; halving
    its heads removes 2 x 2 heads of 3 x (8 x 32 + 8) (q, k, v rows and biases) + 8 x 32 (out
    columns) = 1048 each. Seconds per example are per row of the batch of 4."""
    import types

    from mtprune.formats.multitask import MultiTaskAdapter
    from mtprune.measures import latency as latency_module

    monkeypatch.setenv("MTPRUNE_CACHE", str(tmp_path))
    ns, batch = 1e-9, 4
    clock, calls = [0.0], []
    real_logits = MultiTaskAdapter.logits
    cost = {"fn": lambda a: a.num_parameters() * ns}

    def timed_logits(self, b, task):
        calls.append(self.num_parameters())
        clock[0] += cost["fn"](self)
        return real_logits(self, b, task)

    monkeypatch.setattr(MultiTaskAdapter, "logits", timed_logits)
    monkeypatch.setattr(latency_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    dense = tiny_multitask.num_parameters()
    assert dense == 23207
    t = latency_table(tiny_multitask, SST2, 8, batch_size=batch, repeats=2)
    assert set(t["per_unit"]) == {"ffn", "heads"}
    assert sorted(set(calls)) == [dense - 4 * 1048, dense - 48 * 65, dense] and len(calls) == 3 * (1 + 2)
    assert t["seconds_per_example"] == pytest.approx(
        {"dense": dense * ns / batch, "ffn": (dense - 48 * 65) * ns / batch, "heads": (dense - 4 * 1048) * ns / batch},
        rel=1e-9)
    assert t["per_unit"]["ffn"] == pytest.approx(65 * ns / batch, rel=1e-6)
    assert t["per_unit"]["heads"] == pytest.approx(1048 * ns / batch, rel=1e-6)
    files = list((tmp_path / "latency").glob("*.json"))
    assert len(files) == 1
    n_calls = len(calls)
    assert latency_table(tiny_multitask, SST2, 8, batch_size=batch, repeats=2) == t  # read back, not measured
    assert len(calls) == n_calls
    costs = unit_costs(tiny_multitask, "latency", 8, table=t)
    assert costs["encoder.ffn"].tolist() == [t["per_unit"]["ffn"]] * 2
    assert costs["encoder.heads"].tolist() == [t["per_unit"]["heads"]] * 2
    # a pruned copy that runs slower than the dense model (noise): its units cost 0, not less
    cost["fn"] = lambda a: (2 * dense - a.num_parameters()) * ns
    slow = latency_table(tiny_multitask, SST2, 8, batch_size=batch, repeats=2, cache=False)
    assert slow["seconds_per_example"]["ffn"] > slow["seconds_per_example"]["dense"]
    assert slow["per_unit"] == {"ffn": 0.0, "heads": 0.0}
