"""Wide maps drawn so every neuron can be seen and picked (mtprune.plots.binned_heatmap,
window_heatmap; ui.unit_views' windows): a single strong neuron shows in its bin and a click on the
bin picks it; a window is one cell per neuron, on the overview's colour scale; a brush becomes a
window no wider than a click can tell apart. No streamlit, no model."""

from __future__ import annotations

import numpy as np
import pytest

from mtprune import plots
from ui import unit_views as UV


def _map(seed=0, layers=6, width=1536):
    a = np.random.default_rng(seed).random((layers, width)).astype(np.float32) * 0.01
    a[2, 1265] = 1.0  # one strong neuron among 1,536
    return a


def test_one_strong_neuron_colours_its_bin_and_a_click_there_picks_it():
    a = _map()
    fig = plots.binned_heatmap(a, group="encoder.ffn", scale="linear", layer_reliability=[0.9] * 6)
    heat, pick = fig.data
    z = np.asarray(heat.z)
    assert z.shape == (6, 64)  # 24 neurons a bin
    b = 1265 // 24
    assert z[2, b] == pytest.approx(1.0) and np.argmax(z[2]) == b
    np.testing.assert_allclose(z[0, 3], a[0, 72:96].max(), rtol=1e-6)  # every bin: its strongest neuron
    cd = np.asarray(pick.customdata)
    hit = [i for i, (x, y) in enumerate(zip(pick.x, pick.y)) if y == 2 and x == pytest.approx(b * 24 + 11.5)][0]
    assert (int(cd[hit, 0]), int(cd[hit, 1])) == (1265, 1)  # the unit a click picks, its rank
    assert cd[hit, 3] == pytest.approx(0.9)  # the layer's reliability, where score_heatmap keeps it
    assert pick.text[hit].startswith("1248-1271 (mean score ")
    assert fig.layout.xaxis.range == (-0.5, 1535.5)  # the units' own positions


def test_a_sorted_overview_bins_ranks():
    a = _map(1)
    fig = plots.binned_heatmap(a, group="encoder.ffn", sort_units=True, scale="log")
    cd = np.asarray(fig.data[1].customdata)
    first = [i for i, (x, y) in enumerate(zip(fig.data[1].x, fig.data[1].y)) if y == 2 and x == pytest.approx(11.5)][0]
    assert int(cd[first, 0]) == 1265 and int(cd[first, 1]) == 1  # the first bin holds rank 1
    assert "sorted by score" in fig.layout.xaxis.title.text


def test_a_window_is_one_cell_per_neuron_on_the_overviews_scale():
    a = _map()
    fig = plots.window_heatmap(a, 1250, 1281, group="encoder.ffn", scale="log", selected=(2, 1265))
    heat, pick = fig.data
    assert list(heat.x) == list(range(1250, 1281)) and np.asarray(heat.z).shape == (6, 31)
    full = plots.binned_heatmap(a, group="encoder.ffn", scale="log").data[0]
    assert (heat.zmin, heat.zmax) == pytest.approx((np.nanmin(np.log10(a)), np.nanmax(full.z)), rel=1e-5)
    cd = np.asarray(pick.customdata)
    assert sorted({int(u) for u in cd[:, 0]}) == list(range(1250, 1281))
    assert all(int(u) == x for u, x in zip(cd[:, 0], pick.x))  # a point's unit is where it is drawn
    shape = fig.layout.shapes[0]
    assert (shape.x0, shape.x1, shape.y0, shape.y1) == (1264.5, 1265.5, 1.5, 2.5)
    with pytest.raises(ValueError, match="does not fit"):
        plots.window_heatmap(a, 1500, 1600)


def test_a_brush_becomes_a_window_a_click_can_use():
    assert UV.window_of_box({"x": [99.6, 140.2]}, 1536) == ((100, 140), False)
    assert UV.window_of_box({"x": [10.0, 500.0]}, 1536) == ((10, 10 + plots.MAX_WINDOW - 1), True)
    assert UV.window_of_box({"x": [-30.0, 5.2]}, 1536) == ((0, 5), False)
    assert UV.window_around(1265, 1536) == (1241, 1288)
    assert UV.window_around(3, 1536) == (0, 47) and UV.window_around(1530, 1536) == (1488, 1535)
    a = _map()
    assert plots.strongest_bin_center(a, scale="linear") == 1260  # the middle of bin 1248-1271
    assert UV.position_of(a, 2, 1265, sort_units=True) == 0 and UV.position_of(a, 2, 1265, sort_units=False) == 1265
