"""Prune and evaluate: sparsity per unit kind, the mask as it changes, dense against pruned."""

import time

import streamlit as st

from mtprune import plots
from mtprune.masks import kinds_in, mask_from_scores
from mtprune.pruning import count_parameters
from mtprune.text import human_count
from mtprune.units import ordered_groups
from ui import common as C
from ui import state

ctx = C.need_task()
st.title("Prune and evaluate")
st.caption(f"{ctx.model_name} · {ctx.task.name} · scores: {ctx.spec.describe()}")

scores, note = C.scores_or_button(ctx, key="prune.compute")
kinds = kinds_in(scores)


@st.fragment
def mask_and_evaluation():
    """The sliders, the mask they make and its evaluation: a slider move reruns only this."""
    t0 = time.perf_counter()
    cols = st.columns(len(kinds) + 1)
    sparsity = {}
    for col, kind in zip(cols, kinds):
        label = "FFN neurons pruned" if kind == "ffn" else "Attention heads pruned"
        pct = col.slider(label, 0, 100, 50 if kind == "ffn" else 0, step=5 if kind == "ffn" else 1,
                         format="%d%%", key=f"prune.{kind}", persist_state="session",
                         help="the share of this kind of unit to remove")
        sparsity[kind] = pct / 100
    scope = cols[-1].radio("Scope", ["layer", "global"], key="prune.scope", persist_state="session",
                           format_func={"layer": "per layer (same rate everywhere)",
                                        "global": "global (layers compete)"}.get)
    try:
        mask = mask_from_scores(scores, sparsity, scope=scope)
    except Exception as exc:
        C.error(exc)
        st.stop()
    state.remember_prune_settings(sparsity, scope)  # Export, Overlap and Unseen start from it

    dense_params = ctx.facts["parameters"]
    params = count_parameters(ctx.adapter, mask)
    m = st.columns(len(kinds) + 1)
    m[0].metric("Parameters", human_count(params), delta=f"{(params - dense_params) / dense_params:+.1%}",
                delta_color="inverse", help=f"{params:,} of {dense_params:,}")
    for col, g in zip(m[1:], [g for g in ordered_groups(mask.groups) if g.split(".")[1] in kinds]):
        col.metric(f"{plots.group_label(g)} kept", f"{mask.kept(g):,} / {mask.total(g):,}")

    show_sorted = st.toggle("Order units by score", value=False, key="prune.sorted", persist_state="session",
                            help="kept units line up on the left of every layer")
    for g in ordered_groups(mask.groups):
        if g.split(".")[1] not in kinds:
            continue
        heatmap = plots.keep_heatmap(mask.keep[g], mask.n_units[g], scores=scores.arrays[g], group=g,
                                     sort_units=show_sorted)
        if scope == "global":  # layers keep different numbers of units: show how many
            left, right = st.columns([3, 1.3])
            with left:
                C.show_figure(heatmap, key=f"prune.map.{g}")
            with right:
                C.show_figure(plots.kept_per_layer(mask.keep[g], mask.n_units[g], group=g),
                              key=f"prune.bars.{g}")
        else:
            C.show_figure(heatmap, key=f"prune.map.{g}")

    st.subheader("Evaluate the pruned model")
    e1, e2 = st.columns([1, 3])
    limit = e1.number_input("Evaluation examples", min_value=1, max_value=100000, value=200, step=50,
                            key="prune.limit", persist_state="session",
                            help=f"the first N labeled rows of {ctx.task.name}/{ctx.split}")
    e2.write("")
    e2.write("")
    run_eval = e2.button(f"Evaluate on {ctx.task.name}/{ctx.split}", key="prune.evaluate", type="primary")
    digest = mask.digest()
    if run_eval:
        try:
            C.evaluate_dense_and_pruned(ctx, ctx.task.name, ctx.split, int(limit), mask)
        except Exception as exc:
            C.error(exc)
    dense = C.find_eval(ctx, ctx.task.name, ctx.split, int(limit))
    pruned = C.find_eval(ctx, ctx.task.name, ctx.split, int(limit), digest)
    if dense is not None and pruned is not None:
        r = st.columns(3)
        r[0].metric("Dense accuracy", f"{dense.accuracy:.3f}")
        r[1].metric("Pruned accuracy", f"{pruned.accuracy:.3f}", delta=f"{pruned.accuracy - dense.accuracy:+.3f}")
        r[2].metric("Examples", pruned.n, help=f"{ctx.task.name}/{ctx.split}")
        names = list(dense.metrics)
        C.show_figure(plots.dense_vs_pruned(names, [dense.metrics[n] for n in names],
                                            [pruned.metrics[n] for n in names],
                                            metric="score", title=f"{ctx.task.name}/{ctx.split}: dense against pruned"),
                      key="prune.result")
    elif st.session_state.get("_prune.evaluated_once"):
        st.caption("The mask changed since the last evaluation: press Evaluate again.")
    else:
        st.caption("Press Evaluate to run the pruned model on the split (the dense model is evaluated once "
                   "and remembered).")
    if run_eval:
        st.session_state["_prune.evaluated_once"] = True

    st.session_state["_prune.fragment_seconds"] = time.perf_counter() - t0


mask_and_evaluation()

st.subheader("Metric against sparsity")
C.sweep_section(ctx, key="prune.sweep")
