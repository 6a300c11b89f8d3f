"""Page sections shared by pages: the sweep of a metric against sparsity, the rows an evaluation
changed (flips, confusion matrices, every row), and the warning that scores are mostly their draw of
examples, with the button that adds examples."""

from __future__ import annotations

from functools import partial

import streamlit as st

from mtprune.errors import MtpruneError
from mtprune.text import plural
from ui import state
from ui import views as V
from ui.evaluations import compute_on_next_run, eval_rows, experiment, history_table, scores_for
from ui.session import Context, set_examples
from ui.widgets import URL, error, method_label, show_figure


def sweep_section(ctx: Context, key: str) -> None:
    """The metric against sparsity for chosen methods: :func:`mtprune.experiments.run_sweep`, its
    rows kept in a CSV in the cache (a second run with the same settings reads them back); the
    model's run history drawn on it as points."""
    from mtprune import experiments as X
    from mtprune import plots
    from mtprune.methods import method_names

    methods_all = method_names()
    c = st.columns([3, 2, 1, 1])
    methods = c[0].multiselect("Methods", methods_all, default=[m for m in ("ap", "random") if m in methods_all],
                               key=f"{key}.methods", persist_state="session", bind=URL, format_func=method_label)
    text = c[1].text_input("FFN neurons pruned (%)", "0, 20, 40, 60, 80", key=f"{key}.sparsities",
                           persist_state="session", bind=URL,
                           help="percentages, as on the sliders, separated by commas")
    limit = c[2].number_input("Examples", min_value=1, max_value=100000, value=100, step=50,
                              key=f"{key}.limit", persist_state="session", bind=URL, help="evaluation rows per point")
    trials = c[3].number_input("Trials", min_value=1, max_value=20, value=1, key=f"{key}.trials",
                               persist_state="session", bind=URL,
                               help="repeats of the seeded baselines (random masks): the chart shades their spread")
    scope = state.prune_settings(["ffn"])["scope"]
    scope = scope if scope in ("layer", "global") else "layer"
    try:
        spec = (scores_for(ctx)[0] or ctx).spec  # auto examples: the count the shown scores read
        cfg = V.sweep_config(spec, methods, V.parse_percentages(text), scope=scope, trials=int(trials))
    except MtpruneError as exc:
        error(exc)
        return
    memo = (ctx.fingerprint, repr(cfg), int(limit), ctx.split)
    n_points = len(X.plan_runs(cfg, ctx.task.name)) * len(cfg.sparsities)
    run = st.button(f"Run the sweep ({plural(n_points, 'point')}; cached points are read back)", key=f"{key}.run",
                    disabled=not methods)
    try:  # a job (ui.jobs): its progress, the time left and a Cancel button here
        df = experiment(ctx, "sweeps", memo, f"sweep of {ctx.task.name} ({plural(n_points, 'point')})",
                        partial(X.run_sweep, ctx.adapter, cfg, X.EvalSettings(limit=int(limit), split=ctx.split),
                                out=str(V.experiment_csv("sweep", ctx.adapter)), log=None), start=run, unit="points")
    except MtpruneError as exc:
        error(exc)
        df = None
    if df is None:
        st.caption("Pick methods and sparsities, then run the sweep: each point prunes the model with "
                   "that method's mask and evaluates it.")
        return
    metric = st.segmented_control("Metric", list(ctx.task.metrics), default=ctx.task.metrics[0],
                                  key=f"{key}.metric") or ctx.task.metrics[0]
    d = df[df["task"] == ctx.task.name].copy()
    d["series"] = d["method"].map(method_label)
    runs = V.history_points(history_table(ctx), ctx.task.name, ctx.split, metric)
    show_figure(plots.sweep_figure(d, metric, points=runs,
                                   title=f"{ctx.task.name}/{ctx.split}: {metric} against FFN sparsity"),
                key=f"{key}.chart")
    st.caption("Lines: the sweep (shaded: the spread over trials, or the 95% interval of one evaluation). "
               "Diamonds: your evaluations on this page with FFN neurons only, from the run history.")
    with st.expander("The sweep's rows"):
        cols = [c for c in ("method", "sparsity", "trial", "accuracy", "accuracy_low", "accuracy_high", "f1", "mcc",
                            "n_eval", "params", "kept_units") if c in d.columns]
        st.dataframe(d[cols].assign(method=d["method"].map(method_label)), hide_index=True)


def show_examples(ctx: Context, task: str, split: str, limit, reference, others: dict, key: str) -> None:
    """After an evaluation: the rows whose prediction flipped, each model's confusion matrix and
    every row sortable by the change in P(gold), with its text (LIT's side-by-side view)."""
    from mtprune import plots

    rows = eval_rows(task, split, limit)
    names = list(others)
    which = names[0]
    if len(names) > 1:
        which = st.segmented_control("Compare the dense model with", names, default=names[0], key=f"{key}.which") or names[0]
    table = V.flips_table(rows, task, reference, others[which], "dense", which)
    flips, conf, every = st.tabs(["Flipped examples", "Confusion matrices", "Every row"])
    cfg = {"text": st.column_config.TextColumn(width="large"),
           "change in P(gold)": st.column_config.NumberColumn(format="%+.3f")}
    with flips:
        for kind, note in (("right -> wrong", f"the dense model was right, the {which} model is wrong"),
                           ("wrong -> right", f"the dense model was wrong, the {which} model is right")):
            part = table[table["what changed"] == kind].sort_values("change in P(gold)",
                                                                     ascending=kind == "right -> wrong")
            st.markdown(f"**{kind}** · {plural(len(part), 'row')} ({note})")
            if len(part):
                st.dataframe(part.drop(columns=["what changed"]), hide_index=True, column_config=cfg,
                             height=min(38 + 35 * len(part), 300), key=f"{key}.flips.{kind}")
    with conf:
        cols = st.columns(1 + len(names))
        for col, (name, res) in zip(cols, [("dense", reference), *others.items()]):
            with col:
                show_figure(plots.confusion_figure(V.confusion_frame(res, task), title=f"{name}: {res.accuracy:.3f}"),
                            key=f"{key}.confusion.{name}")
    with every:
        st.caption("Click a column's header to sort: by *change in P(gold)* to see the rows the pruning hurt most.")
        st.dataframe(table, hide_index=True, column_config=cfg, height=400, key=f"{key}.every")


def reliability_warning(scores, rel: dict, key: str, compute_key: str) -> None:
    """A plain warning when a kind's reliability is under :data:`ui.views.LOW_RELIABILITY`, with a
    button that doubles the examples: the sidebar's count becomes twice the scores' and the page's
    scores (``compute_key``: its :func:`ui.evaluations.scores_or_button`) are computed at once,
    extending the cached draw (only the new examples are read), under a progress bar."""
    from mtprune.attribution import labelled_rows

    low = V.low_reliability(rel)
    if not low:
        return
    n = V.examples_of(scores)
    st.warning(V.low_reliability_warning(low, n), icon=":material/casino:")
    more = min(2 * n, labelled_rows(scores.spec), 100000)  # 100000: the sidebar's largest count
    if more <= n:
        st.caption(f"{scores.spec.task}/{scores.spec.resolved_split} has no more labelled rows to add.")
        return

    def add():
        set_examples(more)
        compute_on_next_run(compute_key)

    st.button(f"Add examples: {n:,} -> {more:,}", key=key, on_click=add, icon=":material/add:",
              help="the sidebar's Examples become this count; a draw that extends the cached one reads only "
                   "the new examples")


def scores_by_draws(ctx: Context, draws: list[int], key: str) -> dict | None:
    """``{examples: Scores}`` of the sidebar's task and method at each count of ``draws`` (each
    draw extends the one before: the largest reads each example once), from the cache or computed
    when the button ``key`` is pressed; None until then."""
    from dataclasses import replace

    specs = {n: replace(ctx.spec, examples=n) for n in draws}
    have = {n: scores_for(ctx, s, auto=False)[0] for n, s in specs.items()}
    if all(s is not None for s in have.values()):
        return have
    if not st.button(f"Compute the scores at {draws[0]:,} and {draws[-1]:,} examples", key=key, type="primary"):
        st.caption(f"Reads {draws[-1]:,} examples once (the smaller draws are its first examples).")
        return None
    try:
        for n, s in specs.items():
            have[n] = scores_for(ctx, s, compute=True, auto=False, label=f"attributing {n:,} examples")[0]
    except MtpruneError as exc:
        error(exc)
        return None
    return have
