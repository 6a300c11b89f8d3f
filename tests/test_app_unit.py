"""The **One unit** page under AppTest: opened by its address (``?unit=encoder.2.ffn.1265``), it shows
the unit's standing with intervals, the rows of the whole split where it fires, the change in
P(gold) without it and the masks that keep it; a unit id that does not exist is one st.error line
and the page keeps working; the heatmaps' drill-down links to it, and a click in a wide map's
window opens exactly the unit clicked. The task is cb (56 validation rows), 16 examples."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.test_app import APP, ROOT, array, charts, frame, ok

UNIT = "encoder.2.ffn.1265"


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("unit-page-cache"))


@pytest.fixture
def app(shared_home, module_cache, monkeypatch):
    """A fresh session on cb with 16 attribution examples and 16 rows without the unit."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MTPRUNE_CACHE", module_cache)
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.sidebar.number_input(key="sb.examples").set_value(16).run()
    at.sidebar.selectbox(key="sb.task").set_value("cb").run()
    at.session_state["unit.rows"] = 16
    ok(at)
    return at


def open_unit(at, unit: str):
    at.query_params["unit"] = unit
    at.switch_page("app_pages/unit.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _scores(at, task="cb"):
    for scores, _ in at.session_state["_state.stores"]["scores"].values():
        if scores.spec.task == task:
            return scores
    raise KeyError(task)


def test_a_link_opens_the_unit_with_its_intervals(app):
    from mtprune.probe import UnitRef
    from mtprune.unit_profile import standing

    at = open_unit(app, "encoder.ffn:2:1265")  # the heatmaps' spelling reads too
    ok(at)
    assert at.text_input(key="unit.id").value == "encoder.ffn:2:1265"
    assert at.query_params["unit"] == UNIT  # the address, written the page's way
    assert [h.value for h in at.subheader] == [UNIT]
    standing_table = frame(at, "rank in layer", "status")
    assert set(standing_table["status"]) == {"not computed"} and "cb" in set(standing_table["task"])
    # the sidebar's task on its own (the other five would take minutes)
    labels = [b.label for b in at.button]
    assert "Compute the scores of cb" in labels and "Compute the scores of the 5 other tasks" in labels
    at.button(key="unit.compute.task").click().run()
    ok(at)
    s = standing(_scores(at), UnitRef("encoder.ffn", 2, 1265))
    row = frame(at, "rank in layer", "status").set_index("task").loc["cb"]
    assert row["status"] == "scored"
    assert row["rank in layer"] == f"{s.rank:,} (95% {s.rank_low:,}-{s.rank_high:,}) of 1,536"
    assert row["score (95%)"] == f"{s.score:.4g} ± {1.96 * s.se:.2g}"
    figure = [f for f in charts(at) if f["layout"]["title"]["text"].startswith(f"{UNIT}: percentile")][0]
    assert figure["data"][0]["y"] == ["cb"]
    # where it fires: every row of cb/validation
    read = r"56 rows \([\d,]+ tokens\) of cb/validation, every row read"
    assert [c.value for c in at.caption if re.match(read, c.value)]
    lines = [m.value for m in at.markdown if m.value.startswith("row ")]
    peaks = [float(re.search(r"peak ([\d.e+-]+)", line).group(1)) for line in lines]
    assert len(lines) == 8 and peaks == sorted(peaks, reverse=True) and len(at.get("html")) == 8
    words = frame(at, "mean activation", "95% low", "95% high", "n")
    assert (words["95% low"] <= words["mean activation"]).all() and (words["n"] >= 3).all()
    # without it: the mean change with its interval and n
    line = [m.value for m in at.markdown if m.value.startswith(f"Switched off alone, {UNIT} moves P(gold) by")][0]
    mean, low, high = (float(x) for x in re.search(r"by ([+-][\d.]+) \(95% ([+-][\d.]+) to ([+-][\d.]+), "
                                                   r"t-interval, n = 16 rows of cb/validation\)", line).groups())
    assert low <= mean <= high
    # the masks: the Prune page's settings now (50% of every layer's neurons pruned)
    masks = frame(at, "kept", "kept in its layer", "where")
    assert masks["where"].iloc[0] == "Prune and evaluate's settings now"
    assert masks["kept in its layer"].iloc[0] == "768 / 1,536"
    assert masks["kept"].iloc[0] == ("yes" if s.rank <= 768 else "no")


def test_a_unit_that_does_not_exist_is_one_error(app):
    at = app.switch_page("app_pages/unit.py").run()  # no unit yet: how to write one, and the model's units
    ok(at)
    assert [i.value for i in at.info if "as in encoder.2.ffn.1265" in i.value and "encoder.0-5.heads.0-11" in i.value]
    at = open_unit(at, "encoder.9.ffn.1")
    assert not at.exception
    assert len(at.error) == 1
    assert at.error[0].value == ("this model has no unit encoder.9.ffn.1 (it has no site encoder.9.ffn); its units: "
                                 "encoder.0-5.ffn.0-1535, encoder.0-5.heads.0-11")
    assert [t.value for t in at.title] == ["One unit"]  # the page stays, its search box too
    at.text_input(key="unit.id").set_value("neuron 12").run()
    assert len(at.error) == 1 and "is not a unit id" in at.error[0].value
    at.text_input(key="unit.id").set_value("encoder.0.heads.3").run()
    ok(at)
    assert [h.value for h in at.subheader] == ["encoder.0.heads.3"] and at.query_params["unit"] == "encoder.0.heads.3"


def test_the_wide_map_window_opens_the_clicked_unit_and_links_to_its_page(app):
    at = app.switch_page("app_pages/heatmaps.py").run()
    if [b for b in at.button if b.key == "heat.compute"]:
        at.button(key="heat.compute").click().run()
    ok(at)
    overview = [f for f in charts(at) if "64 bins of about 24 neurons" in f["layout"]["title"]["text"]][0]
    assert len(array(overview["data"][0]["x"])) == 64  # every neuron in a bin: nothing thinner than a pixel
    assert at.slider(key="heat.range.encoder.ffn").value[1] - at.slider(key="heat.range.encoder.ffn").value[0] == 47
    # a brush over neurons 1250-1280 of the overview moves the window there
    at.session_state["heat.map.encoder.ffn"] = {"selection": {"points": [], "point_indices": [],
                                                              "box": [{"x": [1249.7, 1280.2]}], "lasso": []}}
    at.session_state["heat.unit.rows"] = 8
    at.run()
    assert not at.exception and not at.error
    assert at.slider(key="heat.range.encoder.ffn").value == (1250, 1280)
    window = [f for f in charts(at) if f["layout"]["title"]["text"].startswith("encoder FFN neurons 1250-1280")][0]
    assert window["layout"]["xaxis"]["range"] == [1249.5, 1280.5]
    # a click on a cell of the window: that neuron, and a link to its page
    at.session_state["heat.window.encoder.ffn"] = {"selection": {"points": [{"x": 1265, "y": 2, "customdata":
                                                                             {"0": 1265, "1": 9, "2": 0.1}}],
                                                                 "point_indices": [0], "box": [], "lasso": []}}
    at.run()
    ok(at)
    assert any(m.value.startswith("**neuron 1265 of layer 2** (encoder.2.ffn[1265])") for m in at.markdown)
    link = [p for p in at.get("page_link") if p.proto.page == "unit"][0]
    assert link.proto.query_string == f"unit={UNIT}"
    framed = [f for f in charts(at) if f["layout"]["title"]["text"].startswith("encoder FFN neurons 1250-1280")][0]
    shape = framed["layout"]["shapes"][0]
    assert (shape["x0"], shape["y0"]) == (1264.5, 1.5)  # the clicked cell is framed
    assert np.isclose(shape["x1"] - shape["x0"], 1.0)
