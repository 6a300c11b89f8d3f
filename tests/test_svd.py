"""The SVD baseline: ranks matched to the pruned parameter count, exact module swaps, restore."""

import pytest
import torch
from torch import nn

from mtprune.errors import MtpruneError
from mtprune.masks import mask_from_scores
from mtprune.pruning import count_parameters, soft_prune
from mtprune.svd import (Matrix, SVDCache, low_rank, plan_svd, rank_for_budget, site_matrices, svd_compress,
                         svd_params_for_sparsity)
from mtprune.tasks import get_task
from tests.conftest import random_scores

SST2 = get_task("sst2")


def _n_params(adapter):
    n = sum(p.numel() for p in adapter.model.parameters())
    if hasattr(adapter, "task_heads"):
        n += sum(p.numel() for p in adapter.task_heads.parameters())
    return n


def test_rank_for_budget_is_the_largest_rank_that_fits():
    mats = [Matrix("a", 10, 4, 10, 0), Matrix("b", 4, 10, 4, 0)]  # 28 params per rank, 14 fixed
    assert rank_for_budget(mats, 14) == 0
    assert rank_for_budget(mats, 14 + 27) == 0
    assert rank_for_budget(mats, 14 + 28) == 1
    assert rank_for_budget(mats, 14 + 3 * 28 + 27) == 3
    assert rank_for_budget(mats, 10**9) == 4  # capped at full rank
    assert rank_for_budget(mats, 0) == 0


def test_ffn_closed_form_matches_the_default_model_sizes():
    # BERT FFN of the default model: 1536 neurons over 384; p = 0.5 keeps 768
    r, params = svd_params_for_sparsity(1536, 384, 768)
    pruned = 2 * 768 * 384 + 768 + 384
    assert params <= pruned < params + 2 * (1536 + 384)
    assert r == (pruned - 1536 - 384) // (2 * (1536 + 384))


@pytest.mark.parametrize("units", ["ffn", "heads", "all"])
@pytest.mark.parametrize("p", [0.25, 0.5, 0.75, 1.0])
def test_plan_matches_count_parameters(tiny_multitask, units, p):
    a = tiny_multitask
    mask = mask_from_scores(random_scores(a), p, kinds=units)
    plan = plan_svd(a, mask)
    assert plan.model_params == _n_params(a)
    assert plan.pruned_model_params == count_parameters(a, mask)
    for sp in plan.sites:
        per_rank = sum(m.rows + m.cols for m in sp.matrices)
        assert sp.svd_params <= sp.pruned_params
        if sp.rank > 0:
            assert sp.pruned_params - sp.svd_params < per_rank  # r + 1 would not fit
        else:  # nothing kept: out bias only, exactly the pruned site
            assert sp.kept == 0 or sp.pruned_params - sp.svd_params < per_rank
    assert plan.svd_model_params <= plan.pruned_model_params


def test_svd_compress_swaps_exactly_and_restores(tiny_multitask, sst2_rows):
    a = tiny_multitask
    fp = a.fingerprint()
    before = {k: v.clone() for k, v in a.model.state_dict().items()}
    mask = mask_from_scores(random_scores(a), 0.5, kinds="all")
    batch = a.encode(sst2_rows, SST2)
    with torch.no_grad():
        dense = a.logits(batch, SST2)
        with svd_compress(a, mask) as plan:
            assert _n_params(a) == plan.svd_model_params
            ffn_in = a.model.get_submodule("encoder.layer.0.intermediate.dense")
            assert type(ffn_in).__name__ == "LowRankLinear" and ffn_in.rank == plan.sites[0].rank
            low = a.logits(batch, SST2)
    assert not torch.allclose(dense, low)
    assert type(a.model.get_submodule("encoder.layer.0.intermediate.dense")) is nn.Linear
    after = a.model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert a.fingerprint() == fp


def test_svd_compress_restores_when_the_block_raises(tiny_multitask):
    a = tiny_multitask
    mask = mask_from_scores(random_scores(a), 0.5)
    with pytest.raises(RuntimeError):
        with svd_compress(a, mask):
            raise RuntimeError("boom")
    assert type(a.model.get_submodule("encoder.layer.1.output.dense")) is nn.Linear


def test_full_rank_factorisation_is_exact():
    torch.manual_seed(0)
    lin = nn.Linear(6, 9)
    lr = low_rank(lin, 6)
    x = torch.randn(4, 6)
    assert torch.allclose(lr(x), lin(x), atol=1e-5)
    assert lr.num_parameters() == 6 * (6 + 9) + 9
    with pytest.raises(MtpruneError, match="outside"):
        low_rank(lin, 7)


def test_conv1d_factorisation_is_exact():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(12, 5)  # 5 in, 12 out, weight [5, 12]
    x = torch.randn(3, 5)
    assert torch.allclose(low_rank(conv, 5)(x), conv(x), atol=1e-5)


def test_all_pruned_svd_equals_pruning(tiny_multitask, sst2_rows):
    """At p = 1 every site has rank 0: it outputs its out bias, exactly as the pruned site."""
    a = tiny_multitask
    mask = mask_from_scores(random_scores(a), 1.0, kinds="all")
    batch = a.encode(sst2_rows, SST2)
    with torch.no_grad():
        with soft_prune(a, mask):
            pruned = a.logits(batch, SST2)
        with svd_compress(a, mask) as plan:
            svd = a.logits(batch, SST2)
    assert all(sp.rank == 0 for sp in plan.sites)
    assert plan.svd_model_params == plan.pruned_model_params == count_parameters(a, mask)
    assert torch.allclose(pruned, svd, atol=1e-5)


def test_other_architectures(tiny_causal, sst2_rows):
    a = tiny_causal
    mask = mask_from_scores(random_scores(a), 0.5, kinds="all")
    plan = plan_svd(a, mask)
    assert plan.pruned_model_params == count_parameters(a, mask)
    with torch.no_grad(), svd_compress(a, mask) as p:
        assert _n_params(a) == p.svd_model_params
        out = a.logits(a.encode(sst2_rows[:2], SST2), SST2)
    assert out.shape == (2, 2) and torch.isfinite(out).all()


def test_cache_factorises_each_matrix_once(tiny_multitask):
    a = tiny_multitask
    cache = SVDCache()
    for p in (0.25, 0.5, 0.75):
        with svd_compress(a, mask_from_scores(random_scores(a), p), cache):
            pass
    assert len(cache) == 2 * 2  # FFN in and out of two layers


def test_site_matrices_rejects_bad_counts(tiny_multitask):
    s = tiny_multitask.unit_sites()[0]
    with pytest.raises(MtpruneError):
        site_matrices(tiny_multitask.model, s, s.n_units + 1)
