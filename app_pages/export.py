"""Export: the mask, the scores, the hard-pruned model and the charts, as downloads; and open a
mask file to look at it."""

PAGE = {"section": "Share and learn", "title": "Export", "icon": ":material/download:", "order": 6}  # read by app.py

import streamlit as st

from mtprune import plots
from mtprune.errors import MtpruneError
from mtprune.masks import kinds_in, mask_from_bytes, mask_to_bytes
from mtprune.pruning import count_parameters, hard_prune, hard_prune_problem
from mtprune.text import human_count
from mtprune.units import ordered_groups
from ui import common as C
from ui import state
from ui import views as V

ctx = C.need_task()
st.title("Export")
scores, note = C.scores_or_button(ctx, key="export.compute")
kinds = kinds_in(scores)
settings = state.prune_settings(kinds)
sparsity, scope = settings["sparsity"], settings["scope"]
try:
    mask = C.mask_for_settings(ctx, scores, settings)
except Exception as exc:
    C.error(exc)
    st.stop()
if settings["mode"] == "budget":
    stem = f"{ctx.task.name}-{ctx.spec.method}-flops{round(100 * float(settings['budget'].split(':')[1]))}"
    st.caption(f"The mask of **Prune and evaluate**: budget {settings['budget']} over heads and FFN neurons, "
               f"from {ctx.spec.describe()}.")
else:
    stem = f"{ctx.task.name}-{ctx.spec.method}-" + "-".join(f"{k}{round(100 * p)}" for k, p in sparsity.items())
    st.caption(f"The mask of **Prune and evaluate**: {', '.join(f'{k} {p:.0%}' for k, p in sparsity.items())}, "
               f"{scope} scope, from {ctx.spec.describe()}.")

st.subheader("Mask and scores")
c = st.columns(3)
c[0].download_button("Mask (JSON)", mask_to_bytes(mask, "json"), file_name=f"{stem}.mask.json",
                     mime="application/json", key="export.mask_json", icon=":material/data_object:",
                     on_click="ignore")
c[1].download_button("Mask (safetensors)", mask_to_bytes(mask, "safetensors"),
                     file_name=f"{stem}.mask.safetensors", mime="application/octet-stream",
                     key="export.mask_st", icon=":material/grid_on:", on_click="ignore")
c[2].download_button("Scores (CSV)", lambda: scores.to_frame().to_csv(index=False).encode(), file_name=f"{stem}.scores.csv",
                     mime="text/csv", key="export.scores", icon=":material/table:", on_click="ignore")

st.subheader("Pruned model")
st.caption("The model with the pruned units removed (smaller weight matrices), as a zip of a model "
           "directory; `mtprune eval --model <dir>` and the sidebar's local-directory option load it.")


def _zip() -> bytes:
    from mtprune.checkpoints import zip_model

    with C.model_busy(ctx):
        small = hard_prune(ctx.adapter, mask)
    return zip_model(small, mask)


problem = hard_prune_problem(ctx.adapter, mask)
if problem:
    st.caption(f":orange[{problem}. Set the heads slider to 0% to download a hard-pruned model.]")
st.download_button("Hard-pruned model (zip)", _zip, file_name=f"{stem}.pruned.zip", mime="application/zip",
                   key="export.model", icon=":material/folder_zip:", on_click="ignore", disabled=bool(problem),
                   help="built when you click: takes a few seconds")

st.subheader("Charts")
groups = ordered_groups(scores.arrays)
view = state.heatmap_view()  # as on Attribution heatmaps
charts = {}
for g in groups:
    charts[f"attribution heatmap, {plots.group_label(g)}"] = (
        lambda g=g: plots.score_heatmap(scores.arrays[g], group=g, **view))
    charts[f"mask, {plots.group_label(g)}"] = (
        lambda g=g: plots.keep_heatmap(mask.keep[g], mask.n_units[g], scores=scores.arrays[g], group=g,
                                       sort_units=True))
    charts[f"score distribution, {plots.group_label(g)}"] = (
        lambda g=g: plots.score_distribution(scores.arrays[g], group=g))
which = st.selectbox("Chart", list(charts), key="export.chart", persist_state="session")
fig = charts[which]()
C.show_figure(fig, key="export.preview")
slug = which.replace(",", "").replace(" ", "-")
d1, d2 = st.columns(2)
d1.download_button("PNG", lambda: plots.figure_png(fig), file_name=f"{stem}.{slug}.png", mime="image/png",
                   key="export.png", icon=":material/image:", on_click="ignore",
                   help="rendered when you click (a few seconds)")
d2.download_button("HTML", lambda: plots.figure_html(fig), file_name=f"{stem}.{slug}.html", mime="text/html",
                   key="export.html", icon=":material/html:", on_click="ignore",
                   help="an interactive page that opens offline")

st.divider()
st.subheader("Open a mask file")
up = st.file_uploader("A mask saved by mtprune (.json or .safetensors)", key="export.upload")
if up is not None:
    try:
        loaded = mask_from_bytes(up.name, up.getvalue())
        loaded.check_matches(ctx.adapter)
    except MtpruneError as exc:
        C.error(exc)
    else:
        meta = loaded.meta or {}
        st.success(f"{up.name}: sparsity {loaded.sparsity:.0%}, {loaded.scope} scope, kinds {loaded.kinds}"
                   + (f", task {meta['task']}" if meta.get("task") else ""), icon=":material/check:")
        p = count_parameters(ctx.adapter, loaded)
        st.metric("Parameters with this mask", human_count(p),
                  delta=f"{(p - ctx.facts['parameters']) / ctx.facts['parameters']:+.1%}", delta_color="inverse")
        st.dataframe(V.mask_table(loaded))
        for g in ordered_groups(loaded.groups):
            if loaded.kept(g) < loaded.total(g):
                C.show_figure(plots.keep_heatmap(loaded.keep[g], loaded.n_units[g], group=g),
                              key=f"export.loaded.{g}")
