"""Experiments: parsing, overlap math, multi-task parameter quotas, sweep tables (resume, atomic writes),
the paper's settings, unseen-domain pairs, charts. Tiny models for logic."""

import math
import os

import numpy as np
import pandas as pd
import pytest

from mtprune.errors import MtpruneError
from mtprune.costs import unit_costs
from mtprune.experiments import (QuotaConfig, ResultTable, SweepConfig, combine_scores, jaccard, kept_params, layer_jaccard,
                                 mask_for_quota, model_jaccard, normalise_scores, overlap_by_layer,
                                 overlap_matrix, parse_quota, parse_pairs, parse_sparsities, plan_runs,
                                 prunable_params, quota_table, random_jaccard, read_table, resolve_pair, run_quota,
                                 run_sweep, setting_config, summarize, write_table)
from mtprune.experiments.core import parse_methods, row_key
from mtprune.experiments.sweep import format_summary, series_label
from mtprune.masks import Mask, mask_from_scores
from mtprune.pruning import count_parameters

from tests.conftest import random_scores

# ----------------------------------------------------------------------------------------------
# parsing


def test_parse_sparsities():
    assert parse_sparsities("0:1:0.1") == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert parse_sparsities("0.1:0.9:0.2") == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert parse_sparsities("0.5, 0.1,0.5") == [0.1, 0.5]
    assert parse_sparsities([0, 1]) == [0.0, 1.0]
    for bad, msg in [("1.5", r"\[0, 1\]"), ("-0.1", r"\[0, 1\]"), ("0:1.2:0.1", r"\[0, 1\]"), ("a", "number"),
                     ("0:1:0", "positive"), ("0:1", "start:stop:step"), ("", "no sparsities"),
                     ("nan", "finite"), ("0.9:0.1:0.1", "below")]:
        with pytest.raises(MtpruneError, match=msg):
            parse_sparsities(bad)


def test_parse_methods():
    assert parse_methods("ap,random,svd,ap") == ["ap", "random", "svd"]
    with pytest.raises(MtpruneError, match="unknown method 'nope'"):
        parse_methods("ap,nope")


# ----------------------------------------------------------------------------------------------
# overlap


def _mask(keep: dict, kinds="ffn") -> Mask:
    keep = {g: np.asarray(k, dtype=bool) for g, k in keep.items()}
    n_units = {g: [k.shape[1]] * k.shape[0] for g, k in keep.items()}
    return Mask(keep=keep, n_units=n_units, sparsity=0.5, kinds=kinds)


def test_jaccard_exact_on_hand_made_masks():
    a = [[1, 1, 0, 0], [1, 0, 1, 0]]
    b = [[1, 0, 1, 0], [1, 0, 1, 0]]
    heads = [[1, 1], [1, 1]]
    A = _mask({"encoder.ffn": a, "encoder.heads": heads})
    B = _mask({"encoder.ffn": b, "encoder.heads": heads})
    assert jaccard(a[0], b[0]) == pytest.approx(1 / 3)
    lj = layer_jaccard(A, B)
    assert list(lj) == ["encoder.ffn"]  # heads are kept whole by both: not compared
    assert lj["encoder.ffn"].tolist() == pytest.approx([1 / 3, 1.0])
    assert model_jaccard(A, B) == pytest.approx(3 / 5)  # |A&B| = 1 + 2, |A|B| = 3 + 2
    m = overlap_matrix({"x": A, "y": B})
    assert m.loc["x", "y"] == m.loc["y", "x"] == pytest.approx(0.6)
    assert m.loc["x", "x"] == 1.0
    both_empty = _mask({"encoder.ffn": [[0, 0, 0, 0], [0, 0, 0, 0]]})
    assert math.isnan(model_jaccard(both_empty, both_empty))
    assert np.isnan(layer_jaccard(both_empty, both_empty)["encoder.ffn"]).all()
    with pytest.raises(MtpruneError, match="shapes"):
        jaccard([1, 0], [1, 0, 1])


def test_overlap_by_layer_counts_and_chance():
    A = _mask({"encoder.ffn": [[1, 1, 0, 0], [1, 1, 1, 1]]})
    B = _mask({"encoder.ffn": [[0, 1, 1, 0], [1, 1, 1, 1]]})
    C = _mask({"encoder.ffn": [[0, 0, 1, 1], [1, 1, 1, 1]]})
    d = overlap_by_layer({"a": A, "b": B, "c": C})
    assert len(d) == 3 * 2
    r = d[(d.task_a == "a") & (d.task_b == "c") & (d.layer == 0)].iloc[0]
    assert (r.intersection, r.union, r.jaccard) == (0, 4, 0.0)
    assert r.chance == pytest.approx(1 / 3)  # 2 and 2 of 4: E|A&B| = 1, union 3
    assert random_jaccard(0.5) == pytest.approx(1 / 3)
    assert random_jaccard(1.0) == 1.0


def test_overlap_rejects_masks_of_other_models():
    A = _mask({"encoder.ffn": [[1, 0, 0, 0]]})
    B = _mask({"encoder.ffn": [[1, 0, 0]]})
    with pytest.raises(MtpruneError, match="different models"):
        overlap_matrix({"a": A, "b": B})


# ----------------------------------------------------------------------------------------------
# multi-task parameter quota


def test_quota_costs_are_the_params_measure(tiny_multitask):
    """The quota counts parameters with the registered params measure: the same numbers as the
    quota's own per-unit count had (mtprune.units.unit_cost of every site, as integers)."""
    from mtprune.units import group_sites, unit_cost

    a = tiny_multitask
    own = {g: np.array([unit_cost(a.model, s) for s in ss], dtype=np.int64)
           for g, ss in group_sites(a.unit_sites()).items()}
    costs = unit_costs(a, "params")
    assert set(costs) == set(own)
    for g in own:
        np.testing.assert_array_equal(costs[g], own[g])
        assert (costs[g] == np.round(costs[g])).all()  # whole parameters, exact as floats
    for kinds in ("ffn", "heads", "all"):
        assert prunable_params(a, kinds) == prunable_params(a, kinds, costs=own)
        m = mask_from_scores(random_scores(a), 0.3, kinds=kinds)
        assert kept_params(m, costs, kinds) == kept_params(m, own, kinds)


def test_unit_costs_match_count_parameters(tiny_multitask):
    a = tiny_multitask
    costs = unit_costs(a, "params")
    assert costs["encoder.ffn"].tolist() == [2 * 32 + 1] * 2  # up row + bias, down column
    assert costs["encoder.heads"].tolist() == [4 * 8 * 32 + 3 * 8] * 2
    for units in ("ffn", "heads", "all"):
        m = mask_from_scores(random_scores(a), 0.5, kinds=units)
        full = mask_from_scores(random_scores(a), 0.0, kinds=units)
        removed = count_parameters(a) - count_parameters(a, m)
        assert kept_params(full, costs, units) - kept_params(m, costs, units) == removed
    assert prunable_params(a, "ffn") == 2 * 48 * 65


def test_parse_quota():
    assert parse_quota("40%", 1000) == 400
    assert parse_quota("0.25", 1000) == 250
    assert parse_quota("1.0", 1000) == 1000
    assert parse_quota("300", 1000) == 300
    assert parse_quota("2.5k", 1_000_000) == 2500
    assert parse_quota("1.5M", 2_000_000) == 1_500_000
    for bad, msg in [("101%", "larger than the model"), ("2M", "larger than the model"), ("-5", "not a number"),
                     ("lots", "not a number"), ("1001", "larger than the model")]:
        with pytest.raises(MtpruneError, match=msg):
            parse_quota(bad, 1000)


def test_normalise_and_combine():
    s = {"arrays": {"encoder.ffn": np.array([[1.0, 3.0, np.nan], [2.0, 2.0, 4.0]])},
         "n_units": {"encoder.ffn": [2, 3]}}
    n = normalise_scores(s, "sum")["arrays"]["encoder.ffn"]
    assert np.nansum(n) == pytest.approx(5.0)  # mean magnitude 1 over 5 units
    assert np.isnan(n[0, 2])
    mx = normalise_scores(s, "max")["arrays"]["encoder.ffn"]
    assert np.nanmax(mx) == 1.0
    rk = normalise_scores(s, "rank")["arrays"]["encoder.ffn"]
    assert rk[1, 2] == 1.0 and rk[0, 0] == 0.0 and rk[1, 0] == rk[0, 1] / 1 * 0 + rk[1, 1]
    t = {"arrays": {"encoder.ffn": np.array([[3.0, 1.0, np.nan], [2.0, 2.0, 4.0]])}, "n_units": s["n_units"]}
    c = combine_scores([s, t], "mean", "max")["arrays"]["encoder.ffn"]
    assert c[0, 0] == pytest.approx((0.25 + 0.75) / 2)
    with pytest.raises(MtpruneError):
        normalise_scores(s, "zscore")


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_mask_for_quota_is_tight(tiny_multitask, scope):
    a = tiny_multitask
    costs = unit_costs(a, "params")
    sc = random_scores(a)
    total = prunable_params(a, "ffn")
    for quota in (0, 1000, total // 3, total // 2, total - 1, total):
        m = mask_for_quota(sc, quota, costs, scope=scope, kinds="ffn")
        k = kept_params(m, costs, "ffn")
        assert k <= quota
        # one more unit per layer (the layer scope's step) would not fit
        assert quota - k < (costs["encoder.ffn"].sum() if scope == "layer" else 2 * costs["encoder.ffn"].max())


def test_run_quota_equal_parameters(tiny_multitask, sst2_rows, cb_rows, monkeypatch):
    a = tiny_multitask
    a.max_length = 64
    rows = {"sst2": sst2_rows, "cb": cb_rows, "rte": [
        {"sentence1": "a man plays", "sentence2": "the man plays", "label": 0},
        {"sentence1": "the cat sits", "sentence2": "the dog runs", "label": 1}]}
    total = prunable_params(a, "ffn")
    df = run_quota(a, QuotaConfig(("sst2", "cb", "rte"), ("40%",), method="random", examples=4), rows=rows, log=None)
    b = parse_quota("40%", total)
    joint = df[(df.setting == "joint") & (df.task != "mean")]
    ens = df[(df.setting == "ensemble") & (df.task != "mean")]
    assert len(joint) == len(ens) == 3
    assert joint["kept_params"].nunique() == 1
    jk, ek = int(joint["kept_params"].iloc[0]), int(ens["kept_params"].sum())
    step = int(unit_costs(a, "params")["encoder.ffn"].sum())  # one neuron per layer
    assert jk <= b and ek <= b
    assert abs(jk - ek) <= 3 * step
    assert set(df[df.task == "mean"].setting) == {"joint", "ensemble", "dense"}
    with pytest.raises(MtpruneError, match="at least two tasks"):
        QuotaConfig(("sst2",), ("40%",))
    with pytest.raises(MtpruneError, match="larger than the model"):
        run_quota(a, QuotaConfig(("sst2", "cb"), (total + 1,)), rows=rows, log=None)
    with pytest.raises(MtpruneError, match="--task-normalise must be one of"):
        QuotaConfig(("sst2", "cb"), task_normalise="zscore")


def test_quota_rows_keep_the_columns_and_keys_of_the_budget_experiment(tiny_multitask, sst2_rows, cb_rows, tmp_path,
                                                                       monkeypatch):
    """The rename changed no output: the CSV columns (the quota is the column ``budget``, the task
    normalisation ``normalise``), and the row keys, whose experiment is still ``budget``, so a file
    written before the rename resumes."""
    import mtprune.experiments.core as core
    from mtprune.experiments.quota import QUOTA_COLUMNS

    a = tiny_multitask
    a.max_length = 64
    rows = {"sst2": sst2_rows, "cb": cb_rows}
    out = tmp_path / "budget.csv"
    cfg = QuotaConfig(("sst2", "cb"), ("50%",), method="random", examples=4, task_normalise="max")
    df = run_quota(a, cfg, out=str(out), rows=rows, log=None)
    written = pd.read_csv(out)
    assert list(written.columns[:len(QUOTA_COLUMNS)]) == QUOTA_COLUMNS
    assert {"budget", "normalise"} <= set(QUOTA_COLUMNS) and set(written.normalise) == {"max"}
    total = prunable_params(a, "ffn")
    assert set(written.budget) == {parse_quota("50%", total), total}
    tab = quota_table(df)
    assert tab.index.names == ["budget", "setting"] and (total, "dense") in tab.index
    seen = []
    real_key = core.point_key

    def spy(runner, experiment, point):
        seen.append((experiment, point.key))
        return real_key(runner, experiment, point)

    monkeypatch.setattr(core, "point_key", spy)
    again = run_quota(a, cfg, out=str(out), rows=rows, log=None)
    assert {e for e, _ in seen} == {"budget"}  # the experiment's name in keys, as before the rename
    k = next(k for _, k in seen if k["setting"] == "joint")
    assert k == {"method": "random", "examples": 4, "kinds": "ffn", "scope": "layer", "normalise": "max",
                 "combine": "mean", "tasks": "sst2,cb", "variant": "abs", "seed": 0, "setting": "joint",
                 "task": "sst2", "budget": parse_quota("50%", total)}
    assert again.attrs["stats"]["evaluations"] == 0  # every row reused by key
    pd.testing.assert_frame_equal(pd.read_csv(out), written)


# ----------------------------------------------------------------------------------------------
# sweep tables


def test_plan_runs_trials_and_examples():
    cfg = SweepConfig(tasks=("sst2",), methods=("ap", "random", "activation", "svd", "magnitude"), trials=3)
    runs = plan_runs(cfg, "sst2", train_size=10_000)
    by = {}
    for r in runs:
        by.setdefault(r.method, []).append(r)
    assert [r.trial for r in by["ap"]] == [0]
    assert [r.trial for r in by["random"]] == [0, 1, 2] and all(r.examples == 0 for r in by["random"])
    assert [r.seed for r in by["activation"]] == [0, 1, 2]
    assert len(by["svd"]) == 1 and len(by["magnitude"]) == 1
    low = setting_config("low-resource", cfg)
    runs = plan_runs(low, "cb", train_size=250)
    ap = [r for r in runs if r.method == "ap"]
    assert sorted({r.examples for r in ap}) == [10, 100, 1000] and len(ap) == 3 * 3
    assert {r.examples_used for r in ap if r.examples == 1000} == {250}  # capped at cb's train size
    uns = setting_config("unsupervised", cfg)
    ap = [r for r in plan_runs(uns, "sst2") if r.method == "ap"]
    assert [r.unsupervised for r in ap] == [False, True]
    with pytest.raises(MtpruneError, match="unknown setting"):
        setting_config("nope", cfg)


def test_write_table_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "t.csv"
    write_table(pd.DataFrame({"key": ["a"], "x": [1]}), path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        write_table(pd.DataFrame({"key": ["b"], "x": [2]}), path)
    assert read_table(path)["key"].tolist() == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]  # no temporary file left


def test_result_table_round_trip(tmp_path):
    path = tmp_path / "r.csv"
    t = ResultTable(path, columns=["task", "accuracy"])
    t.put({"key": row_key({"a": 1}), "task": "sst2", "accuracy": 0.5, "extra": "x"})
    t.put({"key": row_key({"a": 2}), "task": "cb", "accuracy": 0.25, "extra": "y"})
    t.save()
    u = ResultTable(path)
    assert u.frame().to_dict("records") == t.frame().to_dict("records")
    assert list(t.frame().columns[:2]) == ["task", "accuracy"]
    assert len(ResultTable(path, resume=False).rows) == 0
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(MtpruneError, match="no key column"):
        ResultTable(tmp_path / "bad.csv")


def _tiny_sweep(adapter, rows, out, **kw):
    cfg = SweepConfig(tasks=("sst2",), methods=("ap", "random", "svd"), sparsities=(0.0, 0.5, 1.0), trials=2,
                      examples=(4,), **kw)
    return run_sweep(adapter, cfg, out=out, rows={"sst2": rows}, log=None)


def test_sweep_rows_resume_and_csv(tiny_multitask, sst2_rows, tmp_path):
    a = tiny_multitask
    a.max_length = 64
    out = tmp_path / "sweep.csv"
    df = _tiny_sweep(a, sst2_rows, out)
    assert len(df) == (1 + 2 + 1) * 3
    for col in ("task", "method", "sparsity", "trial", "accuracy", "params", "key"):
        assert col in df.columns
    assert df["key"].is_unique
    assert set(df[df.method == "random"]["trial"]) == {0, 1}
    dense = df[df.sparsity == 0]["accuracy"].unique()
    assert len(dense) == 1  # sparsity 0 is the dense model for every method
    assert df.attrs["stats"]["evaluations"] < len(df)  # equal masks evaluated once
    svd = df[(df.method == "svd") & (df.sparsity == 0.5)].iloc[0]
    assert svd["stand_in_params"] <= svd["params"]
    on_disk = read_table(out)
    assert len(on_disk) == len(df) and set(on_disk["key"]) == set(df["key"])
    again = _tiny_sweep(a, sst2_rows, out)
    assert again.attrs["stats"]["evaluations"] == 0 and again.attrs["stats"]["scores_computed"] == 0
    pd.testing.assert_frame_equal(again.reset_index(drop=True), on_disk.reset_index(drop=True), check_dtype=False)
    # a different setting keeps the old rows in the file and adds its own
    _tiny_sweep(a, sst2_rows, out, kinds="heads")
    assert len(read_table(out)) == 2 * len(df)


@pytest.mark.parametrize("stack", ["decoder", "all"])
def test_sweep_on_t5_label_words(tiny_t5, sst2_rows, stack):
    cfg = SweepConfig(tasks=("sst2",), methods=("ap", "random", "svd"), sparsities=(0.0, 0.5), trials=1,
                      examples=(4,), kinds="all", stack=stack)
    df = run_sweep(tiny_t5, cfg, rows={"sst2": sst2_rows}, log=None)
    assert len(df) == 3 * 2 and df["accuracy"].between(0, 1).all()
    half = df[df.sparsity == 0.5]
    assert (half["params"] < df[df.sparsity == 0]["params"].iloc[0]).all()
    if stack == "decoder":  # encoder units stay: fewer pruned than with both stacks
        assert half["kept_units"].iloc[0] > sum(s.n_units for s in tiny_t5.unit_sites()) / 2


def test_runner_caps_samples_at_the_split_size(tiny_multitask, monkeypatch):
    from mtprune.experiments import core

    monkeypatch.setattr(core, "split_size", lambda task, split=None: 5)
    logs = []
    r = core.Runner(tiny_multitask, log=logs.append)
    s = r.scores("sst2", "activation", 256)
    assert s.spec.examples == 5 and s.meta["examples"] == 5
    assert any("using all 5, not 256" in m for m in logs)


def test_interrupted_sweep_keeps_finished_runs(tiny_multitask, sst2_rows, tmp_path, monkeypatch):
    a = tiny_multitask
    a.max_length = 64
    out = tmp_path / "sweep.csv"
    from mtprune.experiments import core

    real = core._row
    calls = []

    def flaky(runner, point, key):
        calls.append(point.fields["method"])
        if point.fields["method"] == "svd":
            raise KeyboardInterrupt
        return real(runner, point, key)

    monkeypatch.setattr(core, "_row", flaky)
    with pytest.raises(KeyboardInterrupt):
        _tiny_sweep(a, sst2_rows, out)
    done = read_table(out)
    assert set(done["method"]) == {"ap", "random"} and len(done) == 3 * 3
    monkeypatch.setattr(core, "_row", real)
    df = _tiny_sweep(a, sst2_rows, out)
    stats = df.attrs["stats"]
    assert len(df) == 12 and calls.count("svd") == 1
    # only svd's rows were left; its reference scores (ap's) come from the disk cache
    assert stats["scores_computed"] == 0 and stats["scores_cached"] == 1 and stats["evaluations"] >= 1


def test_summarize_exact():
    rows = []
    for task, method, trial, p, acc in [
        ("t1", "ap", 0, 0.1, 0.9), ("t1", "ap", 0, 0.9, 0.7), ("t1", "ap", 0, 0.0, 0.0),
        ("t1", "random", 0, 0.1, 0.8), ("t1", "random", 0, 0.9, 0.4),
        ("t1", "random", 1, 0.1, 0.6), ("t1", "random", 1, 0.9, 0.4),
        ("t2", "ap", 0, 0.1, 0.5), ("t2", "ap", 0, 0.9, 0.5),
        ("t2", "random", 0, 0.1, 0.5), ("t2", "random", 0, 0.9, 0.3),
    ]:
        rows.append(dict(task=task, method=method, trial=trial, sparsity=p, accuracy=acc, examples=0,
                         unsupervised=False))
    tab = summarize(pd.DataFrame(rows))
    assert tab.loc["t1", "ap"] == pytest.approx(0.8)  # sparsity 0 is outside 0.1-0.9
    assert tab.loc["t1", "random"] == pytest.approx((0.6 + 0.5) / 2)
    assert tab.attrs["std"].loc["t1", "random"] == pytest.approx(np.std([0.6, 0.5], ddof=1))
    assert tab.loc["mean", "ap"] == pytest.approx((0.8 + 0.5) / 2)
    assert tab.loc["mean", "random"] == pytest.approx((0.55 + 0.4) / 2)
    text = format_summary(tab)
    assert "| t1 | 0.800 | 0.550 ± 0.071 |" in text
    assert np.isnan(tab.attrs["std"].loc["mean", "random"])  # t2 ran one trial of random: no spread
    # with trial 1 on both tasks: trial means over the tasks are 0.5 and (0.5 + 0.6) / 2
    rows += [dict(task="t2", method="random", trial=1, sparsity=p, accuracy=a, examples=0, unsupervised=False)
             for p, a in ((0.1, 0.9), (0.9, 0.3))]
    tab = summarize(pd.DataFrame(rows))
    assert tab.attrs["std"].loc["mean", "random"] == pytest.approx(np.std([0.5, 0.55], ddof=1))
    assert np.isnan(tab.attrs["std"].loc["mean", "ap"])
    assert "| **mean** | **0.650** | **0.525 ± 0.035** |" in format_summary(tab)


def test_series_label_names_settings():
    df = pd.DataFrame({"method": ["ap", "ap", "random"], "unsupervised": [False, True, False],
                       "examples": [10, 10, 0]})
    assert series_label(df).tolist() == ["ap", "ap (unsupervised)", "random"]
    df = pd.DataFrame({"method": ["ap", "ap", "random"], "unsupervised": [False] * 3, "examples": [10, 100, 0]})
    assert series_label(df).tolist() == ["ap n=10", "ap n=100", "random"]


# ----------------------------------------------------------------------------------------------
# unseen domains


def test_pairs_and_heads(tiny_multitask):
    a = tiny_multitask
    assert parse_pairs("sst2:imdb,yelp;rte:scitail") == [("sst2", "imdb"), ("sst2", "yelp"), ("rte", "scitail")]
    assert ("sst2", "vader_tweets") in parse_pairs("paper") and ("rte", "qnli") in parse_pairs(None)
    with pytest.raises(MtpruneError, match="unknown task"):
        parse_pairs("sst2:nope")
    with pytest.raises(MtpruneError, match="source:target"):
        parse_pairs("sst2")
    p = resolve_pair(a, "sst2", "imdb")
    assert p.head == "sst2" and not p.cross_task
    assert a.head_for(p.target_spec()) == "sst2"
    p = resolve_pair(a, "rte", "scitail")
    assert p.head == "rte"
    with pytest.raises(MtpruneError, match="read through"):
        resolve_pair(a, "sst2", "scitail")
    with pytest.raises(MtpruneError, match="same task"):
        resolve_pair(a, "sst2", "sst2")


def test_scitail_through_qnli_head(default_adapter):
    from mtprune.experiments.unseen import resolve_pair as rp

    p = rp(default_adapter, "qnli", "scitail")
    assert p.head == "qnli" and default_adapter.head_for(p.target_spec()) == "qnli"
    p = rp(default_adapter, "rte", "qnli")
    assert p.cross_task and p.head == "qnli"
    assert rp(default_adapter, "cb", "sick").head == "cb"


def test_unseen_rows(tiny_multitask, sst2_rows):
    from mtprune.experiments.unseen import UnseenConfig, run_unseen, unseen_summary

    a = tiny_multitask
    a.max_length = 64
    cfg = UnseenConfig(pairs=(("sst2", "imdb"),), methods=("ap", "random"), sparsities=(0, 0.5), examples=4, trials=2)
    df = run_unseen(a, cfg, rows={"imdb": sst2_rows}, log=None)
    assert len(df) == (1 + 2) * 2
    assert set(df["head"]) == {"sst2"} and set(df["mask_from"]) == {"sst2"}
    tab = unseen_summary(df, lo=0.5, hi=0.5)
    assert "dense" in tab.columns and ("sst2", "imdb") in tab.index


# ----------------------------------------------------------------------------------------------
# charts


def _sweep_frame():
    recs = []
    for task in ("sst2", "cb"):
        for method, trials in (("ap", 1), ("random", 3)):
            for t in range(trials):
                for p in (0.0, 0.5, 1.0):
                    recs.append(dict(task=task, method=method, trial=t, sparsity=p, accuracy=0.9 - p / 2 - 0.01 * t,
                                     examples=0, unsupervised=False))
    return pd.DataFrame(recs)


def test_charts_build():
    from mtprune import plots

    fig = plots.sweep_figure(_sweep_frame())
    names = {tr.name for tr in fig.data}
    assert names == {"ap", "random", "random (spread over 3 trials)"} and len(fig.data) == 6  # two tasks
    rnd = [tr for tr in fig.data if tr.name == "random"][0]
    band = [tr for tr in fig.data if tr.name == "random (spread over 3 trials)"][0]
    assert list(rnd.x) == [0.0, 0.5, 1.0] and rnd.y[1] == pytest.approx(0.64)  # the mean of 0.65, 0.64, 0.63
    assert list(band.y) == pytest.approx([0.9, 0.65, 0.4, 0.38, 0.63, 0.88])  # highest, then lowest back
    tab = summarize(_sweep_frame(), lo=0.5, hi=0.5)
    assert len(plots.summary_bars(tab).data) == 2
    A = _mask({"encoder.ffn": [[1, 1, 0, 0], [1, 0, 1, 0]]})
    B = _mask({"encoder.ffn": [[1, 0, 1, 0], [1, 0, 1, 0]]})
    assert plots.overlap_heatmap(overlap_matrix({"a": A, "b": B})).data[0].z[0][1] == pytest.approx(0.6)
    assert len(plots.overlap_layers_figure(overlap_by_layer({"a": A, "b": B})).data) == 2
    un = pd.DataFrame([dict(source="sst2", target="imdb", mask_from="sst2", method=m, sparsity=p, trial=0,
                            accuracy=0.8 - p / 4) for m in ("ap", "random") for p in (0.0, 0.5)])
    assert len(plots.unseen_figure(un).data) == 2
    bd = pd.DataFrame([dict(setting=s, task=t, budget=b, accuracy=0.7, prunable_params=1000, kept_params=b)
                       for s in ("joint", "ensemble") for t in ("sst2", "cb", "mean") for b in (300, 600)]
                      + [dict(setting="dense", task="sst2", budget=1000, accuracy=0.9, prunable_params=1000)])
    assert len(plots.quota_figure(bd).data) == 2 * 3 + 1  # + the dense line of sst2
    assert len(plots.quota_figure(bd[bd.budget != 600]).data) == 3  # one quota: bars + dense


def test_save_figure_png_failure_keeps_html(tmp_path, monkeypatch):
    from mtprune import plots

    fig = plots.sweep_figure(_sweep_frame())

    def no_png(*a, **k):
        raise MtpruneError("could not render a PNG (kaleido needs Chrome or Chromium): no browser")

    monkeypatch.setattr(plots, "figure_png", no_png)
    with pytest.raises(MtpruneError, match="PNG"):
        plots.save_figure(fig, tmp_path / "chart")
    assert (tmp_path / "chart.html").stat().st_size > 1000
    assert not (tmp_path / "chart.png").exists()
    assert plots.save_figure(fig, tmp_path / "c2.html", png=False) == [tmp_path / "c2.html"]


def _trial_rows(task, method, values, sparsities=(0.1, 0.9)):
    """Rows whose per-trial mean over the sparsities is ``values[t]`` (every sparsity the same)."""
    return [dict(task=task, method=method, trial=t, sparsity=p, accuracy=v, examples=0, unsupervised=False)
            for t, v in enumerate(values) for p in sparsities]


def test_compare_pairs_trials_exact():
    from mtprune.experiments import compare, format_compare

    rows = (_trial_rows("t1", "ap", [0.80, 0.84, 0.82]) + _trial_rows("t1", "rl", [0.78, 0.80, 0.82])
            + _trial_rows("t2", "ap", [0.60, 0.60, 0.66]) + _trial_rows("t2", "rl", [0.70, 0.70, 0.70])
            + _trial_rows("t2", "svd", [0.5]) + _trial_rows("t1", "svd", [0.9]))
    df = pd.DataFrame(rows)
    c = compare(df, "ap", "rl")
    d1 = np.array([0.02, 0.04, 0.0])
    assert c.loc["t1", "difference"] == pytest.approx(d1.mean())
    assert c.loc["t1", "se"] == pytest.approx(d1.std(ddof=1) / np.sqrt(3))
    assert c.loc["t1", "verdict"] == "tie"  # 0.02 against 2 x 0.0115
    d2 = np.array([-0.1, -0.1, -0.04])
    assert c.loc["t2", "se"] == pytest.approx(d2.std(ddof=1) / np.sqrt(3))
    assert c.loc["t2", "verdict"] == "rl higher"
    dm = (d1 + d2) / 2  # trial t's mean over the tasks, paired
    assert c.loc["mean", "difference"] == pytest.approx(dm.mean())
    assert c.loc["mean", "se"] == pytest.approx(dm.std(ddof=1) / np.sqrt(3))
    assert c.loc["mean", "ap"] == pytest.approx((0.82 + 0.62) / 2)
    assert bool(c.loc["mean", "paired"]) and int(c.loc["mean", "trials"]) == 3
    text = format_compare(c)
    assert "| t2 | 0.6200 | 0.7000 | -0.0800 | 0.0200 | 3 | rl higher |" in text
    # one trial of svd: unpaired, no error, no verdict
    s = compare(df, "ap", "svd")
    assert np.isnan(s.loc["t1", "se"]) and s.loc["t1", "verdict"] == "one trial: no error"
    assert s.loc["t1", "difference"] == pytest.approx(0.82 - 0.9)


def test_compare_bad_input():
    from mtprune.experiments import compare

    df = pd.DataFrame(_trial_rows("t1", "ap", [0.8]))
    with pytest.raises(MtpruneError, match="no series 'rl'"):
        compare(df, "ap", "rl")
    with pytest.raises(MtpruneError, match="itself"):
        compare(df, "ap", "ap")


def test_unseen_bars():
    from mtprune.experiments import unseen_bars

    rows = pd.DataFrame([
        {"target": "imdb", "mask_from": "sst2", "method": "ap", "sparsity": 0.0, "accuracy": 0.9},
        {"target": "imdb", "mask_from": "sst2", "method": "ap", "sparsity": 0.5, "accuracy": 0.8},
        {"target": "imdb", "mask_from": "sst2", "method": "random", "sparsity": 0.5, "accuracy": 0.6},
        {"target": "imdb", "mask_from": "sst2", "method": "random", "sparsity": 0.5, "accuracy": 0.7},
    ])
    labels, series = unseen_bars(rows, 0.5)
    assert labels == ["imdb"]
    assert series == {"dense": [0.9], "ap mask from sst2": [0.8], "random mask from sst2": [pytest.approx(0.65)]}


def test_frontier_sweep_budgets_and_repairs(tiny_multitask, sst2_rows, tmp_path, monkeypatch):
    """Budget rows next to the dense row, each mask evaluated pruned and repaired; FLOPs kept within
    the budget; a rerun reuses every row."""
    from mtprune.experiments import core

    a = tiny_multitask
    a.max_length = 64
    calib = [dict(r) for r in sst2_rows] * 5
    monkeypatch.setattr(core.Runner, "calibration", lambda self, task, n, seed=0: calib)
    from mtprune import costs

    monkeypatch.setattr(costs, "average_length", lambda adapter, task, split=None, n=512: 12.0)
    monkeypatch.setattr(costs, "_PREPARED", {})
    cfg = SweepConfig(tasks=("sst2",), methods=("ap", "random"), sparsities=(0.0,), budgets=("flops:0.7", "flops:0.4"),
                      repairs=("none", "lsq"), kinds="all", trials=1, examples=(4,), calib=30)
    out = tmp_path / "f.csv"
    df = run_sweep(a, cfg, out=out, rows={"sst2": sst2_rows}, log=None)
    assert len(df) == 2 * 2 * 3  # methods x repairs x (dense + two budgets)
    b = df[df.budget.fillna("") != ""]
    assert set(b.budget) == {"flops:0.7", "flops:0.4"} and set(b.repair) == {"none", "lsq"}
    assert (b[b.budget == "flops:0.4"].flops_kept <= 0.4 + 1e-9).all()
    assert (b[b.budget == "flops:0.7"].flops_kept <= 0.7 + 1e-9).all()
    assert df.key.is_unique and set(b.scope) == {"budget"}
    again = run_sweep(a, cfg, out=out, rows={"sst2": sst2_rows}, log=None)
    assert again.attrs["stats"]["evaluations"] == 0
    from mtprune.experiments.sweep import format_frontier, frontier_table
    from mtprune.plots import frontier_figure

    tab = frontier_table(df)
    assert list(tab.columns) == ["dense", "flops:0.7", "flops:0.4"] and len(tab) == 4
    assert "| sst2 | ap + lsq |" in format_frontier(tab)
    fig = frontier_figure(df)
    assert {t.name for t in fig.data if t.name} == {"ap + none", "ap + lsq", "random + none", "random + lsq"}


def test_unseen_and_quota_rows_with_repair(tiny_multitask, sst2_rows, cb_rows, monkeypatch):
    """The other experiments evaluate repaired models too: unseen on the source's rows, the joint
    quota mask on every task's rows (one repaired model for all of them)."""
    from mtprune.experiments import core
    from mtprune.experiments.unseen import UnseenConfig, run_unseen

    a = tiny_multitask
    a.max_length = 64
    asked = []

    def calibration(self, task, n, seed=0):
        asked.append(task)
        return [dict(r) for r in (sst2_rows if task == "sst2" else cb_rows)] * 5

    monkeypatch.setattr(core.Runner, "calibration", calibration)
    cfg = UnseenConfig(pairs=(("sst2", "imdb"),), methods=("ap",), sparsities=(0, 0.5), examples=4, trials=1,
                       repairs=("none", "lsq"), calib=30)
    df = run_unseen(a, cfg, rows={"imdb": sst2_rows}, log=None)
    assert len(df) == 4 and set(df.repair) == {"none", "lsq"} and set(asked) == {"sst2"}
    assert df.key.is_unique
    rows = {"sst2": sst2_rows, "cb": cb_rows}
    asked.clear()
    repaired_models = []
    real = core.Runner.repaired

    def spy(self, mask, repair):
        repaired_models.append((mask.digest(), repair.tasks))
        return real(self, mask, repair)

    monkeypatch.setattr(core.Runner, "repaired", spy)
    bd = run_quota(a, QuotaConfig(("sst2", "cb"), ("50%",), method="random", examples=4, repair="lsq", calib=30),
                    rows=rows, log=None)
    assert set(bd[bd.setting != "dense"].repair.dropna()) == {"lsq"}
    joint = [t for _, t in repaired_models if len(t) == 2]
    assert joint and set(joint[0]) == {"sst2", "cb"}  # the shared mask, repaired on both tasks
    with pytest.raises(MtpruneError, match="unknown repair"):
        QuotaConfig(("sst2", "cb"), repair="magic")


def test_transfer_matrix(tiny_multitask, sst2_rows, cb_rows):
    from mtprune.experiments import TransferConfig, format_transfer, run_transfer, transfer_matrix

    a = tiny_multitask
    a.max_length = 64
    rte_rows = [{"sentence1": "a man plays", "sentence2": "the man plays", "label": 0},
                {"sentence1": "the cat sits", "sentence2": "the dog runs", "label": 1}] * 3
    rows = {"sst2": sst2_rows, "cb": cb_rows, "rte": rte_rows}
    df = run_transfer(a, TransferConfig(("sst2", "cb", "rte"), sparsity=0.5, method="random", examples=4),
                      rows=rows, log=None)
    assert len(df) == 3 * (1 + 3 + 1)  # per target: dense, three masks, a random mask
    m = transfer_matrix(df)
    assert list(m.index) == ["sst2", "cb", "rte", "dense", "random mask"] and list(m.columns) == ["sst2", "cb", "rte"]
    assert (m.attrs["low"] <= m).all().all() and (m <= m.attrs["high"]).all().all()
    # the diagonal is each task's own mask: the same as sweeping that task alone
    own = df[(df.mask_from == "cb") & (df.target == "cb")]["accuracy"].iloc[0]
    assert m.loc["cb", "cb"] == own
    assert "| dense |" in format_transfer(m) and "[" in format_transfer(m)
    from mtprune.plots import transfer_heatmap

    fig = transfer_heatmap(m)
    assert fig.data[0].y == ("sst2", "cb", "rte", "dense", "random mask")
    with pytest.raises(MtpruneError, match="at least two tasks"):
        TransferConfig(("sst2",))
    with pytest.raises(MtpruneError, match="unknown budget"):
        TransferConfig(("sst2", "cb"), budget="speed:0.5")


# ----------------------------------------------------------------------------------------------
# --examples auto, the reliability of the scores, paired tests, within-task floors


def test_examples_auto_in_sweep_rows_and_keys(tiny_multitask, sst2_rows, monkeypatch):
    """--examples auto doubles 64 -> 128 (the cap) for ap; the rows say auto and the examples read,
    carry the scores' reliability, and key on the target and the cap; random says it reads none."""
    import mtprune.experiments.core as core
    from mtprune.examples_auto import attribute_auto
    from mtprune.attribution import AttributionSpec

    a = tiny_multitask
    a.max_length = 64
    keys, logs = [], []
    real_key = core.point_key
    monkeypatch.setattr(core, "point_key", lambda r, e, p: keys.append(p.key) or real_key(r, e, p))
    cfg = SweepConfig(tasks=("sst2",), methods=("ap", "random"), sparsities=(0.0, 0.5), trials=2, examples=("auto",),
                      reliability=0.999999, max_examples=128, kinds="all")
    df = run_sweep(a, cfg, rows={"sst2": sst2_rows}, log=logs.append)
    ap, rnd = df[df.method == "ap"], df[df.method == "random"]
    assert set(ap.examples) == {"auto"} and set(ap.examples_used) == {128}
    assert set(rnd.examples) == {0} and set(rnd.examples_used) == {0}
    scores = attribute_auto(a, AttributionSpec("sst2", "ap", examples=64), 0.999999, 128)[0]
    assert scores.meta["examples"] == 128
    rel = scores.reliability()
    assert set(ap.reliability_ffn) == {round(rel["encoder.ffn"].spearman, 4)}
    assert set(ap.reliability_heads) == {round(rel["encoder.heads"].spearman, 4)}
    assert rnd.reliability_ffn.isna().all() and rnd.reliability_heads.isna().all()  # no folds, no reliability
    assert sum("examples auto: " in m and "128 examples: the cap" in m for m in logs) == 1
    assert sum("reads no examples" in m for m in logs) == 1  # once, not per trial
    ap_keys = [k for k in keys if k["method"] == "ap"]
    assert all(k["examples"] == "auto" and k["reliability"] == 0.999999 and k["max_examples"] == 128 for k in ap_keys)
    keys.clear()
    run_sweep(a, replace_examples(cfg, (4,)), rows={"sst2": sst2_rows}, log=None)
    assert keys and not any({"reliability", "max_examples"} & set(k) for k in keys)  # counts keep their keys
    for bad, msg in [({"reliability": 1.5}, r"--reliability is a number in \(0, 1\)"),
                     ({"max_examples": 32}, "--max-examples must be at least 64"),
                     ({"examples": ("many",)}, "a count or auto")]:
        with pytest.raises(MtpruneError, match=msg):
            SweepConfig(tasks=("sst2",), **{"examples": ("auto",), **bad})


def replace_examples(cfg, examples):
    from dataclasses import replace

    return replace(cfg, examples=examples)


def test_paired_test_is_mcnemar_on_the_discordant_rows():
    from scipy.stats import binomtest

    from mtprune.experiments.core import comparison_words, paired_test

    ref = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)
    cell = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0], bool)  # 8 right -> wrong, 1 wrong -> right
    p, diff = paired_test(cell, ref)
    assert p == pytest.approx(binomtest(1, 9, 0.5).pvalue) == pytest.approx(20 / 512) and p < 0.05
    assert diff == pytest.approx((3 - 10) / 12)
    assert comparison_words(p, diff, "dense") == "worse than dense"
    assert comparison_words(1.0, 0.0, "dense") == "no measurable difference from dense"
    assert paired_test(ref, ref) == (1.0, 0.0)


def test_pair_table_tests_against_both_floors():
    """A pair is distinct when its Jaccard is below both tasks' simulated floors; p is the larger
    of the two empirical one-sided p-values."""
    from mtprune.experiments.overlap import Floor, pair_table

    m = pd.DataFrame([[1.0, 0.40, 0.55], [0.40, 1.0, 0.50], [0.55, 0.50, 1.0]], index=list("abc"), columns=list("abc"))
    per_layer = pd.DataFrame({"task_a": ["a", "a", "b"], "task_b": ["b", "c", "c"], "chance": [1 / 3] * 3})
    floors = {"a": Floor(np.linspace(0.50, 0.60, 199)), "b": Floor(np.linspace(0.45, 0.65, 199)), "c": None}
    t = pair_table(m, per_layer, floors).set_index(["task_a", "task_b"])
    ab = t.loc[("a", "b")]
    assert ab.floor_a == pytest.approx(0.55) and ab.floor_b == pytest.approx(0.55)
    assert ab.p_floor == pytest.approx(1 / 200) and bool(ab.distinct)  # below every simulated draw of both
    assert ab.floor_a_low == pytest.approx(np.quantile(np.linspace(0.50, 0.60, 199), 0.05))
    assert np.isnan(t.loc[("a", "c")].p_floor) and not t.loc[("a", "c")].distinct
    assert t.loc[("a", "c")].verdict.startswith("floor unknown")
    floors["c"] = Floor(np.linspace(0.40, 0.60, 199))  # b-c: 0.50 is the middle of c's floor: not distinct
    t = pair_table(m, per_layer, floors).set_index(["task_a", "task_b"])
    bc = t.loc[("b", "c")]
    assert bc.p_floor == pytest.approx((1 + 100) / 200) and not bc.distinct
    assert bc.verdict == "within the floors: not distinguishable"


def test_overlap_floors_on_a_tiny_model(tiny_multitask):
    """Each task's floor is the copula's expected Jaccard with another draw; masks without scores
    (files) have none; the heatmap colours from chance to the floor."""
    from mtprune.experiments.overlap import OverlapConfig, compare_masks, run_overlap
    from mtprune.plots import overlap_heatmap
    from mtprune.reliability import expected_jaccard

    a = tiny_multitask
    a.max_length = 64
    r = run_overlap(a, OverlapConfig(("sst2", "cb"), sparsity=0.5, examples=16), draws=100)
    from mtprune.experiments.core import Runner

    sc = Runner(a, log=None).scores("cb", "ap", 16)
    want = expected_jaccard(sc.folds["encoder.ffn"], sc.n_units["encoder.ffn"], 0.5)
    assert r.floors["cb"].value == pytest.approx(want, abs=0.05)
    assert r.floors["cb"].samples.shape == (100,)
    row = r.pairs.iloc[0]
    assert (row.task_a, row.task_b) == ("sst2", "cb") and row.floor_b == r.floors["cb"].value
    assert row.jaccard == r.matrix.loc["sst2", "cb"]
    fig = overlap_heatmap(r.matrix, chance=r.chance, pairs=r.pairs)
    assert fig.data[0].text[1][1].startswith("floor ") and list(fig.data[0].colorbar.ticktext) == [
        "chance", "floor (same task)"]
    z = np.asarray(fig.data[0].z, dtype=float)
    top = (row.floor_a + row.floor_b) / 2
    assert z[0, 1] == pytest.approx((row.jaccard - row.chance) / (top - row.chance))
    bare = compare_masks(r.masks)  # mask files: no scores, no floors
    assert bare.pairs.verdict.iloc[0].startswith("floor unknown")
    assert overlap_heatmap(bare.matrix, chance=bare.chance, pairs=bare.pairs).data[0].text[0][0] == ""


def test_transfer_and_unseen_rows_carry_paired_tests(tiny_multitask, sst2_rows, cb_rows, tmp_path):
    """The cells' p-values against own and random masks; the dense model and the random mask have
    none; rows of a file written before the tests resume as they are."""
    from mtprune.experiments import TransferConfig, format_transfer, run_transfer, transfer_matrix
    from mtprune.experiments.unseen import UnseenConfig, run_unseen, unseen_verdicts

    a = tiny_multitask
    a.max_length = 64
    rows = {"sst2": sst2_rows, "cb": cb_rows}
    out = tmp_path / "t.csv"
    df = run_transfer(a, TransferConfig(("sst2", "cb"), sparsity=0.5, method="random", examples=4), out=str(out),
                      rows=rows, log=None)
    cells = df[~df.mask_from.isin(["dense", "random mask"])]
    assert cells.p_vs_random.notna().all() and cells.verdict.str.contains("random mask of the same size").all()
    own = cells[cells.mask_from == cells.target]
    assert own.p_vs_own.isna().all() and own.verdict.str.startswith("its own mask").all()
    assert cells[cells.mask_from != cells.target].p_vs_own.notna().all()
    assert df[df.mask_from.isin(["dense", "random mask"])][["p_vs_own", "p_vs_random"]].isna().all(axis=None)
    m = transfer_matrix(df)
    assert m.attrs["marks"].loc["sst2", "cb"] == "≈rnd" and "≈rnd" in format_transfer(m)
    old = pd.read_csv(out).drop(columns=["p_vs_own", "p_vs_random", "verdict"])  # a file of before the tests
    old.to_csv(out, index=False)
    again = run_transfer(a, TransferConfig(("sst2", "cb"), sparsity=0.5, method="random", examples=4), out=str(out),
                         rows=rows, log=None)
    assert again.attrs["stats"]["evaluations"] == 0 and "p_vs_own" not in again
    assert transfer_matrix(again).attrs["marks"].eq("").all(axis=None)
    cfg = UnseenConfig(pairs=(("sst2", "rte"),), methods=("ap", "random"), sparsities=(0, 0.5), examples=4, trials=1)
    u = run_unseen(a, cfg, rows={"rte": [{"sentence1": "a man plays", "sentence2": "the man plays", "label": 0},
                                         {"sentence1": "the cat sits", "sentence2": "the dog runs", "label": 1}]},
                   log=None)
    pruned = u[u.sparsity == 0.5]
    assert u[u.sparsity == 0][["p_vs_dense", "p_vs_random", "p_vs_own"]].isna().all(axis=None)
    assert pruned.p_vs_dense.notna().all()
    cell = pruned[(pruned.mask_from == "sst2") & (pruned.method == "ap")].iloc[0]
    assert np.isfinite([cell.p_vs_random, cell.p_vs_own]).all()
    assert pruned[pruned.method == "random"].p_vs_random.isna().all()
    (line,) = unseen_verdicts(u, 0.5)
    assert line.startswith("rte: ap's mask from sst2 with 50% pruned keeps") and "rte's own mask" in line


def test_quota_rows_record_the_lowest_reliability_of_the_joint_scores(tiny_multitask, sst2_rows, cb_rows):
    from mtprune.experiments.core import Runner

    a = tiny_multitask
    a.max_length = 64
    df = run_quota(a, QuotaConfig(("sst2", "cb"), ("50%",), method="ap", examples="auto", reliability=0.5,
                                  max_examples=64), rows={"sst2": sst2_rows, "cb": cb_rows}, log=None)
    r = Runner(a, log=None)
    rel = {t: round(r.scores(t, "ap", 64).reliability()["encoder.ffn"].spearman, 4) for t in ("sst2", "cb")}
    per = df[df.task != "mean"]
    assert set(per[per.setting == "joint"].reliability_ffn) == {min(rel.values())}
    ens = per[per.setting == "ensemble"].set_index("task")
    assert ens.loc["sst2", "reliability_ffn"] == rel["sst2"] and ens.loc["cb", "reliability_ffn"] == rel["cb"]
    assert per[per.setting == "dense"].reliability_ffn.isna().all()
    assert set(per[per.setting != "dense"].examples_used) == {64} and set(per.examples) == {"auto"}


def test_repaired_rows_are_keyed_by_the_calibration_token_cap(tiny_multitask, sst2_rows, tmp_path, monkeypatch):
    """A repaired row's key holds the token cap its repair read up to (rows of before the cap read
    every token: a resumed table recomputes them instead of mixing the two); the cap reaches the
    repair; a bad cap is one line."""
    from mtprune.experiments import core
    from mtprune.experiments.core import Repair
    from mtprune.repair import CALIB_TOKENS

    assert Repair("lsq", ("sst2",)).key()["calib_tokens"] == CALIB_TOKENS == 32768
    assert Repair("lsq", ("sst2",)).key() != Repair("lsq", ("sst2",), tokens=None).key()
    assert "calib_tokens" not in Repair("none", ("sst2",)).key()  # rows without repair keep their keys
    with pytest.raises(MtpruneError, match="calibration tokens"):
        Repair("lsq", ("sst2",), tokens=0)

    seen = []
    from mtprune import pipeline

    original = pipeline.prune

    def spy(*a, **kw):
        seen.append(kw["repair_with"].max_tokens)
        return original(*a, **kw)
    monkeypatch.setattr(pipeline, "prune", spy)
    a = tiny_multitask
    a.max_length = 64
    calib = [dict(r) for r in sst2_rows] * 5
    monkeypatch.setattr(core.Runner, "calibration", lambda self, task, n, seed=0: calib)
    cfg = SweepConfig(tasks=("sst2",), methods=("random",), sparsities=(0.5,), repairs=("lsq",), trials=1, calib=30)
    df = run_sweep(a, cfg, out=tmp_path / "s.csv", rows={"sst2": sst2_rows}, log=None)
    assert seen == [CALIB_TOKENS] and len(df) == 1 and df.repair.tolist() == ["lsq"]
