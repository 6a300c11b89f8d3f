"""Your own sentences: type a sentence (two for a pair task) and see what the dense, the pruned and
the repaired model say, which words carry the dense model's answer, and per layer the units that
carry it, with their standing in the task's scores (mtprune.explain)."""

PAGE = {"section": "Explore", "title": "Your own sentences", "icon": ":material/edit_note:", "order": 3.5}  # read by app.py

import streamlit as st

from mtprune.errors import MtpruneError
from mtprune.explain import check_texts, explain, repair_for
from mtprune.masks import kinds_in
from mtprune.solvers import all_solvers
from ui import evaluations as E
from ui import explain_views as X
from ui import session as S
from ui import state
from ui import widgets as W

RESULTS, REPAIRED = "_explain.results", "_explain.repaired"  # this page's own session keys

ctx = S.need_task("Your own sentences")
task = ctx.task
st.caption(f"{ctx.model_name} · {task.name} ({', '.join(task.labels)}). Type your own "
           f"{'pair of texts' if len(task.fields) > 1 else 'sentence'}: the dense model's answer, the pruned (and "
           "repaired) model's, the words that carry the dense answer and the units of every layer that do.")

cols = st.columns(len(task.fields))
texts = [c.text_area(field, key=f"explain.text{i}", bind=W.URL, persist_state="session", height=90,
                     placeholder="a sentence of your own") for i, (c, field) in enumerate(zip(cols, task.fields))]

scores, note = E.scores_for(ctx)  # memory or the disk cache; never computed here
c = st.columns([2, 1.2, 1, 1])
sources = {"prune": "Prune and evaluate's mask", "file": "a mask file", "none": "no mask (dense only)"}
source = c[0].radio("Pruned model", list(sources), format_func=sources.get, horizontal=True, key="explain.source",
                    bind=W.URL, persist_state="session",
                    help="the mask the Prune and evaluate page makes from the sidebar's scores and its settings, "
                         "a mask file saved by mtprune, or none")
solvers = list(all_solvers())
repair = c[1].selectbox("Repair", solvers, key="explain.repair", bind=W.URL, persist_state="session",
                        disabled=source == "none", help="also refit the pruned model on calibration rows (seconds "
                                                        "to a minute; kept for this session)")
calib = c[2].number_input("Calibration rows", min_value=8, max_value=4096, value=256, step=64, key="explain.calib",
                          bind=W.URL, persist_state="session", disabled=source == "none" or repair == "none")
top = c[3].number_input("Units per layer", min_value=1, max_value=50, value=5, key="explain.top", bind=W.URL,
                        persist_state="session")

mask = None
if source == "prune":
    if scores is None:
        st.info(f"No attribution scores yet for {E.describe(ctx)}: the Prune page's mask comes from them.",
                icon=":material/info:")
        if st.button("Compute attributions", key="explain.compute"):
            try:
                E.scores_for(ctx, compute=True)
            except MtpruneError as exc:
                W.error(exc)
                st.stop()
            st.rerun()
    else:
        settings = state.prune_settings(kinds_in(scores))
        try:
            mask = E.mask_for_settings(ctx, scores, settings)
        except MtpruneError as exc:
            W.error(exc)
        else:
            how = (f"budget {settings['budget']} over heads and FFN neurons" if settings["mode"] == "budget" else
                   ", ".join(f"{k} {p:.0%}" for k, p in settings["sparsity"].items())
                   + (" pruned per layer" if settings["scope"] == "layer" else " pruned over the whole model"))
            st.caption(f"The mask of the settings of **Prune and evaluate**: {how}; scores from {E.describe(ctx)}.")
elif source == "file":
    mask, _ = W.uploaded_mask("A mask saved by mtprune (.json or .safetensors)", "explain.upload", ctx.adapter)
solver = repair if mask is not None else "none"

key = (ctx.fingerprint, task.name, tuple(t.strip() for t in texts), mask.digest() if mask is not None else None,
       solver, int(calib) if solver != "none" else None, int(top), scores.spec.key() if scores is not None else None)
results = st.session_state.setdefault(RESULTS, {})
if st.button("Explain", key="explain.run", type="primary"):
    try:
        chosen = check_texts(task, texts)
        with S.model_busy(ctx):
            repaired = None
            if solver != "none":
                rkey = (ctx.fingerprint, task.name, mask.digest(), solver, int(calib))
                kept = st.session_state.get(REPAIRED) or {}
                if rkey not in kept:
                    bar = st.progress(0.0, text=f"repairing ({solver})...")
                    kept = {rkey: repair_for(ctx.adapter, task, mask, solver, int(calib),
                                             progress=W.eta_progress(bar, f"repairing ({solver}), layers"))}
                    st.session_state[REPAIRED] = kept  # one repaired model per session
                    bar.empty()
                repaired = kept[rkey]
            with st.spinner("explaining..."):
                results[key] = explain(ctx.adapter, task, chosen, mask=mask, repaired=repaired, scores=scores,
                                       top=int(top))
    except MtpruneError as exc:
        W.error(exc)

res = results.get(key)
if res is None:
    st.caption("Type the text and press **Explain**.")
    st.stop()

for n in res.notes:
    st.warning(n.capitalize(), icon=":material/content_cut:")
shown = res.predictions()
mcols = st.columns(len(shown) + 1)
names = {"dense": "Dense model", "pruned": "Pruned model", "repaired": f"Repaired model ({solver})"}
for col, p in zip(mcols, shown):
    col.metric(names[p.model], p.label, help=", ".join(f"{k} {v:.4f}" for k, v in zip(p.labels, p.probs)))
    col.caption(X.prediction_words(p, res.dense))
mcols[-1].dataframe(X.probability_table(res), hide_index=True)
if res.repair:
    st.caption(res.repair)

st.subheader(f"Words that carry P({res.label})")
peak = X.peak_of(res.words)
for seg, field in enumerate(task.fields):
    st.markdown((f"**{field}**" if len(task.fields) > 1 else "") + X.words_html(res.words, seg, peak),
                unsafe_allow_html=True)  # every word is escaped by words_html
ig = res.ig
st.caption(f"Integrated gradients of the dense model's P({res.label}) over {ig['steps']} steps, from the text with "
           f"{ig['baseline']} (P {ig['p_baseline']:.3f}) to the text (P {ig['p']:.3f}): red words raise it, blue ones "
           f"lower it (the value on hover). They add up to {ig['sum']:+.3f} against a change of "
           f"{ig['p'] - ig['p_baseline']:+.3f}; the gap is the integration's error. One sentence, one model: "
           "nothing here is averaged over examples.")

st.subheader(f"Units that carry P({res.label}), per layer")
st.caption(f"Each unit's activation times the gradient of P({res.label}), summed over this text's tokens (> 0: it "
           f"raises P); the top {int(top)} of every layer and kind by magnitude, with their share of the layer's "
           f"summed magnitude. Their standing in the task's scores: {res.reliability}.")
st.dataframe(X.units_frame(res), hide_index=True,
             column_config={"effect on P": st.column_config.NumberColumn(format="%+.4f"),
                            "share of layer": st.column_config.NumberColumn(format="percent")})
