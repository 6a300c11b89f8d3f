"""Attribution methods on tiny models of every format and on the real default model."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from mtprune.attribution import AttributionSpec, Scores, ap_per_layer, attribute, sample_for
from mtprune.methods import engine, method_names
from mtprune.methods.engine import label_probs
from mtprune.errors import MtpruneError
from mtprune.tasks import get_task
from mtprune.units import active_hooks, soft_mask

SST2 = get_task("sst2")


def _rows():
    from tests.conftest import SST2_ROWS

    return [dict(r) for r in SST2_ROWS]


def _spec(**kw):
    kw.setdefault("task", "sst2")
    return AttributionSpec(**kw)


def _run(adapter, rows=None, batch_size=4, **kw):
    return attribute(adapter, _spec(**kw), rows=_rows() if rows is None else rows, batch_size=batch_size)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the largest score of the group."""
    a, b = np.nan_to_num(a), np.nan_to_num(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _assert_close(s1: Scores, s2: Scores, tol=1e-5, scale=1.0):
    assert s1.groups == s2.groups
    for g in s1.groups:
        assert _rel(s1.arrays[g], scale * s2.arrays[g]) < tol, g


# ----------------------------------------------------------------------------------------------
# the spec


@pytest.mark.parametrize("kw, match", [
    (dict(examples=0), "at least 1, not 0"),
    (dict(examples=-5), "at least 1, not -5"),
    (dict(steps=0), "steps.*at least 1"),
    (dict(method="nope"), "unknown method 'nope'"),
    (dict(variant="squared"), "unknown variant"),
    (dict(kinds="neurons"), "kinds must be one of"),
    (dict(split="dev"), "no split 'dev'"),
    (dict(seed=-1), "non-negative"),
    (dict(task="nope"), "unknown task"),
    (dict(method="random", unsupervised=True), "--unsupervised applies to"),
    (dict(method="random-label", unsupervised=True), "--unsupervised applies to"),
])
def test_spec_rejects_bad_values(kw, match):
    with pytest.raises(MtpruneError, match=match):
        _spec(**kw)


def test_spec_defaults_and_key():
    s = _spec()
    assert (s.method, s.variant, s.examples, s.seed, s.steps, s.kinds) == ("ap", "abs", 256, 0, 20, "all")
    assert s.resolved_split == "train" and _spec(task="imdb").resolved_split == "validation"
    assert s.to_dict()["split"] is None
    # settings a method ignores do not split the cache
    assert _spec(steps=5).key_dict() == s.key_dict()
    assert _spec(method="ig", steps=5).key_dict() != _spec(method="ig").key_dict()
    assert _spec(split="train").key_dict() == s.key_dict()
    assert _spec(method="magnitude", seed=3).key_dict() == _spec(method="magnitude").key_dict()
    assert set(method_names(scores=True)) >= {"ap", "ig", "activation", "random", "magnitude", "random-label"}


# ----------------------------------------------------------------------------------------------
# every method on every format


def _check_all_methods(adapter, groups: set[str]):
    model = adapter.model
    widths = {s.group: s.n_units for s in adapter.unit_sites()}  # 48 neurons (GPT-2: 128), 4 heads
    out = {}
    for method in ("ap", "ig", "activation", "random", "magnitude", "random-label"):
        for variant in (("abs", "signed") if method in ("ap", "ig", "random-label") else ("abs",)):
            s = _run(adapter, method=method, variant=variant, steps=3)
            assert set(s.groups) == groups
            for g, a in s.arrays.items():
                assert a.dtype == np.float32 and a.shape == (2, widths[g])
                assert np.isfinite(a).all(), (method, g)
                assert s.n_units[g] == [a.shape[1]] * 2
                if variant == "abs":
                    assert (a >= 0).all()
            assert np.abs(np.concatenate([a.ravel() for a in s.arrays.values()])).sum() > 0, method
            out[(method, variant)] = s
    assert active_hooks(model) == []
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())
    # the signed sums cancel: some units are negative
    assert any((s.arrays[g] < 0).any() for g in out[("ap", "signed")].groups for s in [out[("ap", "signed")]])
    assert not np.allclose(out[("ap", "abs")].arrays[sorted(groups)[0]], out[("random-label", "abs")].arrays[sorted(groups)[0]])
    return out


def test_methods_multitask(tiny_multitask):
    _check_all_methods(tiny_multitask, {"encoder.ffn", "encoder.heads"})


def test_methods_seqcls(tiny_seqcls):
    _check_all_methods(tiny_seqcls, {"encoder.ffn", "encoder.heads"})


def test_methods_t5(tiny_t5):  # plain and gated (wi_0/wi_1)
    _check_all_methods(tiny_t5, {"encoder.ffn", "encoder.heads", "decoder.ffn", "decoder.heads"})


def test_methods_causal(tiny_causal):  # llama (gate/up/down) and gpt2 (Conv1D, fused qkv)
    _check_all_methods(tiny_causal, {"decoder.ffn", "decoder.heads"})


def test_units_selection(tiny_t5):
    assert set(_run(tiny_t5, kinds="ffn").groups) == {"encoder.ffn", "decoder.ffn"}
    assert set(_run(tiny_t5, kinds="heads").groups) == {"encoder.heads", "decoder.heads"}


# ----------------------------------------------------------------------------------------------
# one fused pass == one pass per layer; padding; IG


def _fused_vs_loop(adapter, **kw):
    rows = _rows()
    spec = _spec(**kw)
    fused = attribute(adapter, spec, rows=rows, batch_size=4)
    for by in ("site", "layer"):
        loop = ap_per_layer(adapter, spec, rows, batch_size=4, by=by)
        _assert_close(fused, loop, 1e-5)


def test_fused_pass_equals_per_layer_loop_encoders(tiny_multitask, tiny_seqcls):
    _fused_vs_loop(tiny_multitask)
    _fused_vs_loop(tiny_multitask, variant="signed")
    _fused_vs_loop(tiny_seqcls)


def test_fused_pass_equals_per_layer_loop_t5(tiny_t5):
    _fused_vs_loop(tiny_t5)


def test_fused_pass_equals_per_layer_loop_causal(tiny_causal):
    _fused_vs_loop(tiny_causal, variant="signed")


def _batch_invariance(adapter):
    """Padding gets no gradient and no activation share: one example per batch or all in one
    batch give the same scores."""
    for method in ("ap", "activation"):
        one = _run(adapter, method=method, batch_size=1)
        all_ = _run(adapter, method=method, batch_size=6)
        _assert_close(one, all_, 1e-4)


def test_padding_ignored_encoders(tiny_multitask):
    _batch_invariance(tiny_multitask)


def test_padding_ignored_t5(tiny_t5):
    _batch_invariance(tiny_t5)


def test_padding_ignored_causal(tiny_causal):
    _batch_invariance(tiny_causal)


def test_ig_one_step_is_ap(tiny_multitask, tiny_t5):
    for a in (tiny_multitask, tiny_t5):
        for variant in ("abs", "signed"):
            ig1 = _run(a, method="ig", steps=1, variant=variant)
            ap = _run(a, method="ap", variant=variant)
            _assert_close(ig1, ap, 1e-7)


def test_ig_steps_batched_equals_chunked(tiny_multitask, monkeypatch):
    monkeypatch.setattr(engine, "IG_PASS_TOKENS", {"cpu": 10**6})  # all 8 steps in one pass
    batched = _run(tiny_multitask, method="ig", steps=8)
    monkeypatch.setattr(engine, "IG_PASS_TOKENS", {"cpu": 1})  # one step per pass
    chunked = _run(tiny_multitask, method="ig", steps=8, batch_size=1)
    _assert_close(batched, chunked, 1e-5)


def test_ig_completeness_on_the_joint_path(tokenizer):
    """All heads are scaled together: their signed IG scores add up to P(dense) - P(no heads)."""
    from transformers import BertModel

    from mtprune.checkpoints import adapter_for
    from tests.conftest import tiny_bert_config

    torch.manual_seed(0)  # larger weights than the fixtures': a tiny model whose heads matter
    model = BertModel(tiny_bert_config(tokenizer, initializer_range=0.3))
    head = torch.nn.Linear(32, 2)
    with torch.no_grad():
        head.weight.mul_(10)
    a = adapter_for(model, tokenizer, heads={"sst2": head})
    rows = _rows()
    ig = _run(a, method="ig", steps=100, variant="signed", kinds="heads")
    total = sum(np.nansum(x, dtype=np.float64) for x in ig.arrays.values())
    batch = a.encode(rows, SST2)
    gold = batch["labels"].view(-1, 1)
    heads = [s for s in a.unit_sites() if s.kind == "heads"]
    with torch.no_grad():
        dense = label_probs(a, SST2, batch).gather(1, gold).sum().item()
        with soft_mask(a.model, heads, {s.name: torch.zeros(s.n_units, dtype=torch.bool) for s in heads}):
            off = label_probs(a, SST2, batch).gather(1, gold).sum().item()
    assert abs(dense - off) > 0.5
    assert total == pytest.approx(dense - off, rel=0.01)  # right Riemann sum, 100 steps


# ----------------------------------------------------------------------------------------------
# identities of a two-label softmax


def test_other_label_abs_equals_ap_abs(tiny_multitask, tiny_seqcls):
    """dP(other)/dh = -dP(gold)/dh with two labels: towards the other label, abs is unchanged and
    signed flips. That is why random-label is not "the other label"."""
    rows = _rows()
    flipped = [dict(r, label=1 - r["label"]) for r in rows]
    for a in (tiny_multitask, tiny_seqcls):
        _assert_close(_run(a, rows=flipped), _run(a, rows=rows), 1e-5)
        # signed sums cancel, so float32 rounding shows a little more
        _assert_close(_run(a, rows=flipped, variant="signed"), _run(a, rows=rows, variant="signed"), 1e-4, scale=-1)


def test_unsupervised_is_twice_ap_abs_on_two_labels(tiny_multitask):
    rows = _rows()
    ap = _run(tiny_multitask, rows=rows)
    unsup = _run(tiny_multitask, rows=[{"sentence": r["sentence"]} for r in rows], unsupervised=True)
    _assert_close(unsup, ap, 1e-5, scale=2.0)
    for g in ap.groups:  # the same ranking
        assert (np.argsort(-unsup.arrays[g], axis=1) == np.argsort(-ap.arrays[g], axis=1)).mean() > 0.99
    # and for IG as well
    _assert_close(_run(tiny_multitask, rows=rows, unsupervised=True, method="ig", steps=3),
                  _run(tiny_multitask, rows=rows, method="ig", steps=3), 1e-5, scale=2.0)


def test_unsupervised_differs_with_three_labels_and_label_words(tiny_multitask, tiny_t5, cb_rows):
    cb = dict(task="cb")
    a3 = attribute(tiny_multitask, _spec(**cb), rows=cb_rows)
    u3 = attribute(tiny_multitask, _spec(unsupervised=True, **cb), rows=cb_rows)
    assert _rel(u3.arrays["encoder.ffn"], 2 * a3.arrays["encoder.ffn"]) > 1e-3
    # label words: P(label words) do not sum to one, no identity
    t = _run(tiny_t5)
    u = _run(tiny_t5, unsupervised=True)
    assert _rel(u.arrays["encoder.ffn"], 2 * t.arrays["encoder.ffn"]) > 1e-3


def test_random_label_is_a_control(tiny_multitask, tiny_t5, tiny_causal):
    for a in (tiny_multitask, tiny_t5, tiny_causal):
        ap = _run(a)
        rl = _run(a, method="random-label")
        g = ap.groups[0]
        assert _rel(rl.arrays[g], ap.arrays[g]) > 1e-2 and _rel(rl.arrays[g], ap.arrays[g] * (rl.arrays[g].sum() / ap.arrays[g].sum())) > 1e-2
        np.testing.assert_array_equal(rl.arrays[g], _run(a, method="random-label").arrays[g])
        assert _rel(_run(a, method="random-label", seed=1).arrays[g], rl.arrays[g]) > 1e-3


# ----------------------------------------------------------------------------------------------
# random, magnitude, activation


def test_random_is_seeded(tiny_multitask):
    r0 = attribute(tiny_multitask, _spec(method="random"))
    np.testing.assert_array_equal(r0.arrays["encoder.ffn"], attribute(tiny_multitask, _spec(method="random")).arrays["encoder.ffn"])
    assert not np.array_equal(r0.arrays["encoder.ffn"], attribute(tiny_multitask, _spec(method="random", seed=1)).arrays["encoder.ffn"])
    assert r0.meta["examples"] == 0


def test_magnitude_is_the_weight_norm(tiny_multitask, tiny_causal):
    s = attribute(tiny_multitask, _spec(method="magnitude"))
    layer = tiny_multitask.model.encoder.layer[1]
    i = 7
    want = torch.sqrt(layer.intermediate.dense.weight[i].pow(2).sum() + layer.output.dense.weight[:, i].pow(2).sum())
    assert s.arrays["encoder.ffn"][1, i] == pytest.approx(want.item(), rel=1e-5)
    h = 2  # head 2, 8 dims: its q/k/v rows and its o columns
    att = layer.attention
    rows = slice(h * 8, (h + 1) * 8)
    sq = sum(m.weight[rows].pow(2).sum() for m in (att.self.query, att.self.key, att.self.value))
    sq = sq + att.output.dense.weight[:, rows].pow(2).sum()
    assert s.arrays["encoder.heads"][1, h] == pytest.approx(sq.sqrt().item(), rel=1e-5)
    c = attribute(tiny_causal, _spec(method="magnitude"))
    if tiny_causal.model.config.model_type == "gpt2":  # Conv1D stores [in, out]
        mlp = tiny_causal.model.transformer.h[0].mlp
        want = torch.sqrt(mlp.c_fc.weight[:, i].pow(2).sum() + mlp.c_proj.weight[i].pow(2).sum())
    else:  # gate_proj and up_proj rows, down_proj column
        mlp = tiny_causal.model.model.layers[0].mlp
        want = torch.sqrt(mlp.gate_proj.weight[i].pow(2).sum() + mlp.up_proj.weight[i].pow(2).sum()
                          + mlp.down_proj.weight[:, i].pow(2).sum())
    assert c.arrays["decoder.ffn"][0, i] == pytest.approx(want.item(), rel=1e-5)


def test_magnitude_with_grouped_key_value_heads(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    from mtprune.checkpoints import adapter_for

    torch.manual_seed(4)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id)
    a = adapter_for(LlamaForCausalLM(cfg), tokenizer)
    s = attribute(a, _spec(method="magnitude", kinds="all"))
    att = a.model.model.layers[0].self_attn
    h, kv = 3, 1  # query head 3 reads key/value head 1, which query heads 2 and 3 share
    q, o = slice(h * 8, (h + 1) * 8), slice(kv * 8, (kv + 1) * 8)
    sq = att.q_proj.weight[q].pow(2).sum() + att.o_proj.weight[:, q].pow(2).sum()
    assert s.arrays["decoder.heads"][0, h] == pytest.approx(sq.sqrt().item(), rel=1e-5)
    g = slice(2 * 8, 4 * 8)  # the group: query heads 2 and 3, key/value head 1
    sq = (att.q_proj.weight[g].pow(2).sum() + att.k_proj.weight[o].pow(2).sum() + att.v_proj.weight[o].pow(2).sum()
          + att.o_proj.weight[:, g].pow(2).sum())
    assert s.arrays["decoder.kv"][0, kv] == pytest.approx(sq.sqrt().item(), rel=1e-5)
    ap = _run(a, kinds="all")
    assert np.isfinite(ap.arrays["decoder.heads"]).all() and ap.arrays["decoder.kv"].shape == (2, 2)
    # a group's gate scales its heads together: signed, its attribution is the sum of theirs
    signed = _run(a, kinds="all", variant="signed")
    heads = signed.arrays["decoder.heads"]
    assert np.allclose(signed.arrays["decoder.kv"], heads[:, 0::2] + heads[:, 1::2], rtol=1e-4, atol=1e-7)


def test_activation_is_mean_abs_over_real_tokens(tiny_multitask):
    rows = _rows()[:2]
    s = _run(tiny_multitask, rows=rows, method="activation", batch_size=2)
    captured = []
    layer0 = tiny_multitask.model.encoder.layer[0].output.dense
    h = layer0.register_forward_pre_hook(lambda m, a: captured.append(a[0].detach()))
    try:
        with torch.no_grad():
            for r in rows:  # one at a time: no padding at all
                tiny_multitask.logits(tiny_multitask.encode([r], SST2), SST2)
    finally:
        h.remove()
    acts = torch.cat([c[0] for c in captured]).abs()  # [tokens, 48]
    np.testing.assert_allclose(s.arrays["encoder.ffn"][0], acts.mean(0).numpy(), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# layout, files, bad input


def test_layers_of_different_sizes_are_nan_padded(tiny_multitask, tmp_path):
    layer = tiny_multitask.model.encoder.layer[1]
    inter, out = layer.intermediate.dense, layer.output.dense
    with torch.no_grad():
        small_in, small_out = torch.nn.Linear(32, 40), torch.nn.Linear(40, 32)
        small_in.weight.copy_(inter.weight[:40]); small_in.bias.copy_(inter.bias[:40])
        small_out.weight.copy_(out.weight[:, :40]); small_out.bias.copy_(out.bias)
    layer.intermediate.dense, layer.output.dense = small_in.requires_grad_(False), small_out.requires_grad_(False)
    s = _run(tiny_multitask)
    a = s.arrays["encoder.ffn"]
    assert a.shape == (2, 48) and s.n_units["encoder.ffn"] == [48, 40]
    assert np.isnan(a[1, 40:]).all() and np.isfinite(a[1, :40]).all() and np.isfinite(a[0]).all()
    df = s.to_frame()
    assert len(df[df.group == "encoder.ffn"]) == 88 and df.score.notna().all()
    back = Scores.load(s.save(tmp_path / "s.safetensors"))
    np.testing.assert_array_equal(back.arrays["encoder.ffn"], a)
    assert back.n_units == s.n_units
    assert {k: len(v) for k, v in s.site_scores().items()} == {
        "encoder.0.ffn": 48, "encoder.1.ffn": 40, "encoder.0.heads": 4, "encoder.1.heads": 4}


def test_save_load_csv(tiny_multitask, tmp_path):
    import pandas as pd
    from safetensors.numpy import load_file
    from safetensors import safe_open

    s = _run(tiny_multitask)
    path = s.save(tmp_path / "scores.safetensors")
    back = Scores.load(path)
    assert back.spec == s.spec and back.model_fingerprint == tiny_multitask.fingerprint()
    for g in s.groups:
        np.testing.assert_array_equal(back.arrays[g], s.arrays[g])
    raw = load_file(str(path))  # plain safetensors for any reader: the totals and their fold sums
    assert set(raw) == {"encoder.ffn", "encoder.heads", "encoder.ffn.folds", "encoder.heads.folds"}
    k = s.meta["folds"]
    assert k == min(8, s.meta["examples"]) and raw["encoder.ffn.folds"].shape == (k, 2, 48)
    np.testing.assert_allclose(raw["encoder.ffn.folds"].sum(0), s.arrays["encoder.ffn"], rtol=1e-5)
    np.testing.assert_array_equal(back.folds["encoder.heads"], s.folds["encoder.heads"])
    with safe_open(str(path), framework="numpy") as f:
        head = json.loads(f.metadata()["mtprune"])
    assert head["spec"]["method"] == "ap" and head["n_units"]["encoder.ffn"] == [48, 48]
    rel = head["reliability"]
    assert rel["examples"] == s.meta["examples"] and rel["folds"] == k
    assert set(rel["reliability"]) == {"encoder.ffn", "encoder.heads"}
    assert len(rel["reliability"]["encoder.ffn"]["per_layer"]) == 2
    df = pd.read_csv(s.to_csv(tmp_path / "scores.csv"))
    assert list(df.columns) == ["group", "layer", "unit", "score", "rank", "group_rank", "se", "rank_low",
                                "rank_high"]
    assert len(df) == 2 * 48 + 2 * 4
    assert (df.se > 0).all() and (df.rank_low <= df["rank"]).all() and (df["rank"] <= df.rank_high).all()
    top = df[(df.group == "encoder.ffn") & (df.layer == 0)].sort_values("rank")
    assert top["rank"].tolist() == list(range(1, 49))
    assert top.score.is_monotonic_decreasing
    assert top.iloc[0].score == pytest.approx(float(np.max(s.arrays["encoder.ffn"][0])), rel=1e-6)
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary files


def test_damaged_files_are_refused(tiny_multitask, tmp_path):
    path = _run(tiny_multitask).save(tmp_path / "s.safetensors")
    data = path.read_bytes()
    (tmp_path / "short.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(MtpruneError, match="not a readable"):
        Scores.load(tmp_path / "short.safetensors")
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF  # inside the arrays: only the checksum notices
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(MtpruneError, match="damaged"):
        Scores.load(tmp_path / "flip.safetensors")


def test_bad_input(tiny_multitask, tiny_seqcls):
    with pytest.raises(MtpruneError, match="no head for task boolq"):
        attribute(tiny_multitask, _spec(task="boolq"), rows=_rows())
    with pytest.raises(MtpruneError, match="task cb has 3"):
        attribute(tiny_seqcls, _spec(task="cb"), rows=_rows())
    with pytest.raises(MtpruneError, match="use --unsupervised"):
        attribute(tiny_multitask, _spec(), rows=[{"sentence": "a good movie"}])
    with pytest.raises(MtpruneError, match="use --unsupervised"):
        attribute(tiny_multitask, _spec(), rows=[{"sentence": "a good movie", "label": -1}])
    with pytest.raises(MtpruneError, match="no examples"):
        attribute(tiny_multitask, _spec(), rows=[])
    with pytest.raises(MtpruneError, match="batch size"):
        attribute(tiny_multitask, _spec(), rows=_rows(), batch_size=0)
    # unsupervised needs no labels
    attribute(tiny_multitask, _spec(unsupervised=True), rows=[{"sentence": "a good movie"}])


def test_progress_is_reported(tiny_multitask):
    seen = []
    attribute(tiny_multitask, _spec(), rows=_rows(), batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(4, 6), (6, 6)]  # batches of 4 across the six folds of one example: folds cost no passes


# ----------------------------------------------------------------------------------------------
# the real default model


def test_default_model_sampling_and_shapes(default_adapter):
    s = attribute(default_adapter, _spec(examples=64))
    assert s.arrays["encoder.ffn"].shape == (6, 1536) and s.arrays["encoder.heads"].shape == (6, 12)
    assert s.meta["examples"] == 64 and s.meta["label_counts"] == {"0": 32, "1": 32}
    assert s.meta["split"] == "train" and s.meta["head"] == "sst2"
    assert all(np.isfinite(a).all() and (a >= 0).all() for a in s.arrays.values())
    rows = sample_for(_spec(examples=10))
    assert len(rows) == 10 and sorted(r["label"] for r in rows) == [0] * 5 + [1] * 5
    assert rows == sample_for(_spec(examples=10)) and rows != sample_for(_spec(examples=10, seed=1))


def test_default_model_bad_input(default_adapter):
    with pytest.raises(MtpruneError, match="only 250"):
        attribute(default_adapter, _spec(task="cb", examples=1000))
    with pytest.raises(MtpruneError, match="no head for task ag_news"):
        attribute(default_adapter, _spec(task="ag_news", examples=10))


def test_default_model_identities(default_adapter):
    rows = sample_for(_spec(examples=8, seed=3))
    spec = _spec()
    fused = attribute(default_adapter, spec, rows=rows, batch_size=8)
    _assert_close(fused, ap_per_layer(default_adapter, spec, rows, batch_size=8), 1e-4)
    unsup = attribute(default_adapter, _spec(unsupervised=True), rows=rows, batch_size=8)
    _assert_close(unsup, fused, 1e-4, scale=2.0)


def _keep_top_half_ffn(scores: Scores, sites):
    keep = {}
    for s in sites:
        v = scores.arrays["encoder.ffn"][s.layer, : s.n_units]
        k = torch.zeros(s.n_units, dtype=torch.bool)
        k[torch.from_numpy(np.argsort(-v, kind="stable")[: s.n_units // 2].copy())] = True
        keep[s.name] = k
    return keep


@pytest.mark.slow
def test_default_model_abs_prunes_better_than_signed(default_adapter):
    """SST-2, keep the top 50% FFN neurons of every layer (256 examples), the first 300 validation
    rows: abs keeps nearly the dense accuracy, signed prunes worse than random. (On the whole
    split: dense 0.884, abs 0.868, random 0.829, signed 0.560.)"""
    from mtprune.evaluation import eval_rows, evaluate

    a = default_adapter
    rows = sample_for(_spec(examples=256))
    ev = eval_rows("sst2", "validation", 300)
    ffn = [s for s in a.unit_sites() if s.kind == "ffn"]
    acc = {"dense": evaluate(a, "sst2", rows=ev, batch_size=64).accuracy}
    for name, spec in {"abs": _spec(kinds="ffn"), "signed": _spec(kinds="ffn", variant="signed"),
                       "random": _spec(kinds="ffn", method="random")}.items():
        scores = attribute(a, spec, rows=rows, batch_size=32)
        keep = _keep_top_half_ffn(scores, ffn)
        acc[name] = evaluate(a, "sst2", rows=ev, batch_size=64,
                             context=lambda keep=keep: soft_mask(a.model, ffn, keep)).accuracy
    print("SST-2 validation accuracy (first 300 rows), 50% FFN neurons per layer:", acc)
    one_row = 1 / 300 + 1e-9
    assert acc["dense"] == pytest.approx(267 / 300, abs=one_row)
    assert acc["abs"] == pytest.approx(0.86, abs=one_row) and acc["abs"] >= acc["dense"] - 0.03
    assert acc["abs"] > acc["random"] + 0.03 > acc["signed"] + 0.03
    assert acc["signed"] < 0.6


def test_a_draw_extends_the_cached_draw_of_half_as_many(tiny_multitask, tmp_path, monkeypatch, shared_home):
    """128 examples read only the 64 the cached draw of 64 lacks; the result equals 128 read whole,
    fold for fold; the draw order makes the first 64 of 128 the draw of 64."""
    from mtprune.attribution import attribute_cached, half_of, sample_for
    from mtprune.methods import get_method

    spec = _spec(examples=128, kinds="all")
    assert half_of(spec) == 64 and half_of(replace(spec, examples=64)) is None
    assert half_of(replace(spec, examples=120)) is None and half_of(replace(spec, method="activation")) is None
    assert sample_for(spec)[:64] == sample_for(replace(spec, examples=64))
    read = []
    ap = type(get_method("ap"))
    real = ap.attribute_folds
    monkeypatch.setattr(ap, "attribute_folds", lambda self, adapter, task, rows, *a, **k: read.append(len(rows)) or
                        real(self, adapter, task, rows, *a, **k))
    half, hit, _ = attribute_cached(tiny_multitask, replace(spec, examples=64), cache_dir=tmp_path)
    assert not hit and sum(read) == 64 and half.meta["folds"] == 8
    read.clear()
    whole, hit, path = attribute_cached(tiny_multitask, spec, cache_dir=tmp_path)
    assert not hit and sum(read) == 64 and whole.meta["extends"] == 64 and whole.meta["examples"] == 128
    direct = attribute(tiny_multitask, spec)  # read whole: eight folds of 16
    for g in whole.groups:
        assert _rel(whole.arrays[g], direct.arrays[g]) < 1e-5
        assert whole.folds[g].shape == direct.folds[g].shape == (8, 2, whole.arrays[g].shape[1])
        assert _rel(whole.folds[g], direct.folds[g]) < 1e-5
    back = Scores.load(path)
    assert back.has_folds and back.reliability()["encoder.ffn"].spearman == pytest.approx(
        whole.reliability()["encoder.ffn"].spearman)


def test_old_entries_without_folds_say_reliability_unknown(tiny_multitask, tmp_path):
    s = _run(tiny_multitask)
    old = replace(s, folds=None)
    back = Scores.load(old.save(tmp_path / "old.safetensors"))
    assert not back.has_folds and back.reliability() == {} and back.standard_errors() is None
    assert back.reliability_summary()["why"].startswith("reliability unknown")
    assert "se" not in back.to_frame().columns
    magnitude = attribute(tiny_multitask, _spec(method="magnitude"))
    assert magnitude.folds is None and "reads no examples" in magnitude.reliability_summary()["why"]


def test_default_model_reliability_matches_a_second_draw(default_adapter):
    """sst2, ap, 256 examples: the reliability one draw's folds estimate is within 0.05 of the
    Spearman correlation measured between two independent draws (FFN neurons, mean over layers),
    and the expected Jaccard of the kept halves within 0.05 of the measured one."""
    from scipy.stats import spearmanr

    a, b = (attribute(default_adapter, AttributionSpec(task="sst2", examples=256, seed=s, kinds="ffn"))
            for s in (0, 1))
    x, y = a.arrays["encoder.ffn"], b.arrays["encoder.ffn"]
    measured = np.mean([spearmanr(x[i], y[i]).statistic for i in range(6)])
    both = [len(set(np.argsort(-x[i])[:768]) & set(np.argsort(-y[i])[:768])) for i in range(6)]
    jac = np.mean([o / (1536 - o) for o in both])  # the kept halves' Jaccard, 768 of 1,536 neurons each
    est = np.mean([s.reliability()["encoder.ffn"].spearman for s in (a, b)])
    est_jac = np.mean([s.reliability()["encoder.ffn"].jaccard(0.5) for s in (a, b)])
    assert 0.6 < measured < 0.95 and abs(est - measured) < 0.05, (est, measured)
    assert abs(est_jac - jac) < 0.05, (est_jac, jac)
