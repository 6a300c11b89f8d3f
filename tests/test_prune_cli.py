"""``mtprune prune``: a pruned directory that ``mtprune eval`` reads; bad input in one line."""

import json
import re

import numpy as np
import pytest

from mtprune.cli import main
from mtprune.masks import mask_from_scores, save_mask
from mtprune.checkpoints import save_model
from tests.conftest import hub_offline, one_line_error, random_scores, run_cli as run


@pytest.fixture
def tiny_dir(tiny_multitask, tmp_path):
    """The tiny multi-task model as a model directory."""
    return save_model(tiny_multitask, tmp_path / "tiny")


def test_prune_with_mask_then_eval(capsys, tiny_multitask, tiny_dir, tmp_path, shared_home):
    mask = mask_from_scores(random_scores(tiny_multitask), 0.5, kinds="all", scope="global")
    mfile = save_mask(mask, tmp_path / "m.safetensors")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--mask", mfile,
                            "--out", out, "--json", "--device", "cpu")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["params_pruned"] == info["params_expected"] < info["params_dense"]
    assert info["kept"]["encoder.ffn"] == mask.kept_per_layer("encoder.ffn")
    assert (out / "mask.json").is_file()
    code, stdout, err = run(capsys, "eval", "--model", out, "--task", "sst2", "--limit", "8", "--json",
                            "--device", "cpu")
    assert code == 0, err
    assert json.loads(stdout)["n"] == 8


def test_prune_bad_input(capsys, tiny_multitask, tiny_dir, tmp_path):
    out = tmp_path / "out"
    for p in ("1.5", "-0.1", "nan", "half"):
        code, _, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--sparsity", p, "--out", out)
        one_line_error(code, err, "sparsity")
    code, _, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--sparsity", "0.5",
                       "--mask", tmp_path / "m.json", "--out", out)
    one_line_error(code, err, "one of --sparsity, --budget and --mask")
    (tmp_path / "bad.json").write_text("{oops")
    code, _, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--mask", tmp_path / "bad.json",
                       "--out", out)
    one_line_error(code, err, "not valid JSON")
    # a mask made for another model
    other = {"arrays": {"encoder.ffn": np.ones((3, 10))}, "n_units": {"encoder.ffn": [10, 10, 10]}}
    mfile = save_mask(mask_from_scores(other, 0.5), tmp_path / "other.json")
    code, _, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--mask", mfile, "--out", out,
                       "--device", "cpu")
    one_line_error(code, err, "made for another model")
    assert not out.exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "f").write_text("x")
    code, _, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--sparsity", "0.5",
                       "--out", full)
    one_line_error(code, err, "not an empty directory.*--overwrite")
    code, _, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--sparsity", "0.5",
                       "--units", "neurons", "--out", out)
    one_line_error(code, err, "invalid choice")
    assert sorted(f.name for f in tmp_path.iterdir() if not f.name.startswith(".")) == \
        ["bad.json", "full", "other.json", "tiny"]


def test_prune_with_attribution(capsys, tiny_dir, tmp_path, shared_home):
    pytest.importorskip("mtprune.attribution")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--method", "ap",
                            "--sparsity", "0.5", "--samples", "8", "--out", out, "--json", "--device", "cpu")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["kept"]["encoder.ffn"] == [24, 24]
    mask = json.loads((out / "mask.json").read_text())
    assert mask["meta"]["task"] == "sst2" and mask["meta"]["scores_spec"]["method"] == "ap"
    code, _, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--method", "nope",
                       "--sparsity", "0.5", "--out", tmp_path / "o2")
    one_line_error(code, err, "unknown method .nope.")


def test_prune_default_model_and_eval(capsys, default_adapter, tmp_path):
    """The real default model, pruned (50% FFN per layer, a mask from scores) and evaluated."""
    mask = mask_from_scores(random_scores(default_adapter), 0.5, kinds="ffn")
    mfile = save_mask(mask, tmp_path / "m.json")
    out = tmp_path / "sst2-50"
    code, stdout, err = run(capsys, "prune", "--model", "default", "--task", "sst2", "--mask", mfile,
                            "--repair", "none", "--out", out, "--device", "cpu")
    assert code == 0, err
    assert "mtprune eval --model" in stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dtype"] == "float16"  # the source model's dtype
    assert set(cfg["mtprune_pruned"]["sizes"].values()) == {768, 12}
    # the pruned model claims what was measured on it, never its source's figures
    meta = json.loads((out / "tasks.json").read_text())
    assert all(t["validation_accuracy"] is None for t in meta["tasks"].values())
    m = meta["tasks"]["sst2"]["measured"]
    assert m["split"] == "validation" and m["rows"] == 872 and m["intervals"]["accuracy"][0] < m["accuracy"]
    assert meta["tasks"]["mrpc"]["measured"] is None
    assert meta["pruned"]["source"]["fingerprint"] == default_adapter.fingerprint()
    assert meta["pruned"]["mask"]["sparsity"] == 0.5
    code, stdout, err = run(capsys, "eval", "--model", out, "--task", "sst2", "--limit", "16", "--json",
                            "--device", "cpu")
    assert code == 0, err
    res = json.loads(stdout)
    assert res["n"] == 16 and 0.0 <= res["accuracy"] <= 1.0


def test_prune_with_a_flops_budget_and_repair(capsys, tiny_dir, tmp_path, shared_home):
    """A FLOPs budget over heads and FFN neurons, repaired by least squares on 24 sst2 rows: the
    saved model keeps its repaired weights, and says how it was made."""
    out = tmp_path / "b"
    code, stdout, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--budget", "flops:0.5",
                            "--repair", "lsq", "--calib", "24", "--examples", "8", "--batch-size", "4",
                            "--out", out, "--json", "--device", "cpu")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["budget"] == "flops:0.5" and info["flops_kept"] <= 0.5 and info["scope"] == "budget"
    assert info["kinds"] == "all" and info["repair"]["method"] == "lsq" and info["repair"]["calibration_rows"] == 24
    cfg = json.loads((out / "config.json").read_text())["mtprune_pruned"]
    assert cfg["repair"]["method"] == "lsq" and cfg["mask_meta"]["meta"]["budget"] == "flops:0.5"
    code, stdout, err = run(capsys, "eval", "--model", out, "--task", "sst2", "--limit", "8", "--json",
                            "--device", "cpu")
    assert code == 0, err


def test_prune_defaults_to_a_flops_budget_and_lsq_repair(capsys, tiny_dir, tmp_path, shared_home):
    """With neither --sparsity nor --budget nor --mask, prune spends flops:0.5 over heads and
    neurons and repairs by least squares (the defaults bench_frontier.py chose)."""
    out = tmp_path / "d"
    code, stdout, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--examples", "8", "--calib", "24",
                            "--eval-limit", "8", "--out", out, "--json", "--device", "cpu")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["budget"] == "flops:0.5" and 0.4 < info["flops_kept"] <= 0.5 and info["kinds"] == "all"
    assert info["repair"]["method"] == "lsq" and info["repair"]["calibration_rows"] == 24 and info["notes"] == []
    cfg = json.loads((out / "config.json").read_text())["mtprune_pruned"]
    assert cfg["repair"]["method"] == "lsq" and cfg["mask_meta"]["meta"]["budget"] == "flops:0.5"


def test_prune_without_calibration_rows_says_it_did_not_repair(capsys, tiny_multitask, tiny_dir, tmp_path,
                                                                 monkeypatch, shared_home):
    """No rows to calibrate on (a home whose sst2 has its validation split and no train split): the
    default repair steps aside in one printed line; an explicit --repair lsq stops with one line and
    writes nothing."""
    home = tmp_path / "home"
    (home / "data" / "sst2").mkdir(parents=True)
    (home / "data" / "sst2" / "validation.jsonl").symlink_to(shared_home / "data" / "sst2" / "validation.jsonl")
    if (shared_home / "data" / "manifest.json").exists():
        (home / "data" / "manifest.json").symlink_to(shared_home / "data" / "manifest.json")
    monkeypatch.setenv("MTPRUNE_HOME", str(home))
    hub_offline(monkeypatch)  # the missing train split falls back to the hub: offline at once, not after a timeout
    mfile = save_mask(mask_from_scores(random_scores(tiny_multitask), 0.5), tmp_path / "m.json")
    code, stdout, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--mask", mfile, "--no-eval",
                            "--out", tmp_path / "a", "--device", "cpu")
    assert code == 0, err
    assert re.search(r"^not repaired: .*--calib-file", stdout, re.M), stdout
    assert "repair" not in json.loads((tmp_path / "a" / "config.json").read_text())["mtprune_pruned"]
    code, _, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--mask", mfile, "--no-eval",
                       "--repair", "lsq", "--out", tmp_path / "b", "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "b").exists()


def test_prune_does_not_calibrate_on_the_rows_it_is_measured_on(capsys, tiny_multitask, tiny_dir, tmp_path,
                                                                 shared_home):
    """imdb (an unseen domain) has only its validation split: the default repair would fit the rows
    the model is then measured on, so it steps aside and says why; asking for it still works."""
    mfile = save_mask(mask_from_scores(random_scores(tiny_multitask), 0.5), tmp_path / "m.json")
    code, stdout, err = run(capsys, "prune", "--model", tiny_dir, "--task", "imdb", "--mask", mfile,
                            "--eval-limit", "8", "--out", tmp_path / "a", "--json", "--device", "cpu")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["repair"]["method"] == "none"
    assert info["notes"] and "no split apart from validation" in info["notes"][0]
    code, stdout, err = run(capsys, "prune", "--model", tiny_dir, "--task", "imdb", "--mask", mfile, "--repair",
                            "bias", "--calib", "16", "--eval-limit", "8", "--out", tmp_path / "b", "--json",
                            "--device", "cpu")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["repair"]["method"] == "bias" and info["repair"]["calibration_rows"] == 16 and info["notes"] == []


@pytest.mark.parametrize("extra, pattern", [
    (["--budget", "flops:1.5"], r"fraction in \(0, 1\]"),
    (["--budget", "speed:0.5"], "unknown budget 'speed'"),
    (["--budget", "flops:0.5", "--sparsity", "0.5"], "one of --sparsity, --budget and --mask"),
    (["--budget", "flops:0.5", "--kinds", "ffn"], "smallest reachable budget is flops:0.644"),
    (["--sparsity", "0.5", "--repair", "lsq", "--calib", "0"], "--calib must be at least 1"),
    (["--sparsity", "0.5", "--repair", "magic"], "invalid choice"),
    (["--sparsity", "0.5", "--rearrange"], "--rearrange re-chooses the units a budget's mask prunes"),
    (["--budget", "flops:0.5", "--rearrange", "--rearrange-examples", "0"], "--rearrange-examples must be at least 1"),
])
def test_prune_budget_and_repair_bad_input(capsys, tiny_dir, tmp_path, shared_home, extra, pattern):
    out = tmp_path / "o"
    try:
        code = main(["prune", "--model", str(tiny_dir), "--task", "sst2", "--examples", "8", "--out", str(out),
                     "--device", "cpu", *extra])
    except SystemExit as exc:
        code = exc.code
    one_line_error(code, capsys.readouterr().err, pattern)
    assert not out.exists()


def test_prune_calibration_file_needs_the_fields(capsys, tiny_dir, tmp_path, shared_home):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"text": "no sentence"}\n')
    out = tmp_path / "o"
    code, _, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--sparsity", "0.5", "--repair",
                       "bias", "--calib-file", bad, "--out", out, "--device", "cpu")
    one_line_error(code, err, "lack the field")
    assert not out.exists()


def test_prune_grouped_model_by_key_value_group(capsys, tokenizer, tmp_path, shared_home):
    """A grouped-query decoder as the CLI takes it: the groups go physically (budget and sparsity),
    single query heads are refused in one line that offers the group or a soft mask."""
    from tests.conftest import make_grouped

    model = save_model(make_grouped("llama", tokenizer), tmp_path / "gqa")
    common = ("--model", model, "--task", "sst2", "--examples", "6", "--no-eval", "--device", "cpu",
              "--repair", "none", "--json")
    out = tmp_path / "heads"
    code, _, err = run(capsys, "prune", *common, "--kinds", "heads", "--sparsity", "0.5", "--out", out)
    one_line_error(code, err, r"cannot lose single query heads physically .*prune whole key/value groups "
                              r"\(--kinds kv\), or keep the heads as a soft mask")
    assert not out.exists()
    # --kinds groups: the old spelling of kv
    code, stdout, err = run(capsys, "prune", *common, "--kinds", "groups", "--sparsity", "0.5", "--out",
                            tmp_path / "groups")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["kept"]["decoder.kv"] == [1, 1] and info["kinds"] == "kv"
    assert info["params_pruned"] == info["params_expected"] < info["params_dense"]
    code, stdout, err = run(capsys, "prune", *common, "--budget", "flops:0.6", "--out", tmp_path / "budget")
    assert code == 0, err
    info = json.loads(stdout)
    assert abs(info["flops_kept"] - 0.6) < 0.05 and "decoder.kv" in info["kept"]
    code, stdout, err = run(capsys, "attribute", "--model", model, "--task", "sst2", "--examples", "6",
                            "--device", "cpu", "--kinds", "kv", "--out-csv", tmp_path / "s.csv")
    assert code == 0, err
    assert "decoder.kv" in (tmp_path / "s.csv").read_text()


def test_prune_with_examples_auto_records_the_scores_reliability(capsys, tiny_dir, tmp_path, shared_home):
    out = tmp_path / "auto"
    code, stdout, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--sparsity", "0.5",
                            "--examples", "auto", "--reliability", "0.999", "--max-examples", "128",
                            "--repair", "none", "--no-eval", "--out", out, "--device", "cpu")
    assert code == 0, err
    meta = json.loads((out / "mask.json").read_text())["meta"]
    rel = meta["scores_reliability"]
    # a tiny random model's neurons differ more than examples move them: the first draw may do
    said = re.search(r"examples auto: ffn (\S+) at (\d+) examples: (every kind reached 0.999|the cap)", stdout)
    assert said, stdout
    assert rel["examples"] == int(said.group(2)) in (64, 128) and rel["folds"] == 8
    assert f"{rel['reliability']['encoder.ffn']['spearman']:.2f}" == said.group(1)
    code, _, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--examples", "auto",
                       "--reliability", "2", "--out", tmp_path / "bad")
    one_line_error(code, err, "--reliability is a number in")
    assert not (tmp_path / "bad").exists()


def test_prune_rearranges_a_budget_mask(capsys, tiny_dir, tmp_path, shared_home):
    """--rearrange keeps each layer's counts (the budget stays met) and records what it moved; a saved
    mask without a budget cannot be rearranged, and nothing is written."""
    out = tmp_path / "r"
    code, stdout, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--budget", "flops:0.5",
                            "--repair", "none", "--examples", "8", "--rearrange", "--rearrange-examples", "64",
                            "--batch-size", "16", "--out", out, "--json", "--device", "cpu", "--no-eval")
    assert code == 0, err
    info = json.loads(stdout)
    assert info["rearranged"]["rows"] == 64 and info["rearranged"]["mini_batch"] == 32
    plain = tmp_path / "p"
    code, stdout2, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--budget", "flops:0.5",
                             "--repair", "none", "--examples", "8", "--batch-size", "16", "--out", plain, "--json",
                             "--device", "cpu", "--no-eval")
    assert code == 0, err
    assert json.loads(stdout2)["kept"] == info["kept"] and info["flops_kept"] == json.loads(stdout2)["flops_kept"]
    cfg = json.loads((out / "config.json").read_text())["mtprune_pruned"]
    assert cfg["mask_meta"]["meta"]["rearranged"]["units_moved"] == info["rearranged"]["units_moved"]
    code, stdout, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--sparsity", "0.5",
                            "--examples", "8", "--repair", "none", "--out", tmp_path / "s", "--device", "cpu", "--no-eval")
    assert code == 0, err
    mask_file = next((tmp_path / "s").glob("mask*"))
    code, stdout, err = run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--mask", mask_file, "--rearrange",
                            "--out", tmp_path / "m", "--device", "cpu", "--no-eval")
    assert code == 2 and "has no budget" in err and not (tmp_path / "m").exists()
