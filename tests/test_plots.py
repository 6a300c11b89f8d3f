"""The dashboard's figure builders: shapes, hover data, sorting, NaN padding, export."""

import json

import numpy as np
import pytest

from mtprune import plots


def _scores():
    rng = np.random.default_rng(0)
    a = rng.random((3, 5)).astype(np.float32)
    a[2, 4] = np.nan  # layer 2 has 4 units
    return a


def test_layer_ranks_one_is_best_and_padding_zero():
    a = np.array([[0.1, 0.5, 0.3], [2.0, np.nan, 1.0]])
    r = plots.layer_ranks(a)
    assert r.tolist() == [[3, 1, 2], [1, 0, 2]]


def test_score_heatmap_hover_carries_unit_score_rank():
    a = _scores()
    fig = plots.score_heatmap(a, group="encoder.ffn")
    hm = fig.data[0]
    assert np.asarray(hm.z).shape == (3, 5)
    assert np.asarray(hm.z).dtype == np.float32  # sent as a compact typed array
    assert np.isnan(hm.z[2][4])  # padding stays empty
    cd = np.asarray(hm.customdata)
    assert cd.shape == (3, 5, 3)
    # unit index, rank within the layer, raw score
    assert cd[0, :, 0].tolist() == [0, 1, 2, 3, 4]
    assert cd[0, np.nanargmax(a[0]), 1] == 1
    assert cd[1, 2, 2] == pytest.approx(float(a[1, 2]))
    for word in ("layer", "neuron", "score", "rank"):
        assert word in hm.hovertemplate
    assert "FFN neurons" in fig.layout.title.text


def test_score_heatmap_sorted_units_keep_their_names():
    a = _scores()
    fig = plots.score_heatmap(a, group="encoder.heads", sort_units=True)
    hm = fig.data[0]
    z0 = [v for v in hm.z[0] if not np.isnan(v)]
    assert z0 == sorted(z0, reverse=True)
    cd = np.asarray(hm.customdata)
    assert cd[0, 0, 0] == int(np.nanargmax(a[0]))  # the first column names the best unit
    assert cd[0, :, 1].tolist() == [1, 2, 3, 4, 5]
    assert "rank" in fig.layout.xaxis.title.text
    assert "head" in hm.hovertemplate
    # small maps print their values
    assert hm.texttemplate == "%{text}"


@pytest.mark.parametrize("scale", ["log", "percentile"])
def test_score_heatmap_color_scales(scale):
    fig = plots.score_heatmap(_scores(), scale=scale)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert np.isnan(z[2, 4]) and np.isfinite(z[:2]).all()
    if scale == "percentile":
        assert np.nanmax(z) == 100 and np.nanmin(z) == 0
    with pytest.raises(ValueError):
        plots.score_heatmap(_scores(), scale="cubic")


def test_signed_scores_use_a_diverging_scale():
    a = _scores() - 0.5
    fig = plots.score_heatmap(a)
    assert fig.data[0].zmid == 0


def test_keep_heatmap_and_kept_per_layer():
    a = _scores()
    r = plots.layer_ranks(a)
    keep = (r >= 1) & (r <= 2)  # the two best units of every layer
    fig = plots.keep_heatmap(keep, [5, 5, 4], scores=a, group="encoder.ffn", sort_units=True)
    assert "6 of 14 kept" in fig.layout.title.text
    kept, pruned = [t for t in fig.data if t.type == "heatmap"]
    assert "kept" in kept.hovertemplate and "pruned" in pruned.hovertemplate
    zk, zp = np.asarray(kept.z, dtype=float), np.asarray(pruned.z, dtype=float)
    assert (~np.isnan(zk)).sum() == 6 and (~np.isnan(zp)).sum() == 8
    assert np.isnan(zk[2, 4]) and np.isnan(zp[2, 4])  # layer 2 has 4 units
    # sorted by score, every layer's kept units are its best-scored ones, on the left
    assert (~np.isnan(zk[:, :2])).all()
    assert [t.name for t in fig.data if t.type == "scatter"] == ["kept", "pruned"]
    bars = plots.kept_per_layer(keep, [5, 5, 4], group="encoder.ffn")
    assert list(bars.data[0].y) == [2, 2, 2]
    assert list(bars.data[1].y) == [3, 3, 2]
    unsorted = plots.keep_heatmap(keep, [5, 5, 4], group="encoder.ffn")
    assert np.array_equal(~np.isnan(np.asarray(unsorted.data[0].z, dtype=float)), keep)


def test_distribution_and_top_units():
    a = _scores()
    fig = plots.score_distribution(a, group="encoder.ffn")
    assert len(fig.data) == 3 and len(fig.data[2].y) == 4
    assert plots.score_distribution(a, log=True).layout.yaxis.type == "log"
    top = plots.top_units(a, 4, group="encoder.ffn")
    assert list(top.columns) == ["rank", "layer", "neuron", "score", "rank in layer"]
    assert top["score"].is_monotonic_decreasing
    assert top["score"].iloc[0] == pytest.approx(float(np.nanmax(a)))
    bar = plots.top_units_bar(top, group="encoder.ffn")
    assert len(bar.data[0].x) == 4
    assert len(plots.top_units(a, 100)) == 14  # no more than the real units


def test_dense_vs_pruned_and_html_export():
    fig = plots.dense_vs_pruned(["sst2", "imdb"], [0.9, 0.8], [0.85, 0.7])
    assert [t.name for t in fig.data] == ["dense", "pruned"]
    html = plots.figure_html(fig)
    assert b"<html>" in html[:200] and b"plotly" in html
    json.loads(fig.to_json())


def test_group_label():
    assert plots.group_label("encoder.ffn") == "encoder FFN neurons"
    assert plots.group_label("decoder.heads") == "decoder attention heads"


def test_score_shares_and_concentration():
    a = np.array([[4.0, 1.0, 3.0, 2.0], [1.0, 1.0, np.nan, np.nan]])
    sh = plots.score_shares(a)
    assert np.allclose(sh[0], [0.4, 0.7, 0.9, 1.0])
    assert np.allclose(sh[1, :2], [0.5, 1.0]) and np.isnan(sh[1, 2:]).all()
    fig = plots.score_concentration(a, group="encoder.ffn")
    assert [t.name for t in fig.data] == ["layer 0", "layer 1", "all equal"]
    assert list(fig.data[0].y) == [40.0, 70.0, 90.0, 100.0]


def test_grouped_bars():
    bars = plots.grouped_bars(["imdb"], {"dense": [0.9], "ap": [0.8], "random": [0.5]})
    assert [t.name for t in bars.data] == ["dense", "ap", "random"]
    assert [a.text for a in bars.layout.annotations] == ["0.900", "0.800", "0.500"]  # the values, over their bars


def test_overlap_matrix_blanks_the_diagonal_and_centres_on_chance():
    import pandas as pd

    m = pd.DataFrame([[1.0, 0.5, 0.2], [0.5, 1.0, 0.4], [0.2, 0.4, 1.0]], index=list("abc"), columns=list("abc"))
    fig = plots.overlap_heatmap(m, chance=0.33)
    t = fig.data[0]
    assert [t.text[i][i] for i in range(3)] == ["", "", ""] and t.text[0][1] == "0.50"
    assert t.zmid == 0.33 and "chance 0.33" in t.colorbar.ticktext
    assert t.zmin == pytest.approx(0.33 - 0.17) and t.zmax == pytest.approx(0.33 + 0.17)


def test_grouped_bars_draw_intervals():
    fig = plots.grouped_bars(["sst2"], {"dense": [0.8], "pruned": [0.7]},
                             intervals={"dense": ([0.75], [0.85]), "pruned": ([0.6], [0.78])})
    e = fig.data[1].error_y
    assert e.array[0] == pytest.approx(0.08) and e.arrayminus[0] == pytest.approx(0.1)


def test_sweep_bands_over_trials_and_history_points():
    import pandas as pd

    df = pd.DataFrame({"task": ["sst2"] * 6, "method": ["random"] * 6, "sparsity": [0, 0.5, 0.9] * 2,
                       "trial": [0, 0, 0, 1, 1, 1], "accuracy": [0.9, 0.7, 0.5, 0.9, 0.8, 0.6]})
    pts = pd.DataFrame({"task": ["sst2"], "sparsity": [0.5], "value": [0.75], "low": [0.7], "high": [0.8],
                        "label": ["ap · ffn50"]})
    fig = plots.sweep_figure(df, points=pts)
    band, line, runs = fig.data
    assert band.fill == "toself" and list(band.y) == [0.9, 0.8, 0.6, 0.5, 0.7, 0.9]  # highest, then lowest back
    assert list(line.y) == pytest.approx([0.9, 0.75, 0.55]) and runs.name == "your runs"
    one = plots.sweep_figure(df[df["trial"] == 0].assign(accuracy_low=0.1, accuracy_high=0.95))
    assert "95% interval" in one.data[0].name


def test_maps_and_layer_bars_are_pickable():
    a = np.arange(12, dtype=float).reshape(2, 6)
    fig = plots.score_heatmap(a, group="encoder.ffn", pickable=True, sort_units=True)
    pick = fig.data[1]
    assert pick.type == "scatter" and len(pick.x) == 12 and fig.layout.clickmode == "event+select"
    custom = np.asarray(pick.customdata)
    assert custom[0, 0] == 5 and pick.x[0] == 0  # sorted: rank 0 of layer 0 is unit 5
    bars = plots.layer_bars(a, 1, group="encoder.ffn", keep=[True, False] * 3)
    assert list(np.asarray(bars.data[0].customdata)[:, 0]) == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="no layer 4"):
        plots.layer_bars(a, 4)


def test_score_heatmap_hover_says_each_layers_reliability():
    a = _scores()
    fig = plots.score_heatmap(a, group="encoder.ffn", layer_reliability=[0.9, 0.5, float("nan")], pickable=True)
    pick = [t for t in fig.data if t.name == "pick"][0]
    assert "layer reliability %{customdata[3]:.2f}" in pick.hovertemplate
    cd = np.asarray(fig.data[0].customdata)
    assert cd.shape == (3, 5, 4) and cd[0, :, 3].tolist() == pytest.approx([0.9] * 5) and np.isnan(cd[2, 0, 3])
    assert "reliability" not in plots.score_heatmap(a).data[0].hovertemplate  # only when given


def test_reliability_curve_one_line_per_kind_and_the_target():
    fig = plots.reliability_curve([64, 128, 256], {"encoder FFN neurons": [0.5, 0.7, 0.85],
                                                   "encoder heads": [0.3, float("nan"), 0.6]}, target=0.8)
    assert [t.name for t in fig.data] == ["encoder FFN neurons", "encoder heads"]
    assert list(fig.data[1].y) == [0.3, None, 0.6]
    assert fig.layout.shapes[0].y0 == 0.8 and list(fig.layout.xaxis.ticktext) == ["64", "128", "256"]


def test_value_labels_sit_above_the_whiskers_and_the_axis_zooms_to_the_data():
    lows, highs = {"dense": [0.89, 0.88], "pruned": [0.86, 0.84]}, {"dense": [0.93, 0.92], "pruned": [0.90, 0.89]}
    fig = plots.grouped_bars(["accuracy", "f1"], {"dense": [0.91, 0.90], "pruned": [0.88, 0.865]},
                             intervals={k: (lows[k], highs[k]) for k in lows})
    notes = fig.layout.annotations
    assert len(notes) == 4 and all(t.text is None for t in fig.data)  # no text drawn inside the bars
    tops = [0.93, 0.92, 0.90, 0.89]  # dense sst2, dense f1, pruned sst2, pruned f1: each whisker's top
    for note, top in zip(notes, tops):
        assert note.y == pytest.approx(top) and note.yanchor == "bottom"  # on the cap, not across the whisker
    # each label is over its own bar: the bar's offset plus half its width
    bars = {t.name: t for t in fig.data}
    assert notes[0].x == pytest.approx(bars["dense"].offset + bars["dense"].width / 2)
    assert notes[3].x == pytest.approx(1 + bars["pruned"].offset + bars["pruned"].width / 2)
    lo, hi = fig.layout.yaxis.range
    assert 0.7 < lo < 0.84 and 0.93 < hi < 1.0  # a 0.03 difference fills the chart
    assert "axis starts at" in fig.layout.yaxis.title.text and "not 0" in fig.layout.yaxis.title.text
    wide = plots.grouped_bars(["x"], {"a": [0.2], "b": [0.9]})  # values far apart: a 0-based axis says it all
    assert wide.layout.yaxis.range[0] == 0 and wide.layout.yaxis.title.text == "accuracy"


def test_sweep_axes_read_in_percent_like_the_sparsity_box():
    import pandas as pd

    df = pd.DataFrame({"task": ["sst2"] * 3, "method": ["ap"] * 3, "sparsity": [0.0, 0.5, 0.9],
                       "trial": [0] * 3, "accuracy": [0.9, 0.8, 0.6]})
    fig = plots.sweep_figure(df)
    assert fig.layout.xaxis.tickformat == ".0%" and "%{x:.0%}" in fig.data[-1].hovertemplate
    assert list(fig.data[-1].x) == [0.0, 0.5, 0.9]  # the values stay shares; the axis prints them in %


def test_log_axis_labels_every_tick_in_full():
    a = np.array([[1e-4, 3e-3, 0.2], [5e-4, 0.05, 2.0]])
    axis = plots.score_distribution(a, log=True).layout.yaxis
    assert axis.type == "log"
    assert list(axis.ticktext) == ["0.0001", "0.001", "0.01", "0.1", "1", "10"]
    assert list(axis.tickvals) == pytest.approx([1e-4, 1e-3, 1e-2, 0.1, 1, 10])
    narrow = plots.log_ticks([0.05, 0.9])  # under two decades: 2 and 5 between, still in full
    assert narrow["ticktext"] == ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"]
    assert plots.log_ticks([1e-9, 1e-7])["ticktext"] == ["1e-9", "2e-9", "5e-9", "1e-8", "2e-8", "5e-8", "1e-7"]


def test_unit_across_tasks_wraps_its_title_and_names_the_median_on_the_axis():
    import pandas as pd

    table = pd.DataFrame({"task": ["sst2", "rte"], "percentile": [50.0, 100.0], "rank in layer": [768, 1],
                          "score": [0.1, 0.5], "selected": [True, False]})
    fig = plots.unit_across_tasks(table, title="encoder.2.ffn[1265] in every task (percentile in its layer)")
    assert fig.layout.title.text == "encoder.2.ffn[1265] in every task<br><sup>(percentile in its layer)</sup>"
    assert not fig.layout.annotations  # no label in the plot where a rank could cover it
    assert "median 50" in fig.layout.yaxis.ticktext and list(fig.data[0].text) == ["rank 768", "rank 1"]
    assert plots.wrap_title("short title") == "short title"
