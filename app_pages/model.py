"""Model and task: what the sidebar selected, its size, its units per layer, its dense metric."""

PAGE = {"section": "Explore", "title": "Model and task", "icon": ":material/memory:", "order": 1, "default": True}  # read by app.py

import streamlit as st

from mtprune.text import human_count
from ui import common as C
from ui import views as V

ctx = C.need_model()
f = ctx.facts
st.title("Model and task")
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
        C.error(ctx.task_error)
        st.stop()
    st.markdown(f"Served by head **{ctx.adapter.head_for(t)}** of this model.")
    rec = V.recorded_metric(ctx.adapter, t)
    limit = st.number_input("Evaluation examples", min_value=1, max_value=100000, value=200, step=50,
                            key="model.limit", persist_state="session",
                            help="the first N labeled rows of the split")
    if st.button(f"Measure the dense metric on {t.name}/{ctx.split}", key="model.eval"):
        bar = st.progress(0.0, text="evaluating the dense model...")
        try:
            C.evaluate(ctx, t.name, ctx.split, int(limit), None,
                       lambda d, n: bar.progress(d / n, text=f"evaluating the dense model: {d} / {n}"))
        except Exception as exc:  # MtpruneError, or data that does not load
            C.error(exc)
        bar.empty()
    res = C.find_eval(ctx, t.name, ctx.split, int(limit))
    shown = st.columns(2)
    if res is not None:
        shown[0].metric(f"Dense accuracy ({res.n} {res.split} rows)", f"{res.accuracy:.3f}",
                        help=", ".join(f"{k} {v:.4f}" for k, v in res.metrics.items()))
    if rec is not None:
        shown[1 if res is not None else 0].metric("Recorded validation accuracy", f"{rec:.3f}",
                                                  help="from the model's tasks.json (the whole validation split)")

st.divider()
st.markdown("**Next:** score the units on **Attribution heatmaps**, then set a sparsity on **Prune and "
            "evaluate**. New here? **Learn the method** walks through it step by step.")
cols = st.columns(3)
cols[0].page_link("app_pages/heatmaps.py", label="Attribution heatmaps", icon=":material/grid_on:")
cols[1].page_link("app_pages/prune.py", label="Prune and evaluate", icon=":material/content_cut:")
cols[2].page_link("app_pages/guide.py", label="Learn the method", icon=":material/school:")
