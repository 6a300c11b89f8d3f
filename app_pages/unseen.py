"""Unseen domains: the source task's mask evaluated on other sets, dense against pruned."""

PAGE = {"section": "Compare", "title": "Unseen domains", "icon": ":material/travel_explore:", "order": 5}  # read by app.py

from functools import partial

import streamlit as st

from mtprune import plots
from mtprune.errors import MtpruneError
from mtprune.experiments import EvalSettings, UnseenConfig, run_unseen
from mtprune.experiments.unseen import CALIB_CHOICES, check_calibration
from mtprune.solvers import all_solvers
from mtprune.text import plural
from mtprune.units import KIND_LABELS, KINDS
from ui import evaluations as E
from ui import session as S
from ui import state
from ui import views as V
from ui import widgets as W

ctx = S.need_task("Unseen domains")
src = ctx.task.name
st.caption(f"A mask built from **{src}** examples ({ctx.spec.describe()}), evaluated on sets it never "
           "saw: other domains of the same task, read through the same head, or other tasks, read through "
           "their own heads (then their own mask is shown too).")

targets_all = V.unseen_targets(ctx.task, ctx.adapter)
unseen_only = V.unseen_targets(ctx.task, ctx.adapter, cross_task=False)
if not targets_all:
    st.info("No other set can be evaluated with this model.", icon=":material/info:")
    st.stop()

prev = state.prune_settings(["ffn", "heads", "kv"])
c = st.columns([3, 1.4, 1.4, 1])
targets = c[0].multiselect("Target sets", targets_all, default=(unseen_only or targets_all)[:3],
                           key="unseen.targets", persist_state="session", bind=W.URL,
                           format_func=lambda t: t + ("" if t in unseen_only else " (another task)"))
unit_kinds = [k for k in KINDS if any(g.endswith("." + k) for g in ctx.facts["units"])]
kinds = c[1].radio("Units", unit_kinds + ["all"], key="unseen.units", persist_state="session", bind=W.URL,
                   format_func={**KIND_LABELS, "all": "all" if "kv" in unit_kinds else "both"}.get)
pct = c[2].slider("Pruned", 0, 95, round(100 * prev["sparsity"].get("ffn" if kinds == "all" else kinds, 0)) or 50,
                  step=5, format="%d%%", key="unseen.sparsity", persist_state="session", bind=W.URL)
limit = c[3].number_input("Examples per set", min_value=1, max_value=100000, value=200, step=50,
                          key="unseen.limit", persist_state="session", bind=W.URL)
baseline = st.checkbox("Also a random mask of the same size (the baseline)", value=True, key="unseen.random",
                       persist_state="session", bind=W.URL)
SOLVERS = all_solvers()  # repair solvers (mtprune.solvers)
CALIB_LABELS = {"source": f"{src} training rows", "target": "each target's own text (another split)",
                "mix": f"half {src} rows, half the target's text"}
r = st.columns([1, 2, 1])
solver = r[0].selectbox("Repair", list(SOLVERS), key="unseen.repair", persist_state="session", bind=W.URL,
                        format_func=lambda n: SOLVERS[n].label,
                        help="refit each pruned block's output projection so that its output matches the dense "
                             "model's on calibration rows (no labels are read)")
refits = SOLVERS[solver].refits
calib = r[1].selectbox("Calibration rows from", CALIB_CHOICES, key="unseen.calib", persist_state="session",
                       bind=W.URL, format_func=CALIB_LABELS.get, disabled=not refits,
                       help="where the repair's rows come from: the target's own unlabelled text (from a split "
                            "other than the one measured) adapts the pruned model to the domain it is used in")
calib_rows = r[2].number_input("Calibration rows", min_value=16, max_value=8192, value=512, step=128,
                               key="unseen.calib_rows", persist_state="session", bind=W.URL, disabled=not refits)

methods = (ctx.spec.method,) + (("random",) if baseline and ctx.spec.method != "random" else ())
auto = getattr(ctx, "auto", None)  # the sidebar's auto examples: as many as its reliability target needs
how_many = ({"examples": "auto", "reliability": auto.target, "max_examples": auto.cap} if auto is not None
            else {"examples": ctx.spec.examples})
settings = (ctx.fingerprint, src, tuple(targets), kinds, pct, int(limit), methods, ctx.spec.examples,
            ctx.spec.seed, ctx.spec.variant, prev["scope"], auto, solver, calib if refits else None, int(calib_rows))
missing = None if targets else "Choose one or more target sets above: there is nothing to evaluate yet."
cfg = None
if missing is None:
    try:  # what the button would run, checked first: a target without text of its own says so here
        cfg = UnseenConfig(pairs=tuple((src, t) for t in targets), methods=methods, sparsities=(0.0, pct / 100),
                           trials=1, kinds=kinds, scope=prev["scope"], variant=ctx.spec.variant, seed=ctx.spec.seed,
                           repairs=(solver,), calib=int(calib_rows), calib_from=calib if refits else "source",
                           **how_many)
        check_calibration(cfg)
    except MtpruneError as exc:
        missing = f"Cannot evaluate these settings: {exc}."
pressed = st.button("Evaluate on the target sets", key="unseen.run", type="primary", disabled=missing is not None)
label = f"unseen domains of {src}'s mask on {plural(len(targets), 'set')}" + (f", repaired ({solver})" if refits else "")
try:  # a job: its progress, the time left and a Cancel button here; a page switch does not stop it
    df = E.experiment(ctx, "unseen", settings, label,
                      partial(run_unseen, ctx.adapter, cfg, EvalSettings(limit=int(limit)),
                              out=str(V.experiment_csv("unseen", ctx.adapter)), log=None),
                      start=pressed and cfg is not None)
except MtpruneError as exc:
    W.error(exc)
    df = None

if df is None:
    st.caption(missing or "Press the button: every set is evaluated dense, and with the mask at this sparsity "
                          "(rows are cached on disk: the same settings later are read back).")
    st.stop()
from mtprune.experiments import unseen_bars  # noqa: E402
from mtprune.experiments.unseen import unseen_verdicts  # noqa: E402

labels, series, bands = unseen_bars(df, pct / 100, labels=W.method_label, with_intervals=True)
W.show_figure(plots.grouped_bars(labels, series, metric="accuracy", intervals=bands,
                                 title=f"accuracy with {pct}% of the {'units' if kinds == 'all' else kinds} pruned "
                                       f"by {src}'s mask" + (f", repaired ({solver}) on {CALIB_LABELS[calib]}"
                                                             if refits else "") + " (bars: 95% intervals)"),
                  key="unseen.bars")
st.caption("A difference smaller than the bars' overlap is not a measured difference: with 200 rows a 95% interval "
           "is about ±0.05 wide. The verdicts test it on the same rows (McNemar's exact test: the rows one model "
           "gets right and the other wrong), at the 5% level.")
if pct > 0:
    for line in unseen_verdicts(df, pct / 100, ctx.spec.method, label=W.method_label):
        st.markdown(f"- {line}")
table = {"set": labels}
for k, v in series.items():
    table[k] = v
    if k in bands:
        table[f"{k} (95% interval)"] = [f"{lo:.3f}-{hi:.3f}" for lo, hi in zip(*bands[k])]
st.dataframe(table, hide_index=True,
             column_config={k: st.column_config.NumberColumn(format="%.3f") for k in series})
