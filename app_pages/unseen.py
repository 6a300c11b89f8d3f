"""Unseen domains: the source task's mask evaluated on other sets, dense against pruned."""

import streamlit as st

from mtprune import dashboard as D
from mtprune import plots
from mtprune.errors import MtpruneError
from ui import common as C

ctx = C.need_task()
src = ctx.task.name
st.title("Unseen domains")
st.caption(f"A mask built from **{src}** examples ({D.describe_spec(ctx.spec)}), evaluated on sets it never "
           "saw: other domains of the same task, read through the same head, or other tasks, read through "
           "their own heads (then their own mask is shown too).")

targets_all = D.unseen_targets(ctx.task, ctx.adapter)
unseen_only = D.unseen_targets(ctx.task, ctx.adapter, cross_task=False)
if not targets_all:
    st.info("No other set can be evaluated with this model.", icon=":material/info:")
    st.stop()

prev = C.prune_settings(["ffn", "heads"])
c = st.columns([3, 1.4, 1.4, 1])
targets = c[0].multiselect("Target sets", targets_all, default=(unseen_only or targets_all)[:3],
                           key="unseen.targets", persist_state="session",
                           format_func=lambda t: t + ("" if t in unseen_only else " (another task)"))
units = c[1].radio("Units", ["ffn", "heads", "all"], key="unseen.units", persist_state="session",
                   format_func={"ffn": "FFN neurons", "heads": "attention heads", "all": "both"}.get)
pct = c[2].slider("Pruned", 0, 95, round(100 * prev["sparsity"]["ffn" if units != "heads" else "heads"]) or 50,
                  step=5, format="%d%%", key="unseen.sparsity", persist_state="session")
limit = c[3].number_input("Examples per set", min_value=1, max_value=100000, value=200, step=50,
                          key="unseen.limit", persist_state="session")
baseline = st.checkbox("Also a random mask of the same size (the baseline)", value=True, key="unseen.random",
                       persist_state="session")

methods = (ctx.spec.method,) + (("random",) if baseline and ctx.spec.method != "random" else ())
settings = (ctx.fingerprint, src, tuple(targets), units, pct, int(limit), methods, ctx.spec.samples,
            ctx.spec.seed, ctx.spec.variant, prev["scope"])
results = st.session_state.setdefault("_unseen", {})
if st.button("Evaluate on the target sets", key="unseen.run", type="primary", disabled=not targets):
    from mtprune.experiments import run_unseen

    with st.status("Evaluating dense and pruned models...", expanded=True) as status:
        try:
            with C.model_busy(ctx):
                df = run_unseen(ctx.adapter, pairs=[(src, t) for t in targets], methods=methods,
                                sparsities=(0.0, pct / 100), samples=ctx.spec.samples, trials=1, units=units,
                                scope=prev["scope"], variant=ctx.spec.variant, limit=int(limit),
                                seed=ctx.spec.seed, out=str(D.experiment_csv("unseen", ctx.adapter)),
                                log=lambda m: st.text(m.strip()))
            results[settings] = df
            status.update(label="Done", state="complete", expanded=False)
        except MtpruneError as exc:
            status.update(label="Failed", state="error")
            C.error(exc)

df = results.get(settings)
if df is None:
    st.caption("Press the button: every set is evaluated dense, and with the mask at this sparsity "
               "(rows are cached on disk: the same settings later are read back).")
    st.stop()
labels, series = D.unseen_series(df, pct / 100)
C.show_figure(plots.grouped_bars(labels, series, metric="accuracy",
                                 title=f"accuracy with {pct}% of the {'units' if units == 'all' else units} pruned "
                                       f"by {src}'s mask"), key="unseen.bars")
table = {"set": labels, **{k: v for k, v in series.items()}}
st.dataframe(table, hide_index=True,
             column_config={k: st.column_config.NumberColumn(format="%.3f") for k in series})
