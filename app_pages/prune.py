"""Prune and evaluate: a sparsity per unit kind or one budget in any registered measure, the mask
as it changes, and the dense, pruned and repaired models side by side, with intervals, a paired
test and the examples that changed. Every evaluation is a run kept on disk (mtprune.runs): any row
of the run history reopens it, its address (``?run=<id>``) can be shared, and two runs can be
compared (``?compare=<id>,<id>``)."""

PAGE = {"section": "Explore", "title": "Prune and evaluate", "icon": ":material/content_cut:", "order": 3}  # read by app.py

import time

import streamlit as st

from mtprune import plots
from mtprune.costs import Budget
from mtprune.errors import MtpruneError
from mtprune.masks import kinds_in
from mtprune.measures import all_measures
from mtprune.pruning import count_parameters
from mtprune.rearrange import EXAMPLES as REARRANGE_EXAMPLES
from mtprune.repair import VARIANTS, RepairSettings
from mtprune.runs import compare_runs
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


def reliability_words(rel: dict | None) -> str:
    """``scores from 256 examples; reliability: encoder FFN neurons 0.83, encoder attention heads 0.91``."""
    if not rel:
        return ""
    if not rel.get("reliability"):
        return rel.get("why") or ""
    per = ", ".join(f"{plots.group_label(g)} {r['spearman']:.2f}" for g, r in rel["reliability"].items()
                    if r.get("spearman") is not None)
    n = rel.get("examples")
    return (f"scores from {n:,} examples; " if n else "") + f"reliability (expected Spearman with another draw): {per}"


def show_run(run, settings_digest: str | None) -> None:
    """A run, whole: what it was, its metrics with intervals, the verdicts, the bars and the rows
    that changed (flips, confusion matrices, every row)."""
    how = run.settings.get("how") or "a mask"
    method = W.method_label(run.settings["method"]) if run.settings.get("method") else ""
    st.markdown(f"**Run `{run.id}`** · {how}" + (f" · {method}" if method else "")
                + f" · {W.rows_words(run.limit)} of {run.task}/{run.split} · {run.created}")
    rearranged = (run.mask.meta or {}).get("rearranged") if run.mask is not None else None
    if rearranged:
        st.caption(f"This run's mask is the budget's mask rearranged on {rearranged['rows']:,} labelled rows: "
                   f"{rearranged['units_moved']:,} units re-chosen, as many kept per layer.")
    elif settings_digest is not None and run.mask_digest != settings_digest:
        st.caption("This run's mask is not the one the settings above make now: press Evaluate to run theirs.")
    url = getattr(st.context, "url", None) or ""
    st.caption(f"The address of this run: `{url}?run={run.id}` (a reload or a shared link reopens it).")
    dense, others = run.dense, run.others
    r = st.columns(4)
    W.show_metric(r[0], "Dense accuracy", dense)
    W.show_metric(r[1], "Pruned accuracy", others["pruned"], dense)
    if run.repair:
        variant = run.repair.get("variant", "standard")
        W.show_metric(r[2], f"Repaired accuracy ({E.repair_words(run.repair['solver'], variant)})", run.final, dense,
                      help=run.repair["summary"])
    r[3].metric("Examples", run.n, help=f"{W.rows_words(run.limit)} of {run.task}/{run.split}")
    for name, cmp in run.comparisons().items():
        W.show_verdict(cmp, "dense", name)
    names = list(dense.metrics)
    series = {k: [v.metrics[n] for n in names] for k, v in run.results.items()}
    bands = {k: ([v.interval(n)[0] for n in names], [v.interval(n)[1] for n in names]) for k, v in run.results.items()}
    if run.repair:
        st.caption(run.repair["summary"])
    if run.reliability:
        st.caption(reliability_words(run.reliability))
    W.show_figure(plots.grouped_bars(names, series, metric="score", intervals=bands,
                                     title=f"{run.task}/{run.split}: dense, pruned and repaired (bars: 95% intervals)"),
                  key="prune.result")
    st.markdown("**Which examples changed**")
    try:
        sections.show_examples(ctx, run.task, run.split, run.limit, dense, others, key="prune.examples")
    except MtpruneError as exc:
        W.error(exc)


def open_run_from_address() -> None:
    """Before the scores exist (a shared link on a fresh cache): the run in the address, if any."""
    pick = state.opened_run()
    if pick is None:
        return
    st.subheader("Evaluation")
    try:
        show_run(E.load_run(ctx, pick["id"]), None)
    except MtpruneError as exc:
        W.error(exc)
        state.close_run()


if E.scores_for(ctx)[0] is None:
    open_run_from_address()
scores, note = E.scores_or_button(ctx, key="prune.compute")
kinds = kinds_in(scores)
heads_per_layer = max((max(n) for g, n in ctx.facts["units"].items() if g.endswith("heads")), default=0)
groups_per_layer = max((max(n) for g, n in ctx.facts["units"].items() if g.endswith(".kv")), default=0)
PER_LAYER = {"heads": ("Attention heads", heads_per_layer, "heads"),
             "kv": ("Key/value groups", groups_per_layer, "key/value groups")}
SOLVERS = all_solvers()  # repair solvers (mtprune.solvers): the registry, not a list of names
MEASURES = all_measures()  # budget measures (mtprune.measures)


def run_history() -> None:
    """The model's run history: every evaluation on this page, with its interval, as a table (a
    row picked reopens its run) and a CSV."""
    st.subheader("Run history")
    runs = E.history_table(ctx)
    mine = runs[runs["task"] == ctx.task.name] if len(runs) else runs
    if not len(mine):
        st.caption("Your evaluations of this model will be listed here, with their intervals.")
        return
    st.caption(f"Every evaluation of this model on this page ({len(runs)} in all, kept on disk beside the score "
               "cache: it survives slider moves, reloads and restarts). Pick a row to reopen its run.")
    shown = [c for c in ("time", "task", "split", "rows", "method", "how", "repair", "value", "low", "high", "dense",
                         "verdict", "p_value", "flops_kept", "session", "run") if c in mine.columns]
    table = mine[shown].iloc[::-1].assign(method=lambda d: d["method"].map(W.method_label))
    event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row",
                         column_config={"value": st.column_config.NumberColumn("accuracy", format="%.3f"),
                                        "low": st.column_config.NumberColumn("95% low", format="%.3f"),
                                        "high": st.column_config.NumberColumn("95% high", format="%.3f"),
                                        "dense": st.column_config.NumberColumn(format="%.3f"),
                                        "flops_kept": st.column_config.NumberColumn("FLOPs kept", format="%.2f")},
                         key="prune.history")
    picked = event.selection.rows if event is not None else []
    if picked and state.new_selection("prune.history", event.selection) and "run" in table:
        rid = table.iloc[picked[0]]["run"]
        if isinstance(rid, str) and rid:
            state.open_run(rid)
            st.rerun()
        st.caption("This row was recorded before runs were kept whole: it cannot be reopened.")
    st.download_button("Run history (CSV)", runs.to_csv(index=False).encode(),
                       file_name=f"{ctx.facts['name']}-history.csv", mime="text/csv", key="prune.history_csv",
                       icon=":material/table:", on_click="ignore")


def reopen_run(infos: list) -> None:
    """A list of this model's runs of the task: the one picked opens above."""
    if not infos:
        return
    labels = {i.id: i.label() for i in infos}

    def pick():
        rid = st.session_state.get("prune.reopen")
        if rid:
            state.open_run(rid)
        st.session_state["prune.reopen"] = None

    st.selectbox("Reopen a run", list(labels), index=None, key="prune.reopen", format_func=labels.get,
                 on_change=pick, placeholder=f"{len(labels)} run{'' if len(labels) == 1 else 's'} of {ctx.task.name} kept on disk",
                 help="every evaluation is kept whole on disk: its metrics, verdicts and rows come back as they were")


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
        rearrange = st.toggle("Rearrange the mask when evaluating (Kwon et al.)", key="prune.rearrange",
                              persist_state="session", bind=W.URL,
                              help=f"re-choose which units each layer prunes so that their gradients on "
                                   f"{REARRANGE_EXAMPLES:,} labelled {ctx.task.name} rows cancel; each layer keeps as "
                                   "many units, so the budget stays met. The maps here show the mask before it; the "
                                   "run keeps the rearranged one (Compare two runs shows the difference)")
        return {**settings, "mode": "budget", "budget": Budget(measure, keep / 100), "rearrange": rearrange}
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
    return {**settings, "mode": "sparsity", "sparsity": sparsity, "scope": scope, "rearrange": False}


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


def evaluation_settings(settings: dict) -> tuple[dict, bool]:
    """The evaluation's widgets: ({limit, solver, calib, variant, rearrange}, pressed)."""
    st.subheader("Evaluate the pruned model")
    e1, e2, e3, e4, e5 = st.columns([2, 1, 1, 1.2, 1.6], vertical_alignment="bottom")
    limit = W.rows_input("Evaluation examples", "prune.limit", 200, container=e1,
                         help=f"the first N labeled rows of {ctx.task.name}/{ctx.split}")
    solver = e2.selectbox("Repair", list(SOLVERS), key="prune.repair", persist_state="session", bind=W.URL,
                          format_func=lambda n: SOLVERS[n].label,
                          help="refit each pruned block's output projection on unlabeled training rows so that "
                               "its output matches the dense model's (no training): see Learn the method. "
                               + "; ".join(f"{s.label}: fits {s.fits}" for s in SOLVERS.values()))
    refits = SOLVERS[solver].refits
    calib = e3.number_input("Calibration rows", min_value=16, max_value=8192, value=512, step=128,
                            key="prune.calib", persist_state="session", bind=W.URL, disabled=not refits,
                            help=f"{ctx.task.name} training rows the repair reads (their labels are not read)")
    variant = e4.selectbox("Repair variant", list(VARIANTS), key="prune.variant", persist_state="session", bind=W.URL,
                           disabled=not refits,
                           help="how the layers are fit. standard: every token of every layer, to the dense model "
                                "(the default: none of the others won on held-out rows); pooled-last: the last layer "
                                "fits only the token the classifier reads; intermediate: the target is the mask at "
                                "the square root of the budget (needs a budget); skip-first-attention: the first "
                                "layer's attention is left as pruned; kwon: all three (Kwon et al.)")
    needs_budget = refits and RepairSettings.of(solver, variant).target == "intermediate"
    problem = needs_budget and settings["mode"] != "budget"
    if problem:
        st.error(f"The {variant} repair variant fits to the mask at the square root of the budget: choose the units "
                 "by one budget, or another variant.", icon=":material/error:")
    run_eval = e5.button(f"Evaluate on {ctx.task.name}/{ctx.split}", key="prune.evaluate", type="primary",
                         disabled=problem)
    ev = {"limit": limit, "solver": solver, "calib": int(calib), "variant": variant if refits else "standard",
          "rearrange": REARRANGE_EXAMPLES if settings.get("rearrange") else 0}
    return ev, run_eval


def evaluate(mask, settings: dict, params: int, flops: float, ev: dict) -> None:
    """Dense, pruned and (with a solver) repaired as one run kept on disk, made by a job (its
    progress, the time left and a Cancel button in place), opened on the page; each model's row in
    the run history."""
    t0 = time.perf_counter()
    ffn_only = settings["mode"] == "sparsity" and not settings["sparsity"].get("heads")
    how = V.mask_slug(settings) + ("" if settings["mode"] == "budget" else f" ({settings['scope']})") \
        + (" rearranged" if ev["rearrange"] else "")
    base = dict(method=ctx.spec.method, how=how, params=params, flops_kept=flops,
                sparsity=settings["sparsity"].get("ffn") if ffn_only else None)
    chosen = {**base, "mode": settings["mode"], "scope": settings["scope"],
              "sparsity_per_kind": dict(settings["sparsity"]),
              "budget": str(settings["budget"]) if settings["mode"] == "budget" else None}
    try:  # read back, or made by a job; each model's row goes into the run history with the run
        run = E.start_run(ctx, scores, mask, ev["limit"], ev["solver"], ev["calib"], chosen, history=base,
                          variant=ev["variant"], rearrange=ev["rearrange"])
    except Exception as exc:
        W.error(exc)
        return
    if run is not None:
        state.open_run(run.id)
        st.session_state["_prune.evaluate_seconds"] = time.perf_counter() - t0
        return
    st.session_state["_prune.evaluate_t0"] = t0
    st.rerun()  # a whole run: the job is waited on below this fragment, where its Cancel button works


def run_mark(mask, ev: dict) -> str:
    """The id of the run the page's settings make."""
    return E.run_key(ctx, scores.spec, ctx.task.name, ctx.split, ev["limit"], mask.digest(), ev["solver"], ev["calib"],
                     ev["variant"], ev["rearrange"])


def current_run(mask, ev: dict):
    """The run the page shows: the one opened (by Evaluate, the address or the run history) until
    the settings change, else the one these settings made before (this session or another), or None."""
    mark = run_mark(mask, ev)
    pick = state.opened_run()
    if pick is not None and pick["at"] is None:  # just opened: these settings are its starting point
        state.open_run(pick["id"], mark)
    elif pick is not None and pick["at"] != mark:  # the settings moved since it was opened
        state.close_run()
        pick = None
    if pick is not None:
        try:
            return E.load_run(ctx, pick["id"])
        except MtpruneError as exc:
            W.error(exc)
            state.close_run()
            return None
    run = E.find_run(ctx, mark)
    if run is not None:
        state.open_run(run.id, mark)
    return run


WAIT: dict = {}  # the job making the run of the settings shown: waited on below the fragment (page level)


def waiting_for(mask, ev: dict) -> bool:
    """Whether a job makes the run of these settings (started by Evaluate, before a page switch, or
    by another session): its place on the page, which the page fills below the fragment with its
    progress and a Cancel button (a button of a fragment cannot stop a run in progress)."""
    mark = run_mark(mask, ev)
    job = E.run_job(ctx, mark)
    if job is None:
        return False
    slot = st.empty()
    slot.progress(job.fraction(), text=f"{job.label[:1].upper()}{job.label[1:]}: {job.describe()} (a job: its "
                                       "progress is in the Jobs panel of the sidebar)")
    WAIT.update(slot=slot, rid=mark)
    return True


def wait_for_the_run() -> None:
    """Page level, below the fragment: wait for the job the fragment found, in its place, with its
    progress and a Cancel button; then show its run."""
    if not WAIT:
        return
    with WAIT["slot"].container():
        try:
            run = E.follow_run(ctx, WAIT["rid"])
        except MtpruneError as exc:
            W.error(exc)
            return
    if run is not None:
        state.open_run(run.id)
        t0 = st.session_state.pop("_prune.evaluate_t0", None)
        if t0 is not None:
            st.session_state["_prune.evaluate_seconds"] = time.perf_counter() - t0
        st.rerun()


def show_results(mask, ev: dict) -> None:
    """The open run (metrics, verdicts, bars with intervals, the examples that changed), or what to do."""
    run = current_run(mask, ev)
    if run is None and waiting_for(mask, ev):
        return
    if run is None:
        st.caption("The mask changed since the last evaluation: press Evaluate again."
                   if st.session_state.get("_prune.evaluated_once") else
                   "Press Evaluate to run the pruned model on the split (the dense model is evaluated once "
                   "and kept); with a repair, the repaired model too. Every evaluation is kept as a run.")
        return
    show_run(run, mask.digest())
    if st.button("Delete this run", key="prune.delete_run", icon=":material/delete:",
                 help="remove it from the disk (its rows stay in the run history, which can no longer reopen it)"):
        try:
            E.delete_run(ctx, run.id)
        except MtpruneError as exc:
            W.error(exc)
        state.close_run()
        state.compare_runs(*[None if x == run.id else x for x in state.compared_runs()])
        st.rerun()


def compare_pick(infos: list) -> tuple:
    """Two runs of the task picked to compare (either None); ids from the address that are not runs
    of this model are said in one line each and dropped."""
    labels = {i.id: i.label() for i in infos}
    a, b = state.compared_runs()
    if len(labels) < 2 and not (a or b):
        return None, None
    for rid in (a, b):
        if rid and rid not in labels:
            try:
                E.load_run(ctx, rid)
            except MtpruneError as exc:
                W.error(exc)
    a, b = (a if a in labels else None), (b if b in labels else None)
    for key, rid in (("prune.run_a", a), ("prune.run_b", b)):
        if key not in st.session_state or st.session_state[key] not in labels:
            st.session_state[key] = rid
    state.compare_runs(a, b)

    def sync():
        state.compare_runs(st.session_state.get("prune.run_a"), st.session_state.get("prune.run_b"))

    c = st.columns(2)
    a = c[0].selectbox("Run A", list(labels), index=None, key="prune.run_a", format_func=labels.get, on_change=sync,
                       placeholder="a run", help="the reference")
    b = c[1].selectbox("Run B", list(labels), index=None, key="prune.run_b", format_func=labels.get, on_change=sync,
                       placeholder="another run", help="compared with run A on the same rows")
    return a, b


def compare_section(infos: list) -> None:
    """Two runs side by side: their metrics, the paired test of their final models, the rows where
    they differ and their masks' difference per layer."""
    st.subheader("Compare two runs")
    a, b = compare_pick(infos)
    if not a or not b or a == b:
        st.caption("Pick two runs of this task on the same rows: their models are tested against each other "
                   "row by row (McNemar), and their masks compared layer by layer. Evaluate two masks to have "
                   "two runs." if len(infos) < 2 else
                   "Pick two runs of this task on the same rows: their models are tested against each other "
                   "row by row (McNemar), and their masks compared layer by layer.")
        return
    run_a, run_b = E.load_run(ctx, a), E.load_run(ctx, b)
    st.dataframe(runs_table({"A": run_a, "B": run_b}), hide_index=True, key="prune.compare.table")
    try:
        both = compare_runs(run_a, run_b)
    except MtpruneError as exc:
        W.error(exc)
        return
    W.show_verdict(both.comparison, f"run A ({run_a.final_name})", f"run B ({run_b.final_name})")
    rows = E.eval_rows(run_a.task, run_a.split, run_a.limit)
    table = V.flips_table(rows, run_a.task, run_a.final, run_b.final, "A", "B")
    differ = table.iloc[both.differ]
    st.markdown(f"**Where they differ** · {len(differ)} of {run_a.n} rows")
    if len(differ):
        st.dataframe(differ, hide_index=True, key="prune.compare.rows", height=min(38 + 35 * len(differ), 400),
                     column_config={"text": st.column_config.TextColumn(width="large"),
                                    "change in P(gold)": st.column_config.NumberColumn(format="%+.3f")})
    if both.masks is None:
        return
    for g in ordered_groups(list(both.masks)):
        d = both.masks[g]
        if sum(d["only_a"]) + sum(d["only_b"]) or len(both.masks) == 1:
            W.show_figure(plots.mask_difference_figure(d, group=g), key=f"prune.compare.mask.{g}")
    st.caption("Per layer: the units both masks keep, and those only one of them keeps "
               f"({sum(sum(d['only_a']) + sum(d['only_b']) for d in both.masks.values()):,} units differ).")


def runs_table(runs: dict):
    """One row per run: what it was and each of its models' accuracy with its 95% interval."""
    import pandas as pd

    out = []
    for name, r in runs.items():
        row = {"run": name, "id": r.id, "how": r.settings.get("how"), "method": r.settings.get("method"),
               "repair": (r.repair or {}).get("solver", "none"), "rows": r.n}
        for k, v in r.results.items():
            lo, hi = v.interval()
            row["repaired" if " + " in k else k] = f"{v.accuracy:.3f} ({lo:.3f}-{hi:.3f})"
        out.append(row)
    return pd.DataFrame(out)


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
    ev, run_eval = evaluation_settings(settings)
    if run_eval:
        st.session_state["_prune.evaluated_once"] = True
        evaluate(mask, settings, params, flops, ev)
    show_results(mask, ev)
    run_history()
    infos = E.list_runs(ctx, ctx.task.name)
    reopen_run(infos)
    compare_section(infos)
    st.session_state["_prune.fragment_seconds"] = time.perf_counter() - t0


mask_and_evaluation()
wait_for_the_run()

st.subheader("Metric against sparsity")
sections.sweep_section(ctx, key="prune.sweep")
