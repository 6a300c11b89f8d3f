"""Model and task: what the sidebar selected, its size, its units per layer, its dense metric."""

PAGE = {"section": "Explore", "title": "Model and task", "icon": ":material/memory:", "order": 1, "default": True}  # read by app.py

import streamlit as st

from mtprune.text import human_count
from ui import evaluations as E
from ui import session as S
from ui import views as V
from ui import widgets as W

st.title("Model and task")
st.markdown("**mtprune finds which units (FFN neurons, attention heads) each task of a multi-task model needs and "
            "removes the rest, without retraining.** Start with **Attribution heatmaps**, or take the guided tour "
            "in **Learn the method**.")
ctx = S.need_model()
f = ctx.facts
st.caption("Pick the model, the task and the attribution settings in the sidebar; every page uses them.")

c1, c2, c3, c4 = st.columns(4)
c1.metric("Model", f["name"])
c2.metric("Parameters", human_count(f["parameters"]), help=f"{f['parameters']:,} parameters")
c3.metric("Layers", f["layers"])
c4.metric("Format", f["format"], help=f["architecture"])

left, right = st.columns([2, 3])
with left:
    st.subheader("Prunable units per layer")
    st.dataframe(V.units_table(f), width="stretch")
    st.caption("FFN neurons are the hidden units of each feed-forward block; heads are the attention "
               "heads. Each can be scored and removed on its own.")
with right:
    t = ctx.task
    st.subheader(f"Task: {t.name}")
    st.markdown(f"{t.description.capitalize() if t.description else ''}  \n"
                f"**Input:** {', '.join(t.fields)}  \n**Labels:** {', '.join(t.labels)}  \n"
                f"**Splits:** {', '.join(t.splits)} · **metrics:** {', '.join(t.metrics)}")
    if ctx.task_error:
        W.error(ctx.task_error)
        st.stop()
    st.markdown(f"Served by head **{ctx.adapter.head_for(t)}** of this model.")
    rec, what = V.recorded_accuracy(ctx.adapter, t)
    limit = W.rows_input("Evaluation examples", "model.limit", 200, help="the first N labeled rows of the split")
    if st.button(f"Measure the dense metric on {t.name}/{ctx.split}", key="model.eval"):
        bar = st.progress(0.0, text="evaluating the dense model...")
        try:
            res = E.evaluate(ctx, t.name, ctx.split, limit, None, W.eta_progress(bar, "evaluating the dense model, rows"))
            E.record_run(ctx, V.history_record(ctx.model_name, res, method="dense", how="dense"))
        except Exception as exc:  # MtpruneError, or data that does not load
            W.error(exc)
        bar.empty()
    res = E.find_eval(ctx, t.name, ctx.split, limit)
    shown = st.columns(2)
    if res is not None:
        lo, hi = res.interval()
        rows = f"{res.n:,} {res.split} row{'' if res.n == 1 else 's'}"
        shown[0].metric(f"Measured accuracy ({rows})", f"{res.accuracy:.3f}",
                        help=", ".join(f"{k} {v:.4f}" for k, v in res.metrics.items()))
        shown[0].caption(f"95% interval {lo:.3f}-{hi:.3f} (Wilson)")
    col = shown[1 if res is not None else 0]
    col.metric("Recorded accuracy", f"{rec:.3f}" if rec is not None else "not measured",
               help="from the model's own files (tasks.json, or what mtprune measured on a pruned model)")
    col.caption(what)

st.divider()
st.markdown("**Next:** score the units on **Attribution heatmaps**, then set a sparsity on **Prune and "
            "evaluate**. New here? **Learn the method** walks through it step by step.")
cols = st.columns(3)
cols[0].page_link("app_pages/heatmaps.py", label="Attribution heatmaps", icon=":material/grid_on:")
cols[1].page_link("app_pages/prune.py", label="Prune and evaluate", icon=":material/content_cut:")
cols[2].page_link("app_pages/guide.py", label="Learn the method", icon=":material/school:")
