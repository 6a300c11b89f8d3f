"""The pruning pipeline that the CLI, the dashboard and the experiment runner share: masks from a
sparsity or a budget, the calibration plan, and prune -> Pruned."""


import pytest
import torch

from mtprune import costs as C
from mtprune.costs import Budget
from mtprune.errors import MtpruneError
from mtprune.masks import mask_from_scores
from mtprune.pipeline import choose_mask, flops_kept, plan_calibration, prune
from mtprune.pruning import count_parameters, hard_prune
from mtprune.tasks import get_task
from tests.conftest import SST2_ROWS, random_scores

SST2 = get_task("sst2")


@pytest.fixture
def fixed_length(monkeypatch):
    monkeypatch.setattr(C, "_PREPARED", {})
    monkeypatch.setattr(C, "average_length", lambda adapter, task, split=None, n=512: 12.0)


def test_choose_mask_by_sparsity_or_budget(tiny_multitask, fixed_length):
    scores = random_scores(tiny_multitask)
    by_rate = choose_mask(tiny_multitask, SST2, scores, sparsity=0.5)
    assert by_rate.digest() == mask_from_scores(scores, 0.5, kinds="ffn").digest()
    budget = choose_mask(tiny_multitask, SST2, scores, budget="flops:0.6")
    assert budget.scope == "budget" and budget.kinds == "all" and budget.meta["seq_len"] == 12.0
    assert budget.meta["budget"] == "flops:0.6" and budget.meta["cost_fraction_kept"] <= 0.6
    assert flops_kept(tiny_multitask, SST2, budget) == pytest.approx(budget.meta["cost_fraction_kept"])
    by_params = choose_mask(tiny_multitask, SST2, scores, budget=Budget("params", 0.5))
    assert by_params.meta["seq_len"] == 12.0 and by_params.meta["cost_fraction_kept"] <= 0.5
    with pytest.raises(MtpruneError, match="a sparsity or a budget"):
        choose_mask(tiny_multitask, SST2, scores, sparsity=0.5, budget="flops:0.5")


def test_prune_applies_a_mask_and_repairs_with_a_solver(tiny_multitask, fixed_length):
    mask = mask_from_scores(random_scores(tiny_multitask), 0.5, kinds="all")
    rows = [dict(r) for r in SST2_ROWS] * 5
    plain = prune(tiny_multitask, SST2, mask=mask)
    assert plain.report.solver == "none" and plain.params_pruned == count_parameters(tiny_multitask, mask)
    assert plain.params_dense == tiny_multitask.num_parameters() > plain.params_pruned
    fixed = prune(tiny_multitask, SST2, mask=mask, repair_with="lsq", calibration=rows)
    assert fixed.report.solver == "lsq" and fixed.report.calibration_rows == len(rows) and fixed.mask is mask
    batch = tiny_multitask.encode([dict(r) for r in SST2_ROWS], SST2)
    with torch.no_grad():
        same = hard_prune(tiny_multitask, mask).logits(batch, SST2)
        assert torch.allclose(plain.adapter.logits(batch, SST2), same)
        if fixed.report.changed:  # a refit changes the outputs; the dense adapter stays as it was
            assert not torch.allclose(fixed.adapter.logits(batch, SST2), same)
    assert tiny_multitask.num_parameters() == plain.params_dense
    with pytest.raises(MtpruneError, match="scores or a mask"):
        prune(tiny_multitask, SST2)


def test_plan_calibration_steps_aside_only_when_defaulted(shared_home):
    imdb = get_task("imdb")  # an unseen domain: no split apart from the one it is measured on
    plan = plan_calibration(imdb, None, "lsq", 16)
    assert plan.solver == "none" and "not repaired: imdb has no split apart from validation" in plan.notes[0]
    asked = plan_calibration(imdb, "lsq", "lsq", 16)
    assert asked.solver == "lsq" and len(asked.rows) == 16 and asked.source == "imdb/validation"
    plan = plan_calibration(SST2, None, "lsq", 16)
    assert plan.solver == "lsq" and len(plan.rows) == 16 and plan.source == "sst2/train" and not plan.notes
    assert plan_calibration(SST2, "none").rows == ()
    with pytest.raises(MtpruneError, match="unknown repair"):
        plan_calibration(SST2, "magic")
