"""Export: the mask, the scores, the hard-pruned model and the charts, as downloads; and open a
mask file to look at it."""

PAGE = {"section": "Share and learn", "title": "Export", "icon": ":material/download:", "order": 6}  # read by app.py

import streamlit as st

from mtprune import plots
from mtprune.errors import MtpruneError
from mtprune.export import default_name as export_name
from mtprune.masks import kinds_in, mask_to_bytes
from mtprune.pruning import count_parameters, hard_prune_problem
from mtprune.solvers import all_solvers
from mtprune.text import human_count
from mtprune.units import ordered_groups
from ui import downloads
from ui import evaluations as E
from ui import session as S
from ui import state
from ui import views as V
from ui import widgets as W

ctx = S.need_task("Export")
scores, note = E.scores_or_button(ctx, key="export.compute")
kinds = kinds_in(scores)
settings = state.prune_settings(kinds)
sparsity, scope = settings["sparsity"], settings["scope"]
try:
    mask = E.mask_for_settings(ctx, scores, settings)
except Exception as exc:
    W.error(exc)
    st.stop()
stem = export_name(ctx.adapter, ctx.task, mask=mask)  # model-task-method-mask: the mask and its scores
if settings["mode"] == "budget":
    st.caption(f"The mask of **Prune and evaluate**: budget {settings['budget']} over heads and FFN neurons, "
               f"from {scores.spec.describe()}. Files are named `{stem}`.")
else:
    st.caption(f"The mask of **Prune and evaluate**: {', '.join(f'{k} {p:.0%}' for k, p in sparsity.items())}, "
               f"{scope} scope, from {scores.spec.describe()}. Files are named `{stem}`.")

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
st.caption(f"The model with the pruned units removed (smaller weight matrices) and only {ctx.task.name}'s head, "
           "with a model card (README.md: source, mask, repair, measured accuracy, parameters and FLOPs kept, how to "
           "load it with and without mtprune); `mtprune eval --model <dir>` and the sidebar's local-directory option "
           "load it.")
SOLVERS = all_solvers()  # repair solvers (mtprune.solvers): the registry
r1, r2 = st.columns(2)
solver = r1.selectbox("Repair", list(SOLVERS), key="export.repair", persist_state="session", bind=W.URL,
                      format_func=lambda n: SOLVERS[n].label,
                      help="refit the pruned model's out projections before it is written, as **Prune and "
                           "evaluate** does (its accuracy is known only if you evaluated that repair there)")
calib = int(r2.number_input("Calibration rows", min_value=16, max_value=8192, value=512, step=128,
                            key="export.calib", persist_state="session", bind=W.URL,
                            disabled=not SOLVERS[solver].refits,
                            help=f"{ctx.task.name} training rows the repair reads (their labels are not read)"))
solver = solver if SOLVERS[solver].refits else "none"
model_stem = export_name(ctx.adapter, ctx.task, mask=mask, repair=solver)

problem = hard_prune_problem(ctx.adapter, mask)
if problem:
    st.caption(f":orange[{problem}. Set the heads slider to 0 to download a hard-pruned model.]")
measured = downloads.measured_for(ctx, mask, solver, calib)
what = "this mask" + ("" if solver == "none" else f" repaired by {solver} on {calib} rows")
st.caption(f"Its model card records {ctx.task.name}'s accuracy measured with {what}: "
           + (f"{measured[ctx.task.name].describe()}." if measured else "not measured yet (evaluate it on **Prune and "
                                                                         "evaluate** first), so it says not measured."))
flops = None if problem else E.flops_kept(ctx, mask)
downloads.build_and_download(
    ctx, "model", mask, model_stem, measured, solver, calib, flops, label="Hard-pruned model (zip)",
    disabled=bool(problem),
    help=f"unzips to a folder {model_stem}/ holding {ctx.task.name}'s head alone and README.md (a few seconds; a "
         "repair takes longer)")
from mtprune.formats import ClassifierAdapter  # noqa: E402

onnx_problem = problem or (None if isinstance(ctx.adapter, ClassifierAdapter) else
                           f"a {ctx.adapter.format} model scores label words: ONNX export takes classifier models")
downloads.build_and_download(
    ctx, "onnx", mask, f"{model_stem}-onnx", measured, solver, calib, flops, label="Pruned model as ONNX (zip)",
    disabled=bool(onnx_problem),
    help=f"model.onnx (the encoder and {ctx.task.name}'s head: token ids in, logits out), the tokenizer, "
         "mtprune_onnx.json (labels, mask, the logit check against PyTorch) and README.md; runs in onnxruntime "
         "without mtprune, or `mtprune eval --model DIR` (20-40 s)" + (f". Not available: {onnx_problem}" if onnx_problem
                                                                      else ""))

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
W.show_figure(fig, key="export.preview")
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
loaded, up_name = W.uploaded_mask("A mask saved by mtprune (.json or .safetensors)", "export.upload", ctx.adapter)
if loaded is not None:
    meta = loaded.meta or {}
    st.success(f"{up_name}: sparsity {loaded.sparsity:.0%}, {loaded.scope} scope, kinds {loaded.kinds}"
               + (f", task {meta['task']}" if meta.get("task") else ""), icon=":material/check:")
    p = count_parameters(ctx.adapter, loaded)
    st.metric("Parameters with this mask", human_count(p),
              delta=f"{(p - ctx.facts['parameters']) / ctx.facts['parameters']:+.1%}", delta_color="inverse")
    st.dataframe(V.mask_table(loaded))
    for g in ordered_groups(loaded.groups):
        if loaded.kept(g) < loaded.total(g):
            W.show_figure(plots.keep_heatmap(loaded.keep[g], loaded.n_units[g], group=g),
                          key=f"export.loaded.{g}")
    st.markdown(f"**Evaluate this mask on {ctx.task.name}/{ctx.split}**")
    if meta.get("task") and meta["task"] != ctx.task.name:
        st.caption(f":orange[This mask was made for {meta['task']}; it is evaluated on {ctx.task.name}, the "
                   "sidebar's task.]")
    limit = W.rows_input("Evaluation examples", "export.limit", 200, help="the first N labeled rows of the split")
    if st.button("Evaluate the uploaded mask", key="export.evaluate", type="primary"):
        from mtprune.evaluation import compare

        try:
            dense, res = E.evaluate_dense_and_pruned(ctx, ctx.task.name, ctx.split, limit, loaded)
            E.record_run(ctx, V.history_record(ctx.model_name, res, compare(dense, res),
                                               method=str(meta.get("method", "uploaded")),
                                               how=f"uploaded {up_name}", params=p))
        except MtpruneError as exc:
            W.error(exc)
    dense = E.find_eval(ctx, ctx.task.name, ctx.split, limit)
    res = E.find_eval(ctx, ctx.task.name, ctx.split, limit, loaded.digest())
    if dense is not None and res is not None:
        from mtprune.evaluation import compare

        r = st.columns(2)
        W.show_metric(r[0], "Dense accuracy", dense)
        W.show_metric(r[1], "Accuracy with the uploaded mask", res, dense)
        W.show_verdict(compare(dense, res), "dense", "the uploaded mask")
