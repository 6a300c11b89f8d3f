"""Task overlap: which kept units two tasks share (Jaccard), over the model and per layer."""

PAGE = {"section": "Compare", "title": "Task overlap", "icon": ":material/join_inner:", "order": 4}  # read by app.py

import streamlit as st

from mtprune import plots
from mtprune.errors import MtpruneError
from mtprune.experiments.overlap import OverlapConfig, run_overlap
from mtprune.tasks import BENCHMARK
from ui import common as C
from ui import state
from ui import views as V

ctx = C.need_model()
st.title("Task overlap")
st.caption("Each task gets its own mask from its own attribution scores (the sidebar's settings); the "
           "Jaccard similarity |A and B| / |A or B| of two masks' kept units says how much of the pruned "
           "model two tasks share. Random masks of the same size give the dotted chance level.")

served = [t for t in V.task_options(ctx.adapter) if ctx.adapter.supports(t)]
benchmark = [t for t in served if t in BENCHMARK]
default = list(dict.fromkeys(([ctx.task.name] if ctx.task.name in benchmark else []) + benchmark))[:3]
c = st.columns([3, 1.3, 1.2])
tasks = c[0].multiselect("Tasks", benchmark, default=default, key="overlap.tasks", persist_state="session")
kind = c[1].radio("Units", ["ffn", "heads"], key="overlap.kind", persist_state="session", horizontal=True,
                  format_func={"ffn": "FFN neurons", "heads": "heads"}.get)
pct = c[2].slider("Pruned", 5, 95, 50, step=5, format="%d%%", key="overlap.sparsity", persist_state="session")
scope = state.prune_settings([kind])["scope"]
if len(tasks) < 2:
    st.info("Choose two tasks or more.", icon=":material/info:")
    st.stop()

specs = {t: ctx.spec.for_task(t) for t in tasks}
have = {t: C.scores_for(ctx, s)[0] for t, s in specs.items()}
missing = [t for t, s in have.items() if s is None]
if missing:
    st.info(f"Attribution scores are missing for {', '.join(missing)} "
            f"({specs[missing[0]].describe().split(';', 1)[-1].strip()}).", icon=":material/info:")
    if st.button(f"Compute them ({len(missing)} task{'s' if len(missing) > 1 else ''})", key="overlap.compute",
                 type="primary"):
        try:
            for t in missing:
                have[t] = C.scores_for(ctx, specs[t], compute=True, label=f"attributing {t}")[0]
        except MtpruneError as exc:
            C.error(exc)
            st.stop()
        st.rerun()
    st.stop()

cfg = OverlapConfig(tasks=tuple(tasks), method=ctx.spec.method, sparsity=pct / 100, kinds=kind, scope=scope,
                    examples=ctx.spec.examples, variant=ctx.spec.variant, seed=ctx.spec.seed)
result = run_overlap(ctx.adapter, cfg, scores=have)
left, right = st.columns(2)
with left:
    C.show_figure(plots.overlap_heatmap(result.matrix,
                                        title=f"shared kept {plots.KIND_LABELS[kind]} at {pct}% pruned"),
                  key="overlap.matrix")
with right:
    C.show_figure(plots.overlap_layers_figure(result.per_layer, title="shared kept units per layer"),
                  key="overlap.lines")
st.caption(f"Random masks keeping as many units would share about {result.chance:.2f}.")
