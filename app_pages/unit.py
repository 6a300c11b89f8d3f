"""One unit: search a unit by its id (a link ``?unit=encoder.2.ffn.1265`` opens it), its score and
rank with intervals in every task, the rows of a whole split where it fires most and the words it
fires on, the change in P(gold) without it, and the masks that keep it (mtprune.unit_profile)."""

PAGE = {"section": "Explore", "title": "One unit", "icon": ":material/neurology:", "order": 2.5}  # read by app.py

import streamlit as st

from mtprune import plots
from mtprune import unit_profile as U
from mtprune.errors import MtpruneError
from mtprune.masks import kinds_in
from mtprune.tasks import BENCHMARK
from ui import evaluations as E
from ui import session as S
from ui import state
from ui import unit_views as UV
from ui import views as V
from ui import widgets as W

AUTO_ROWS = 2000  # a split this small is searched at once; a larger one waits for a button
ADDRESS = "_unit.address"  # the id last read from or written to the address

ctx = S.need_task("One unit")
task = ctx.task
asked = st.query_params.get("unit")  # a link or a reload: the address fills the search box
if asked and asked != st.session_state.get(ADDRESS):
    st.session_state["unit.id"] = asked
    st.session_state[ADDRESS] = asked
text = st.text_input("Unit id", key="unit.id", placeholder="encoder.2.ffn.1265",
                     help="stack.layer.kind.unit: encoder.2.ffn.1265 is FFN neuron 1265 of encoder layer 2, "
                          "encoder.3.heads.7 attention head 7 of layer 3")
try:
    ranges = U.unit_ranges(ctx.adapter)  # one line for a model without units (an ONNX export)
    if not text.strip():
        st.info(f"Type a unit's id, as in encoder.2.ffn.1265, or open one from the drill-down of Attribution "
                f"heatmaps. This model's units: {ranges}.", icon=":material/search:")
        st.stop()
    ref, site = U.check_unit(ctx.adapter, text)
except MtpruneError as exc:
    W.error(exc)
    st.stop()
uid = U.unit_id(ref)
st.session_state[ADDRESS] = uid
if st.query_params.get("unit") != uid:
    st.query_params["unit"] = uid  # the address of this page now: a reload or a shared link opens it again
st.subheader(uid)
st.caption(f"{UV.describe_unit(ref, site.n_units)} · {ctx.model_name}")

# ----------------------------------------------------------------------------------------------
st.markdown("#### Its score and rank in every task")
tasks = list(dict.fromkeys([task.name] + [t for t in BENCHMARK if ctx.adapter.supports(t)]))
have = {t: E.scores_for(ctx, ctx.spec.for_task(t))[0] for t in tasks}  # memory or the disk cache, never computed
table = UV.standing_table(U.standings(ref, have), selected=task.name)
if table["percentile"].notna().any():
    W.show_figure(plots.unit_rank_figure(table, title=f"{uid}: percentile in its layer per task (95% interval of the "
                                                      "rank)"), key="unit.ranks")
st.dataframe(UV.standing_display(table), hide_index=True, key="unit.standing")
missing = [t for t, s in have.items() if s is None]
st.caption(f"Scores: {E.describe(ctx)}, each task's own examples. Score ± 1.96 standard errors of its fold sums; the "
           "rank's 95% interval over draws of as many examples (mtprune.reliability)."
           + (f" Not computed yet: {', '.join(missing)}." if missing else ""))
others = [t for t in missing if t != task.name]
b1, b2 = st.columns(2)
todo = []
if task.name in missing and b1.button(f"Compute the scores of {task.name}", key="unit.compute.task"):
    todo = [task.name]
if others and b2.button("Compute the scores of " + (others[0] if len(others) == 1 else
                                                  f"the {len(others)} other tasks"), key="unit.compute"):
    todo = others
try:
    for t in todo:
        E.scores_for(ctx, ctx.spec.for_task(t), compute=True, label=f"attributing {t}")
except MtpruneError as exc:
    W.error(exc)
else:
    if todo:
        st.rerun()

# ----------------------------------------------------------------------------------------------
st.markdown("#### Where it fires")
c1, c2 = st.columns(2)
splits = V.split_options(task)
W.reset_if_invalid("unit.split", splits, ctx.split if ctx.split in splits else splits[0])
split = c1.selectbox("Split", splits, index=splits.index(ctx.split) if ctx.split in splits else 0, key="unit.split",
                     bind=W.URL, persist_state="session", help="every row of it is read")
k = int(c2.number_input("Top rows", min_value=1, max_value=50, value=U.TOP_ROWS, key="unit.k", bind=W.URL,
                        persist_state="session"))
firing, size = None, 0
try:
    firing = U.unit_firing(ctx.adapter, task, split, ref, k, lookup_only=True)
    size = U.split_size(task, split) if firing is None else firing.rows
    if firing is None and (size <= AUTO_ROWS or st.button(f"Search all {size:,} rows of {task.name}/{split}",
                                                          key="unit.search")):
        bar = st.progress(0.0, text="reading the split...")
        try:
            with S.model_busy(ctx):
                firing = U.unit_firing(ctx.adapter, task, split, ref, k,
                                       progress=W.eta_progress(bar, f"{uid} over {task.name}/{split}, rows"))
        finally:
            bar.empty()
except MtpruneError as exc:
    W.error(exc)
if firing is None and size > AUTO_ROWS:
    st.caption(f"{task.name}/{split} has {size:,} rows: the search runs the model up to {site.name} only, and its "
               "result is kept on disk.")
elif firing is not None:
    st.caption(UV.firing_caption(firing) + ". The rows where it fires most; the stronger the colour, the stronger "
                                           "its activation there (hover a word for its value).")
    peak = max((r.peak for r in firing.top), default=0.0)
    for r in firing.top:
        st.markdown(UV.top_row_line(r, task.labels))
        st.html(V.tokens_html(r.tokens, r.values, peak=peak))
    w1, w2 = st.columns(2)
    w1.markdown(f"**Words it fires on most** (mean over their occurrences, seen {firing.min_count}+ times)")
    w1.dataframe(UV.words_table(firing), hide_index=True, key="unit.words")
    w2.markdown("**Words where rows peak**")
    w2.dataframe(UV.peak_words_table(firing), hide_index=True, key="unit.peak_words")

# ----------------------------------------------------------------------------------------------
st.markdown("#### Without it")
n_rows = int(st.number_input("Rows", min_value=8, max_value=20000, value=256, step=64, key="unit.rows", bind=W.URL,
                             persist_state="session", help=f"the first N labelled rows of {task.name}/{split}"))
try:
    effect = U.removal_effect(ctx.adapter, task, split, ref, n_rows, lookup_only=True)
    if effect is None:
        with st.spinner(f"P(gold) of {n_rows:,} rows with and without {uid}..."), S.model_busy(ctx):
            effect = U.removal_effect(ctx.adapter, task, split, ref, n_rows)
except MtpruneError as exc:
    W.error(exc)
else:
    st.markdown(f"Switched off alone, {uid} moves P(gold) by {UV.removal_words(effect)}.")
    W.show_figure(plots.removal_histogram(effect.changes, mean=effect.mean, interval=(effect.low, effect.high)),
                  key="unit.removal")

# ----------------------------------------------------------------------------------------------
st.markdown("#### The masks that keep it")
sources = []
if have.get(task.name) is not None:
    settings = state.prune_settings(kinds_in(have[task.name]))
    try:
        mask = E.mask_for_settings(ctx, have[task.name], settings)
        sources.append(U.MaskSource("Prune and evaluate's settings now", mask, task.name, UV.settings_words(settings)))
    except MtpruneError as exc:
        W.error(exc)
sources += [U.MaskSource(f"run {rid}", run.mask, run.task, run.settings.get("how") or "")
            for rid, run in state.store("runs").items() if run.fingerprint == ctx.fingerprint and run.mask is not None]
sources += U.run_masks(ctx.fingerprint)
uses = U.masks_keeping(ref, sources)
if uses:
    st.caption(UV.masks_caption(uses))
    st.dataframe(UV.masks_table(uses), hide_index=True, key="unit.masks")
else:
    st.caption("No mask yet: compute this task's scores (above) for the Prune page's mask, or evaluate a mask on "
               "Prune and evaluate to keep it as a run.")
