"""Repair: the held-out guards on synthetic sums, exact reconstruction where it is possible
(duplicated units) on every family, the held-out guards, saving, and bad input."""

import json
import re

import numpy as np
import pytest
import torch

from mtprune import layers
from mtprune.checkpoints import load_adapter, save_model
from mtprune.errors import MtpruneError
from mtprune.masks import Mask, mask_from_scores
from mtprune.pruning import hard_prune
from mtprune.repair import RepairSettings, _fit, _Stats, calibration_rows, repair
from mtprune.solvers import get_solver
from mtprune.tasks import get_task
from mtprune_dev.masks import full_mask
from tests.conftest import SST2_ROWS, random_scores

SST2 = get_task("sst2")
ROWS = [dict(r) for r in SST2_ROWS] * 5  # 30 rows: 8 batches of 4, two of them held out


def logits(adapter, rows=SST2_ROWS):
    with torch.no_grad():
        return adapter.logits(adapter.encode([dict(r) for r in rows], SST2), SST2).float()


# ----------------------------------------------------------------------------------------------
# the guards, on sums of a synthetic problem


def synthetic(n=400, k=5, d=3, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k))
    W = rng.normal(size=(d, k))
    b = rng.normal(size=d)
    T = X @ W.T + b + noise * rng.normal(size=(n, d))
    stats = _Stats(k, d)
    stats.add(torch.tensor(X[: n // 2]), torch.tensor(T[: n // 2]), held_out=False)
    stats.add(torch.tensor(X[n // 2:]), torch.tensor(T[n // 2:]), held_out=True)
    return X, T, stats


def test_fit_keeps_the_old_weights_when_nothing_beats_them():
    X, T, st = synthetic(noise=0.0)
    G, C = st.all()
    best = get_solver("lsq").fit(G, C, torch.zeros(3, 6, dtype=torch.float64), width=1, damping=0.0)
    W, rep = _fit(st, best, RepairSettings("lsq"), 1, "encoder.0.ffn")
    # the old weights are already the exact solution: a refit cannot lower the held-out error
    assert not rep.changed and rep.why == "the held-out error did not improve" and torch.equal(W, best)
    W, rep = _fit(st, torch.zeros(3, 6, dtype=torch.float64), RepairSettings("lsq"), 1, "encoder.0.ffn")
    assert rep.changed and rep.error_after < 1e-12 < rep.error_before


# ----------------------------------------------------------------------------------------------
# exact reconstruction: pruned units that duplicate kept ones


def _duplicate_ffn_units(adapter, pairs):
    """Make FFN unit ``i`` of every layer compute what unit ``j`` does (its in rows copied)."""
    with torch.no_grad():
        for s in adapter.unit_sites():
            if s.kind != "ffn":
                continue
            for ip in s.in_proj:
                w = layers.weight_out_in(adapter.model.get_submodule(ip.path))
                m = adapter.model.get_submodule(ip.path)
                for i, j in pairs:
                    w[i] = w[j]
                    if layers.has_bias(m):
                        m.bias[i] = m.bias[j]
    adapter._fingerprint = None


def _mask_without(adapter, units):
    m = full_mask(adapter.unit_sites())
    keep = {g: k.copy() for g, k in m.keep.items()}
    for g in keep:
        if g.endswith("ffn"):
            keep[g][:, units] = False
    return Mask(keep=keep, n_units=m.n_units, sparsity=0.1, kinds="ffn")


@pytest.mark.parametrize("family", ["multitask", "llama", "gpt2", "t5"])
def test_lsq_reconstructs_exactly_when_it_can(family, tiny_multitask, tokenizer):
    """Pruned units that copy kept ones: their contribution moves onto the kept columns, so the
    repaired model computes the dense one (this checks the layer replay, the targets and the
    residuals end to end), while pruning alone does not."""
    from tests.conftest import _seed

    if family == "multitask":
        a = tiny_multitask
    elif family == "t5":
        from transformers import T5Config, T5ForConditionalGeneration

        from mtprune.checkpoints import adapter_for

        _seed(2)
        cfg = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
                       num_heads=4, dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
        a = adapter_for(T5ForConditionalGeneration(cfg), tokenizer, "tiny-t5")
    else:
        from mtprune.checkpoints import adapter_for

        _seed(3)
        if family == "llama":
            from transformers import LlamaConfig, LlamaForCausalLM

            model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48,
                                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                                 max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id))
        else:
            from transformers import GPT2Config, GPT2LMHeadModel

            model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4,
                                               n_positions=256, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                               pad_token_id=tokenizer.pad_token_id))
        a = adapter_for(model, tokenizer, f"tiny-{family}")
    pairs = [(i, i + 1) for i in range(0, 16, 2)]  # units 0, 2, ... copy 1, 3, ...
    _duplicate_ffn_units(a, pairs)
    mask = _mask_without(a, [i for i, _ in pairs])
    dense = logits(a)
    pruned_only = logits(hard_prune(a, mask))
    fixed, report = repair(a, mask, ROWS, SST2, RepairSettings("lsq", batch_size=4))
    off, err = (pruned_only - dense).abs().max(), (logits(fixed) - dense).abs().max()
    # float32 sums: T5's large activations (and its label log-probabilities near -10) keep a 1e-2 residue
    assert err < (2e-2 if family == "t5" else 5e-4) and off > 10 * err, (off, err, report.summary())
    assert all(s.error_after < 1e-3 for s in report.sites)  # (float32 sums, float16 dense targets)
    assert report.changed == len(report.sites) == (4 if family == "t5" else 2)
    assert report.kl_after < report.kl_before
    assert (logits(a) - dense).abs().max() == 0  # the input adapter is untouched


def test_repair_none_is_hard_pruning(tiny_multitask):
    mask = mask_from_scores(random_scores(tiny_multitask), {"ffn": 0.5, "heads": 0.5})
    small, rep = repair(tiny_multitask, mask, ROWS, SST2, RepairSettings("none"))
    assert rep.solver == "none" and not rep.sites
    assert torch.equal(logits(small), logits(hard_prune(tiny_multitask, mask)))


HELD_OUT = [r for i, r in enumerate(ROWS) if i % 5 == 4]  # RepairSettings.holdout_every = 5


def _decisive(adapter, factor=100.0):
    """The tiny model's sst2 logits barely move when it is pruned (held-out KL ~1e-9: float noise):
    a head 100 times larger makes pruning's damage, and repair's, measurable (KL ~1e-4)."""
    with torch.no_grad():
        adapter.task_heads["sst2"].weight.mul_(factor)
    adapter._fingerprint = None
    return adapter


def _held_out_kl(model, dense) -> float:
    """Mean KL(dense || model) of the label distributions over the held-out rows, computed here."""
    ld, lp = logits(dense, HELD_OUT).log_softmax(-1), logits(model, HELD_OUT).log_softmax(-1)
    return float((ld.exp() * (ld - lp)).sum(-1).mean())


def _out_weights(adapter, report):
    sites = {s.name: s for s in adapter.unit_sites()}
    return {r.site: layers.weight_out_in(adapter.model.get_submodule(sites[r.site].out_proj)).detach().clone()
            for r in report.sites}


@pytest.mark.parametrize("method", ["lsq", "scale", "bias"])
def test_every_repair_moves_the_outputs_toward_the_dense_model(tiny_multitask, method):
    a = _decisive(tiny_multitask)
    mask = mask_from_scores(random_scores(a), {"ffn": 0.5, "heads": 0.5})
    fixed, rep = repair(a, mask, ROWS, SST2, RepairSettings(method, batch_size=4))
    assert len(rep.sites) == 4 and rep.calibration_rows == 30 and rep.tokens > 30
    plain = hard_prune(a, mask)
    # the report's KLs are those of the held-out rows, without the repair and with what it kept
    assert rep.kl_before == pytest.approx(_held_out_kl(plain, a), rel=1e-3) and rep.kl_before > 1e-5
    before, after = _out_weights(plain, rep), _out_weights(fixed, rep)
    if rep.changed:
        assert rep.kl_after < rep.kl_before and "reverted" not in rep.summary()
        # (batches of 4 against one of 6: padding moves float32 logits a little)
        assert _held_out_kl(fixed, a) == pytest.approx(rep.kl_after, rel=1e-2, abs=1e-3 * rep.kl_before)
    else:  # the refits moved the outputs away from the dense model's: all of them undone
        assert rep.kl_after >= rep.kl_before and "(repair reverted)" in rep.summary()
        assert all(s.why.startswith("reverted") for s in rep.sites)
        assert torch.equal(logits(fixed), logits(plain))
    for s in rep.sites:  # a site is refit exactly when the report says so
        assert torch.equal(after[s.site], before[s.site]) != s.changed, s
    if method == "lsq":  # least squares rebuilds most of what pruning lost
        assert rep.changed == 4 and rep.kl_after < 0.1 * rep.kl_before, rep.summary()
    dense, pruned = logits(a), logits(plain)
    assert (logits(fixed) - dense).abs().mean() <= (pruned - dense).abs().mean() + 1e-6
    entry = fixed.model.config.mtprune_pruned
    assert entry["repair"]["method"] == method and entry["repair"]["calibration_rows"] == 30
    assert entry["repair"]["sites_refit"] == rep.changed


def test_a_repair_that_moves_the_outputs_away_is_reverted(tiny_multitask, monkeypatch):
    """Every site's refit passes its own held-out check but is then spoilt (noise added to its
    weights): the held-out KL to the dense outputs rises, so every site goes back to its pruned
    weights and the repaired model is the hard-pruned one."""
    import mtprune.repair as repair_module

    a = _decisive(tiny_multitask)
    mask = mask_from_scores(random_scores(a), {"ffn": 0.5, "heads": 0.5})
    _, honest = repair(a, mask, ROWS, SST2, RepairSettings("lsq", batch_size=4))
    assert honest.changed == 4 and honest.kl_after < honest.kl_before
    real_fit, gen = repair_module._fit, torch.Generator().manual_seed(0)

    def spoilt_fit(stats, W0, settings, width, name):
        W, rep = real_fit(stats, W0, settings, width, name)
        assert rep.changed
        return W + 0.5 * torch.randn(W.shape, generator=gen, dtype=W.dtype), rep

    monkeypatch.setattr(repair_module, "_fit", spoilt_fit)
    lines = []
    fixed, rep = repair(a, mask, ROWS, SST2, RepairSettings("lsq", batch_size=4), log=lines.append)
    plain = hard_prune(a, mask)
    assert rep.kl_before == pytest.approx(honest.kl_before, rel=1e-6) and rep.kl_after > rep.kl_before
    assert rep.changed == 0 and len(rep.sites) == 4
    assert all(s.why == "reverted: the held-out outputs moved away from the dense model's" for s in rep.sites)
    assert all(s.error_after < s.error_before for s in rep.sites)  # each site's own check had passed
    assert "(repair reverted)" in rep.summary() and any("repair reverted" in line for line in lines)
    before, after = _out_weights(plain, rep), _out_weights(fixed, rep)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert torch.equal(logits(fixed), logits(plain))
    assert fixed.model.config.mtprune_pruned["repair"]["sites_refit"] == 0


def test_repaired_model_saves_and_reloads(tiny_multitask, tmp_path):
    mask = mask_from_scores(random_scores(tiny_multitask), {"ffn": 0.5, "heads": 0.25})
    fixed, _ = repair(tiny_multitask, mask, ROWS, SST2, RepairSettings("lsq", batch_size=4))
    out = save_model(fixed, tmp_path / "r", mask)
    back = load_adapter(str(out))
    assert (logits(back) - logits(fixed)).abs().max() < 1e-5
    assert json.loads((out / "config.json").read_text())["mtprune_pruned"]["repair"]["method"] == "lsq"


def test_a_shared_model_is_repaired_on_several_tasks(tiny_multitask, cb_rows):
    mask = mask_from_scores(random_scores(tiny_multitask), 0.5)
    fixed, rep = repair(tiny_multitask, mask, {"sst2": ROWS, "cb": [dict(r) for r in cb_rows] * 10},
                        settings=RepairSettings("lsq", batch_size=4))
    assert rep.calibration_rows == 60 and len(rep.sites) == 2


def test_repair_groups_of_grouped_attention(tokenizer):
    from tests.conftest import make_grouped

    for a, kinds in ((make_grouped("llama", tokenizer), "kv"), (make_grouped("qwen2", tokenizer), "all")):
        mask = mask_from_scores(random_scores(a, seed=3), 0.5, kinds=kinds)
        plain = hard_prune(a, mask)
        fixed, report = repair(a, mask, ROWS, SST2, RepairSettings("lsq", batch_size=4))
        names = {s.site for s in report.sites}
        want = {s.name for s in a.unit_sites() if s.kind in (("kv", "ffn") if kinds == "all" else (kinds,))}
        assert names == want, (names, want)  # the query heads' view is not refit a second time
        assert report.changed > 0 and report.kl_after < report.kl_before, report.summary()
        assert [s.n_units for s in fixed.unit_sites()] == [s.n_units for s in plain.unit_sites()]


def test_bad_input_is_one_line(tiny_multitask, tokenizer, tmp_path, shared_home):
    from tests.conftest import make_grouped

    mask = mask_from_scores(random_scores(tiny_multitask), 0.5)
    with pytest.raises(MtpruneError, match="calibration set is empty"):
        repair(tiny_multitask, mask, [], SST2, RepairSettings("lsq"))
    with pytest.raises(MtpruneError, match="lack the field.*sentence"):
        repair(tiny_multitask, mask, [{"text": "a"}], SST2, RepairSettings("lsq"))
    with pytest.raises(MtpruneError, match="unknown repair 'magic'"):
        RepairSettings("magic")
    grouped = make_grouped("llama", tokenizer)
    heads = mask_from_scores(random_scores(grouped), 0.5, kinds="heads")
    with pytest.raises(MtpruneError, match="cannot lose single query heads physically"):
        repair(grouped, heads, ROWS, SST2, RepairSettings("lsq"))
    (tmp_path / "c.jsonl").write_text('{"text": "no sentence here"}\n')
    with pytest.raises(MtpruneError, match="lack the field"):
        calibration_rows("sst2", 4, data_file=tmp_path / "c.jsonl")
    with pytest.raises(MtpruneError, match="--calib must be at least 1"):
        calibration_rows("sst2", 0)
    rows = calibration_rows("sst2", 16, seed=1)
    assert len(rows) == 16 and set(rows[0]) == {"sentence"} and rows == calibration_rows("sst2", 16, seed=1)


# ----------------------------------------------------------------------------------------------
# the variants of the layer-wise fit, the token cap, the early stop


def _last_ffn_mask(adapter):
    """Half the FFN neurons of the last layer pruned, nothing else: one site to refit."""
    m = full_mask(adapter.unit_sites())
    keep = {g: k.copy() for g, k in m.keep.items()}
    keep["encoder.ffn"][-1, ::2] = False
    return Mask(keep=keep, n_units=m.n_units, sparsity=0.25, kinds="ffn")


def _add_spy(monkeypatch):
    """The number of token rows of every sum repair adds (one call per batch and site)."""
    import mtprune.repair as repair_module

    seen, real = [], repair_module._Stats.add

    def add(self, x, t, held_out):
        seen.append(len(x))
        return real(self, x, t, held_out)

    monkeypatch.setattr(repair_module._Stats, "add", add)
    return seen


def test_pooled_last_fits_the_last_layer_on_the_first_token_only(tiny_multitask, monkeypatch, tokenizer):
    from tests.conftest import make_grouped

    a = _decisive(tiny_multitask)
    mask = _last_ffn_mask(a)
    seen = _add_spy(monkeypatch)
    pooled, rep = repair(a, mask, ROWS, SST2, RepairSettings("lsq", batch_size=4, pooled_last=True))
    assert [s.site for s in rep.sites] == ["encoder.1.ffn"]
    assert sum(seen) == 30 and max(seen) <= 4  # one token per row: position 0 of each of the 30 rows
    seen.clear()
    every, std = repair(a, mask, ROWS, SST2, RepairSettings("lsq", batch_size=4))
    assert sum(seen) == std.tokens > 60  # every token of every row
    site = next(s for s in a.unit_sites() if s.name == "encoder.1.ffn")
    w = lambda m: layers.weight_out_in(m.model.get_submodule(site.out_proj))  # noqa: E731
    assert rep.changed == std.changed == 1 and not torch.allclose(w(pooled), w(every))
    entry = pooled.model.config.mtprune_pruned["repair"]["variant"]
    assert entry["pooled_last"] is True and entry["variant"] == "pooled-last"
    assert "variant pooled-last: last layer on the pooled token" in rep.summary()
    assert "variant" not in std.summary() and std.to_dict()["variant"]["variant"] == "standard"
    causal = make_grouped("llama", tokenizer)
    with pytest.raises(MtpruneError, match="not an encoder classifier"):
        repair(causal, mask_from_scores(random_scores(causal), 0.5), ROWS, SST2, RepairSettings(pooled_last=True))


def test_skip_first_attention_leaves_it_as_pruned(tiny_multitask):
    a = _decisive(tiny_multitask)
    mask = mask_from_scores(random_scores(a), {"ffn": 0.5, "heads": 0.5})
    fixed, rep = repair(a, mask, ROWS, SST2, RepairSettings("lsq", batch_size=4, skip_first_attention=True))
    by = {s.site: s for s in rep.sites}
    assert not by["encoder.0.heads"].changed and by["encoder.0.heads"].why == "skipped: the first layer's attention"
    assert by["encoder.0.heads"].error_before == by["encoder.0.heads"].error_after > 0
    assert all(s.changed for n, s in by.items() if n != "encoder.0.heads"), rep.summary()
    plain = hard_prune(a, mask)
    assert torch.equal(_out_weights(fixed, rep)["encoder.0.heads"], _out_weights(plain, rep)["encoder.0.heads"])
    assert fixed.model.config.mtprune_pruned["repair"]["variant"]["skip_first_attention"] is True


def test_the_intermediate_target(tiny_multitask):
    """A teacher that keeps every unit is the dense model (the same repair); a pruned teacher moves
    the fit, while the final check still compares with the dense outputs."""
    a = _decisive(tiny_multitask)
    mask = mask_from_scores(random_scores(a), {"ffn": 0.5, "heads": 0.5})
    settings = RepairSettings("lsq", batch_size=4, target="intermediate")
    dense_t, rd = repair(a, mask, ROWS, SST2, RepairSettings("lsq", batch_size=4))
    full_t, rf = repair(a, mask, ROWS, SST2, settings, teacher=full_mask(a.unit_sites()))
    assert torch.equal(logits(full_t), logits(dense_t))
    teacher = mask_from_scores(random_scores(a), {"ffn": 0.25, "heads": 0.25})
    mid, ri = repair(a, mask, ROWS, SST2, settings, teacher=teacher)
    assert ri.kl_before == pytest.approx(rd.kl_before, rel=1e-9)  # measured against the dense model
    assert not torch.allclose(logits(mid), logits(dense_t))
    assert mid.model.config.mtprune_pruned["repair"]["variant"]["target"] == "intermediate"
    with pytest.raises(MtpruneError, match="square root of the budget"):
        repair(a, mask, ROWS, SST2, settings)
    with pytest.raises(MtpruneError, match="only with the intermediate"):
        repair(a, mask, ROWS, SST2, RepairSettings("lsq"), teacher=teacher)


def test_a_token_cap_reads_rows_spread_over_the_draw(tiny_multitask, cb_rows):
    from mtprune.batching import token_lengths
    from mtprune.repair import cap_tokens

    a = _decisive(tiny_multitask)
    rows = [{"sentence": f"{r['sentence']} number {i}"} for i, r in enumerate(ROWS)]
    total = sum(token_lengths(a, SST2, rows))
    kept = cap_tokens(a, {SST2: rows}, total // 2)[SST2]
    assert sum(token_lengths(a, SST2, kept)) <= total // 2 < sum(token_lengths(a, SST2, kept)) + 20
    where = [rows.index(r) for r in kept]
    assert where == sorted(where) and min(where) < 5 and max(where) >= 25  # spread over the list, in order
    assert cap_tokens(a, {SST2: rows}, total)[SST2] is rows
    cb = get_task("cb")
    both = {SST2: rows, cb: [dict(r) for r in cb_rows] * 5}
    lens = {t: sum(token_lengths(a, t, r)) for t, r in both.items()}
    half = cap_tokens(a, both, sum(lens.values()) // 2)
    for t, r in half.items():  # each task keeps its share of the tokens
        assert abs(sum(token_lengths(a, t, r)) - lens[t] / 2) <= max(token_lengths(a, t, both[t]))
    mask = mask_from_scores(random_scores(a), {"ffn": 0.5, "heads": 0.5})
    capped, rep = repair(a, mask, rows, SST2, RepairSettings("lsq", batch_size=4, max_tokens=total // 2))
    assert rep.calibration_rows == len(kept) and rep.rows_drawn == 30 and rep.tokens <= total // 2
    assert f"{len(kept)} of the 30 rows drawn" in rep.summary()
    assert capped.model.config.mtprune_pruned["repair"]["rows_drawn"] == 30
    same, r1 = repair(a, mask, rows, SST2, RepairSettings("lsq", batch_size=4, max_tokens=total))
    none, r2 = repair(a, mask, rows, SST2, RepairSettings("lsq", batch_size=4, max_tokens=None))
    assert r1.rows_drawn is None and r1.calibration_rows == 30 and torch.equal(logits(same), logits(none))


def test_stopping_each_layer_early_changes_nothing(tiny_multitask, monkeypatch):
    """The layer runs stop once a site's inputs are recorded: the repaired weights are those of
    full runs, bit for bit."""
    import mtprune.repair as repair_module

    a = _decisive(tiny_multitask)
    mask = mask_from_scores(random_scores(a), {"ffn": 0.5, "heads": 0.5})
    stops = []

    class Counted(repair_module._Stop):
        def __init__(self, *args):
            stops.append(1)
            super().__init__(*args)

    monkeypatch.setattr(repair_module, "_Stop", Counted)
    fast, rep = repair(a, mask, ROWS, SST2, RepairSettings("lsq", batch_size=4))
    assert len(stops) == 4 * 8  # every site, every batch
    real = repair_module._capture
    monkeypatch.setattr(repair_module, "_capture",
                        lambda model, site, store, want_output, stop=False: real(model, site, store, want_output))
    slow, rep2 = repair(a, mask, ROWS, SST2, RepairSettings("lsq", batch_size=4))
    assert len(stops) == 32 and rep.changed == rep2.changed == 4
    w1, w2 = _out_weights(fast, rep), _out_weights(slow, rep2)
    assert all(torch.equal(w1[k], w2[k]) for k in w1) and torch.equal(logits(fast), logits(slow))


def test_repair_settings_are_checked_and_described():
    from mtprune.repair import parse_variant

    for bad, pattern in (({"max_tokens": 0}, "at least 1"), ({"max_tokens": True}, "at least 1"),
                         ({"target": "teacher"}, "unknown repair target 'teacher'"),
                         ({"pooled_last": "yes"}, "pooled_last is true or false")):
        with pytest.raises(MtpruneError, match=pattern):
            RepairSettings("lsq", **bad)
    with pytest.raises(MtpruneError, match="unknown repair variant 'magic'; variants: standard, pooled-last"):
        parse_variant("pooled-last,magic")
    kwon = RepairSettings.of("scale", "kwon")
    assert kwon.variant == "kwon" and kwon.pooled_last and kwon.skip_first_attention and kwon.target == "intermediate"
    two = RepairSettings.of("lsq", "pooled-last, skip-first-attention")
    assert two.variant == "pooled-last+skip-first-attention" and two.target == "dense"
    assert two.describe() == "last layer on the pooled token; first layer's attention left as pruned"
    assert two.to_dict()["variant"] == two.variant and RepairSettings().variant == "standard"


@pytest.mark.parametrize("extra, pattern", [
    (["--budget", "flops:0.5", "--repair-variant", "magic"], "unknown repair variant 'magic'"),
    (["--budget", "flops:0.5", "--calib-tokens", "0"], "--calib-tokens must be at least 1"),
    (["--budget", "flops:0.5", "--calib-tokens", "many"], "--calib-tokens is a whole number of tokens or all"),
    (["--sparsity", "0.5", "--repair-variant", "kwon"], "intermediate fits to the mask .* give --budget"),
])
def test_prune_repair_variant_bad_input(capsys, tiny_multitask, tmp_path, shared_home, extra, pattern):
    from mtprune.cli import main

    tiny = save_model(tiny_multitask, tmp_path / "tiny")
    out = tmp_path / "o"
    code = main(["prune", "--model", str(tiny), "--task", "sst2", "--examples", "8", "--out", str(out),
                 "--device", "cpu", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(pattern, err[0]), err
    assert not out.exists()


def test_prune_records_the_repair_variant(capsys, tiny_multitask, tmp_path, shared_home):
    from mtprune.cli import main

    tiny = save_model(tiny_multitask, tmp_path / "tiny")
    out = tmp_path / "o"
    code = main(["prune", "--model", str(tiny), "--task", "sst2", "--examples", "8", "--budget", "flops:0.5",
                 "--repair-variant", "intermediate,pooled-last", "--calib", "40", "--calib-tokens", "all",
                 "--out", str(out), "--device", "cpu", "--no-eval", "--json"])
    stdout = capsys.readouterr().out
    assert code == 0
    variant = json.loads(stdout)["repair"]["variant"]
    assert variant["target"] == "intermediate" and variant["pooled_last"] and variant["max_tokens"] is None
    assert variant["teacher_budget"] == "flops:0.707107"
    saved = json.loads((out / "config.json").read_text())["mtprune_pruned"]["repair"]
    assert saved["variant"]["variant"] == "pooled-last+intermediate" and saved["calibration_rows"] == 40
