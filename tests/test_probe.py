"""One unit up close (mtprune.probe): its activation at every token, the rows where it fires most,
and P(gold) with the unit alone switched off."""

import numpy as np
import pytest
import torch

from mtprune.errors import MtpruneError
from mtprune.evaluation import evaluate
from mtprune.masks import Mask
from mtprune.tasks import get_task
from mtprune.probe import UnitRef, ablate_unit, top_activating, unit_activations
from mtprune_dev.masks import full_mask


def _ffn_input(adapter, rows, layer, unit):
    """The FFN neuron's activation read straight from the model (the out projection's input)."""
    got = {}
    site = next(s for s in adapter.unit_sites() if s.name == f"encoder.{layer}.ffn")
    mod = adapter.model.get_submodule(site.out_proj)
    def grab(m, a):
        got.setdefault("x", a[0][..., unit].detach().clone())  # returns None: the input is left alone

    h = mod.register_forward_pre_hook(grab)
    try:
        with torch.inference_mode():
            adapter.logits(adapter.encode(rows, get_task("sst2")), get_task("sst2"))
    finally:
        h.remove()
    return got["x"]


def test_activations_are_the_units_own_values_without_padding(tiny_multitask, sst2_rows):
    ref = UnitRef("encoder.ffn", 1, 5)
    fired = unit_activations(tiny_multitask, "sst2", sst2_rows, ref, batch_size=len(sst2_rows))
    direct = _ffn_input(tiny_multitask, sst2_rows, 1, 5)
    enc = tiny_multitask.encode(sst2_rows, get_task("sst2"))
    assert [f.index for f in fired] == list(range(len(sst2_rows)))
    for i, f in enumerate(fired):
        n = int(enc["attention_mask"][i].sum())
        assert len(f.tokens) == len(f.values) == n  # padding left out
        assert f.tokens[0] == "[CLS]" and f.tokens[-1] == "[SEP]"
        np.testing.assert_allclose(f.values, direct[i, :n].numpy(), rtol=1e-5, atol=1e-6)
        assert f.peak == pytest.approx(float(np.abs(f.values).max()))


def test_top_activating_sorts_by_peak(tiny_multitask, sst2_rows):
    ref = UnitRef("encoder.ffn", 0, 3)
    every = unit_activations(tiny_multitask, "sst2", sst2_rows, ref)
    top = top_activating(tiny_multitask, "sst2", sst2_rows, ref, k=2)
    assert [f.peak for f in top] == sorted((f.peak for f in every), reverse=True)[:2]


def _head_context_norms(adapter, rows, head, width=8):
    """Layer 0's head ``head`` computed by hand from the embeddings and the q/k/v weights:
    softmax(q k^T / sqrt(width) + padding mask) v, its norm at every token [B, T]."""
    task = get_task("sst2")
    enc = adapter.encode(rows, task)
    attn = adapter.model.encoder.layer[0].attention.self
    cols = slice(head * width, (head + 1) * width)
    with torch.inference_mode():
        h = adapter.model.embeddings(input_ids=enc["input_ids"], token_type_ids=enc.get("token_type_ids"))
        q, k, v = (torch.nn.functional.linear(h, m.weight[cols], m.bias[cols]) for m in (attn.query, attn.key, attn.value))
        scores = q @ k.transpose(1, 2) / width ** 0.5
        scores = scores.masked_fill(~enc["attention_mask"].bool()[:, None, :], float("-inf"))
        return (scores.softmax(-1) @ v).norm(dim=-1), enc["attention_mask"]


def test_a_head_fires_with_the_norm_of_its_output(tiny_multitask, sst2_rows):
    ref = UnitRef("encoder.heads", 0, 1)
    fired = unit_activations(tiny_multitask, "sst2", sst2_rows, ref, batch_size=4)  # two batches, padded
    norms, am = _head_context_norms(tiny_multitask, sst2_rows, 1)
    other, _ = _head_context_norms(tiny_multitask, sst2_rows, 2)
    assert [f.index for f in fired] == list(range(len(sst2_rows)))
    for i, f in enumerate(fired):
        n = int(am[i].sum())
        assert len(f.values) == n
        np.testing.assert_allclose(f.values, norms[i, :n].numpy(), rtol=1e-4, atol=1e-6)
        assert not np.allclose(f.values, other[i, :n].numpy(), rtol=1e-2)  # the head, not its neighbour
        assert f.peak == pytest.approx(float(norms[i, :n].max()), rel=1e-4)


def test_ablating_one_unit_matches_a_one_unit_mask(tiny_multitask, sst2_rows):
    ref = UnitRef("encoder.ffn", 1, 7)
    out = ablate_unit(tiny_multitask, "sst2", sst2_rows, ref)
    dense = evaluate(tiny_multitask, "sst2", rows=sst2_rows)
    np.testing.assert_allclose(out["p_gold"], dense.predictions.p_gold, rtol=1e-5)
    full = full_mask(tiny_multitask.unit_sites())
    keep = {g: k.copy() for g, k in full.keep.items()}
    keep["encoder.ffn"][1, 7] = False
    one = Mask(keep=keep, n_units=full.n_units, sparsity=0.0)
    without = evaluate(tiny_multitask, "sst2", rows=sst2_rows, mask=one)
    np.testing.assert_allclose(out["p_gold_without"], without.predictions.p_gold, rtol=1e-5)
    np.testing.assert_allclose(out["change"], out["p_gold_without"] - out["p_gold"])
    assert np.abs(out["change"]).max() > 0  # the unit does something in this random model


def test_bad_units_are_one_clear_error(tiny_multitask, sst2_rows):
    with pytest.raises(MtpruneError, match="no unit site encoder.9.ffn"):
        unit_activations(tiny_multitask, "sst2", sst2_rows, UnitRef("encoder.ffn", 9, 0))
    with pytest.raises(MtpruneError, match="there is no unit 999"):
        ablate_unit(tiny_multitask, "sst2", sst2_rows, UnitRef("encoder.ffn", 0, 999))
    with pytest.raises(MtpruneError, match="labels"):
        ablate_unit(tiny_multitask, "sst2", [{"sentence": "no label"}], UnitRef("encoder.ffn", 0, 1))
    assert str(UnitRef("encoder.ffn", 3, 17)) == "encoder.3.ffn[17]"
