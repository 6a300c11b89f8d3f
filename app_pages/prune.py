"""Prune and evaluate: a sparsity per unit kind or one budget in any registered measure, the mask
as it changes, and the dense, pruned and repaired models side by side, with intervals, a paired
test and the examples that changed."""

PAGE = {"section": "Explore", "title": "Prune and evaluate", "icon": ":material/content_cut:", "order": 3}  # read by app.py

import time

import streamlit as st

from mtprune import plots
from mtprune.costs import Budget
from mtprune.evaluation import compare
from mtprune.masks import kinds_in
from mtprune.measures import all_measures
from mtprune.pruning import count_parameters
from mtprune.solvers import all_solvers
from mtprune.text import human_count
from mtprune.units import ordered_groups
from ui import evaluations as E
from ui import sections
from ui import session as S
from ui import state
from ui import views as V
from ui import widgets as W

ctx = S.need_task("Prune and evaluate")
st.caption(f"{ctx.model_name} · {ctx.task.name} · scores: {E.describe(ctx)}")

scores, note = E.scores_or_button(ctx, key="prune.compute")
kinds = kinds_in(scores)
heads_per_layer = max((max(n) for g, n in ctx.facts["units"].items() if g.endswith("heads")), default=0)
groups_per_layer = max((max(n) for g, n in ctx.facts["units"].items() if g.endswith(".kv")), default=0)
PER_LAYER = {"heads": ("Attention heads", heads_per_layer, "heads"),
             "kv": ("Key/value groups", groups_per_layer, "key/value groups")}
SOLVERS = all_solvers()  # repair solvers (mtprune.solvers): the registry, not a list of names
MEASURES = all_measures()  # budget measures (mtprune.measures)


def run_history():
    """The model's run history: every evaluation on this page, with its interval, as a table and a CSV."""
    st.subheader("Run history")
    runs = E.history_table(ctx)
    mine = runs[runs["task"] == ctx.task.name] if len(runs) else runs
    if len(mine):
        st.caption(f"Every evaluation of this model on this page ({len(runs)} in all, kept on disk beside the score "
                   "cache: it survives slider moves, reloads and restarts).")
        shown = [c for c in ("time", "task", "split", "rows", "method", "how", "repair", "value", "low", "high", "dense",
                             "verdict", "p_value", "flops_kept", "session") if c in mine.columns]
        st.dataframe(mine[shown].iloc[::-1].assign(method=lambda d: d["method"].map(W.method_label)), hide_index=True,
                     column_config={"value": st.column_config.NumberColumn("accuracy", format="%.3f"),
                                    "low": st.column_config.NumberColumn("95% low", format="%.3f"),
                                    "high": st.column_config.NumberColumn("95% high", format="%.3f"),
                                    "dense": st.column_config.NumberColumn(format="%.3f"),
                                    "flops_kept": st.column_config.NumberColumn("FLOPs kept", format="%.2f")},
                     key="prune.history")
        st.download_button("Run history (CSV)", runs.to_csv(index=False).encode(),
                           file_name=f"{ctx.facts['name']}-history.csv", mime="text/csv", key="prune.history_csv",
                           icon=":material/table:", on_click="ignore")
    else:
        st.caption("Your evaluations of this model will be listed here, with their intervals.")


def choose_units() -> dict:
    """The widgets that choose the units to keep: a sparsity per kind, or one budget in any
    registered measure (:mod:`mtprune.measures`); the settings they make."""
    settings = state.prune_settings(kinds)
    mode = st.segmented_control(
        "Choose the units to keep by", ["sparsity", "budget"], default="sparsity", key="prune.mode",
        persist_state="session", bind=W.URL,
        format_func={"sparsity": "a share of each kind", "budget": "one budget over all layers"}.get,
        help="a share of each kind: the same sparsity in every layer (or one ranking per kind); one budget: the "
             "best-scoring heads and FFN neurons of all layers whose cost fits it (Kwon et al.)") or "sparsity"
    if mode == "budget":
        b1, b2 = st.columns([1, 3])
        measure = b1.selectbox("Budget measure", list(MEASURES), key="prune.measure", persist_state="session",
                               bind=W.URL, format_func=lambda m: MEASURES[m].label,
                               help="; ".join(f"{m.label}: {m.help}" for m in MEASURES.values()))
        keep = b2.slider(f"{MEASURES[measure].label} kept", 10, 100, settings["budget"].percent, step=5,
                         format="%d%%", key="prune.kept", persist_state="session", bind=W.URL,
                         help="the share of this cost of all heads and FFN neurons the pruned model may keep")
        return {**settings, "mode": "budget", "budget": Budget(measure, keep / 100)}
    cols = st.columns(len(kinds) + 1)
    sparsity = {}
    for col, kind in zip(cols, kinds):
        if kind in PER_LAYER and PER_LAYER[kind][1]:
            label, per_layer, word = PER_LAYER[kind]
            n = col.slider(f"{label} pruned per layer", 0, per_layer, 0, key=f"prune.{kind}",
                           persist_state="session", bind=W.URL, help=f"how many of each layer's {per_layer} {word} to remove")
            sparsity[kind] = n / per_layer
            col.caption(V.per_layer_label(n, per_layer, word))
            if kind == "heads" and groups_per_layer:
                col.caption("Masked only: query heads share their key/value head, so single heads cannot "
                            "be removed from the model (Export needs them at 0); key/value groups can.")
        else:
            pct = col.slider("FFN neurons pruned", 0, 100, 50, step=5, format="%d%%", key=f"prune.{kind}",
                             persist_state="session", bind=W.URL, help="the share of this kind of unit to remove")
            sparsity[kind] = pct / 100
    scope = cols[-1].radio("Scope", ["layer", "global"], key="prune.scope", persist_state="session", bind=W.URL,
                           format_func={"layer": "per layer (same rate everywhere)",
                                        "global": "global (layers compete)"}.get)
    return {**settings, "mode": "sparsity", "sparsity": sparsity, "scope": scope}


def show_mask(mask, settings: dict) -> tuple[int, float]:
    """What the mask keeps: parameters, FLOPs and units kept, and the map of every kind; returns
    (parameters, FLOPs kept)."""
    dense_params = ctx.facts["parameters"]
    params = count_parameters(ctx.adapter, mask)
    flops = E.flops_kept(ctx, mask)
    m = st.columns(len(kinds) + 2)
    m[0].metric("Parameters", human_count(params), delta=f"{(params - dense_params) / dense_params:+.1%}",
                delta_color="inverse", help=f"{params:,} of {dense_params:,}")
    seq = E.costs(ctx, "flops").seq_len
    m[1].metric("FLOPs kept", f"{flops:.0%}",
                help=f"of the FLOPs of all heads and FFN neurons, at {ctx.task.name}'s average length ({seq:.0f} tokens)")
    for col, g in zip(m[2:], [g for g in ordered_groups(mask.groups) if g.split(".")[1] in kinds]):
        col.metric(f"{plots.group_label(g)} kept", f"{mask.kept(g):,} / {mask.total(g):,}")
    if settings["mode"] == "budget" and settings["budget"].measure != "flops":
        st.caption(f"Budget {settings['budget']}: the mask keeps {mask.meta['cost_fraction_kept']:.1%} of the "
                   f"{MEASURES[settings['budget'].measure].label} of all heads and FFN neurons.")
    same_rate = settings["mode"] == "sparsity" and settings["scope"] == "layer"
    show_sorted = st.toggle("Order units by score", value=False, key="prune.sorted", persist_state="session",
                            bind=W.URL, disabled=same_rate,
                            help="kept units line up on the left of every layer, so layers can be compared; "
                                 "with the same rate in every layer they would all look alike (choose global "
                                 "scope or a budget)") and not same_rate
    for g in [g for g in ordered_groups(mask.groups) if g.split(".")[1] in kinds]:
        heatmap = plots.keep_heatmap(mask.keep[g], mask.n_units[g], scores=scores.arrays[g], group=g,
                                     sort_units=show_sorted)
        if same_rate:
            W.show_figure(heatmap, key=f"prune.map.{g}")
            continue
        left, right = st.columns([3, 1.3])  # layers keep different numbers of units: show how many
        with left:
            W.show_figure(heatmap, key=f"prune.map.{g}")
        with right:
            W.show_figure(plots.kept_per_layer(mask.keep[g], mask.n_units[g], group=g), key=f"prune.bars.{g}")
    return params, flops


def evaluation_settings() -> tuple:
    """The evaluation's widgets: (rows, solver, calibration rows, pressed)."""
    st.subheader("Evaluate the pruned model")
    e1, e2, e3, e4 = st.columns([2, 1, 1, 1.6], vertical_alignment="bottom")
    limit = W.rows_input("Evaluation examples", "prune.limit", 200, container=e1,
                         help=f"the first N labeled rows of {ctx.task.name}/{ctx.split}")
    solver = e2.selectbox("Repair", list(SOLVERS), key="prune.repair", persist_state="session", bind=W.URL,
                          format_func=lambda n: SOLVERS[n].label,
                          help="refit each pruned block's output projection on unlabeled training rows so that "
                               "its output matches the dense model's (no training): see Learn the method. "
                               + "; ".join(f"{s.label}: fits {s.fits}" for s in SOLVERS.values()))
    calib = e3.number_input("Calibration rows", min_value=16, max_value=8192, value=512, step=128,
                            key="prune.calib", persist_state="session", bind=W.URL,
                            disabled=not SOLVERS[solver].refits,
                            help=f"{ctx.task.name} training rows the repair reads (their labels are not read)")
    run_eval = e4.button(f"Evaluate on {ctx.task.name}/{ctx.split}", key="prune.evaluate", type="primary")
    return limit, solver, int(calib), run_eval


def evaluate(mask, settings: dict, params: int, flops: float, limit, solver: str, calib: int) -> None:
    """Dense, pruned and (with a solver) repaired, each recorded in the run history."""
    ffn_only = settings["mode"] == "sparsity" and not settings["sparsity"].get("heads")
    how = V.mask_slug(settings) + ("" if settings["mode"] == "budget" else f" ({settings['scope']})")
    base = dict(method=ctx.spec.method, how=how, params=params, flops_kept=flops,
                sparsity=settings["sparsity"].get("ffn") if ffn_only else None)
    try:
        dense, pruned = E.evaluate_dense_and_pruned(ctx, ctx.task.name, ctx.split, limit, mask)
        E.record_run(ctx, V.history_record(ctx.model_name, pruned, compare(dense, pruned), **base))
        if SOLVERS[solver].refits:
            with st.spinner(f"repairing on {calib} {ctx.task.name} rows, then evaluating..."):
                res, _ = E.evaluate_repaired(ctx, ctx.task.name, ctx.split, limit, mask, solver, calib)
            E.record_run(ctx, V.history_record(ctx.model_name, res, compare(dense, res), **base, repair=solver))
    except Exception as exc:
        W.error(exc)


def show_results(mask, limit, solver: str, calib: int) -> None:
    """The last evaluation of this mask: metrics, verdicts, bars with intervals, the examples that changed."""
    digest = mask.digest()
    dense = E.find_eval(ctx, ctx.task.name, ctx.split, limit)
    pruned = E.find_eval(ctx, ctx.task.name, ctx.split, limit, digest)
    fixed = state.store("repaired").get((ctx.fingerprint, ctx.task.name, ctx.split, limit, digest, solver,
                                         calib)) if SOLVERS[solver].refits else None
    if dense is None or pruned is None:
        st.caption("The mask changed since the last evaluation: press Evaluate again."
                   if st.session_state.get("_prune.evaluated_once") else
                   "Press Evaluate to run the pruned model on the split (the dense model is evaluated once "
                   "and remembered); with a repair, the repaired model too.")
        return
    r = st.columns(4)
    W.show_metric(r[0], "Dense accuracy", dense)
    W.show_metric(r[1], "Pruned accuracy", pruned, dense)
    others = {"pruned": pruned}
    if fixed is not None:
        others[f"pruned + {solver}"] = fixed[0]
        W.show_metric(r[2], f"Repaired accuracy ({solver})", fixed[0], dense, help=fixed[1].summary())
    r[3].metric("Examples", pruned.n, help=f"{W.rows_words(limit)} of {ctx.task.name}/{ctx.split}")
    for name, res in others.items():
        W.show_verdict(compare(dense, res), "dense", name)
    names = list(dense.metrics)
    series = {"dense": [dense.metrics[n] for n in names], **{k: [v.metrics[n] for n in names] for k, v in others.items()}}
    bands = {k: ([v.interval(n)[0] for n in names], [v.interval(n)[1] for n in names])
             for k, v in {"dense": dense, **others}.items()}
    if fixed is not None:
        st.caption(fixed[1].summary())
    W.show_figure(plots.grouped_bars(names, series, metric="score", intervals=bands,
                                     title=f"{ctx.task.name}/{ctx.split}: dense, pruned and repaired "
                                           "(bars: 95% intervals)"),
                  key="prune.result")
    st.markdown("**Which examples changed**")
    sections.show_examples(ctx, ctx.task.name, ctx.split, limit, dense, others, key="prune.examples")


@st.fragment
def mask_and_evaluation():
    """The sliders, the mask they make and its evaluation: a slider move reruns only this."""
    t0 = time.perf_counter()
    settings = choose_units()
    try:
        mask = E.mask_for_settings(ctx, scores, settings)
    except Exception as exc:
        W.error(exc)
        st.stop()
    state.remember_prune_settings(settings["sparsity"], settings["scope"], settings["mode"], settings["budget"])
    params, flops = show_mask(mask, settings)
    limit, solver, calib, run_eval = evaluation_settings()
    if run_eval:
        evaluate(mask, settings, params, flops, limit, solver, calib)
    show_results(mask, limit, solver, calib)
    if run_eval:
        st.session_state["_prune.evaluated_once"] = True
    run_history()
    st.session_state["_prune.fragment_seconds"] = time.perf_counter() - t0


mask_and_evaluation()

st.subheader("Metric against sparsity")
sections.sweep_section(ctx, key="prune.sweep")
