"""Label-free domain-adaptive repair: calibration rows from several sources with weights
(``--calib-file A --calib-file B``, ``--calib-mix``), ``unseen --calib source|target|mix``, the
pruned model's description of where its rows came from; bad input in one line."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from mtprune.calibration import CalibrationMix, CalibSource, other_split, parse_mix
from mtprune.checkpoints import save_model
from mtprune.errors import MtpruneError
from mtprune.masks import mask_from_scores, save_mask
from mtprune.tasks import get_task, load_rows
from tests.conftest import one_line_error as _one_line, random_scores, run_cli as _run

SST2 = get_task("sst2")


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ----------------------------------------------------------------------------------------------
# the mix


def test_weights_share_the_rows_and_the_draw_is_deterministic(shared_home, tmp_path):
    mix = parse_mix(SST2, "task:3,imdb/test:1,yelp:0", n=40)
    assert mix.counts() == (30, 10, 0)
    drawn = mix.draw(SST2)
    by_task = {t.name: rows for t, rows in drawn.rows.items()}
    assert {k: len(v) for k, v in by_task.items()} == {"sst2": 30, "imdb": 10} and drawn.counts == (30, 10, 0)
    assert all(set(r) == {"sentence"} for rows in by_task.values() for r in rows)  # no labels
    imdb_test = set(load_rows("imdb", "test")["sentence"])
    assert all(r["sentence"] in imdb_test for r in by_task["imdb"])
    assert mix.draw(SST2).rows == drawn.rows  # the same seed, the same rows
    assert CalibrationMix(mix.sources, 40, seed=1).draw(SST2).rows != drawn.rows
    said = drawn.describe()
    assert said["rows"] == 40 and said["seed"] == 0
    assert [(s["source"], s["weight"], s["rows"]) for s in said["sources"]] == \
        [("sst2/train", 0.75, 30), ("imdb/test", 0.25, 10), ("yelp/validation", 0.0, 0)]
    # 7 rows by weight 1:1:1 -> 3, 2, 2 (the remainder to the first); a file with fewer rows gives all it has
    small = _jsonl(tmp_path / "few.jsonl", [{"sentence": f"row {i}"} for i in range(2)])
    assert parse_mix(SST2, f"task,imdb,{small}", n=7).counts() == (3, 2, 2)
    short = parse_mix(SST2, f"task:1,{small}:1", n=10).draw(SST2)
    assert short.counts == (5, 2) and short.describe()["sources"][1] == \
        {"source": str(small), "weight": 0.5, "rows": 2, "asked": 5}
    assert "2 of " in short.summary() and "all it has" in short.summary()
    # --calib-file A --calib-file B: equal shares of the files
    other = _jsonl(tmp_path / "b.jsonl", [{"sentence": f"b {i}", "extra": 1} for i in range(20)])
    files = parse_mix(SST2, files=[small, other], n=4)
    assert [s.file for s in files.sources] == [str(small), str(other)] and files.counts() == (2, 2)


@pytest.mark.parametrize("spec, pattern", [
    ("task:half", r"the weight 'half' is not a number"),
    ("task:0,imdb/test:0", "weights sum to zero"),
    ("task:-1,imdb:2", "a weight is a finite number, 0 or more"),
    ("task:nan", "a weight is a finite number"),
    ("nope:1", "not 'task', a task .* or a JSONL file that exists"),
    ("missing.jsonl:1", "calibration file missing.jsonl does not exist"),
    ("imdb/train:1", "task imdb has no split 'train'; its splits: validation, test"),
    ("task:0.5,sst2/train:0.5", "sst2/train is named twice"),
    (",", "names no source"),
])
def test_bad_mixes_are_one_line(spec, pattern):
    with pytest.raises(MtpruneError, match=pattern):
        parse_mix(SST2, spec)


def test_the_fields_are_checked_and_a_domain_is_read_through_the_head(shared_home, tmp_path):
    bad = _jsonl(tmp_path / "bad.jsonl", [{"text": "no sentence"}])
    with pytest.raises(MtpruneError, match="lack the field.*sentence.*task sst2 needs"):
        parse_mix(SST2, f"task:1,{bad}:1", n=8).draw(SST2)
    with pytest.raises(MtpruneError, match="rte/train: the calibration rows lack the field"):
        parse_mix(SST2, "rte:1", n=8).draw(SST2)
    with pytest.raises(MtpruneError, match="give --calib-file or --calib-mix, not both"):
        parse_mix(SST2, "task:1", files=[bad])
    # scitail has its own fields and is read through qnli's head
    qnli = get_task("qnli")
    drawn = parse_mix(qnli, "task:1,scitail/test:1", n=6).draw(qnli)
    readers = {t.name: t for t in drawn.rows}
    assert readers["scitail"].label_source == ("qnli",) and set(drawn.rows[readers["scitail"]][0]) == \
        {"premise", "hypothesis"}


def test_target_text_comes_from_another_split(shared_home):
    assert other_split("imdb", "validation") == "test" and other_split("imdb", "test") == "validation"
    assert other_split("mr", "validation") == "train" and other_split("sick", "validation") == "train"
    for t in ("vader_nyt", "scitail"):
        with pytest.raises(MtpruneError, match=f"{t} has no split apart from test, which it is measured on"):
            other_split(t, "test")


# ----------------------------------------------------------------------------------------------
# prune: calibrated on the target's text, recorded in the model's description


def test_target_text_repair_changes_the_model_and_says_so(tiny_multitask, shared_home):
    """The same mask, repaired on sst2's rows or on yelp's unlabelled test text: other weights,
    other outputs, and each model's description names its rows."""
    from mtprune.pipeline import plan_calibration, prune

    mask = mask_from_scores(random_scores(tiny_multitask), 0.5, kinds="all")
    tiny_multitask.max_length = 32
    source = plan_calibration(SST2, "lsq", n=60)
    target = plan_calibration(SST2, "lsq", mix=parse_mix(SST2, "yelp/test:1", n=60))
    assert source.origin["sources"] == [{"source": "sst2/train", "weight": 1.0, "rows": 60}]
    assert target.source == "yelp/test" and target.origin["sources"][0]["rows"] == 60
    a, b = (prune(tiny_multitask, SST2, mask=mask, repair_with="lsq", calibration=c) for c in (source, target))
    assert a.mask.digest() == b.mask.digest() and a.report.changed and b.report.changed
    wa = {k: v for k, v in a.adapter.model.state_dict().items()}
    wb = b.adapter.model.state_dict()
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    batch = tiny_multitask.encode([{"sentence": "a fine film"}, {"sentence": "dull and slow"}], SST2)
    with torch.no_grad():
        assert not torch.allclose(a.adapter.logits(batch, SST2), b.adapter.logits(batch, SST2))
    assert b.adapter.model.config.mtprune_pruned["repair"]["calibration"] == target.origin
    assert b.report.to_dict()["calibration"]["sources"][0]["source"] == "yelp/test"


@pytest.fixture
def tiny_dir(tiny_multitask, tmp_path):
    return save_model(tiny_multitask, tmp_path / "tiny")


def test_prune_cli_mixes_sources_and_records_them(capsys, tiny_multitask, tiny_dir, tmp_path, shared_home):
    mfile = save_mask(mask_from_scores(random_scores(tiny_multitask), 0.5), tmp_path / "m.json")
    common = ("prune", "--model", tiny_dir, "--task", "sst2", "--mask", mfile, "--no-eval", "--device", "cpu",
              "--repair", "lsq", "--calib", "24")
    out = tmp_path / "mix"
    code, stdout, err = _run(capsys, *common, "--calib-mix", "task:0.5,imdb/test:0.5", "--out", out)
    assert code == 0, err
    assert "calibration: 12 rows of sst2/train (weight 0.5), 12 of imdb/test (weight 0.5)" in stdout
    said = json.loads((out / "config.json").read_text())["mtprune_pruned"]["repair"]
    assert said["calibration_rows"] == 24
    assert [(s["source"], s["weight"], s["rows"]) for s in said["calibration"]["sources"]] == \
        [("sst2/train", 0.5, 12), ("imdb/test", 0.5, 12)]
    a = _jsonl(tmp_path / "a.jsonl", [{"sentence": f"good film {i}"} for i in range(30)])
    b = _jsonl(tmp_path / "b.jsonl", [{"sentence": f"bad food {i}", "label": 0} for i in range(30)])
    out = tmp_path / "files"
    code, stdout, err = _run(capsys, *common, "--calib-file", a, "--calib-file", b, "--out", out, "--json")
    assert code == 0, err
    sources = json.loads(stdout)["repair"]["calibration"]["sources"]
    assert [(s["source"], s["rows"]) for s in sources] == [(str(a), 12), (str(b), 12)]
    tasks_json = json.loads((out / "tasks.json").read_text())  # the multitask format's description too
    assert tasks_json["pruned"]["repair"]["calibration"]["sources"] == sources


@pytest.mark.parametrize("extra, pattern", [
    (["--calib-mix", "task:x"], r"the weight 'x' is not a number"),
    (["--calib-mix", "task:0,imdb:0"], "weights sum to zero"),
    (["--calib-mix", "task:1", "--calib-file", "FILE"], "give --calib-file or --calib-mix, not both"),
    (["--calib-file", "FILE"], "lack the field.*sentence"),  # a defaulted repair, an explicit file: an error
    (["--calib-mix", "task:1,FILE:1"], "lack the field.*sentence"),
    (["--repair", "lsq", "--calib-mix", "task:1", "--calib", "0"], "--calib must be at least 1"),
])
def test_prune_cli_bad_calibration_writes_nothing(capsys, tiny_dir, tmp_path, shared_home, extra, pattern):
    bad = _jsonl(tmp_path / "bad.jsonl", [{"text": "no sentence"}])
    out = tmp_path / "o"
    code, _, err = _run(capsys, "prune", "--model", tiny_dir, "--task", "sst2", "--sparsity", "0.5", "--out", out,
                        "--device", "cpu", *[x.replace("FILE", str(bad)) for x in extra])
    _one_line(code, err, pattern)
    assert not out.exists()


# ----------------------------------------------------------------------------------------------
# unseen --calib source|target|mix


def test_unseen_calibrates_on_target_text_from_another_split(tiny_multitask, sst2_rows, shared_home, tmp_path,
                                                             monkeypatch):
    from mtprune.experiments import core
    from mtprune.experiments.unseen import UnseenConfig, run_unseen

    a = tiny_multitask
    a.max_length = 32
    drawn = []
    real = core.Runner.repaired

    def spy(self, mask, repair):
        drawn.append(repair.mix)
        return real(self, mask, repair)

    monkeypatch.setattr(core.Runner, "repaired", spy)
    base = dict(pairs=(("sst2", "imdb"),), methods=("ap",), sparsities=(0, 0.5), examples=4, trials=1,
                repairs=("none", "lsq"), calib=30)
    out = tmp_path / "u.csv"
    frames = {}
    for how in ("source", "target", "mix"):
        drawn.clear()
        frames[how] = run_unseen(a, UnseenConfig(**base, calib_from=how), rows={"imdb": sst2_rows}, log=None,
                                 out=str(out))
        (mix,) = set(drawn)
        if how == "source":
            assert mix is None  # the source's train rows, as before
        else:
            labels = [s.label for s in mix.sources]
            assert labels == (["imdb/test"] if how == "target" else ["sst2/train", "imdb/test"])
            assert mix.counts() == ((30,) if how == "target" else (15, 15))
        df = frames[how]
        assert set(df["split"]) == {"validation"}  # measured on validation, calibrated on test
        assert list(df[df.repair == "lsq"]["calib"]) == [how, how] and df[df.repair == "none"]["calib"].isna().all()
    keys = {h: set(f.key) for h, f in frames.items()}
    assert len(keys["source"] & keys["target"]) == 2  # the unrepaired rows are shared; repaired rows are not
    lsq = {h: f[(f.repair == "lsq") & (f.sparsity == 0.5)]["accuracy"].iloc[0] for h, f in frames.items()}
    assert all(0 <= v <= 1 for v in lsq.values())
    assert len(pd.read_csv(out)) == 2 + 3 * 2
    # a table written before the calib column resumes: its repaired rows were calibrated on the source
    pd.read_csv(out).drop(columns=["calib"]).to_csv(out, index=False)
    drawn.clear()
    again = run_unseen(a, UnseenConfig(**base), rows={"imdb": sst2_rows}, log=None, out=str(out))
    assert not drawn and again.attrs["stats"]["evaluations"] == 0
    assert list(again[again.repair == "lsq"]["calib"]) == ["source", "source"]


def test_unseen_cli_calib_bad_input_writes_nothing(capsys, tmp_path, shared_home):
    from mtprune.commands.unseen import read_calib

    assert read_calib("target", None) == ("target", 1024) and read_calib("512", None) == ("source", 512)
    assert read_calib("mix", 64) == ("mix", 64)
    out = tmp_path / "u.csv"
    for extra, pattern in (
            (["--pairs", "sst2:imdb,vader_nyt", "--calib", "target", "--repair", "lsq"],
             "vader_nyt has no split apart from test, which it is measured on"),
            (["--pairs", "sst2:imdb", "--calib", "target"], "--calib target calibrates a repair"),
            (["--pairs", "sst2:imdb", "--calib", "both", "--repair", "lsq"], "--calib is one of source, target, mix"),
            (["--pairs", "sst2:imdb", "--calib", "512", "--calib-rows", "64"], "give the calibration rows once")):
        code, _, err = _run(capsys, "unseen", *extra, "--out", out, "--no-plot")
        _one_line(code, err, pattern)
        assert not out.exists()


def test_unseen_split_left_depends_on_the_measured_split(shared_home):
    from mtprune.experiments import EvalSettings
    from mtprune.experiments.unseen import UnseenConfig, calibration_mix, check_calibration, Pair

    cfg = UnseenConfig(pairs=(("sst2", "imdb"), ("sst2", "cr")), repairs=("lsq",), calib_from="mix", calib=10)
    check_calibration(cfg)
    mix = calibration_mix(cfg, Pair("sst2", "imdb", "sst2"), "sst2", "test")
    assert [s.label for s in mix.sources] == ["sst2/train", "imdb/validation"] and mix.counts() == (5, 5)
    check_calibration(cfg, EvalSettings(split="train"))  # cr measured on train: its validation is left
    assert calibration_mix(cfg, Pair("sst2", "cr", "sst2"), "sst2", "train").sources[1] == \
        CalibSource(1.0, task="cr", split="validation", read_as="cr", head="sst2")
    with pytest.raises(MtpruneError, match="vader_movie has no split apart from test"):
        check_calibration(UnseenConfig(pairs=(("sst2", "vader_movie"),), repairs=("lsq",), calib_from="target"))
    check_calibration(UnseenConfig(pairs=(("sst2", "vader_movie"),), repairs=("lsq",)))  # source: no text needed
    assert calibration_mix(UnseenConfig(pairs=(("sst2", "imdb"),)), Pair("sst2", "imdb", "sst2"), "sst2",
                           "validation") is None


# ----------------------------------------------------------------------------------------------
# the dashboard's Unseen page

from tests.test_app import app, charts, compute_scores, goto, module_cache, ok  # noqa: E402,F401 (fixtures)


def test_unseen_page_calibrates_on_the_target_and_says_what_is_missing(app, module_cache):
    at = goto(app, "unseen")
    compute_scores(at, "unseen")
    at.multiselect(key="unseen.targets").set_value([]).run()
    assert at.button(key="unseen.run").disabled
    assert [c.value for c in at.caption if "Choose one or more target sets" in c.value]
    assert not [c.value for c in at.caption if "Press the button" in c.value]
    assert at.selectbox(key="unseen.calib").disabled  # no repair yet: nothing to calibrate
    at.selectbox(key="unseen.repair").set_value("lsq").run()
    at.selectbox(key="unseen.calib").set_value("target")
    at.multiselect(key="unseen.targets").set_value(["vader_movie"]).run()
    assert at.button(key="unseen.run").disabled
    assert [c.value for c in at.caption if "vader_movie has no split apart from test" in c.value]
    at.multiselect(key="unseen.targets").set_value(["cr"])  # short rows; its train split is the target text
    at.radio(key="unseen.units").set_value("heads")  # small refits: a quick test
    at.number_input(key="unseen.limit").set_value(8)
    at.number_input(key="unseen.calib_rows").set_value(16)
    at.checkbox(key="unseen.random").uncheck().run()  # one mask, one repair
    assert not at.button(key="unseen.run").disabled
    at.button(key="unseen.run").click().run()
    ok(at)
    bars = [f for f in charts(at) if f["data"][0]["type"] == "bar"][0]
    assert "repaired (lsq) on each target's own text" in bars["layout"]["title"]["text"]
    (csv,) = Path(module_cache, "dashboard").glob("unseen-*.csv")
    rows = pd.read_csv(csv)
    assert set(rows[rows.repair == "lsq"]["calib"]) == {"target"} and set(rows["split"]) == {"validation"}
    assert set(rows["target"]) == {"cr"} and set(rows["kinds"]) == {"heads"}
