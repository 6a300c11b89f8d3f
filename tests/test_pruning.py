"""Soft and hard pruning on every architecture (their saving and loading: test_checkpoints.py)."""


import pytest
import torch
from torch import nn

from mtprune.errors import MtpruneError
from mtprune.masks import mask_from_scores
from mtprune.checkpoints import adapter_for, load_adapter, save_model
from mtprune.layers import slice_linear
from mtprune.pruning import NoHeadsAttention, count_parameters, hard_prune, site_sizes, soft_prune
from mtprune.tasks import get_task
from mtprune.units import active_hooks
from tests.conftest import random_scores

SST2 = get_task("sst2")
TOL = 1e-4


def logits(adapter, rows, task=SST2):
    with torch.no_grad():
        return adapter.logits(adapter.encode(rows, task), task)


def weights_snapshot(adapter):
    return {k: v.clone() for k, v in adapter.model.state_dict().items()}


def assert_unchanged(adapter, snap):
    now = adapter.model.state_dict()
    assert set(now) == set(snap)
    assert all(torch.equal(now[k], snap[k]) for k in snap)


def check_hard_equals_soft(adapter, mask, rows):
    snap = weights_snapshot(adapter)
    cfg_before = adapter.model.config.to_dict()
    dense = logits(adapter, rows)
    with soft_prune(adapter, mask) as names:
        assert names  # something is masked
        soft = logits(adapter, rows)
    assert active_hooks(adapter.model) == []
    assert not torch.allclose(soft, dense, atol=1e-6), "the mask should change the logits"
    small = hard_prune(adapter, mask)
    hard = logits(small, rows)
    assert (hard - soft).abs().max().item() < TOL
    # the input adapter is untouched
    assert_unchanged(adapter, snap)
    assert adapter.model.config.to_dict() == cfg_before
    assert torch.equal(logits(adapter, rows), dense)
    assert small.num_parameters() == count_parameters(adapter, mask) < adapter.num_parameters()
    return small, hard


# ----------------------------------------------------------------------------------------------
# slice_linear


def test_slice_linear_outputs_and_inputs():
    torch.manual_seed(0)
    lin = nn.Linear(5, 4)
    x = torch.randn(3, 5)
    out = slice_linear(lin, [0, 2], dim=0)
    assert (out.in_features, out.out_features) == (5, 2)
    assert torch.allclose(out(x), lin(x)[:, [0, 2]])
    inp = slice_linear(lin, [1, 3, 4], dim=1)
    assert (inp.in_features, inp.out_features) == (3, 4)
    assert torch.allclose(inp(x[:, [1, 3, 4]]), x[:, [1, 3, 4]] @ lin.weight[:, [1, 3, 4]].T + lin.bias)
    assert lin.weight.shape == (4, 5)  # pure
    empty = slice_linear(lin, [], dim=1)
    assert torch.allclose(empty(x[:, :0]), lin.bias.expand(3, 4))


def test_slice_conv1d():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(4, 5)  # nf=4 outputs, nx=5 inputs, weight [5, 4]
    x = torch.randn(2, 3, 5)
    out = slice_linear(conv, [1, 3], dim=0)
    assert torch.allclose(out(x), conv(x)[..., [1, 3]])
    inp = slice_linear(conv, [0, 4], dim=1)
    assert inp.weight.shape == (2, 4)
    empty = slice_linear(conv, [], dim=1)
    assert torch.allclose(empty(x[..., :0]), conv.bias.expand(2, 3, 4))


# ----------------------------------------------------------------------------------------------
# hard == soft on every architecture


@pytest.mark.parametrize("units", ["ffn", "heads", "all"])
def test_multitask_hard_equals_soft(tiny_multitask, sst2_rows, units):
    mask = mask_from_scores(random_scores(tiny_multitask), 0.5, kinds=units)
    small, _ = check_hard_equals_soft(tiny_multitask, mask, sst2_rows)
    sizes = site_sizes(small)
    if units in ("ffn", "all"):
        assert sizes["encoder.0.ffn"] == 24
    if units in ("heads", "all"):
        attn = small.model.get_submodule("encoder.layer.0.attention.self")
        assert attn.num_attention_heads == 2 and attn.all_head_size == 16
        assert small.model.encoder.layer[0].attention.self.query.out_features == 16
    assert small.model.config.mtprune_pruned["sizes"] == sizes


def test_ragged_and_empty_layers(tiny_multitask, sst2_rows, cb_rows):
    scores = random_scores(tiny_multitask, seed=3)
    # layer 1 scores far above layer 0: a global mask empties layer 0 entirely
    for g in scores["arrays"]:
        scores["arrays"][g][1] += 10
    mask = mask_from_scores(scores, 0.5, scope="global", kinds="all")
    assert mask.kept_per_layer("encoder.ffn") == [0, 48]
    assert mask.kept_per_layer("encoder.heads") == [0, 4]
    small, _ = check_hard_equals_soft(tiny_multitask, mask, sst2_rows)
    assert isinstance(small.model.get_submodule("encoder.layer.0.attention.self"), NoHeadsAttention)
    assert site_sizes(small) == {"encoder.0.ffn": 0, "encoder.0.heads": 0, "encoder.1.ffn": 48, "encoder.1.heads": 4}
    # other heads of the multi-task model work too
    with soft_prune(tiny_multitask, mask):
        soft_cb = logits(tiny_multitask, cb_rows, get_task("cb"))
    assert (logits(small, cb_rows, get_task("cb")) - soft_cb).abs().max() < TOL
    # a ragged global mask at another rate
    m2 = mask_from_scores(random_scores(tiny_multitask, seed=5), 0.6, scope="global", kinds="all")
    assert len(set(m2.kept_per_layer("encoder.ffn"))) > 1
    check_hard_equals_soft(tiny_multitask, m2, sst2_rows)


def test_seqcls_hard_equals_soft(tiny_seqcls, sst2_rows):
    mask = mask_from_scores(random_scores(tiny_seqcls), 0.4, kinds="all", scope="global")
    check_hard_equals_soft(tiny_seqcls, mask, sst2_rows)


def test_t5_heads_removed_physically(tiny_t5, sst2_rows):
    """Every layer keeps other heads; the shared relative position bias is sliced per layer."""
    scores = random_scores(tiny_t5)
    mask = mask_from_scores(scores, 0.5, kinds="ffn", scope="global")
    small, _ = check_hard_equals_soft(tiny_t5, mask, sst2_rows)
    assert sum(site_sizes(small)[f"decoder.{i}.ffn"] for i in range(2)) + \
        sum(site_sizes(small)[f"encoder.{i}.ffn"] for i in range(2)) == 96
    heads = mask_from_scores(scores, 0.5, kinds="heads", scope="global")
    assert len({tuple(map(tuple, heads.keep[g].nonzero())) for g in heads.groups}) > 1
    small, _ = check_hard_equals_soft(tiny_t5, heads, sst2_rows)
    kept = {n: b.tolist() for n, b in small.model.named_buffers() if n.endswith("kept_heads")}
    assert kept["encoder.block.0.layer.0.SelfAttention.kept_heads"] == \
        [int(i) for i in heads.keep["encoder.heads"][0].nonzero()[0]]
    attn = small.model.get_submodule("encoder.block.0.layer.0.SelfAttention")
    n0 = heads.kept_per_layer("encoder.heads")[0]
    assert attn.n_heads == n0 and attn.q.out_features == 8 * n0 and attn.relative_attention_bias.weight.shape[1] == 4
    # a layer with no head left, and the first layer (which owns the bias table) among them
    for g in scores["arrays"]:
        scores["arrays"][g][1] += 10
    empty = mask_from_scores(scores, 0.5, kinds="all", scope="global")
    assert empty.kept_per_layer("encoder.heads") == [0, 4] and empty.kept_per_layer("decoder.heads") == [0, 4]
    small, _ = check_hard_equals_soft(tiny_t5, empty, sst2_rows)
    # and pruned again: the kept heads are indices among the stack's original heads
    again_mask = mask_from_scores(random_scores(small, seed=4), 0.5, kinds="heads")
    with soft_prune(small, again_mask):
        soft = logits(small, sst2_rows)
    again = hard_prune(small, again_mask)
    assert (logits(again, sst2_rows) - soft).abs().max().item() < TOL
    assert again.model.get_submodule("encoder.block.1.layer.0.SelfAttention").kept_heads.numel() == 2


def test_grouped_attention_loses_whole_groups(tiny_grouped, sst2_rows):
    a = tiny_grouped
    sites = {s.name: s for s in a.unit_sites()}
    g, h = sites["decoder.0.kv"], sites["decoder.0.heads"]
    ratio = 8 // g.n_units
    assert (g.heads_per_unit, g.width, h.width, h.n_units) == (ratio, ratio * 4, 4, 8)
    assert g.hard_prunable and not h.hard_prunable and h.view_of == "kv"
    scores = random_scores(a, seed=1)
    for kinds in ("kv", "all"):
        mask = mask_from_scores(scores, 0.5, kinds=kinds, scope="global")
        # the query heads of a pruned group go with it
        for layer in range(2):
            want = mask.keep["decoder.kv"][layer, : g.n_units].repeat(ratio)
            assert (mask.keep["decoder.heads"][layer, :8] == want).all()
        small, _ = check_hard_equals_soft(a, mask, sst2_rows)
        sizes = site_sizes(small)
        for layer in range(2):
            kept = mask.kept_per_layer("decoder.kv")[layer]
            assert sizes[f"decoder.{layer}.kv"] == kept and sizes[f"decoder.{layer}.heads"] == kept * ratio
            attn = small.model.get_submodule(f"model.layers.{layer}.self_attn")
            if kept:
                assert attn.k_proj.out_features == 4 * kept and attn.q_proj.out_features == 4 * kept * ratio
        if kinds == "all":
            assert mask.kept("decoder.ffn") == 48
    check_hard_equals_soft(a, mask_from_scores(scores, 1.0, kinds="all"), sst2_rows)


def test_grouped_single_heads_are_soft_only(tiny_grouped, sst2_rows):
    a = tiny_grouped
    heads = mask_from_scores(random_scores(a), 0.5, kinds="heads")
    with soft_prune(a, heads):
        logits(a, sst2_rows)
    with pytest.raises(MtpruneError, match="cannot lose single query heads physically.*shared by .* query heads; "
                                           "prune whole key/value groups \\(--kinds kv\\), or .* soft mask"):
        hard_prune(a, heads)


@pytest.mark.parametrize("units", ["ffn", "heads", "all"])
def test_causal_hard_equals_soft(tiny_causal, sst2_rows, units):
    mask = mask_from_scores(random_scores(tiny_causal), 0.5, kinds=units, scope="global")
    check_hard_equals_soft(tiny_causal, mask, sst2_rows)
    full = mask_from_scores(random_scores(tiny_causal), 1.0, kinds=units)
    check_hard_equals_soft(tiny_causal, full, sst2_rows)


def test_soft_prune_is_reversible_after_error(tiny_multitask, sst2_rows):
    mask = mask_from_scores(random_scores(tiny_multitask), 0.5, kinds="all")
    dense = logits(tiny_multitask, sst2_rows)
    with pytest.raises(RuntimeError):
        with soft_prune(tiny_multitask, mask):
            raise RuntimeError("boom")
    assert active_hooks(tiny_multitask.model) == []
    assert torch.equal(logits(tiny_multitask, sst2_rows), dense)


def test_shape_mismatch(tiny_multitask, tiny_seqcls, tokenizer):
    from transformers import BertModel

    from tests.conftest import tiny_bert_config

    other = adapter_for(BertModel(tiny_bert_config(tokenizer, intermediate_size=40)), tokenizer,
                        heads={"sst2": nn.Linear(32, 2)})
    mask = mask_from_scores(random_scores(other), 0.5)
    for fn in (hard_prune, count_parameters):
        with pytest.raises(MtpruneError, match="made for another model: encoder.ffn units per layer are \\[40, 40\\]"):
            fn(tiny_multitask, mask)
    with pytest.raises(MtpruneError, match="another model"):
        with soft_prune(tiny_multitask, mask):
            pass


# ----------------------------------------------------------------------------------------------
# the real default model (read-only)


def test_default_model_hard_equals_soft_and_reloads(default_adapter, tmp_path):
    from mtprune.tasks import load_rows, rows_as_list

    a = default_adapter
    rows = rows_as_list(load_rows(SST2, "validation"), 12)
    ffn = mask_from_scores(random_scores(a), 0.5, kinds="ffn")
    small, hard = check_hard_equals_soft(a, ffn, rows)
    assert all(v == 768 for k, v in site_sizes(small).items() if k.endswith("ffn"))
    out = save_model(small, tmp_path / "p", ffn)
    back = load_adapter(str(out))
    assert (logits(back, rows) - hard).abs().max().item() < TOL
    both = mask_from_scores(random_scores(a, seed=1), 0.5, kinds="all", scope="global")
    check_hard_equals_soft(a, both, rows)


def test_hard_prune_problem_names_the_sites(tiny_grouped):
    from mtprune.masks import Mask
    from mtprune_dev.masks import full_mask
    from mtprune.pruning import hard_prune_problem

    full = full_mask(tiny_grouped.unit_sites())
    assert hard_prune_problem(tiny_grouped, full) is None
    keep = {g: k.copy() for g, k in full.keep.items()}
    keep["decoder.heads"][1, 1] = False
    m = Mask(keep=keep, n_units=full.n_units, sparsity=0.1, kinds="all")
    assert "decoder.1.heads" in hard_prune_problem(tiny_grouped, m)
    with pytest.raises(MtpruneError, match="cannot lose single query heads"):
        hard_prune(tiny_grouped, m)
