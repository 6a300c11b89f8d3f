"""One unit's page (mtprune.unit_profile): its address, its standing in every task's scores, the rows
of a whole split where it fires (checked against the probe's full forward pass), the change in
P(gold) without it (checked against a hard-pruned evaluation), and the masks that keep it (read
back from saved runs). Tiny random models, and one check on the default model with few rows."""

from __future__ import annotations

import numpy as np
import pytest

from mtprune import unit_profile as U
from mtprune.errors import MtpruneError
from mtprune.evaluation import eval_rows, evaluate
from mtprune.masks import Mask
from mtprune.probe import UnitRef, unit_activations
from mtprune_dev.masks import full_mask


def _top(every, k):
    """The probe's rows ordered by peak (highest first, ties by position): the first ``k`` indices."""
    return [f.index for f in sorted(every, key=lambda f: (-f.peak, f.index))[:k]]


def _without(mask: Mask, ref: UnitRef) -> Mask:
    keep = {g: k.copy() for g, k in mask.keep.items()}
    keep[ref.group][ref.layer, ref.unit] = False
    return Mask(keep=keep, n_units=mask.n_units, sparsity=0.01, kinds="all")


# ----------------------------------------------------------------------------------------------
# the address


def test_unit_ids_read_in_every_spelling_and_a_bad_one_says_how_to_write_it():
    want = UnitRef("encoder.ffn", 2, 1265)
    for text in ("encoder.2.ffn.1265", " encoder.2.ffn[1265] ", "encoder.ffn:2:1265", "ENCODER.2.FFN.1265"):
        assert U.parse_unit_id(text) == want
    assert U.unit_id(want) == "encoder.2.ffn.1265"
    assert U.unit_id(U.parse_unit_id("decoder.1.groups.3")) == "decoder.1.kv.3"  # the old spelling of kv
    for bad in ("foo", "encoder.2.ffn", "encoder.2.mlp.3", "encoder.-1.ffn.3", "encoder.2.ffn.x", "2.ffn.3"):
        with pytest.raises(MtpruneError, match=r"is not a unit id: write stack\.layer\.kind\.unit, as in "
                                               r"encoder\.2\.ffn\.1265 \(kinds: ffn, heads, kv\)"):
            U.parse_unit_id(bad)
    with pytest.raises(MtpruneError, match="^type a unit id"):
        U.parse_unit_id("   ")


def test_a_unit_the_model_lacks_is_one_line_listing_its_units(tiny_multitask):
    ref, site = U.check_unit(tiny_multitask, "encoder.1.ffn.47")
    assert (site.name, site.n_units, ref.unit) == ("encoder.1.ffn", 48, 47)
    for bad, where in (("encoder.1.ffn.48", "encoder.1.ffn has units 0-47"),
                       ("encoder.2.ffn.0", "it has no site encoder.2.ffn"),
                       ("encoder.0.heads.4", "encoder.0.heads has units 0-3"),
                       ("decoder.0.ffn.0", "it has no site decoder.0.ffn")):
        with pytest.raises(MtpruneError) as err:
            U.check_unit(tiny_multitask, bad)
        msg = str(err.value)
        assert msg.startswith(f"this model has no unit {bad} ({where})"), msg
        assert msg.endswith("its units: encoder.0-1.ffn.0-47, encoder.0-1.heads.0-3") and "\n" not in msg


# ----------------------------------------------------------------------------------------------
# its standing in every task


def _scores(adapter, seed=0, task="sst2", examples=64):
    from mtprune.attribution import AttributionSpec, Scores
    from mtprune.units import layout

    shapes, n_units = layout(adapter.unit_sites())
    rng = np.random.default_rng(seed)
    folds = {g: rng.gamma(2.0, 1.0, size=(8, *shape)).astype(np.float32) for g, shape in shapes.items()}
    folds["encoder.ffn"][:, 1, 10] = folds["encoder.ffn"][:, 1, 5]  # a tie with the unit looked at
    arrays = {g: f.sum(0) for g, f in folds.items()}
    return Scores(AttributionSpec(task=task, examples=examples), adapter.fingerprint(), arrays, n_units,
                  meta={"examples": examples}, folds=folds)


def test_standing_gives_the_scores_csv_rank_interval_and_reliability(tiny_multitask):
    from mtprune.plots import layer_ranks

    scores = _scores(tiny_multitask)
    ref = UnitRef("encoder.ffn", 1, 5)
    s = U.standing(scores, ref)
    df = scores.to_frame()
    row = df[(df["group"] == "encoder.ffn") & (df["layer"] == 1) & (df["unit"] == 5)].iloc[0]
    assert (s.status, s.task, s.n_units, s.examples) == ("scored", "sst2", 48, 64)
    assert s.score == pytest.approx(row["score"]) and s.se == pytest.approx(row["se"], rel=1e-6)
    assert (s.rank, s.rank_low, s.rank_high) == (row["rank"], row["rank_low"], row["rank_high"])
    assert s.rank == layer_ranks(scores.arrays["encoder.ffn"])[1, 5]  # a tie: the lower index ranks first
    assert s.rank_low <= s.rank <= s.rank_high
    assert s.percentile == pytest.approx(100 * (48 - s.rank) / 47)
    assert s.score_interval() == pytest.approx((s.score - 1.96 * s.se, s.score + 1.96 * s.se))
    assert s.layer_reliability == pytest.approx(scores.reliability()["encoder.ffn"].per_layer[1])
    heads_only = _scores(tiny_multitask)
    heads_only = type(heads_only)(heads_only.spec, heads_only.model_fingerprint,
                                  {"encoder.heads": heads_only.arrays["encoder.heads"]},
                                  {"encoder.heads": heads_only.n_units["encoder.heads"]})
    got = U.standings(ref, {"sst2": scores, "cb": None, "rte": heads_only})
    assert [(g.task, g.status) for g in got] == [("sst2", "scored"), ("cb", "not computed"), ("rte", "not scored")]
    assert got[1].rank is None and got[1].percentile is None


def test_cached_scores_are_looked_up_never_computed(tiny_multitask, shared_home, tmp_path):
    from mtprune.attribution import AttributionSpec, attribute_cached

    spec = AttributionSpec(task="sst2", examples=8)
    made, _, _ = attribute_cached(tiny_multitask, spec, cache_dir=tmp_path)
    got = U.cached_scores_by_task(tiny_multitask, spec, ["sst2", "cb", "rte"], cache_dir=tmp_path)
    assert list(got) == ["sst2", "cb", "rte"] and got["cb"] is None and got["rte"] is None
    np.testing.assert_array_equal(got["sst2"].arrays["encoder.ffn"], made.arrays["encoder.ffn"])
    assert len(list((tmp_path / "scores").glob("*.safetensors"))) == 1  # nothing computed for cb or rte


# ----------------------------------------------------------------------------------------------
# where it fires


def test_the_top_rows_are_the_rows_of_highest_activation(tiny_multitask, sst2_rows, tmp_path):
    ref = UnitRef("encoder.ffn", 1, 5)
    f = U.unit_firing(tiny_multitask, "sst2", "validation", ref, k=3, rows=sst2_rows, batch_size=4, cache_dir=tmp_path)
    every = unit_activations(tiny_multitask, "sst2", sst2_rows, ref)  # the probe: the whole forward pass, one batch
    assert (f.unit, f.rows, f.tokens) == ("encoder.1.ffn.5", 6, sum(len(x.values) for x in every))
    assert [r.row for r in f.top] == _top(every, 3)
    for r in f.top:
        assert list(r.tokens) == every[r.row].tokens and r.text == sst2_rows[r.row]["sentence"]
        np.testing.assert_allclose(r.values, every[r.row].values, rtol=1e-5, atol=1e-6)
        assert r.peak == pytest.approx(every[r.row].peak, rel=1e-5) and r.label == sst2_rows[r.row]["label"]
    assert all(x.peak <= f.top[-1].peak + 1e-6 for x in every if x.index not in [r.row for r in f.top])
    # every word's mean activation over its occurrences (a word-level tokenizer: a token is a word)
    seen: dict[str, list[float]] = {}
    for x in every:
        for t, v in zip(x.tokens, x.values):
            seen.setdefault(t, []).append(abs(float(v)))
    assert f.words and all(w.count >= f.min_count for w in f.words)
    for w in f.words:
        assert w.count == len(seen[w.word]) and w.mean == pytest.approx(np.mean(seen[w.word]), rel=1e-5)
        assert w.sd == pytest.approx(np.std(seen[w.word], ddof=1), rel=1e-4, abs=1e-7)
    assert [m.mean for m in f.words] == sorted((m.mean for m in f.words), reverse=True)
    assert sum(n for _, n in f.peak_words) <= f.rows
    # kept on disk: read back, and another k is another entry
    again = U.unit_firing(tiny_multitask, "sst2", "validation", ref, k=3, rows=sst2_rows, lookup_only=True,
                          cache_dir=tmp_path)
    assert again == f and len(list((tmp_path / U.NAMESPACE).glob("*.json"))) == 1
    assert U.unit_firing(tiny_multitask, "sst2", "validation", ref, k=2, rows=sst2_rows, lookup_only=True,
                         cache_dir=tmp_path) is None
    with pytest.raises(MtpruneError, match="no split 'dev'"):
        U.unit_firing(tiny_multitask, "sst2", "dev", ref)


def test_the_whole_split_is_read(tiny_multitask, shared_home, tmp_path):
    from mtprune.tasks import load_rows, rows_as_list

    rows = rows_as_list(load_rows("cb", "validation"))
    ref = UnitRef("encoder.heads", 0, 2)  # a head: the norm of its output
    f = U.unit_firing(tiny_multitask, "cb", "validation", ref, k=4, cache_dir=tmp_path)
    every = unit_activations(tiny_multitask, "cb", rows, ref)
    assert f.rows == len(rows) == U.split_size("cb", "validation") == 56
    assert [r.row for r in f.top] == _top(every, 4)
    assert f.top[0].text.startswith(rows[f.top[0].row]["premise"][:40])
    assert f.peaks["max"] == pytest.approx(max(x.peak for x in every), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# without it


def test_the_removal_effect_is_a_hard_pruned_evaluation(tiny_multitask, sst2_rows, tmp_path):
    from scipy import stats

    ref = UnitRef("encoder.ffn", 0, 7)
    e = U.removal_effect(tiny_multitask, "sst2", "validation", ref, rows=sst2_rows, cache_dir=tmp_path)
    dense = evaluate(tiny_multitask, "sst2", rows=sst2_rows)
    off = _without(full_mask(tiny_multitask.unit_sites()), ref)
    sliced = evaluate(tiny_multitask, "sst2", rows=sst2_rows, mask=off, prune="hard")
    direct = sliced.predictions.p_gold - dense.predictions.p_gold
    np.testing.assert_allclose(e.changes, direct, atol=2e-6)
    assert e.n == 6 and e.mean == pytest.approx(direct.mean(), abs=2e-6)
    assert e.p_gold == pytest.approx(dense.predictions.p_gold.mean(), abs=1e-6)
    half = stats.t.ppf(0.975, 5) * np.std(e.changes, ddof=1) / np.sqrt(6)
    assert (e.low, e.high) == pytest.approx((e.mean - half, e.mean + half), rel=1e-6)
    assert e.verdict == ("no measurable change" if e.low <= 0 <= e.high else
                         "lowers P(gold)" if e.high < 0 else "raises P(gold)")
    assert U.removal_effect(tiny_multitask, "sst2", "validation", ref, rows=sst2_rows, lookup_only=True,
                            cache_dir=tmp_path) == e
    with pytest.raises(MtpruneError, match="at least 1"):
        U.removal_effect(tiny_multitask, "sst2", "validation", ref, limit=0)


def test_no_spread_is_an_interval_of_no_width():
    assert U.mean_interval([0.0, 0.0, 0.0]) == (0.0, 0.0, 0.0, 1.0)
    assert U.mean_interval([0.2]) == (0.2, 0.2, 0.2, 0.0)


# ----------------------------------------------------------------------------------------------
# the masks that keep it


def test_the_masks_that_keep_it_come_from_saved_runs(tiny_multitask, sst2_rows, tmp_path):
    from mtprune.runs import Run, RunStore, run_id

    ref = UnitRef("encoder.ffn", 1, 5)
    fp = tiny_multitask.fingerprint()
    full = full_mask(tiny_multitask.unit_sites())
    off = _without(full, ref)
    dense = evaluate(tiny_multitask, "sst2", rows=sst2_rows)
    store = RunStore(fp, tmp_path)
    for i, (mask, how) in enumerate([(off, "one off"), (off, "one off, again"), (full, "all kept")]):
        pruned = evaluate(tiny_multitask, "sst2", rows=sst2_rows, mask=mask)
        store.save(Run(id=run_id({"i": i}), fingerprint=fp, model="tiny", task="sst2", split="validation", limit=None,
                       results={"dense": dense, "pruned": pruned}, mask=mask, settings={"how": how, "method": "ap"}))
    (store.root / "broken.safetensors").write_bytes(b"not a run")
    found = U.run_masks(fp, tmp_path)
    assert len(found) == 3 and {s.mask.digest() for s in found} == {off.digest(), full.digest()}
    heads = Mask(keep={"encoder.heads": np.ones((2, 4), bool)}, n_units={"encoder.heads": [4, 4]}, sparsity=0.0,
                 kinds="heads")
    other = Mask(keep={"encoder.ffn": np.ones((2, 4), bool)}, n_units={"encoder.ffn": [4, 4]}, sparsity=0.0)
    uses = U.masks_keeping(ref, found + [U.MaskSource("session", full, "sst2"), U.MaskSource("heads", heads),
                                         U.MaskSource("another model", other)])
    by = {u.digest: u for u in uses}
    assert len(uses) == 3  # off, full, heads; the other model's mask is left out
    assert not by[off.digest()].kept and len(by[off.digest()].sources) == 2
    assert (by[off.digest()].kept_in_layer, by[off.digest()].n_in_layer) == (47, 48)
    assert by[full.digest()].kept and "session" in by[full.digest()].sources
    assert by[heads.digest()].kept and by[heads.digest()].n_in_layer == 0  # a mask of heads leaves neurons alone


# ----------------------------------------------------------------------------------------------
# the default model, few rows


def test_on_the_default_model(default_adapter, tmp_path):
    rows = eval_rows("sst2", "validation", 24)
    ref = UnitRef("encoder.ffn", 2, 1265)
    f = U.unit_firing(default_adapter, "sst2", "validation", "encoder.2.ffn.1265", k=3, rows=rows, cache_dir=tmp_path)
    every = unit_activations(default_adapter, "sst2", rows, ref)
    assert [r.row for r in f.top] == _top(every, 3)
    np.testing.assert_allclose(f.top[0].values, every[f.top[0].row].values, rtol=1e-4, atol=1e-5)
    assert not [w for w in f.words if w.word.startswith("##")]  # word pieces joined into words
    assert not [w for w, _ in f.peak_words if w.startswith("##")]
    e = U.removal_effect(default_adapter, "sst2", "validation", ref, rows=rows[:16], cache_dir=tmp_path)
    sites = default_adapter.unit_sites()
    dense = evaluate(default_adapter, "sst2", rows=rows[:16])
    sliced = evaluate(default_adapter, "sst2", rows=rows[:16], mask=_without(full_mask(sites), ref), prune="hard")
    np.testing.assert_allclose(e.changes, sliced.predictions.p_gold - dense.predictions.p_gold, atol=2e-5)
    assert e.n == 16 and e.low <= e.mean <= e.high
