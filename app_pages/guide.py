"""Learn the method: task-specific pruning in six steps, on a live example, in plain words."""

PAGE = {"section": "Share and learn", "title": "Learn the method", "icon": ":material/school:", "order": 7}  # read by app.py

from dataclasses import replace

import numpy as np
import streamlit as st

from mtprune import plots
from mtprune.masks import mask_from_scores
from mtprune.pruning import count_parameters
from mtprune.text import human_count
from mtprune.units import ordered_groups
from ui import evaluations as E
from ui import sections
from ui import session as S
from ui import views as V
from ui import widgets as W

ctx = S.need_task("Learn the method")
t = ctx.task
st.markdown(
    f"A multi-task model serves many tasks with one shared network. A single task, here **{t.name}** "
    f"({t.description}), uses only part of it. This page finds that part and removes the rest, "
    "without any retraining, in six steps. Every chart is computed live on the model in the sidebar."
)

st.header("1. A model is made of units")
f = ctx.facts
per_layer = ", ".join(f"{n[0]} {plots.KIND_LABELS.get(g.split('.')[1], g)}" for g, n in f["units"].items())
st.markdown(
    f"**{f['name']}** has {f['layers']} layers. Every layer has {per_layer}. An *FFN neuron* is one "
    "hidden unit of the layer's feed-forward block; an *attention head* is one of the parallel "
    "attention mechanisms. Each unit can be switched off on its own: that is what pruning does."
)

st.header("2. Show the model a few examples of the task")
split = ctx.spec.split or t.train_split
how_many = f"**{ctx.spec.examples}**" if ctx.auto is None else "enough (step 4 says how many is enough)"
st.markdown(f"We take {how_many} labelled examples from {t.name}/{split}, the same number of each label. "
            "Here are three:")
try:
    ex = E.example_rows(t.name, split, ctx.spec.seed, 3)
    st.dataframe([{**{k: r[k] for k in t.fields}, "label": t.labels[int(r["label"])]} for r in ex],
                 hide_index=True)
except Exception as exc:
    W.error(exc)

st.header("3. Score every unit: how much does the task need it?")
st.markdown(
    "For each example we run the model, read how much probability it gives the right answer, and ask "
    "for every unit: *if this unit were switched off, how much would that probability change?* A "
    "first-order estimate of that is the unit's **activation times the gradient** of the probability "
    "with respect to it. Adding up its size over the examples gives one score per unit: high means "
    "the task relies on it."
)
scores, note = E.scores_or_button(ctx, key="guide.compute")
g = ordered_groups(scores.arrays)[0]
word = plots.unit_word(g)
W.show_figure(plots.score_heatmap(scores.arrays[g], group=g, scale="log",
                                  title=f"{plots.group_label(g)}: score of every unit (log colour scale)"),
              key="guide.heatmap")
top = plots.top_units(scores.arrays[g], 1, group=g).iloc[0]
shares = plots.score_shares(scores.arrays[g])
n = scores.arrays[g].shape[1]
tenth = shares[:, max(0, n // 10 - 1)]
st.markdown(
    f"Each row is a layer, each thin column one {word}; bright means needed. The most needed {word} "
    f"is number {int(top[word])} of layer {int(top['layer'])}. The needed units are spread over the whole "
    f"layer, not in one block. They are not equal either: the top 10% of each layer's {word}s hold "
    f"**{100 * np.nanmin(tenth):.0f}-{100 * np.nanmax(tenth):.0f}%** of its score (10% if every unit "
    "counted the same). The curve below shows this for every share: the further it bulges above the "
    "dotted line, the more a few units matter, and the more can be removed safely."
)
W.show_figure(plots.score_concentration(scores.arrays[g], group=g), key="guide.shares")

st.header("4. Check the reliability before reading a single unit")
few, many = V.GUIDE_DRAWS
st.markdown(
    f"The scores come from a random draw of examples: another draw gives another map. How much is measured by the "
    "**reliability**, the expected rank correlation (Spearman) of the scores with those of another draw of as many "
    f"examples (1: the same order; 0: unrelated). Below, {t.name} and the same method on {few} examples beside "
    f"{many:,} (the {many:,} start with the {few})."
)
draws = sections.scores_by_draws(ctx, V.doublings(few, many), key="guide.draws") if ctx.spec.info.needs_data else None
if not ctx.spec.info.needs_data:
    st.info(f"{ctx.spec.info.label} reads no examples: every draw gives the same scores. Pick a method that reads "
            "examples in the sidebar's attribution settings to see this step.", icon=":material/info:")
elif draws is not None:
    rels = {n: V.reliabilities(s) for n, s in draws.items()}
    r_few, r_many = (rels[n][g].spearman for n in (few, many))
    for col, n in zip(st.columns(2), (few, many)):
        with col:
            W.show_figure(plots.score_heatmap(draws[n].arrays[g], group=g, scale="log",
                                              layer_reliability=V.layer_reliability(rels[n], g),
                                              title=f"{n:,} examples: reliability {rels[n][g].spearman:.2f}"),
                          key=f"guide.draw.{n}")
    W.show_figure(plots.reliability_curve(list(draws), V.reliability_series(rels), target=V.LOW_RELIABILITY,
                                          title=f"{t.name}: reliability as examples are added (dotted: {V.LOW_RELIABILITY})"),
                  key="guide.reliability")
    st.markdown(
        f"The reliability {'rose' if r_many > r_few else 'moved'} from **{r_few:.2f}** at {few} examples to **{r_many:.2f}** at {many:,}. At {few} "
        f"examples much of the map is the draw: a bright {word} there may be dim on the next draw, and it looks just as "
        "convincing. The lesson: **a map from few examples is mostly the draw of examples; check the reliability "
        "before you read a single unit.** Attribution heatmaps shows it beside every map (each layer's on hover) "
        f"and warns under {V.LOW_RELIABILITY}; the sidebar's Examples left empty (auto) add examples until every kind "
        "reaches the sidebar's reliability (0.9 unless changed)."
    )

st.header("5. Keep the units the task needs, remove the rest")
pct = st.slider(f"Share of {plots.KIND_LABELS.get(g.split('.')[1])} to remove", 0, 95, 50, step=5,
                format="%d%%", key="guide.sparsity", persist_state="session")
mask = mask_from_scores(scores, {g.split(".")[1]: pct / 100}, scope="layer")

params = count_parameters(ctx.adapter, mask)
st.markdown(
    f"In every layer we keep the top {100 - pct}% by score. The model goes from "
    f"**{human_count(f['parameters'])}** to **{human_count(params)}** parameters "
    f"({(params - f['parameters']) / f['parameters']:+.0%})."
)
W.show_figure(plots.keep_heatmap(mask.keep[g], mask.n_units[g], scores=scores.arrays[g], group=g),
              key="guide.mask")
st.markdown(f"The kept {word}s (green) sit where the bright units of step 3 were: another task would keep "
            "others (see **Task overlap**).")

st.header("6. Check that the pruned model still does the task")
st.markdown("A fair check needs a baseline: a **random mask** of the same size, which removes as many units "
            "of each layer, but chosen by chance. If the scores mean something, the attribution mask keeps more "
            "accuracy than the random one.")
random_spec = replace(ctx.spec, method="random")
random_scores, _ = E.scores_for(ctx, random_spec, compute=True, label="drawing random scores")
random_mask = mask_from_scores(random_scores, {g.split(".")[1]: pct / 100}, scope="layer")
left, right = st.columns(2)
with left:
    W.show_figure(plots.keep_heatmap(mask.keep[g], mask.n_units[g], group=g,
                                     title=f"attribution mask: {mask.kept(g)} of {mask.total(g)} kept"),
                  key="guide.mask.attr")
with right:
    W.show_figure(plots.keep_heatmap(random_mask.keep[g], random_mask.n_units[g], group=g,
                                     title=f"random mask: {random_mask.kept(g)} of {random_mask.total(g)} kept"),
                  key="guide.mask.random")
limit = st.number_input("Examples to check", min_value=1, max_value=5000, value=100, step=50,
                        key="guide.limit", persist_state="session", bind=W.URL)
if st.button(f"Evaluate dense, pruned and random on {t.name}/{ctx.split}", key="guide.evaluate", type="primary"):
    try:
        E.evaluate_dense_and_pruned(ctx, t.name, ctx.split, int(limit), mask)
        E.evaluate(ctx, t.name, ctx.split, int(limit), random_mask)
    except Exception as exc:
        W.error(exc)
dense = E.find_eval(ctx, t.name, ctx.split, int(limit))
pruned = E.find_eval(ctx, t.name, ctx.split, int(limit), mask.digest())
rand = E.find_eval(ctx, t.name, ctx.split, int(limit), random_mask.digest())
if dense is not None and pruned is not None and rand is not None:
    from mtprune.evaluation import compare

    series = {"dense": [dense.accuracy], "attribution mask": [pruned.accuracy], "random mask": [rand.accuracy]}
    bands = {k: ([r.interval()[0]], [r.interval()[1]]) for k, r in
             {"dense": dense, "attribution mask": pruned, "random mask": rand}.items()}
    W.show_figure(plots.grouped_bars([t.name], series, intervals=bands,
                                     title="accuracy: dense, attribution mask, random mask (bars: 95% intervals)"),
                  key="guide.result")
    vs_random = compare(rand, pruned)
    drop = dense.accuracy - pruned.accuracy
    st.markdown(
        f"With {pct}% of the units gone the accuracy moved from {dense.accuracy:.3f} to "
        f"{pruned.accuracy:.3f} ({0.0 - drop:+.3f}); the random mask of the same size gives {rand.accuracy:.3f}. "
        f"The black bars are 95% intervals: with {dense.n} rows, differences inside them are not measured "
        "differences. A paired test of the two masks on the same rows says: "
        f"*{vs_random.sentence('the random mask', 'the attribution mask')}*"
    )

st.header("What next")
st.markdown(
    "* Different tasks keep different units: **Task overlap** measures how much two tasks' masks share.\n"
    "* A mask found on one data set may or may not carry over to another of the same task: "
    "**Unseen domains**.\n"
    "* Other scores (integrated gradients, activations, random) are in the sidebar's attribution "
    "settings; **Prune and evaluate** compares them across sparsities.\n"
    "* A control worth trying: `random-label` scores the same examples towards a random head instead "
    "of the task's labels. On the default model it keeps as much accuracy as `ap` (0.721 against "
    "0.721 over six tasks): which units a task needs is decided mostly by the task's *inputs*, much "
    "less by its labels."
)
