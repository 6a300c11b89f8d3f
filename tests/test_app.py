"""The dashboard under streamlit.testing's AppTest: every page renders without an exception, its
widgets are there, and the key interactions change what is shown. Bad input ends in one st.error
line and the app keeps running. (What the pages show without streamlit: test_views.py.)

The real default model is used (loaded once per process by st.cache_resource); attribution runs on
16 examples and evaluation on 8-16 rows, with one score cache for the module."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtprune.masks import mask_to_bytes
from ui.views import OTHER_MODEL

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
EXAMPLES = 16
PAGES = ("model", "heatmaps", "prune", "overlap", "unseen", "export", "guide")


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dashboard-cache"))


@pytest.fixture
def app(shared_home, module_cache, monkeypatch):
    """A fresh session of the app on the model page, attribution set to 16 examples."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MTPRUNE_CACHE", module_cache)
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    assert not at.exception, at.exception
    at.sidebar.number_input(key="sb.examples").set_value(EXAMPLES).run()
    return at


def goto(at, page: str):
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def array(v):
    """A plotly JSON array: a list, or a typed-array spec (dtype, base64 bdata)."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.reshape([int(x) for x in str(v["shape"]).split(",")]) if v.get("shape") else a
    return np.asarray(v)


def metric(at, label: str) -> str:
    for m in at.metric:
        if m.label == label:
            return m.value
    raise KeyError(f"{label} not in {[m.label for m in at.metric]}")


def frame(at, *columns):
    """The first table on the page with all these columns (a read-only table has no key to find it by)."""
    for d in at.dataframe:
        if set(columns) <= set(d.value.columns):
            return d.value
    raise KeyError(f"no table with columns {columns}")


def compute_scores(at, page: str):
    """On a page that needs scores: press Compute when they are not cached yet."""
    buttons = [b for b in at.button if b.key == f"{page}.compute"]
    if buttons:
        buttons[0].click().run()
    ok(at)


# ----------------------------------------------------------------------------------------------
# pages


def test_sidebar_and_model_page(app):
    at = app
    ok(at)
    labels = [s.label for s in at.sidebar.selectbox]
    for want in ("Model", "Task", "Evaluation split", "Method", "Score", "Examples from"):
        assert want in labels
    assert at.sidebar.selectbox(key="sb.task").value == "sst2"
    assert "22.7M parameters" in at.sidebar.caption[0].value
    assert metric(at, "Parameters") == "22.7M"
    assert metric(at, "Layers") == "6"
    units = at.dataframe[0].value
    assert units.shape == (6, 2) and int(units.iloc[0, 0]) == 1536 and int(units.iloc[0, 1]) == 12
    # measuring the dense metric adds it, and the sidebar shows it on the next run
    at.number_input(key="model.limit").set_value(8)
    at.button(key="model.eval").click().run()
    ok(at)
    assert metric(at, "Measured accuracy (8 validation rows)")
    assert any("95% interval" in c.value for c in at.caption)
    at.run()
    assert "sst2/validation accuracy, measured" in at.sidebar.caption[0].value
    # another task: its splits, its description
    at.sidebar.selectbox(key="sb.task").set_value("cb").run()
    ok(at)
    assert at.sidebar.selectbox(key="sb.split").value == "validation"
    assert any("Task: cb" in h.value for h in at.subheader)


def test_every_page_renders(app):
    at = app
    for page in PAGES:
        goto(at, page)
        ok(at)
        assert at.title, page


def test_invalid_model_directory_is_one_error_line(app, tmp_path):
    at = app
    at.sidebar.selectbox(key="sb.model").set_value(OTHER_MODEL).run()
    at.sidebar.text_input(key="sb.model_dir").set_value(str(tmp_path)).run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"{tmp_path} is not a model directory (no config.json)"]
    goto(at, "heatmaps")
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    # the app keeps running: back to the default model, no error
    at.sidebar.selectbox(key="sb.model").set_value("default").run()
    ok(at)
    (tmp_path / "config.json").write_text("{not json")
    at.sidebar.selectbox(key="sb.model").set_value(OTHER_MODEL).run()
    at.sidebar.text_input(key="sb.model_dir").set_value(str(tmp_path)).run()
    assert not at.exception and len(at.error) == 1 and "not valid JSON" in at.error[0].value


def test_task_the_model_lacks_is_one_error_line(app):
    at = app
    tasks = at.sidebar.selectbox(key="sb.task")
    assert "(no head)" in tasks.format_func("cola")
    tasks.set_value("cola").run()
    goto(at, "heatmaps")
    assert not at.exception
    assert len(at.error) == 1 and "has no head for task cola" in at.error[0].value
    goto(at, "prune")
    assert len(at.error) == 1
    at.sidebar.selectbox(key="sb.task").set_value("sst2").run()
    assert not at.error


def test_heatmaps_compute_sort_and_disk_cache(app, module_cache, monkeypatch):
    at = goto(app, "heatmaps")
    compute_scores(at, "heat")
    figs = charts(at)
    maps = [f for f in figs if f["data"][0]["type"] == "heatmap"]
    assert len(maps) == 3  # FFN neurons (a binned overview and a window of one cell per neuron) and heads
    assert "neuron index" in maps[0]["layout"]["xaxis"]["title"]["text"]
    pick = [t for t in figs[0]["data"] if t.get("name") == "pick"][0]  # the clickable cells carry the hover
    assert "rank" in pick["hovertemplate"]
    assert any(f["data"][0]["type"] == "box" for f in figs)  # the distribution per layer
    top = at.dataframe[0].value
    assert len(top) == 20 and top["score"].is_monotonic_decreasing
    # sorting the units reorders the map
    at.toggle(key="heat.sort").set_value(True).run()
    ok(at)
    assert "sorted by score" in charts(at)[0]["layout"]["xaxis"]["title"]["text"]
    at.number_input(key="heat.k").set_value(5).run()
    assert len(at.dataframe[0].value) == 5
    assert charts(at)[0]["data"][0]["colorbar"]["title"]["text"] == "log10 |score|"  # the default
    # sorted units coloured by their percentile would all look alike: not offered
    assert "percentile" not in at.segmented_control(key="heat.scale").options
    at.toggle(key="heat.sort").set_value(False).run()
    at.segmented_control(key="heat.scale").set_value("percentile").run()
    ok(at)
    assert charts(at)[0]["data"][0]["colorbar"]["title"]["text"] == "percentile in layer"

    # a new session (as after a restart): straight from the disk cache, no button
    from streamlit.testing.v1 import AppTest

    fresh = AppTest.from_file(APP, default_timeout=240)
    fresh.run()
    fresh.sidebar.number_input(key="sb.examples").set_value(EXAMPLES).run()
    goto(fresh, "heatmaps")
    ok(fresh)
    assert not [b for b in fresh.button if b.key == "heat.compute"]
    assert any("loaded from the disk cache" in c.value for c in fresh.caption)


def test_prune_slider_scope_and_evaluate(app):
    at = goto(app, "prune")
    compute_scores(at, "prune")
    assert at.slider(key="prune.ffn").value == 50
    assert metric(at, "encoder FFN neurons kept") == "4,608 / 9,216"
    params_50 = metric(at, "Parameters")
    at.slider(key="prune.ffn").set_value(80).run()
    ok(at)
    assert metric(at, "encoder FFN neurons kept") == "1,842 / 9,216"
    assert metric(at, "Parameters") != params_50
    title = [f for f in charts(at) if f["data"][0]["type"] == "heatmap"][0]["layout"]["title"]["text"]
    assert "1842 of 9216 kept" in title
    heads = at.slider(key="prune.heads")
    assert (heads.min, heads.max, heads.label) == (0, 12, "Attention heads pruned per layer")
    heads.set_value(3).run()
    assert metric(at, "encoder attention heads kept") == "54 / 72"
    assert any(c.value == "3 of 12 heads per layer pruned (25%)" for c in at.caption)
    # the same rate in every layer: a sorted view would show nothing, so it is off
    assert at.toggle(key="prune.sorted").disabled
    # global scope: layers keep different numbers, shown as bars
    n_before = len(charts(at))
    at.radio(key="prune.scope").set_value("global").run()
    ok(at)
    assert len(charts(at)) == n_before + 2
    assert not at.toggle(key="prune.sorted").disabled
    # evaluate: dense against pruned
    at.number_input(key="prune.limit").set_value(16)
    at.button(key="prune.evaluate").click().run()
    ok(at)
    dense, pruned = float(metric(at, "Dense accuracy")), float(metric(at, "Pruned accuracy"))
    assert 0 <= pruned <= 1 and 0.5 <= dense <= 1
    assert metric(at, "Examples") == "16"
    # moving the slider invalidates the shown result
    at.slider(key="prune.ffn").set_value(30).run()
    assert "Pruned accuracy" not in [m.label for m in at.metric]
    assert any("mask changed" in c.value for c in at.caption)
    # the slider keeps its value across pages
    goto(at, "model")
    goto(at, "prune")
    assert at.slider(key="prune.ffn").value == 30


def test_prune_sweep_chart(app):
    at = goto(app, "prune")
    compute_scores(at, "prune")
    at.multiselect(key="prune.sweep.methods").set_value(["ap", "random"])
    at.text_input(key="prune.sweep.sparsities").set_value("0, 90")
    at.number_input(key="prune.sweep.limit").set_value(8)
    at.button(key="prune.sweep.run").click().run()
    ok(at)
    curves = [f for f in charts(at) if "against FFN sparsity" in f["layout"]["title"]["text"]]
    assert len(curves) == 1
    names = {t.get("name") for t in curves[0]["data"]}
    assert {"gradient x activation (AP)", "random"} <= names  # the methods' labels
    xs = sorted({float(x) for t in curves[0]["data"] if t.get("mode") == "lines+markers" for x in array(t["x"])})
    assert xs == [0.0, 0.9]  # typed in percent, as on the sliders
    at.text_input(key="prune.sweep.sparsities").set_value("0, 200").run()
    assert len(at.error) == 1 and "percentages from 0 to 100" in at.error[0].value  # one line, the page still there


def test_overlap_page(app):
    at = goto(app, "overlap")
    at.multiselect(key="overlap.tasks").set_value(["sst2", "mrpc"]).run()
    compute_scores(at, "overlap")
    ok(at)
    figs = charts(at)
    matrix = [f for f in figs if f["data"][0]["type"] == "heatmap"][0]
    assert matrix["data"][0]["x"] == ["sst2", "mrpc"]
    lines = [f for f in figs if f["data"][0]["type"] == "scatter"][0]
    assert {"sst2 · mrpc", "random masks"} <= {t["name"] for t in lines["data"]}
    before = matrix["data"][0]["text"][0][1]
    at.slider(key="overlap.sparsity").set_value(90).run()
    ok(at)
    after = [f for f in charts(at) if f["data"][0]["type"] == "heatmap"][0]["data"][0]["text"][0][1]
    assert before != after
    at.multiselect(key="overlap.tasks").set_value(["sst2"]).run()
    assert any("two tasks" in i.value for i in at.info)


def test_unseen_page(app):
    at = goto(app, "unseen")
    compute_scores(at, "unseen")
    assert "imdb" in at.multiselect(key="unseen.targets").options
    at.multiselect(key="unseen.targets").set_value(["imdb"])
    at.number_input(key="unseen.limit").set_value(8)
    at.button(key="unseen.run").click().run()
    ok(at)
    bars = [f for f in charts(at) if f["data"][0]["type"] == "bar"][0]
    assert bars["data"][0]["name"] == "dense" and bars["data"][0]["x"] == ["imdb"]
    assert any("mask from sst2" in t["name"] for t in bars["data"][1:])
    table = at.dataframe[0].value
    assert list(table["set"]) == ["imdb"]
    said = [m.value for m in at.markdown if "McNemar p = " in m.value]
    assert len(said) == 1 and "imdb:" in said[0] and "dense" in said[0] and "random mask of the same size" in said[0]


def test_export_downloads_and_mask_upload(app, tmp_path):
    at = goto(app, "export")
    compute_scores(at, "export")
    labels = [b.label for b in at.get("download_button")]
    for want in ("Mask (JSON)", "Mask (safetensors)", "Scores (CSV)", "PNG", "HTML"):
        assert want in labels
    # the models are built by a job first (a Build button), then served by their download button
    assert "Hard-pruned model (zip)" not in labels
    assert at.button(key="export.build.onnx").label == "Build the pruned model as ONNX"
    at.button(key="export.build.model").click().run()
    ok(at)
    assert "Hard-pruned model (zip)" in [b.label for b in at.get("download_button")]
    assert not [b for b in at.button if b.key == "export.build.model"]  # built: the download replaces it
    (memo, data), = at.session_state["_state.stores"]["exports"].items()
    import io
    import zipfile

    folder = memo[6]
    assert folder == "minilm-l6-mt6-sst2-ap-ffn50"  # model, task, method, mask
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        cfg = json.loads(z.read(f"{folder}/config.json"))
        card = z.read(f"{folder}/README.md").decode()
    assert f"{folder}/heads.safetensors" not in names and len(cfg["id2label"]) == 2  # sst2's head alone
    assert cfg["mtprune_pruned"]["sizes"]["encoder.0.ffn"] == 768
    assert "not measured" in card
    at.run()  # a rerun serves the kept bytes: no second build
    assert at.session_state["_state.stores"]["exports"][memo] is data
    at.selectbox(key="export.chart").set_value("mask, encoder FFN neurons").run()
    ok(at)
    assert charts(at)[0]["layout"]["title"]["text"].endswith("kept")

    # a real mask file opens
    from mtprune.masks import Mask

    keep = {"encoder.ffn": np.ones((6, 1536), bool), "encoder.heads": np.ones((6, 12), bool)}
    keep["encoder.ffn"][:, 700:] = False
    good = Mask(keep=keep, n_units={"encoder.ffn": [1536] * 6, "encoder.heads": [12] * 6}, sparsity=0.5)
    up = at.file_uploader(key="export.upload")
    up.upload("mine.mask.json", mask_to_bytes(good, "json"), "application/json").run()
    ok(at)
    assert any("mine.mask.json" in s.value for s in at.success)
    # files that are not masks: one error line each, the page keeps running
    for name, data in (("notes.json", b'{"hello": 1}'), ("broken.json", b"{oops"),
                       ("weights.safetensors", b"\x00\x01garbage"), ("mask.txt", b"hello")):
        at.file_uploader(key="export.upload").set_value((name, data, "application/octet-stream")).run()
        assert not at.exception
        assert len(at.error) == 1, (name, [e.value for e in at.error])
        assert "\n" not in at.error[0].value and name in at.error[0].value
    # a mask for another model
    small = Mask(keep={"encoder.ffn": np.ones((2, 8), bool)}, n_units={"encoder.ffn": [8, 8]}, sparsity=0.0)
    at.file_uploader(key="export.upload").set_value(("small.json", mask_to_bytes(small), "application/json")).run()
    assert len(at.error) == 1 and "another model" in at.error[0].value


def test_guide_page(app):
    at = goto(app, "guide")
    compute_scores(at, "guide")
    headers = [h.value for h in at.header]
    assert headers[:6] == ["1. A model is made of units", "2. Show the model a few examples of the task",
                           "3. Score every unit: how much does the task need it?",
                           "4. Check the reliability before reading a single unit",
                           "5. Keep the units the task needs, remove the rest",
                           "6. Check that the pruned model still does the task"]
    assert len(at.dataframe[0].value) == 3  # three examples
    assert "the top 10% of each layer's neurons hold" in " ".join(m.value for m in at.markdown)
    assert any(f["layout"]["title"]["text"].endswith("the top units hold") for f in charts(at))
    text = " ".join(m.value for m in at.markdown)
    assert "keep the top 50%" in text
    at.slider(key="guide.sparsity").set_value(80).run()
    ok(at)
    assert "keep the top 20%" in " ".join(m.value for m in at.markdown)
    at.number_input(key="guide.limit").set_value(8)
    at.button(key="guide.evaluate").click().run()
    ok(at)
    assert "the accuracy moved from" in " ".join(m.value for m in at.markdown)


def test_a_local_model_directory_of_another_format(app, tmp_path, tiny_seqcls):
    """Any local directory: here a 2-layer sequence classifier saved by transformers."""
    d = tmp_path / "tiny-seqcls"
    tiny_seqcls.model.save_pretrained(str(d), safe_serialization=True)
    tiny_seqcls.tokenizer.save_pretrained(str(d))
    at = app
    at.sidebar.selectbox(key="sb.model").set_value(OTHER_MODEL).run()
    at.sidebar.text_input(key="sb.model_dir").set_value(str(d)).run()
    ok(at)
    assert metric(at, "Format") == "seqcls" and metric(at, "Layers") == "2"
    assert "(no head)" in at.sidebar.selectbox(key="sb.task").format_func("cb")  # 3 labels, 2 outputs
    goto(at, "heatmaps")
    compute_scores(at, "heat")
    maps = [f for f in charts(at) if f["data"][0]["type"] == "heatmap"]
    assert len(maps) == 2
    assert list(array(maps[0]["data"][0]["y"])) == [0, 1]  # two layers
    assert len(array(maps[1]["data"][0]["x"])) == 4  # four heads
    goto(at, "prune")
    assert metric(at, "encoder FFN neurons kept") == "48 / 96"
    goto(at, "export")
    ok(at)
    assert not [c for c in at.caption if "cannot be removed physically" in c.value]


def test_prune_with_a_flops_budget_and_repair(app):
    at = goto(app, "prune")
    compute_scores(at, "prune")
    at.segmented_control(key="prune.mode").set_value("budget").run()
    ok(at)
    assert at.selectbox(key="prune.measure").options == ["FLOPs", "parameters", "latency"]  # the registry
    at.slider(key="prune.kept").set_value(60).run()
    ok(at)
    assert int(metric(at, "FLOPs kept").rstrip("%")) <= 60
    heads = metric(at, "encoder attention heads kept")  # a budget spends over both kinds
    assert heads != "72 / 72" or metric(at, "encoder FFN neurons kept") != "9,216 / 9,216"
    at.selectbox(key="prune.repair").set_value("lsq").run()
    at.number_input(key="prune.calib").set_value(32)
    at.number_input(key="prune.limit").set_value(16)
    at.button(key="prune.evaluate").click().run()
    ok(at)
    labels = [m.label for m in at.metric]
    assert "Repaired accuracy (lsq)" in labels and "Pruned accuracy" in labels
    assert 0 <= float(metric(at, "Repaired accuracy (lsq)")) <= 1
    bars = [f for f in charts(at) if f["data"][0]["type"] == "bar"][-1]
    assert [t["name"] for t in bars["data"]] == ["dense", "pruned", "pruned + lsq"]
    # Export downloads the same budget mask
    goto(at, "export")
    ok(at)
    assert any("budget flops:0.6" in c.value for c in at.caption)


def test_prune_rearranges_the_mask_and_repairs_with_a_variant(app):
    at = goto(app, "prune")
    compute_scores(at, "prune")
    at.selectbox(key="prune.repair").set_value("lsq").run()
    at.selectbox(key="prune.variant").set_value("intermediate").run()  # needs a budget: one line, no Evaluate
    assert not at.exception and len(at.error) == 1 and "square root of the budget" in at.error[0].value
    assert at.button(key="prune.evaluate").disabled
    at.segmented_control(key="prune.mode").set_value("budget").run()
    at.slider(key="prune.kept").set_value(60).run()
    ok(at)
    at.selectbox(key="prune.variant").set_value("pooled-last")
    at.toggle(key="prune.rearrange").set_value(True)
    at.number_input(key="prune.calib").set_value(32)
    at.number_input(key="prune.limit").set_value(16)
    at.button(key="prune.evaluate").click().run()
    ok(at)
    assert "Repaired accuracy (lsq, pooled-last)" in [m.label for m in at.metric]
    assert any("rearranged on 1,024 labelled rows" in c.value for c in at.caption)
    run = next(iter(at.session_state["_state.stores"]["runs"].values()))
    moved = run.mask.meta["rearranged"]
    assert moved["rows"] == 1024 and moved["units_moved"] > 0
    assert run.repair["variant"] == "pooled-last" and run.settings["how"].endswith("rearranged")
    from ui.evaluations import mask_for_settings

    plain = mask_for_settings(at.session_state["_ctx"], run_scores(at), {"mode": "budget", "budget": run_budget(run)})
    assert plain.digest() != run.mask.digest()
    for g in plain.keep:  # each layer keeps as many units: the budget stays met
        assert plain.keep[g].sum(1).tolist() == run.mask.keep[g].sum(1).tolist()


def run_scores(at):
    return next(iter(at.session_state["_state.stores"]["scores"].values()))[0]


def run_budget(run):
    from mtprune.costs import Budget

    return Budget.parse(run.settings["budget"])


# ----------------------------------------------------------------------------------------------
# trust: intervals, the paired test, the examples that changed, the run history


def _evaluate_prune(at, rows=16):
    at.number_input(key="prune.limit").set_value(rows)
    at.button(key="prune.evaluate").click().run()
    ok(at)


def test_evaluate_shows_intervals_verdict_and_flips(app):
    at = goto(app, "prune")
    compute_scores(at, "prune")
    at.slider(key="prune.ffn").set_value(90).run()
    _evaluate_prune(at, 32)
    captions = [c.value for c in at.caption]
    dense, pruned = float(metric(at, "Dense accuracy")), float(metric(at, "Pruned accuracy"))
    from mtprune.evaluation import wilson

    lo, hi = wilson(round(dense * 32), 32)
    assert f"95% interval {lo:.3f}-{hi:.3f} · 32 rows" in captions  # Wilson's, on the page
    verdicts = [m.value for m in (*at.info, *at.warning, *at.success) if "McNemar" in m.value]
    assert len(verdicts) == 1 and verdicts[0].startswith(("No measurable change", "Pruned is lower", "Pruned is higher"))
    # every row, side by side, with the change in P(gold); the flips are the rows whose correctness changed
    every = [d.value for d in at.dataframe if "change in P(gold)" in d.value.columns and "what changed" in d.value.columns][0]
    assert len(every) == 32 and every["text"].str.len().min() > 0
    right_wrong = (every["what changed"] == "right -> wrong").sum()
    wrong_right = (every["what changed"] == "wrong -> right").sum()
    assert f"on 32 rows ({right_wrong} flipped right -> wrong, {wrong_right} wrong -> right" in verdicts[0]
    assert (every["dense"] == every["gold"]).mean() == pytest.approx(dense, abs=5e-4)
    assert (every["pruned"] == every["gold"]).mean() == pytest.approx(pruned, abs=5e-4)
    np.testing.assert_allclose(every["change in P(gold)"], every["P(gold) pruned"] - every["P(gold) dense"], atol=2e-4)
    confusions = [f for f in charts(at) if f["layout"]["title"]["text"].startswith(("dense:", "pruned:"))]
    assert len(confusions) == 2 and sum(map(sum, confusions[0]["data"][0]["text"])) == 32
    # "all rows" disables the count
    at.checkbox(key="prune.limit.all").check().run()
    assert at.number_input(key="prune.limit").disabled


def test_history_survives_a_reload_and_settings_live_in_the_address(app, module_cache):
    at = goto(app, "prune")
    compute_scores(at, "prune")
    at.slider(key="prune.ffn").set_value(70).run()
    _evaluate_prune(at, 8)
    table = frame(at, "how", "verdict")
    assert table.iloc[0]["how"] == "ffn70 (layer)" and table.iloc[0]["rows"] == 8
    # a reload: a new session with the address the browser shows (bound widgets write it there;
    # test_browser checks that part)
    from streamlit.testing.v1 import AppTest

    fresh = AppTest.from_file(APP, default_timeout=240)
    for k, v in {"sb.examples": str(EXAMPLES), "prune.ffn": "70", "prune.limit": "8"}.items():
        fresh.query_params[k] = v
    fresh.run()
    goto(fresh, "prune")
    ok(fresh)
    assert fresh.slider(key="prune.ffn").value == 70 and fresh.number_input(key="prune.limit").value == 8
    again = frame(fresh, "how", "verdict")
    assert len(again) >= 1 and again.iloc[0]["how"] == "ffn70 (layer)"
    assert float(again.iloc[0]["accuracy" if "accuracy" in again else "value"]) == pytest.approx(
        float(metric(at, "Pruned accuracy")), abs=1e-3)
    assert [b.label for b in fresh.get("download_button") if b.label == "Run history (CSV)"]


def test_a_corrupt_history_is_set_aside_with_one_line(app, module_cache):
    from mtprune.history import RunHistory

    at = goto(app, "prune")
    compute_scores(at, "prune")
    fingerprint = next(iter(at.session_state["_state.stores"]["scores"]))[0]
    path = RunHistory.for_model(fingerprint).path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x01 not a csv \xff")
    at.run()
    assert not at.exception and not at.error
    warnings = [w.value for w in at.warning if "run history" in w.value]
    assert len(warnings) == 1 and "moved to" in warnings[0] and "\n" not in warnings[0]
    assert [p for p in path.parent.iterdir() if ".corrupt-" in p.name]
    _evaluate_prune(at, 8)
    assert len(RunHistory.for_model(fingerprint).load()) == 1


def test_heatmap_click_opens_the_unit_drill_down(app):
    at = goto(app, "heatmaps")
    compute_scores(at, "heat")
    assert any("Click a cell of a map" in c.value for c in at.caption)
    # a click on a cell of the FFN map: a point of the pick layer (customdata[0] the unit, y the layer)
    at.session_state["heat.map.encoder.ffn"] = {"selection": {"points": [{"x": 17, "y": 3, "customdata": {"0": 17, "1": 9, "2": 0.1}}],
                                                              "point_indices": [0], "box": [], "lasso": []}}
    at.session_state["heat.unit.rows"] = 16  # rows to search (the input appears with the drill-down)
    at.run()
    ok(at)
    assert any(m.value.startswith("**neuron 17 of layer 3** (encoder.3.ffn[17])") for m in at.markdown)
    assert at.query_params["unit"] == "encoder.ffn:3:17"  # a reload or a shared link opens it again
    across = [f for f in charts(at) if "in every task" in f["layout"]["title"]["text"]][0]
    assert "sst2" in across["data"][0]["x"]
    # the five rows where it fires most, with P(gold) with and without it
    table = frame(at, "peak activation")
    assert len(table) == 5 and table["peak activation"].is_monotonic_decreasing
    np.testing.assert_allclose(table["change"], table["P(gold) without it"] - table["P(gold)"], atol=2e-4)
    assert len([h for h in at.get("html")]) == 5  # tokens highlighted where it fires
    # a row of the top-k heads table
    at.session_state["heat.top.encoder.heads"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    ok(at)
    top = at.dataframe(key="heat.top.encoder.heads").value.iloc[0]
    assert any(m.value.startswith(f"**head {int(top['head'])} of layer {int(top['layer'])}**") for m in at.markdown)
    # a selection on an empty part of the chart: one line, nothing picked, the page still there
    at.session_state["heat.map.encoder.ffn"] = {"selection": {"points": [], "point_indices": [], "box": [{"x": [0, 1]}],
                                                              "lasso": []}}
    at.run()
    assert not at.exception and not at.error
    assert [i.value for i in at.info if "holds no unit" in i.value]
    # the zoom into one layer: one bar per neuron
    at.selectbox(key="heat.zoom_layer.encoder.ffn").set_value(2).run()
    ok(at)
    bars = [f for f in charts(at) if f["layout"]["title"]["text"].startswith("encoder FFN neurons, layer 2")][0]
    assert len(array(bars["data"][0]["y"])) == 1536


def _scores_in_session(at, examples: int, method: str = "ap"):
    """The session's scores of sst2 with ``examples`` examples and ``method``."""
    for scores, _ in at.session_state["_state.stores"]["scores"].values():
        if (scores.spec.task, scores.spec.method, scores.meta.get("examples")) == ("sst2", method, examples):
            return scores
    raise KeyError(f"no {method} scores of {examples} examples in the session")


def test_the_unit_drill_down_gives_intervals_and_the_keep_chance(app):
    from mtprune.reliability import keep_stability

    at = goto(app, "heatmaps")
    compute_scores(at, "heat")
    at.session_state["heat.map.encoder.ffn"] = {"selection": {"points": [{"x": 17, "y": 3, "customdata": {"0": 17}}],
                                                              "point_indices": [0], "box": [], "lasso": []}}
    at.session_state["heat.unit.rows"] = 8
    at.run()
    ok(at)
    line = [m.value for m in at.markdown if m.value.startswith("**neuron 17 of layer 3**")][0]
    scores = _scores_in_session(at, EXAMPLES)
    df = scores.to_frame()
    r = df[(df["group"] == "encoder.ffn") & (df["layer"] == 3) & (df["unit"] == 17)].iloc[0]
    assert f"score {r['score']:.4g} ± {1.96 * r['se']:.2g} (95%)" in line  # score ± 1.96 se
    assert f"rank {r['rank']:,}, 95% {r['rank_low']:,}-{r['rank_high']:,} of 1,536 in its layer" in line  # the CSV's
    a = scores.arrays["encoder.ffn"][3].astype(np.float64)
    chance = keep_stability(a, scores.standard_errors()["encoder.ffn"][3].astype(np.float64), 0.5, seed=3)[1][17]
    assert f"Kept in {100 * chance:.0f}% of draws of as many examples at 50% pruned per layer" in line
    # heads: nothing pruned at the Prune page's default, so every draw keeps it
    at.session_state["heat.top.encoder.heads"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    ok(at)
    assert [m.value for m in at.markdown if m.value.startswith("**head ") and "Kept by every draw" in m.value]


def test_heatmaps_say_how_reliable_the_scores_are_and_add_examples(app):
    at = goto(app, "heatmaps")
    compute_scores(at, "heat")
    lines = [c.value for c in at.caption if c.value.startswith("reliability ")]
    assert len(lines) == 2  # one next to each map
    assert all(f"another draw of {EXAMPLES} examples would rank these" in x for x in lines)
    assert "neurons with Spearman" in lines[0] and "heads with Spearman" in lines[1]
    pick = [t for t in charts(at)[0]["data"] if t.get("name") == "pick"][0]
    assert "layer reliability %{customdata[3]:.2f}" in pick["hovertemplate"]  # each layer's own, on hover
    per_layer = _scores_in_session(at, EXAMPLES).reliability()["encoder.ffn"].per_layer
    cd = array(pick["customdata"]).reshape(-1, 4)
    np.testing.assert_allclose(sorted(set(np.round(cd[:, 3], 4))), sorted(set(np.round(per_layer, 4))), atol=1e-4)
    # 16 examples are mostly the draw: a plain warning, and a button that doubles them
    warnings = [w.value for w in at.warning if "these maps are mostly the draw of examples" in w.value]
    assert len(warnings) == 1 and "ffn 0." in warnings[0]
    at.button(key="heat.more").click().run()
    ok(at)
    assert at.sidebar.number_input(key="sb.examples").value == 2 * EXAMPLES
    assert not [b for b in at.button if b.key == "heat.compute"]  # computed at once, no second press
    assert any(f"another draw of {2 * EXAMPLES} examples" in c.value for c in at.caption)
    # a method that reads no examples: said so, no warning
    at.sidebar.selectbox(key="sb.method").set_value("magnitude").run()
    compute_scores(at, "heat")
    assert len([c for c in at.caption if "reads no examples" in c.value]) == 2
    assert not [w for w in at.warning if "mostly the draw" in w.value]
    # scores without fold sums (one example): reliability unknown
    at.sidebar.selectbox(key="sb.method").set_value("ap").run()
    at.sidebar.number_input(key="sb.examples").set_value(1).run()
    compute_scores(at, "heat")
    assert len([c for c in at.caption if c.value.startswith("reliability unknown")]) == 2


def test_auto_examples_are_the_default(shared_home, module_cache, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MTPRUNE_CACHE", module_cache)
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(APP, default_timeout=240)
    at.query_params["sb.max_examples"] = "64"  # the first draw is the cap: one draw to compute
    at.run()
    ok(at)
    assert at.sidebar.number_input(key="sb.examples").value is None  # empty: auto
    assert not at.sidebar.number_input(key="sb.reliability").disabled
    goto(at, "heatmaps")
    assert any("examples, as many as reliability 0.9 needs (from 64 up to 64)" in c.value for c in at.caption)
    compute_scores(at, "heat")
    line = [c.value for c in at.caption if "examples auto:" in c.value]
    assert len(line) == 1 and "ffn 0." in line[0] and "heads " in line[0] and "at 64 examples: " in line[0]
    assert any(c.value.startswith("reliability ") and "another draw of 64 examples" in c.value for c in at.caption)
    # a new session reads every draw auto needs from the disk cache: no button
    fresh = AppTest.from_file(APP, default_timeout=240)
    fresh.query_params["sb.max_examples"] = "64"
    fresh.run()
    goto(fresh, "heatmaps")
    ok(fresh)
    assert not [b for b in fresh.button if b.key == "heat.compute"]
    assert any("loaded from the disk cache" in c.value and "examples auto:" in c.value for c in fresh.caption)
    # a count instead: the auto settings are off
    fresh.sidebar.number_input(key="sb.examples").set_value(EXAMPLES).run()
    assert fresh.sidebar.number_input(key="sb.reliability").disabled
    assert fresh.sidebar.number_input(key="sb.max_examples").disabled


def test_the_guide_shows_few_examples_beside_many(app, monkeypatch):
    monkeypatch.setattr("ui.views.GUIDE_DRAWS", (EXAMPLES, 4 * EXAMPLES))  # small draws: a short test
    at = goto(app, "guide")
    compute_scores(at, "guide")
    for b in [b for b in at.button if b.key == "guide.draws"]:  # unless other tests cached these draws
        b.click().run()
    ok(at)
    titles = [f["layout"]["title"]["text"] for f in charts(at)]
    few = [x for x in titles if x.startswith(f"{EXAMPLES} examples: reliability 0.")]
    many = [x for x in titles if x.startswith(f"{4 * EXAMPLES} examples: reliability 0.")]
    assert len(few) == 1 and len(many) == 1
    curve = [f for f in charts(at) if "reliability as examples are added" in f["layout"]["title"]["text"]][0]
    assert [list(array(t["x"])) for t in curve["data"]] == [[16, 32, 64]] * 2  # FFN neurons and heads
    r_few, r_many = float(few[0].split()[-1]), float(many[0].split()[-1])
    text = " ".join(m.value for m in at.markdown)
    assert f" from **{r_few:.2f}** at {EXAMPLES} examples to **{r_many:.2f}** at {4 * EXAMPLES}" in text
    assert "check the reliability before you read a single unit" in text


def test_a_unit_in_the_address_that_does_not_exist_is_one_line(shared_home, module_cache, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MTPRUNE_CACHE", module_cache)
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(APP, default_timeout=240)
    at.query_params["unit"] = "encoder.ffn:9:99999"
    at.query_params["sb.examples"] = str(EXAMPLES)
    at.run()
    goto(at, "heatmaps")
    for b in [b for b in at.button if b.key == "heat.compute"]:
        b.click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["this model has no unit encoder.ffn layer 9 unit 99999: pick another"]
    assert "unit" not in at.query_params


def test_transfer_matrix_on_the_overlap_page(app):
    at = goto(app, "overlap")
    at.multiselect(key="overlap.tasks").set_value(["sst2", "rte", "cb"]).run()
    compute_scores(at, "overlap")
    ok(at)
    matrix = [f for f in charts(at) if f["layout"]["title"]["text"].startswith("shared kept")][0]
    text = matrix["data"][0]["text"]
    assert all(text[i][i].startswith("floor 0.") for i in range(3))  # the diagonal: each task's floor
    assert matrix["data"][0]["colorbar"]["ticktext"] == ["chance", "floor (same task)"]
    pairs = frame(at, "pair", "floors", "verdict")
    assert list(pairs["pair"]) == ["sst2 · rte", "sst2 · cb", "rte · cb"]
    for cell, (_, row) in zip((text[0][1], text[0][2], text[1][2]), pairs.iterrows()):
        assert cell.endswith("*") == row["verdict"].startswith("distinct")  # the marks are the test's
    at.number_input(key="overlap.limit").set_value(8)
    at.button(key="overlap.transfer").click().run()
    ok(at)
    fig = [f for f in charts(at) if "with each task's mask" in f["layout"]["title"]["text"]][0]
    assert fig["data"][0]["y"] == ["sst2", "rte", "cb", "dense", "random mask"]
    assert fig["data"][0]["x"] == ["sst2", "rte", "cb"]
    assert "[" in fig["data"][0]["text"][0][0]  # every cell with its interval
    verdicts = frame(at, "evaluated task", "mask from", "p vs own mask", "p vs random mask", "verdict")
    assert len(verdicts) == 9  # every task's mask on every task, the own masks included
    assert verdicts["verdict"].str.contains("random mask of the same size").all()
    # one task: one line, no matrix
    at.multiselect(key="overlap.tasks").set_value(["sst2"]).run()
    assert not at.exception and any("two tasks" in i.value for i in at.info)


def test_an_uploaded_mask_can_be_evaluated(app):
    from mtprune.masks import Mask

    at = goto(app, "export")
    compute_scores(at, "export")
    keep = {"encoder.ffn": np.ones((6, 1536), bool), "encoder.heads": np.ones((6, 12), bool)}
    keep["encoder.ffn"][:, 300:] = False
    m = Mask(keep=keep, n_units={"encoder.ffn": [1536] * 6, "encoder.heads": [12] * 6}, sparsity=0.8,
             meta={"task": "sst2", "method": "ap"})
    at.file_uploader(key="export.upload").upload("mine.mask.json", mask_to_bytes(m, "json"), "application/json").run()
    ok(at)
    at.number_input(key="export.limit").set_value(8)
    at.button(key="export.evaluate").click().run()
    ok(at)
    assert 0 <= float(metric(at, "Accuracy with the uploaded mask")) <= 1
    assert [m.value for m in (*at.info, *at.warning, *at.success) if "McNemar" in m.value]


def test_a_local_directory_asks_for_its_path_first(app):
    at = goto(app, "prune")
    at.sidebar.selectbox(key="sb.model").set_value(OTHER_MODEL).run()
    assert not at.exception and not at.error  # not an error before anything is typed
    assert [i.value for i in at.info if "Type the path of a local model directory" in i.value]
    assert [t.value for t in at.title] == ["Prune and evaluate"]  # the page keeps its title


def test_unseen_page_with_auto_examples(app, module_cache):
    """The sidebar's auto examples reach the experiment: the scores of the draw the reliability
    target chose (the rows say auto, 64 examples read, their reliability), and the verdict in words."""
    import pandas as pd

    at = app
    at.sidebar.number_input(key="sb.examples").set_value(None).run()
    at.sidebar.number_input(key="sb.reliability").set_value(0.05)
    at.sidebar.number_input(key="sb.max_examples").set_value(64).run()
    goto(at, "unseen")
    at.multiselect(key="unseen.targets").set_value(["imdb"])
    at.number_input(key="unseen.limit").set_value(8)
    at.button(key="unseen.run").click().run()
    ok(at)
    said = [m.value for m in at.markdown if "McNemar p = " in m.value]
    assert len(said) == 1 and said[0].startswith("- imdb:")
    (csv,) = Path(module_cache, "dashboard").glob("unseen-*.csv")
    rows = pd.read_csv(csv)
    auto = rows[(rows["examples"] == "auto") & (rows["method"] == "ap")]
    assert len(auto) and set(auto["examples_used"]) == {64} and auto["reliability_ffn"].between(0, 1).all()
