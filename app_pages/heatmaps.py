"""Attribution heatmaps: how much the task needs every unit, layer by layer; click a unit (on a
map, one layer's bars or the top-k table) to see what it does."""

PAGE = {"section": "Explore", "title": "Attribution heatmaps", "icon": ":material/grid_on:", "order": 2}  # read by app.py

import streamlit as st

from mtprune import plots
from mtprune.tasks import BENCHMARK
from mtprune.units import ordered_groups
from ui import evaluations as E
from ui import sections
from ui import session as S
from ui import state
from ui import unit_views as UV
from ui import views as V
from ui import wide_map
from ui import widgets as W

ctx = S.need_task("Attribution heatmaps")
st.caption(f"{ctx.model_name} · {E.describe(ctx)}")

scores, note = E.scores_or_button(ctx, key="heat.compute")
st.caption(f"Scores {note}. Click a cell, a bar or a row of the top units to look at that unit; on a wide map, brush "
           "the overview with its toolbar's Box select (or move the slider) to choose the window below it, where "
           "every neuron has a cell of its own." if note else "")
rel = V.reliabilities(scores)
sections.reliability_warning(scores, rel, key="heat.more", compute_key="heat.compute")

groups = ordered_groups(scores.arrays)
c1, c2, c3, c4 = st.columns([1.2, 1.6, 1, 1])
sort_units = c1.toggle("Sort units by score", key="heat.sort", persist_state="session", bind=W.URL,
                       help="order every layer's units from most to least needed")
# sorted layers coloured by their own percentile would all look the same: that view is not offered
scales = ["log", "linear"] + ([] if sort_units else ["percentile"])
W.reset_if_invalid("heat.scale", scales, "log")
scale = c2.segmented_control("Colour", scales, default="log", key="heat.scale", persist_state="session", bind=W.URL,
                             help="log: log10 of the score's magnitude (scores are heavy-tailed); linear: the score; "
                                  "percentile: the rank within the layer (not with sorted units: every layer "
                                  "would show the same gradient)") or "log"
k = c3.number_input("Top units", min_value=1, max_value=500, value=20, key="heat.k", persist_state="session",
                    bind=W.URL)
log_dist = c4.toggle("Log distribution", value=True, key="heat.logdist", persist_state="session", bind=W.URL)
state.remember_heatmap_view(sort_units, scale)  # Export draws the same

tabs = st.tabs([plots.group_label(g) for g in groups])
for tab, g in zip(tabs, groups):
    a = scores.arrays[g]
    with tab:
        st.caption(V.reliability_line(scores, rel, g))
        if a.shape[1] > plots.MAX_WINDOW:  # 1,536 neurons: binned overview, a brushed window one cell a neuron
            wide_map.draw(g, a, sort_units=sort_units, scale=scale, layer_reliability=V.layer_reliability(rel, g))
        else:
            ev = st.plotly_chart(plots.score_heatmap(a, group=g, sort_units=sort_units, scale=scale, pickable=True,
                                                     layer_reliability=V.layer_reliability(rel, g)),
                                 key=f"heat.map.{g}", on_select="rerun", selection_mode="points",
                                 config={"displaylogo": False})
            if state.new_selection(f"heat.map.{g}", dict(ev["selection"])):
                hit = V.picked_unit(ev["selection"]["points"])
                if hit:
                    state.select_unit(g, *hit)
                else:
                    st.info("That selection holds no unit: click one cell of the map.", icon=":material/touch_app:")
        n_layers = a.shape[0]
        if a.shape[1] > 64:  # a wide map (1,536 FFN neurons): one layer up close
            z1, z2 = st.columns([1, 3])
            zoom = z1.selectbox("Zoom into a layer", [None, *range(n_layers)], key=f"heat.zoom_layer.{g}",
                                format_func=lambda x: "no zoom" if x is None else f"layer {x}",
                                persist_state="session", bind=W.URL)
            if zoom is not None:
                zev = st.plotly_chart(plots.layer_bars(a, zoom, group=g, sort_units=sort_units),
                                      key=f"heat.zoom.{g}", on_select="rerun", selection_mode="points",
                                      config={"displaylogo": False})
                if state.new_selection(f"heat.zoom.{g}", dict(zev["selection"])):
                    hit = V.picked_unit(zev["selection"]["points"], layer=zoom)
                    if hit:
                        state.select_unit(g, *hit)
                    else:
                        st.info("That selection holds no unit: click one bar.", icon=":material/touch_app:")
        left, right = st.columns([2, 3])
        with left:
            st.markdown(f"**Top {int(k)} {plots.unit_word(g)}s** (select a row)")
            top = plots.top_units(a, int(k), group=g)
            tev = st.dataframe(top, hide_index=True, height=320, key=f"heat.top.{g}", on_select="rerun",
                               selection_mode="single-row",
                               column_config={"score": st.column_config.NumberColumn(format="%.4g")})
            rows = tev["selection"]["rows"]
            if state.new_selection(f"heat.top.{g}", {"rows": list(rows)}) and rows[0] < len(top):
                row = top.iloc[rows[0]]
                state.select_unit(g, int(row["layer"]), int(row[plots.unit_word(g)]))
        with right:
            W.show_figure(plots.score_distribution(a, group=g, log=log_dist), key=f"heat.dist.{g}")

# ----------------------------------------------------------------------------------------------
# the drill-down
st.divider()
st.subheader("One unit up close")
pick = state.selected_unit()
if pick is not None and (pick["group"] not in scores.arrays or not 0 <= pick["layer"] < scores.arrays[pick["group"]].shape[0]
                         or not 0 <= pick["unit"] < scores.n_units[pick["group"]][pick["layer"]]):
    W.error(f"this model has no unit {pick['group']} layer {pick['layer']} unit {pick['unit']}: pick another")
    state.clear_unit()
    pick = None
if pick is None:
    st.caption("Click a cell of a map, a bar of a zoomed layer or a row of the top units: its score in every task, "
               "the examples where it fires and what the task loses without it appear here.")
    st.stop()

from mtprune.probe import UnitRef, ablate_unit, unit_activations  # noqa: E402
from mtprune.unit_profile import unit_id  # noqa: E402

g, layer, unit = pick["group"], pick["layer"], pick["unit"]
ref = UnitRef(g, layer, unit)
kind = g.split(".")[1]
st.markdown(V.unit_line(scores, g, layer, unit, ctx.task.name, state.prune_settings([kind])["sparsity"][kind]))
st.page_link(UV.PAGE, label=f"Its page, {unit_id(ref)}: every task with intervals, the whole split, the masks that "
                            "keep it", icon=":material/open_in_new:", query_params={"unit": unit_id(ref)})

left, right = st.columns([2, 3])
with left:
    st.markdown("**Its score in every task**")
    tasks = list(dict.fromkeys([ctx.task.name] + [t for t in BENCHMARK if ctx.adapter.supports(t)]))
    have = {t: E.scores_for(ctx, ctx.spec.for_task(t))[0] for t in tasks}
    table = V.unit_task_table(have, g, layer, unit, selected=ctx.task.name)
    W.show_figure(plots.unit_across_tasks(table, title=f"{ref} in every task (percentile in its layer)"),
                  key="heat.unit.tasks")
    missing = [t for t, s in have.items() if s is None]
    if missing:
        st.caption(f"Not scored yet with these settings: {', '.join(missing)}.")
        if st.button("Score the other task" if len(missing) == 1 else f"Score the other {len(missing)} tasks",
                     key="heat.unit.compute"):
            try:
                for t in missing:
                    E.scores_for(ctx, ctx.spec.for_task(t), compute=True, label=f"attributing {t}")
            except Exception as exc:
                W.error(exc)
            st.rerun()
with right:
    st.markdown(f"**Where it fires in {ctx.task.name}/{ctx.split}**")
    n_rows = st.number_input("Rows to search", min_value=8, max_value=5000, value=100, step=50, key="heat.unit.rows",
                             persist_state="session", bind=W.URL,
                             help=f"the first N labeled rows of {ctx.task.name}/{ctx.split}")
    memo = (ctx.fingerprint, ctx.task.name, ctx.split, int(n_rows), str(ref))
    probes = state.store("probe")
    if memo not in probes:
        try:
            rows = E.eval_rows(ctx.task.name, ctx.split, int(n_rows))
            with st.spinner(f"running {len(rows)} rows with and without {ref}..."), S.model_busy(ctx):
                fired = unit_activations(ctx.adapter, ctx.task, rows, ref)
                effect = ablate_unit(ctx.adapter, ctx.task, rows, ref)
            probes[memo] = (fired, effect)
        except Exception as exc:
            W.error(exc)
            st.stop()
    fired, effect = probes[memo]
    rows = E.eval_rows(ctx.task.name, ctx.split, int(n_rows))
    order = sorted(range(len(fired)), key=lambda i: -fired[i].peak)[:5]
    peak = max((fired[i].peak for i in order), default=0.0)
    change = effect["change"]
    st.caption(f"Switched off alone, it moves P(gold) by {change.mean():+.4f} on average over these {len(rows)} rows "
               f"(largest drop {change.min():+.4f}, largest gain {change.max():+.4f}). Below: the 5 rows where it "
               "fires most; the stronger the colour, the stronger its activation at that token.")
    for i in order:
        f = fired[i]
        gold = ctx.task.labels[int(rows[f.index]["label"])]
        st.markdown(f"peak {f.peak:.3g} · gold **{gold}** · P(gold) {effect['p_gold'][f.index]:.3f} -> "
                    f"{effect['p_gold_without'][f.index]:.3f} without it "
                    f"(**{effect['change'][f.index]:+.4f}**)")
        st.html(V.tokens_html(f.tokens, f.values, peak=peak))
    st.dataframe({"row": [fired[i].index for i in order],
                  "peak activation": [round(fired[i].peak, 4) for i in order],
                  "P(gold)": [round(float(effect["p_gold"][fired[i].index]), 4) for i in order],
                  "P(gold) without it": [round(float(effect["p_gold_without"][fired[i].index]), 4) for i in order],
                  "change": [round(float(effect["change"][fired[i].index]), 4) for i in order]},
                 hide_index=True, key="heat.unit.table")
