"""Prune and evaluate: a sparsity per unit kind or one FLOPs budget, the mask as it changes, and
the dense, pruned and repaired models side by side."""

PAGE = {"section": "Explore", "title": "Prune and evaluate", "icon": ":material/content_cut:", "order": 3}  # read by app.py

import time

import streamlit as st

from mtprune import plots
from mtprune.masks import kinds_in
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
    settings = state.prune_settings(kinds)
    mode = st.segmented_control(
        "Choose the units to keep by", ["sparsity", "budget"], default="sparsity", key="prune.mode",
        persist_state="session",
        format_func={"sparsity": "a share of each kind", "budget": "one FLOPs budget over all layers"}.get,
        help="a share of each kind: the same sparsity in every layer (or one ranking per kind); one FLOPs "
             "budget: the best-scoring heads and FFN neurons of all layers that fit it (Kwon et al.)") or "sparsity"
    sparsity, scope, budget = settings["sparsity"], settings["scope"], settings["budget"]
    if mode == "budget":
        keep = st.slider("FLOPs kept", 10, 100, int(round(100 * float(budget.split(":")[1]))), step=5,
                         format="%d%%", key="prune.flops", persist_state="session",
                         help="the share of the FLOPs of all heads and FFN neurons (at the task's average "
                              "length) the pruned model may keep")
        budget = f"flops:{keep / 100:g}"
        settings = {**settings, "mode": "budget", "budget": budget}
    else:
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
        settings = {**settings, "mode": "sparsity", "sparsity": sparsity, "scope": scope}
    try:
        mask = C.mask_for_settings(ctx, scores, settings)
    except Exception as exc:
        C.error(exc)
        st.stop()
    state.remember_prune_settings(settings["sparsity"], settings["scope"], settings["mode"], settings["budget"])

    dense_params = ctx.facts["parameters"]
    params = count_parameters(ctx.adapter, mask)
    m = st.columns(len(kinds) + 2)
    m[0].metric("Parameters", human_count(params), delta=f"{(params - dense_params) / dense_params:+.1%}",
                delta_color="inverse", help=f"{params:,} of {dense_params:,}")
    _, seq = C.flops_costs(ctx)
    m[1].metric("FLOPs kept", f"{C.flops_kept(ctx, mask):.0%}",
                help=f"of the FLOPs of all heads and FFN neurons, at {ctx.task.name}'s average length ({seq:.0f} tokens)")
    for col, g in zip(m[2:], [g for g in ordered_groups(mask.groups) if g.split(".")[1] in kinds]):
        col.metric(f"{plots.group_label(g)} kept", f"{mask.kept(g):,} / {mask.total(g):,}")

    show_sorted = st.toggle("Order units by score", value=False, key="prune.sorted", persist_state="session",
                            help="kept units line up on the left of every layer")
    for g in ordered_groups(mask.groups):
        if g.split(".")[1] not in kinds:
            continue
        heatmap = plots.keep_heatmap(mask.keep[g], mask.n_units[g], scores=scores.arrays[g], group=g,
                                     sort_units=show_sorted)
        if mask.scope != "layer":  # layers keep different numbers of units: show how many
            left, right = st.columns([3, 1.3])
            with left:
                C.show_figure(heatmap, key=f"prune.map.{g}")
            with right:
                C.show_figure(plots.kept_per_layer(mask.keep[g], mask.n_units[g], group=g),
                              key=f"prune.bars.{g}")
        else:
            C.show_figure(heatmap, key=f"prune.map.{g}")

    st.subheader("Evaluate the pruned model")
    e1, e2, e3, e4 = st.columns([1, 1, 1, 2])
    limit = e1.number_input("Evaluation examples", min_value=1, max_value=100000, value=200, step=50,
                            key="prune.limit", persist_state="session",
                            help=f"the first N labeled rows of {ctx.task.name}/{ctx.split}")
    repair = e2.selectbox("Repair", ["none", "lsq", "scale", "bias"], key="prune.repair", persist_state="session",
                          format_func={"none": "none", "lsq": "least squares (lsq)", "scale": "one scale per unit",
                                       "bias": "bias only"}.get,
                          help="refit each pruned block's output projection on unlabeled training rows so that "
                               "its output matches the dense model's (no training): see Learn the method")
    calib = e3.number_input("Calibration rows", min_value=16, max_value=8192, value=512, step=128,
                            key="prune.calib", persist_state="session", disabled=repair == "none",
                            help=f"{ctx.task.name} training rows the repair reads (their labels are not read)")
    e4.write("")
    e4.write("")
    run_eval = e4.button(f"Evaluate on {ctx.task.name}/{ctx.split}", key="prune.evaluate", type="primary")
    digest = mask.digest()
    if run_eval:
        try:
            C.evaluate_dense_and_pruned(ctx, ctx.task.name, ctx.split, int(limit), mask)
            if repair != "none":
                with st.spinner(f"repairing on {int(calib)} {ctx.task.name} rows, then evaluating..."):
                    C.evaluate_repaired(ctx, ctx.task.name, ctx.split, int(limit), mask, repair, int(calib))
        except Exception as exc:
            C.error(exc)
    dense = C.find_eval(ctx, ctx.task.name, ctx.split, int(limit))
    pruned = C.find_eval(ctx, ctx.task.name, ctx.split, int(limit), digest)
    fixed = state.store("repaired").get((ctx.fingerprint, ctx.task.name, ctx.split, int(limit), digest, repair,
                                         int(calib))) if repair != "none" else None
    if dense is not None and pruned is not None:
        r = st.columns(4)
        r[0].metric("Dense accuracy", f"{dense.accuracy:.3f}")
        r[1].metric("Pruned accuracy", f"{pruned.accuracy:.3f}", delta=f"{pruned.accuracy - dense.accuracy:+.3f}")
        if fixed is not None:
            res, report = fixed
            r[2].metric(f"Repaired accuracy ({repair})", f"{res.accuracy:.3f}",
                        delta=f"{res.accuracy - dense.accuracy:+.3f}", help=report.summary())
        r[3].metric("Examples", pruned.n, help=f"{ctx.task.name}/{ctx.split}")
        names = list(dense.metrics)
        series = {"dense": [dense.metrics[n] for n in names], "pruned": [pruned.metrics[n] for n in names]}
        if fixed is not None:
            series[f"pruned + {repair}"] = [fixed[0].metrics[n] for n in names]
            st.caption(fixed[1].summary())
        C.show_figure(plots.grouped_bars(names, series, metric="score",
                                         title=f"{ctx.task.name}/{ctx.split}: dense, pruned and repaired"),
                      key="prune.result")
    elif st.session_state.get("_prune.evaluated_once"):
        st.caption("The mask changed since the last evaluation: press Evaluate again.")
    else:
        st.caption("Press Evaluate to run the pruned model on the split (the dense model is evaluated once "
                   "and remembered); with a repair, the repaired model too.")
    if run_eval:
        st.session_state["_prune.evaluated_once"] = True

    st.session_state["_prune.fragment_seconds"] = time.perf_counter() - t0


mask_and_evaluation()

st.subheader("Metric against sparsity")
C.sweep_section(ctx, key="prune.sweep")
