"""Task overlap: which kept units two tasks share (Jaccard), over the model and per layer; and
whether one task's mask serves another (the transfer matrix)."""

PAGE = {"section": "Compare", "title": "Task overlap", "icon": ":material/join_inner:", "order": 4}  # read by app.py

from functools import partial

import streamlit as st

from mtprune import plots
from mtprune.errors import MtpruneError
from mtprune.experiments.overlap import OverlapConfig, readable_pairs, run_overlap
from mtprune.tasks import BENCHMARK
from mtprune.solvers import all_solvers
from mtprune.units import KINDS
from ui import evaluations as E
from ui import session as S
from ui import state
from ui import views as V
from ui import widgets as W

ctx = S.need_model("Task overlap")
st.caption("Each task gets its own mask from its own attribution scores (the sidebar's settings); the "
           "Jaccard similarity |A and B| / |A or B| of two masks' kept units says how much of the pruned "
           "model two tasks share. Two draws of one task's examples do not keep the same units either: each "
           "task's **floor** is what its mask shares with that of another draw of as many of its examples. "
           "White is chance (random masks of the same size), dark blue the floor, red less than chance.")

served = [t for t in V.task_options(ctx.adapter) if ctx.adapter.supports(t)]
benchmark = [t for t in served if t in BENCHMARK]
default = list(dict.fromkeys(([ctx.task.name] if ctx.task.name in benchmark else []) + benchmark))[:3]
c = st.columns([3, 1.3, 1.2])
tasks = c[0].multiselect("Tasks", benchmark, default=default, key="overlap.tasks", persist_state="session", bind=W.URL)
unit_kinds = [k for k in KINDS if any(g.endswith("." + k) for g in ctx.facts["units"])]
kind = c[1].radio("Units", unit_kinds, key="overlap.kind", persist_state="session", horizontal=True, bind=W.URL,
                  format_func={"ffn": "FFN neurons", "heads": "heads", "kv": "key/value groups"}.get)
pct = c[2].slider("Pruned", 5, 95, 50, step=5, format="%d%%", key="overlap.sparsity", persist_state="session",
                  bind=W.URL)
scope = state.prune_settings([kind])["scope"]
if len(tasks) < 2:
    st.info("Choose two tasks or more.", icon=":material/info:")
    st.stop()

specs = {t: ctx.spec.for_task(t) for t in tasks}
have = {t: E.scores_for(ctx, s)[0] for t, s in specs.items()}
missing = [t for t, s in have.items() if s is None]
if missing:
    st.info(f"Attribution scores are missing for {', '.join(missing)} "
            f"({specs[missing[0]].describe().split(';', 1)[-1].strip()}).", icon=":material/info:")
    press = st.button(f"Compute them ({len(missing)} task{'s' if len(missing) > 1 else ''})", key="overlap.compute",
                      type="primary")
    running = [t for t in missing if getattr(E.scores_job(ctx, specs[t]), "running", False)]  # started elsewhere
    if press or running:
        try:  # one job per task, one after the other, each with its progress and a Cancel button
            for t in missing if press else running:
                if E.scores_for(ctx, specs[t], compute=True, label=f"attributing {t}")[0] is None:
                    st.stop()  # cancelled (said in one line): what was computed before stays cached
        except MtpruneError as exc:
            W.error(exc)
            st.stop()
        st.rerun()
    st.stop()

auto = getattr(ctx, "auto", None)  # the sidebar's auto examples: as many as its reliability target needs
how_many = ({"examples": "auto", "reliability": auto.target, "max_examples": auto.cap} if auto is not None
            else {"examples": ctx.spec.examples})
cfg = OverlapConfig(tasks=tuple(tasks), method=ctx.spec.method, sparsity=pct / 100, kinds=kind, scope=scope,
                    variant=ctx.spec.variant, seed=ctx.spec.seed, **how_many)
result = run_overlap(ctx.adapter, cfg, scores=have)
left, right = st.columns(2)
with left:
    W.show_figure(plots.overlap_heatmap(result.matrix, chance=result.chance, pairs=result.pairs,
                                        title=f"shared kept {plots.KIND_LABELS[kind]} at {pct}% pruned"),
                  key="overlap.matrix")
with right:
    W.show_figure(plots.overlap_layers_figure(result.per_layer, title="shared kept units per layer"),
                  key="overlap.lines")
st.caption(f"Random masks keeping as many units would share about {result.chance:.2f} (the dashed line). "
           "The diagonal shows each task's floor, simulated from the spread of its scores over its examples; a "
           "pair marked * shares less than either task shares with another draw of itself in 95% of simulated "
           "draws: those two tasks keep different units by more than the draw of examples explains. An unmarked "
           "pair's difference may be noise: more examples would tell.")
st.dataframe(readable_pairs(result.pairs), hide_index=True, key="overlap.pairs")

# ----------------------------------------------------------------------------------------------
st.subheader("Does one task's mask serve another?")
st.caption("Overlap says how much two masks share, not whether one works for the other task. Here every task is "
           "evaluated through its own head with every task's mask (rows), beside its own dense model and a random "
           "mask of the same size; every cell carries its 95% interval. Red: lost against dense.")
t1, t2, t3 = st.columns([1, 1, 1.4])
limit = t1.number_input("Examples per task", min_value=1, max_value=100000, value=200, step=50, key="overlap.limit",
                        persist_state="session", bind=W.URL, help="the first N labeled rows of each task's split")
SOLVERS = all_solvers()
repair = t2.selectbox("Repair", list(SOLVERS), key="overlap.repair", persist_state="session", bind=W.URL,
                      format_func=lambda n: SOLVERS[n].label,
                      help="repair every pruned model on its mask source's training rows first (slower)")
n_points = len(tasks) * (len(tasks) + 2)
t3.write("")
run = t3.button(f"Compute the transfer matrix ({n_points} evaluations)", key="overlap.transfer", type="primary")
memo = (ctx.fingerprint, tuple(tasks), kind, pct, scope, int(limit), repair, ctx.spec.method, ctx.spec.examples,
        ctx.spec.seed, ctx.spec.variant, auto)

try:  # a job: its progress, the time left and a Cancel button here; a page switch does not stop it
    from mtprune.experiments import EvalSettings
    from mtprune.experiments.transfer import TransferConfig, run_transfer

    tcfg = TransferConfig(tasks=tuple(tasks), sparsity=pct / 100, method=ctx.spec.method, kinds=kind, scope=scope,
                          variant=ctx.spec.variant, seed=ctx.spec.seed, repair=repair, **how_many)
    df = E.experiment(ctx, "transfer", memo, f"transfer matrix of {', '.join(tasks)} ({n_points} evaluations)",
                      partial(run_transfer, ctx.adapter, tcfg, EvalSettings(limit=int(limit)),
                              out=str(V.experiment_csv("transfer", ctx.adapter)), log=None), start=run)
except MtpruneError as exc:
    W.error(exc)
    df = None
if df is None:
    st.caption("Press the button: evaluations already made (same settings) are read back from disk.")
    st.stop()
from mtprune.experiments.transfer import format_transfer, transfer_matrix, verdict_table  # noqa: E402

matrix = transfer_matrix(df)
W.show_figure(plots.transfer_heatmap(matrix, title=f"accuracy of each task (columns) with each task's mask (rows), "
                                                   f"{pct}% of the {plots.KIND_LABELS[kind]} pruned"),
              key="overlap.transfer_matrix")
st.caption("Every cell is tested against the task's own mask and against the random mask of the same size, on "
           "the same rows (McNemar's exact test): ▼own / ▲own, measurably worse / better than the task's own "
           "mask; ≈rnd, no measurable difference from the random mask; ▼rnd, worse than it. An unmarked cell "
           "keeps as much as the task's own mask and more than a random one.")
verdicts = verdict_table(df)
if len(verdicts):
    st.dataframe(verdicts, hide_index=True, key="overlap.verdicts")
with st.expander("The matrix as a table (value [95% interval])"):
    st.markdown(format_transfer(matrix))
    st.download_button("Transfer rows (CSV)", df.to_csv(index=False).encode(), file_name="transfer.csv",
                       mime="text/csv", key="overlap.transfer_csv", on_click="ignore")
