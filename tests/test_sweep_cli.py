"""The experiment verbs end to end on the default model (small --limit and --samples), and their
bad input: one line on stderr, exit code 2, nothing written."""

import shutil

import numpy as np
import pandas as pd
import pytest

from mtprune.cli import main
from mtprune.masks import Mask, save_mask


@pytest.fixture
def use_default(default_adapter, monkeypatch):
    """The CLI verbs reuse the session's default model instead of loading it again."""
    import mtprune.commands.quota as B
    import mtprune.commands.overlap as O
    import mtprune.commands.sweep as S
    import mtprune.commands.unseen as U

    for mod in (S, O, U, B):
        monkeypatch.setattr(mod, "load_model", lambda args: default_adapter)
    return default_adapter


def _err_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("mtprune: error: ")
    return err[0]


@pytest.mark.parametrize("argv, msg", [
    (["sweep", "--sparsities", "0:1.5:0.5"], "in [0, 1]"),
    (["sweep", "--sparsities=-0.1,0.5"], "in [0, 1]"),
    (["sweep", "--tasks", "sst2,nope"], "unknown task 'nope'"),
    (["sweep", "--methods", "ap,magic"], "unknown method 'magic'"),
    (["sweep", "--limit", "0"], "--limit must be at least 1"),
    (["sweep", "--samples", "0"], "at least 1"),
    (["sweep", "--trials", "0"], "--trials must be at least 1"),
    (["sweep", "--out", "results.txt"], "must name a .csv file"),
    (["sweep", "--units", "neurons"], "invalid choice"),
    (["sweep", "--compare", "ap-random"], "pairs A:B"),
    (["sweep", "--methods", "ap,random", "--compare", "ap:activation"], "does not run"),
    (["overlap", "--sparsity", "1.01"], "in [0, 1]"),
    (["overlap", "--tasks", "sst2"], "at least two tasks"),
    (["overlap", "--method", "svd"], "method 'svd' is a baseline without scores"),
    (["unseen", "--pairs", "sst2:nope"], "unknown task 'nope'"),
    (["unseen", "--pairs", "sst2"], "source:target"),
    (["unseen", "--sparsities", "2"], "in [0, 1]"),
    (["quota", "--tasks", "sst2"], "at least two tasks"),
    (["budget", "--tasks", "sst2"], "at least two tasks"),  # the verb's old name
    (["quota", "--method", "nope"], "unknown method"),
    (["quota", "--task-normalise", "zscore"], "invalid choice"),
    (["budget", "--normalise", "zscore"], "invalid choice"),
    (["sweep", "--budgets", "flops:1.5"], "(0, 1]"),
    (["sweep", "--budgets", "0.6"], "starts with a measure"),
    (["sweep", "--budgets", "flops:0.6", "--repair", "magic"], "unknown repair 'magic'"),
    (["sweep", "--calib", "0", "--repair", "lsq"], "--calib must be at least 1"),
    (["unseen", "--repair", "magic"], "unknown repair"),
    (["quota", "--repair", "magic"], "invalid choice"),
    (["sweep", "--examples", "auto", "--reliability", "1.5"], "--reliability is a number in (0, 1)"),
    (["sweep", "--examples", "100,auto", "--max-examples", "32"], "--max-examples must be at least 64"),
    (["sweep", "--examples", "many"], "a count or auto"),
    (["overlap", "--examples", "auto", "--reliability", "0"], "--reliability is a number in (0, 1)"),
    (["unseen", "--examples", "auto", "--max-examples", "8"], "--max-examples must be at least 64"),
    (["transfer", "--examples", "auto", "--reliability", "1"], "--reliability is a number in (0, 1)"),
    (["quota", "--examples", "auto", "--max-examples", "63"], "--max-examples must be at least 64"),
])
def test_bad_input_is_one_line(argv, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors (bad choices)
        code = exc.code
    assert code == 2
    assert msg in _err_line(capsys)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("verb, flag, quota", [("quota", "--quotas", "101%"), ("budget", "--budgets", "1G")])
def test_quota_larger_than_the_model(use_default, verb, flag, quota, capsys, tmp_path):
    out = tmp_path / "b.csv"
    assert main([verb, "--tasks", "sst2,cb", flag, quota, "--out", str(out)]) == 2
    assert "larger than the model" in _err_line(capsys)
    assert not out.exists()


def test_quota_verb_keeps_its_old_names():
    """``mtprune budget`` is ``mtprune quota``; ``--budgets``/``--budget`` are ``--quotas``,
    ``--normalise`` is ``--task-normalise``; the default output is the file of before the rename."""
    from mtprune.cli import build_parser
    from mtprune.commands import quota

    parser = build_parser()
    new = parser.parse_args(["quota", "--quotas", "3M", "--task-normalise", "max"])
    for argv in (["budget", "--budgets", "3M", "--normalise", "max"],
                 ["budget", "--budget", "3M", "--normalise", "max"],
                 ["quota", "--budget", "3M", "--task-normalise", "max"]):
        old = parser.parse_args(argv)
        assert old.func is new.func is quota.run
        assert (old.quotas, old.task_normalise) == (new.quotas, new.task_normalise) == ("3M", "max")
        assert old.out == new.out == "results/budget.csv"
    assert parser.parse_args(["quota"]).task_normalise == "sum"


def test_sweep_cli_writes_csv_chart_and_resumes(use_default, capsys, tmp_path):
    out = tmp_path / "sweep.csv"
    argv = ["sweep", "--tasks", "sst2", "--methods", "ap,random,svd", "--sparsities", "0,0.5", "--samples", "16",
            "--limit", "24", "--trials", "2", "--out", str(out)]
    if shutil.which("chromium") is None:
        argv.append("--no-png")
    assert main(argv) == 0
    cap = capsys.readouterr()
    df = pd.read_csv(out)
    for col in ("task", "method", "sparsity", "trial", "accuracy"):
        assert col in df.columns
    assert len(df) == (1 + 2 + 1) * 2 and set(df["n_eval"]) == {24}
    assert "| sst2 |" in cap.out and "**mean**" in cap.out
    assert (tmp_path / "sweep.html").stat().st_size > 1000
    if "--no-png" not in argv:
        assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    # the same command again computes nothing
    assert main(argv + ["--no-plot"]) == 0
    cap = capsys.readouterr()
    assert "scores" not in cap.err and " trial " not in cap.err
    pd.testing.assert_frame_equal(pd.read_csv(out), df)


def test_low_resource_and_unsupervised_settings(use_default, capsys, tmp_path):
    out = tmp_path / "s.csv"
    assert main(["sweep", "--tasks", "cb", "--methods", "ap", "--sparsities", "0.5", "--setting", "low-resource",
                 "--samples", "4,8", "--trials", "2", "--limit", "8", "--no-plot", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert sorted(df["examples"].unique()) == [4, 8] and set(df["trial"]) == {0, 1}
    assert "ap n=4" in capsys.readouterr().out
    assert main(["sweep", "--tasks", "cb", "--methods", "ap", "--sparsities", "0.5", "--setting", "unsupervised",
                 "--samples", "4", "--limit", "8", "--no-plot", "--out", str(out)]) == 0
    d = pd.read_csv(out)
    d = d[d["examples"] == 4]
    assert sorted(d["unsupervised"].unique()) == [False, True]
    assert "ap (unsupervised)" in capsys.readouterr().out


def test_sample_trials_repeat_ap_on_new_samples(use_default, tmp_path):
    """--sample-trials: ap runs --trials times, each trial on another sample (other scores, its own
    rows); without it ap runs once."""
    out = tmp_path / "s.csv"
    base = ["sweep", "--tasks", "cb", "--methods", "ap", "--sparsities", "0.5", "--samples", "6", "--trials", "2",
            "--limit", "8", "--no-plot", "--out", str(out)]
    assert main(base) == 0
    assert list(pd.read_csv(out)["trial"]) == [0]
    assert main(base + ["--sample-trials"]) == 0
    df = pd.read_csv(out)
    assert sorted(df["trial"]) == [0, 1] and sorted(df["seed"]) == [0, 1]
    assert df["key"].nunique() == 2


def test_compare_prints_the_paired_difference(use_default, capsys, tmp_path):
    out = tmp_path / "c.csv"
    assert main(["sweep", "--tasks", "cb", "--methods", "ap,random", "--sparsities", "0.5,0.9", "--samples", "6",
                 "--trials", "2", "--sample-trials", "--limit", "16", "--no-plot", "--out", str(out),
                 "--compare", "ap:random"]) == 0
    text = capsys.readouterr().out
    assert "ap - random, mean accuracy over sparsities 0.1-0.9:" in text
    df = pd.read_csv(out)
    per_trial = df[df.sparsity.between(0.5, 0.9)].groupby(["method", "trial"])["accuracy"].mean()
    diff = (per_trial["ap"] - per_trial["random"]).mean()
    line = [l for l in text.splitlines() if l.startswith("| cb |")][-1]  # the comparison, after the summary
    assert f"{diff:+.4f}" in line and "| 2 |" in line


def test_hard_pruned_evaluation_matches_soft(use_default, tmp_path):
    """--prune hard evaluates sliced copies: the same metrics as the hooks, row for row."""
    base = ["sweep", "--tasks", "cb", "--methods", "ap,random", "--sparsities", "0.3,0.9,1", "--samples", "8",
            "--trials", "1", "--limit", "24", "--no-plot"]
    assert main(base + ["--out", str(tmp_path / "soft.csv")]) == 0
    assert main(base + ["--prune", "hard", "--out", str(tmp_path / "hard.csv")]) == 0
    soft, hard = pd.read_csv(tmp_path / "soft.csv"), pd.read_csv(tmp_path / "hard.csv")
    assert len(soft) == 6
    assert list(hard["key"]) == list(soft["key"])
    np.testing.assert_array_equal(hard["accuracy"], soft["accuracy"])
    np.testing.assert_array_equal(hard["kept_units"], soft["kept_units"])


def test_overlap_cli(use_default, capsys, tmp_path):
    from mtprune.attribution import AttributionSpec, lookup_cached
    from mtprune.reliability import expected_jaccard

    out = tmp_path / "ov.csv"
    assert main(["overlap", "--tasks", "sst2,cb", "--samples", "8", "--sparsity", "0.5", "--no-png",
                 "--out", str(out)]) == 0
    m = pd.read_csv(out, index_col="task")
    assert m.loc["sst2", "sst2"] == 1.0 and 0 < m.loc["sst2", "cb"] < 1
    layers = pd.read_csv(tmp_path / "ov_layers.csv")
    assert len(layers) == 6 and set(layers["group"]) == {"encoder.ffn"}
    assert (tmp_path / "ov.html").exists() and (tmp_path / "ov_layers.html").exists()
    printed = capsys.readouterr().out
    assert "Jaccard" in printed and "within-task floors" in printed
    # every pair beside both tasks' floors: the copula's expected Jaccard with another draw of 8 examples
    pair = pd.read_csv(tmp_path / "ov_pairs.csv").iloc[0]
    assert (pair.task_a, pair.task_b) == ("sst2", "cb") and pair.jaccard == m.loc["sst2", "cb"]
    for task, floor in (("sst2", pair.floor_a), ("cb", pair.floor_b)):
        sc = lookup_cached(use_default, AttributionSpec(task, "ap", examples=8))[0]
        assert floor == pytest.approx(expected_jaccard(sc.folds["encoder.ffn"], sc.n_units["encoder.ffn"], 0.5),
                                      abs=0.02)
    assert 0 < pair.p_floor <= 1 and bool(pair.distinct) == (pair.p_floor < 0.05)
    assert pair.chance == pytest.approx(1 / 3, abs=1e-3)


def test_overlap_from_mask_files(tmp_path, capsys):
    paths = []
    for name, rows in (("a", [[1, 1, 0, 0]]), ("b", [[1, 0, 1, 0]])):
        m = Mask(keep={"encoder.ffn": np.array(rows, bool)}, n_units={"encoder.ffn": [4]}, sparsity=0.5)
        paths.append(f"{name}={save_mask(m, tmp_path / f'{name}.json')}")
    out = tmp_path / "o.csv"
    assert main(["overlap", "--masks", ",".join(paths), "--out", str(out), "--no-plot"]) == 0
    assert pd.read_csv(out, index_col="task").loc["a", "b"] == pytest.approx(1 / 3)


def test_unseen_cli(use_default, capsys, tmp_path):
    from mtprune.attribution import AttributionSpec, lookup_cached
    from mtprune.evaluation import compare, evaluate
    from mtprune.experiments.unseen import resolve_pair
    from mtprune.masks import mask_from_scores

    out = tmp_path / "u.csv"
    assert main(["unseen", "--pairs", "sst2:imdb", "--methods", "ap", "--sparsities", "0,0.5", "--samples", "8",
                 "--limit", "16", "--no-png", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert set(df["head"]) == {"sst2"} and set(df["target"]) == {"imdb"} and len(df) == 2
    printed = capsys.readouterr().out
    assert "dense" in printed and "imdb: ap's mask from sst2 with 50% pruned keeps" in printed
    # the pruned row's test against dense is McNemar's on the same 16 rows, recomputed here
    target = resolve_pair(use_default, "sst2", "imdb").target_spec()
    mask = mask_from_scores(lookup_cached(use_default, AttributionSpec("sst2", "ap", examples=8))[0], 0.5)
    dense, pruned = (evaluate(use_default, target, limit=16, mask=m) for m in (None, mask))
    row = df[df.sparsity == 0.5].iloc[0]
    assert row.accuracy == pruned.accuracy and row.p_vs_dense == pytest.approx(compare(dense, pruned).p_value)
    assert "p_vs_random" not in df  # no random mask among the methods
    hard = tmp_path / "uh.csv"
    assert main(["unseen", "--pairs", "sst2:imdb", "--methods", "ap", "--sparsities", "0,0.5", "--samples", "8",
                 "--limit", "16", "--no-plot", "--prune", "hard", "--out", str(hard)]) == 0
    np.testing.assert_array_equal(pd.read_csv(hard)["accuracy"], df["accuracy"])


def test_quota_cli(use_default, capsys, tmp_path):
    out = tmp_path / "b.csv"
    assert main(["quota", "--tasks", "sst2,cb", "--quotas", "50%", "--task-normalise", "max", "--samples", "8",
                 "--limit", "16", "--no-png", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert set(df["setting"]) == {"joint", "ensemble", "dense"}
    half = df["prunable_params"].iloc[0] // 2
    j = df[df.setting == "joint"]["kept_params"].iloc[0]
    e = df[df.setting == "ensemble"]["kept_params"].sum()
    assert j <= half and e <= half and abs(j - e) <= 2 * 6 * 769  # one neuron per layer per mask
    printed = capsys.readouterr().out
    assert "joint mask keeps" in printed and printed.startswith("accuracy (ffn budget of ")  # the lines of old
    assert set(df["normalise"]) == {"max"}  # the column keeps its name
    hard = tmp_path / "bh.csv"  # the verb's and the flags' old names: the same rows, keys included
    assert main(["budget", "--tasks", "sst2,cb", "--budgets", "50%", "--normalise", "max", "--samples", "8",
                 "--limit", "16", "--no-plot", "--prune", "hard", "--out", str(hard)]) == 0
    same = ["key", "setting", "task", "budget", "normalise", "kept_params", "accuracy"]
    pd.testing.assert_frame_equal(pd.read_csv(hard)[same], df[same])
    capsys.readouterr()
    assert main(["budget", "--tasks", "sst2,cb", "--budgets", "50%", "--normalise", "max", "--samples", "8",
                 "--limit", "16", "--no-plot", "--out", str(out)]) == 0  # a file of the quota verb resumes
    assert "rows" not in capsys.readouterr().err  # no group was computed again
    pd.testing.assert_frame_equal(pd.read_csv(out), df)


def test_ap_beats_random_when_pruning_hard(use_default, tmp_path, monkeypatch):
    """The headline, in small, through the CLI: at 90% of FFN neurons pruned, with every mask
    evaluated on a physically pruned copy, ap keeps more sst2 accuracy than random."""
    import mtprune.pruning as P

    real, cut = P.hard_prune, []

    def spy(adapter, mask):
        small = real(adapter, mask)
        cut.append(small.num_parameters())
        return small

    monkeypatch.setattr(P, "hard_prune", spy)
    out = tmp_path / "h.csv"
    assert main(["sweep", "--tasks", "sst2", "--methods", "ap,random", "--sparsities", "0.9", "--examples", "64",
                 "--trials", "2", "--limit", "64", "--prune", "hard", "--no-plot", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert len(cut) == 3 and all(n < use_default.num_parameters() for n in cut)  # ap + 2 random masks, sliced
    assert (df["params"] == cut[0]).all()
    ap = df[df.method == "ap"]["accuracy"].mean()
    rnd = df[df.method == "random"]["accuracy"].mean()
    assert ap > rnd + 0.05


def test_transfer_cli(use_default, capsys, tmp_path, monkeypatch):
    import mtprune.commands.transfer as T

    monkeypatch.setattr(T, "load_model", lambda args: use_default)
    out = tmp_path / "t.csv"
    assert main(["transfer", "--tasks", "sst2,rte,qnli", "--sparsity", "0.5", "--examples", "8", "--limit", "24",
                 "--no-png", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| mask from | sst2 | rte | qnli |" in text and "| random mask |" in text
    df = pd.read_csv(out)
    assert len(df) == 3 * 5 and df["accuracy_low"].le(df["accuracy"]).all()
    assert (tmp_path / "t.html").exists()
    assert "paired tests (McNemar's exact test on the same rows" in text
    # qnli with rte's mask, against qnli's own mask and the random mask: McNemar on the same 24 rows
    from mtprune.attribution import AttributionSpec, attribute_cached
    from mtprune.evaluation import compare, evaluate
    from mtprune.masks import mask_from_scores

    def result(task, method):
        sc = attribute_cached(use_default, AttributionSpec(task, method, examples=8))[0]
        return evaluate(use_default, "qnli", limit=24, mask=mask_from_scores(sc, 0.5))

    cell, own, rnd = result("rte", "ap"), result("qnli", "ap"), result("qnli", "random")
    row = df[(df.mask_from == "rte") & (df.target == "qnli")].iloc[0]
    assert row.accuracy == cell.accuracy
    assert row.p_vs_own == pytest.approx(compare(own, cell).p_value)
    assert row.p_vs_random == pytest.approx(compare(rnd, cell).p_value)
    assert "qnli's own mask" in row.verdict and "random mask of the same size" in row.verdict
    assert df[df.mask_from.isin(["dense", "random mask"])]["verdict"].isna().all()
    assert main(["transfer", "--tasks", "sst2", "--out", str(tmp_path / "x.csv")]) == 2
    assert "at least two tasks" in _err_line(capsys)


def test_sweep_examples_auto_cli(use_default, capsys, tmp_path):
    """--examples auto on the default model: one line per task says what was chosen, random says it
    reads none, the rows say auto, the examples read and the reliability; a rerun reuses every row."""
    from mtprune.attribution import AttributionSpec, lookup_cached

    out = tmp_path / "a.csv"
    argv = ["sweep", "--tasks", "cb", "--methods", "ap,random", "--sparsities", "0.5", "--examples", "auto",
            "--reliability", "0.5", "--max-examples", "64", "--trials", "1", "--limit", "16", "--no-plot",
            "--out", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("cb ap seed=0, examples auto: ") == 1 and "at 64 examples" in err
    assert "cb random: the method reads no examples" in err
    df = pd.read_csv(out)
    ap = df[df.method == "ap"].iloc[0]
    assert ap.examples == "auto" and ap.examples_used == 64
    sc = lookup_cached(use_default, AttributionSpec("cb", "ap", examples=64))[0]
    assert ap.reliability_ffn == round(sc.reliability()["encoder.ffn"].spearman, 4)
    assert np.isnan(ap.reliability_heads)  # the mask prunes FFN neurons only
    assert df[df.method == "random"].reliability_ffn.isna().all()
    assert main(argv) == 0
    assert "examples auto" not in capsys.readouterr().err  # every row reused: no scores asked for
    pd.testing.assert_frame_equal(pd.read_csv(out), df)
