"""A wide map (1,536 FFN neurons a layer) on **Attribution heatmaps**: an overview where every
layer's units are binned (each bin the colour of its strongest unit), a window of at most
:data:`mtprune.plots.MAX_WINDOW` units, one cell each, and a range slider between them. A click on
a bin opens its strongest unit and moves the window there; the overview's box select (its
toolbar) brushes the window; a click in the window opens exactly the unit clicked."""

from __future__ import annotations

import streamlit as st

from mtprune import plots
from ui import state
from ui import unit_views as UV
from ui import views as V

CONFIG = {"displaylogo": False}


def _selection(key: str) -> dict | None:
    """A chart's selection as it stands at the start of this run (before the chart is drawn again),
    once per new selection (:func:`ui.state.new_selection`), else None."""
    value = st.session_state.get(key)
    if not value:
        return None
    sel = dict(value.get("selection") or {})
    return sel if state.new_selection(key, sel) else None


def _overview_pick(g: str, a, sel: dict, range_key: str, sort_units: bool, what: str) -> None:
    width = a.shape[1]
    if sel.get("box"):
        (first, last), narrowed = UV.window_of_box(sel["box"][0], width)
        st.session_state[range_key] = (first, last)
        cut = f" (the first {plots.MAX_WINDOW} of the brush)" if narrowed else ""
        st.info(f"A box holds no unit to open: the window below now shows {what} {first}-{last}{cut}; click one there.",
                icon=":material/touch_app:")
        return
    hit = V.picked_unit(sel.get("points"))
    if not hit:
        st.info("That selection holds no unit: click one cell of the map.", icon=":material/touch_app:")
        return
    state.select_unit(g, *hit)
    st.session_state[range_key] = UV.window_around(UV.position_of(a, *hit, sort_units), width)


def draw(g: str, a, *, sort_units: bool, scale: str, layer_reliability=None) -> None:
    """The overview, the slider and the window of group ``g``'s scores ``a`` [layers, units]."""
    width = a.shape[1]
    word = plots.unit_word(g)
    what = "ranks" if sort_units else f"{word}s"
    map_key, win_key, range_key = f"heat.map.{g}", f"heat.window.{g}", f"heat.range.{g}"
    pick = state.selected_unit()
    if range_key not in st.session_state:
        pos = (UV.position_of(a, pick["layer"], pick["unit"], sort_units) if pick and pick["group"] == g else
               plots.strongest_bin_center(a, sort_units=sort_units, scale=scale))
        st.session_state[range_key] = UV.window_around(pos, width)
    sel = _selection(map_key)
    if sel is not None:
        _overview_pick(g, a, sel, range_key, sort_units, what)
    sel = _selection(win_key)
    if sel is not None:
        hit = V.picked_unit(sel.get("points"))
        if hit:
            state.select_unit(g, *hit)
        else:
            st.info("That selection holds no unit: click one cell of the window.", icon=":material/touch_app:")
    (first, last), narrowed = UV.clamp_window(*st.session_state[range_key], width)
    st.plotly_chart(plots.binned_heatmap(a, group=g, sort_units=sort_units, scale=scale, window=(first, last + 1),
                                         layer_reliability=layer_reliability),
                    key=map_key, on_select="rerun", selection_mode=("points", "box"), config=CONFIG)
    st.slider(f"{what.capitalize()} in the window (the red frame above; up to {plots.MAX_WINDOW}, so that a click "
              f"lands on the {word} aimed at)", 0, width - 1, key=range_key)
    if narrowed:
        st.caption(f"The range is wider than {plots.MAX_WINDOW} {what}: the window shows {first}-{last}.")
    pick = state.selected_unit()
    chosen = (pick["layer"], pick["unit"]) if pick and pick["group"] == g else None
    st.plotly_chart(plots.window_heatmap(a, first, last + 1, group=g, sort_units=sort_units, scale=scale,
                                         layer_reliability=layer_reliability, selected=chosen),
                    key=win_key, on_select="rerun", selection_mode="points", config=CONFIG)
