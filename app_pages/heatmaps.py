"""Attribution heatmaps: how much the task needs every unit, layer by layer."""

PAGE = {"section": "Explore", "title": "Attribution heatmaps", "icon": ":material/grid_on:", "order": 2}  # read by app.py

import streamlit as st

from mtprune import plots
from mtprune.units import ordered_groups
from ui import common as C
from ui import state

ctx = C.need_task()
st.title("Attribution heatmaps")
st.caption(f"{ctx.model_name} · {ctx.spec.describe()}")

scores, note = C.scores_or_button(ctx, key="heat.compute")
st.caption(f"Scores {note}." if note else "")

groups = ordered_groups(scores.arrays)
c1, c2, c3, c4 = st.columns([1.2, 1.6, 1, 1])
sort_units = c1.toggle("Sort units by score", key="heat.sort", persist_state="session",
                       help="order every layer's units from most to least needed")
scale = c2.segmented_control("Colour", ["log", "linear", "percentile"], default="log", key="heat.scale",
                             persist_state="session",
                             help="log: log10 of the score's magnitude (scores are heavy-tailed); linear: the score; "
                                  "percentile: the rank within the layer")
k = c3.number_input("Top units", min_value=1, max_value=500, value=20, key="heat.k", persist_state="session")
log_dist = c4.toggle("Log distribution", value=True, key="heat.logdist", persist_state="session")
state.remember_heatmap_view(sort_units, scale or "log")  # Export draws the same

tabs = st.tabs([plots.group_label(g) for g in groups])
for tab, g in zip(tabs, groups):
    a = scores.arrays[g]
    with tab:
        C.show_figure(plots.score_heatmap(a, group=g, sort_units=sort_units, scale=scale or "log"),
                      key=f"heat.map.{g}")
        left, right = st.columns([2, 3])
        with left:
            st.markdown(f"**Top {int(k)} {plots.unit_word(g)}s**")
            st.dataframe(plots.top_units(a, int(k), group=g), hide_index=True, height=320,
                         column_config={"score": st.column_config.NumberColumn(format="%.4g")})
        with right:
            C.show_figure(plots.score_distribution(a, group=g, log=log_dist), key=f"heat.dist.{g}")
