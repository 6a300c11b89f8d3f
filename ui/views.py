"""What the pages show, free of streamlit: choices for the sidebar, labels, small tables and
progress mapping. The library computes; this module words and arranges."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mtprune import assets
from mtprune.errors import MtpruneError
from mtprune.plots import group_label
from mtprune.tasks import BENCHMARK, TASKS, TaskSpec, available_splits, get_task

OTHER_MODEL = "a local directory..."

# ----------------------------------------------------------------------------------------------
# sidebar choices


def model_options() -> list[str]:
    """``default``, the other models under ``MTPRUNE_HOME/models``, then the local-directory entry."""
    try:
        names = [name for name, _ in assets.model_dirs()]
    except MtpruneError:
        names = []
    return ["default", *[n for n in names if n != "default"], OTHER_MODEL]


def task_options(adapter=None) -> list[str]:
    """Every task, those the model can serve first (benchmark order, then others)."""
    order = list(BENCHMARK) + [t for t in TASKS if t not in BENCHMARK]
    if adapter is None:
        return order
    ok = [t for t in order if adapter.supports(t)]
    return ok + [t for t in order if t not in ok]


def task_label(name: str, adapter=None) -> str:
    t = get_task(name)
    label = f"{name}: {t.description}" if t.description else name
    if adapter is not None and not adapter.supports(t):
        label += " (no head)"
    return label


def split_options(task: TaskSpec | str) -> list[str]:
    """The task's splits with local data first; all its splits when none is local."""
    task = get_task(task) if isinstance(task, str) else task
    return available_splits(task) or list(task.splits)


def default_eval_split(task: TaskSpec | str) -> str:
    task = get_task(task) if isinstance(task, str) else task
    opts = split_options(task)
    return task.default_split if task.default_split in opts else opts[-1]


def unseen_targets(task: TaskSpec | str, adapter=None, cross_task: bool = True) -> list[str]:
    """Sets a mask from ``task`` can be evaluated on: the unseen domains its head reads (imdb,
    yelp... for sst2; scitail for rte and qnli; sick for cb), then (``cross_task``) the other
    benchmark tasks the model serves, read through their own heads."""
    task = get_task(task) if isinstance(task, str) else task
    head = adapter.head_for(task) if adapter is not None else task.task_heads[0]
    unseen = [t.name for t in TASKS.values() if t.name != task.name and t.label_source and head in t.label_source]
    cross = []
    if cross_task:
        cross = [t for t in BENCHMARK if t != task.name and (adapter is None or adapter.supports(t))]
    return unseen + cross


# ----------------------------------------------------------------------------------------------
# tables and words


def units_table(info: dict) -> pd.DataFrame:
    """One row per layer, one column per unit group, from ``adapter.info()``."""
    df = pd.DataFrame({group_label(g): pd.Series(n) for g, n in info["units"].items()})
    df.index.name = "layer"
    return df.fillna(0).astype(int)


def units_line(info: dict) -> str:
    """``1536 FFN neurons, 12 heads`` per layer (a range where layers differ)."""
    parts = []
    for g, n in info["units"].items():
        if g.startswith("encoder") or len(info["units"]) <= 2:
            count = n[0] if len(set(n)) == 1 else f"{min(n)}-{max(n)}"
            parts.append(f"{count} {'heads' if g.endswith('heads') else 'FFN neurons'}")
    return ", ".join(parts)


def mask_table(mask) -> pd.DataFrame:
    """Kept units per layer and group (``kept / total``)."""
    from mtprune.units import ordered_groups

    cols = {}
    for g in ordered_groups(mask.groups):
        cols[group_label(g)] = [f"{k} / {n}" for k, n in zip(mask.kept_per_layer(g), mask.n_units[g])]
    width = max((len(v) for v in cols.values()), default=0)
    df = pd.DataFrame({k: v + [""] * (width - len(v)) for k, v in cols.items()})
    df.index.name = "layer"
    return df


def recorded_accuracy(adapter, task: TaskSpec | str) -> tuple[float | None, str]:
    """``(accuracy, what it is)`` the model's files record for the task's head: a dense model's
    validation accuracy from ``tasks.json``, a pruned model's what was measured on it (never its
    source's figure); ``(None, "not measured")`` when there is none."""
    from mtprune.formats import ModelAdapter
    from mtprune.pruning import PRUNED_KEY

    try:
        head = adapter.head_for(task)
    except MtpruneError:
        return None, "no head"
    pruned = getattr(adapter.model.config, PRUNED_KEY, None) if isinstance(adapter, ModelAdapter) else None
    if pruned is not None:
        m = (pruned.get("measured") or {}).get(head)
        if not m:
            return None, "not measured on this pruned model"
        return float(m["accuracy"]), f"measured on this pruned model ({m['rows']:,} {m['split']} row{'' if m['rows'] == 1 else 's'})"
    meta = getattr(adapter, "tasks_meta", None) or {}
    v = (meta.get("tasks") or {}).get(head, {}).get("validation_accuracy")
    return (float(v), "recorded at training (validation split)") if v is not None else (None, "not recorded")


def eta_text(done: float, total: float, elapsed: float) -> str:
    """``12 / 40 · about 1 min 10 s left`` (from the pace so far)."""
    from mtprune.text import fmt_seconds

    head = f"{int(done)} / {int(total)}"
    if done <= 0 or total <= 0 or done >= total:
        return head + (f" · {fmt_seconds(elapsed)}" if done >= total > 0 else "")
    return f"{head} · about {fmt_seconds(elapsed / done * (total - done))} left"


def experiment_csv(kind: str, adapter) -> Path:
    """The CSV where the dashboard keeps ``kind`` results of this model (rows are keyed and
    resumed by :mod:`mtprune.experiments`, so a second visit, even after a restart, reads them)."""
    d = assets.cache_dir() / "dashboard"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{kind}-{adapter.fingerprint()[:16]}.csv"


def sweep_config(spec, methods: Sequence[str], sparsities: Sequence[float], scope: str = "layer",
                 kinds: str = "ffn", trials: int = 1):
    """A one-task :class:`mtprune.experiments.SweepConfig` with the sidebar's attribution settings."""
    from mtprune.experiments import SweepConfig

    return SweepConfig(tasks=(spec.task,), methods=tuple(methods), sparsities=tuple(float(p) for p in sparsities),
                       kinds=kinds, scope=scope, examples=(int(spec.examples),), trials=int(trials),
                       variant=spec.variant, seed=int(spec.seed), unsupervised=(bool(spec.unsupervised),),
                       attribution_split=spec.split, steps=int(spec.steps))


# ----------------------------------------------------------------------------------------------
# settings in the dashboard's words


def parse_percentages(text: str) -> tuple[float, ...]:
    """``"0, 20, 40, 60%"`` -> ``(0.0, 0.2, 0.4, 0.6)``: sparsities typed as the sliders show them,
    in percent; sorted, repeats dropped."""
    out = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip().rstrip("%").strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise MtpruneError(f"sparsities are percentages from 0 to 100 separated by commas; {part!r} is not a number") from None
        if not 0 <= v <= 100:
            raise MtpruneError(f"sparsities are percentages from 0 to 100; {v:g} is outside")
        out.append(round(v / 100, 6))
    if not out:
        raise MtpruneError("type at least one sparsity, in percent (for example 0, 20, 40, 60, 80)")
    return tuple(sorted(set(out)))


def mask_slug(settings: dict, heads_per_layer: int | None = None) -> str:
    """How a mask is named in file and folder names: ``ffn70-heads25`` (percent pruned; heads as
    the share of each layer's heads), ``flops60`` (a budget: its measure and the percent kept)."""
    if settings.get("mode") == "budget":
        return f"{settings['budget'].measure}{settings['budget'].percent}"
    parts = []
    for kind, p in settings["sparsity"].items():
        if kind in ("heads", "kv") and not p:
            continue
        parts.append(f"{kind}{round(100 * float(p))}")
    return "-".join(parts) or "dense"


def per_layer_label(n_pruned: int, per_layer: int, what: str = "heads") -> str:
    return f"{n_pruned} of {per_layer} {what} per layer pruned ({n_pruned / per_layer:.0%})" if per_layer else ""


# ----------------------------------------------------------------------------------------------
# per-example comparison


def _text_of(row: dict, task: TaskSpec, width: int = 400) -> str:
    text = " || ".join(str(row.get(f, "")) for f in task.fields)
    return text if len(text) <= width else text[: width - 1] + "…"


def flips_table(rows: Sequence[dict], task: TaskSpec | str, a, b, a_name: str = "dense",
                b_name: str = "pruned") -> pd.DataFrame:
    """Every row of two evaluations on the same rows, side by side: the text, the gold label, each
    model's prediction and P(gold), the change in P(gold) and what happened (``right -> wrong``,
    ``wrong -> right``, ``both right``, ``both wrong``)."""
    task = get_task(task) if isinstance(task, str) else task
    pa, pb = a.predictions, b.predictions
    if pa is None or pb is None:
        raise MtpruneError("these results were computed without their predictions: evaluate again")
    if len(rows) != len(pa.gold) or len(pb.gold) != len(pa.gold):
        raise MtpruneError("the rows and the two evaluations differ in length: evaluate both on the same rows")
    names = list(task.labels)
    ca, cb = pa.correct, pb.correct
    what = pd.Series("both right", index=range(len(ca)))
    what[ca & ~cb] = "right -> wrong"
    what[~ca & cb] = "wrong -> right"
    what[~ca & ~cb] = "both wrong"
    return pd.DataFrame({
        "row": range(len(rows)),
        "text": [_text_of(r, task) for r in rows],
        "gold": [names[int(g)] for g in pa.gold],
        a_name: [names[int(p)] for p in pa.pred],
        b_name: [names[int(p)] for p in pb.pred],
        f"P(gold) {a_name}": pa.p_gold.round(4),
        f"P(gold) {b_name}": pb.p_gold.round(4),
        "change in P(gold)": (pb.p_gold - pa.p_gold).round(4),
        "what changed": what.to_numpy(),
    })


def confusion_frame(result, task: TaskSpec | str) -> pd.DataFrame:
    """Rows: gold label, columns: predicted label, cells: counts."""
    from mtprune.evaluation import confusion

    task = get_task(task) if isinstance(task, str) else task
    p = result.predictions
    if p is None:
        raise MtpruneError("this result was computed without its predictions: evaluate again")
    c = confusion(p.pred, p.gold, task.num_labels)
    df = pd.DataFrame(c, index=list(task.labels), columns=list(task.labels))
    df.index.name = "gold"
    return df


# ----------------------------------------------------------------------------------------------
# one unit up close


def tokens_html(tokens: Sequence[str], values, peak: float | None = None, color: str = "231, 111, 81") -> str:
    """The text with every word's background as strong as the unit's activation there (relative to
    ``peak``, default the largest here): word pieces are joined into words
    (:func:`mtprune.text.join_pieces`), a word showing its strongest piece; the values in each
    word's tooltip (per piece when it has several). HTML-escaped."""
    import html

    import numpy as np

    from mtprune.text import join_pieces

    raw = np.asarray(values, dtype=float)
    v = np.abs(raw)
    top = float(peak) if peak else (float(v.max()) if len(v) else 0.0)
    toks = [str(t) for t in tokens]
    parts = []
    for word, idx in join_pieces(toks[: len(raw)]):
        best = max(idx, key=lambda i: v[i])
        alpha = 0.0 if top <= 0 else min(1.0, v[best] / top)
        tip = f"{raw[best]:.3g}" if len(idx) == 1 else f"{word}: " + ", ".join(f"{toks[i]} {raw[i]:.3g}" for i in idx)
        parts.append(f'<span title="{html.escape(tip)}" style="background: rgba({color}, {alpha:.2f}); '
                     f'border-radius: 3px; padding: 0 1px">{html.escape(word)}</span>')
    return '<div style="line-height: 1.9; font-size: 0.95em">' + " ".join(parts) + "</div>"


def unit_task_table(scores_by_task: dict, group: str, layer: int, unit: int, selected: str | None = None) -> pd.DataFrame:
    """One unit in every task: its score, its rank and percentile within the layer (100 = the
    layer's most needed unit for that task). ``scores_by_task`` maps a task to its Scores (or None:
    not computed)."""
    import numpy as np

    from mtprune.plots import layer_ranks

    out = []
    for task, scores in scores_by_task.items():
        if scores is None or group not in scores.arrays:
            out.append({"task": task, "score": np.nan, "rank in layer": np.nan, "percentile": np.nan,
                        "selected": task == selected})
            continue
        a = np.asarray(scores.arrays[group], dtype=float)
        n = int(np.sum(~np.isnan(a[layer])))
        rank = int(layer_ranks(a)[layer, unit])
        out.append({"task": task, "score": float(a[layer, unit]), "rank in layer": rank,
                    "percentile": 100.0 * (n - rank) / max(n - 1, 1), "selected": task == selected})
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------------------------
# the run history


def history_record(ctx_model: str, result, comparison=None, *, method: str, how: str, repair: str = "none",
                   params: int | None = None, flops_kept: float | None = None, session: str = "",
                   sparsity: float | None = None) -> dict:
    """One row of :class:`mtprune.history.RunHistory` for an evaluation shown in the app."""
    lo, hi = result.interval("accuracy")
    rec = {"task": result.task, "split": result.split, "rows": result.n, "model": ctx_model, "method": method,
           "how": how, "repair": repair, "metric": "accuracy", "value": round(result.accuracy, 6),
           "low": round(lo, 6), "high": round(hi, 6), "params": params,
           "flops_kept": None if flops_kept is None else round(flops_kept, 4), "session": session,
           "sparsity": sparsity}
    if comparison is not None:
        rec.update(dense=round(comparison.a["accuracy"], 6), verdict=comparison.verdict,
                   p_value=float(f"{comparison.p_value:.4g}"))
    return rec


def history_points(df: pd.DataFrame, task: str, split: str, metric: str = "accuracy") -> pd.DataFrame:
    """The history's runs a sweep chart can place: this task and split, this metric, a mask of FFN
    neurons at one sparsity (``sparsity`` recorded)."""
    if df is None or df.empty or "sparsity" not in df.columns:
        return pd.DataFrame(columns=["task", "sparsity", "value", "low", "high", "label"])
    d = df[(df["task"] == task) & (df["split"] == split) & (df["metric"] == metric) & df["sparsity"].notna()].copy()
    d["sparsity"] = d["sparsity"].astype(float)
    d["label"] = (d["method"].astype(str) + " · " + d["how"].astype(str) + " · " + d["rows"].astype(str) + " rows"
                  + np.where(d["repair"].fillna("none").astype(str) != "none", " · repair " + d["repair"].astype(str), ""))
    return d[["task", "sparsity", "value", "low", "high", "label"]]


def picked_unit(points: Sequence[dict], layer: int | None = None) -> tuple[int, int] | None:
    """``(layer, unit)`` of the first point of a chart selection: the unit is the point's
    ``customdata[0]``; the layer its ``y`` (a map) or ``layer`` (one layer's bars). None when the
    selection holds no such point (a click on an empty chart, a band, a legend)."""
    for p in points or ():
        cd = p.get("customdata")
        if isinstance(cd, dict):  # a typed array's row comes back as {"0": ..., "1": ...}
            cd = [cd[k] for k in sorted(cd, key=lambda k: int(k))] if cd else None
        unit = cd[0] if isinstance(cd, (list, tuple)) and cd else cd
        y = layer if layer is not None else p.get("y")
        try:
            return int(y), int(unit)
        except (TypeError, ValueError):
            continue
    return None


# ----------------------------------------------------------------------------------------------
# how far the scores can be trusted (mtprune.reliability)

LOW_RELIABILITY = 0.8  # under it a map is mostly the draw of examples: the pages warn
GUIDE_DRAWS = (64, 1024)  # the Guide's two maps: few examples, many (each draw extends the one before)


def examples_of(scores) -> int:
    """How many examples the scores read (the auto draw's, not the sidebar's placeholder)."""
    return int(scores.meta.get("examples") or scores.spec.examples)


def auto_words(auto) -> str:
    """:meth:`mtprune.examples_auto.AutoExamples.describe` in the dashboard's words."""
    return "examples auto: " + auto.describe().replace("the cap (--max-examples)", "the cap (Up to, in the sidebar)")


def reliabilities(scores) -> dict:
    """``{group: GroupReliability}``; ``{}`` when unknown (no folds) or when the method reads no examples."""
    return scores.reliability() if scores.spec.info.needs_data else {}


def layer_reliability(rel: dict, group: str) -> list[float] | None:
    """One group's reliability per layer (the heatmap's hover), or None when unknown."""
    r = rel.get(group)
    return list(r.per_layer) if r is not None else None


def reliability_line(scores, rel: dict, group: str) -> str:
    """``reliability 0.80: another draw of 256 examples would rank these neurons with Spearman
    0.80``; or why there is none."""
    from mtprune.plots import unit_word

    info = scores.spec.info
    if not info.needs_data:
        return f"{info.label} reads no examples: another draw gives the same scores, so there is no draw to doubt"
    r = rel.get(group)
    if r is None or not np.isfinite(r.spearman):
        return ("reliability unknown: these scores carry no fold sums to measure it from (an entry cached before "
                "they were kept, or fewer than two examples)")
    return (f"reliability {r.spearman:.2f}: another draw of {examples_of(scores):,} examples would rank these "
            f"{unit_word(group)}s with Spearman {r.spearman:.2f} (each layer's own on hover)")


def low_reliability(rel: dict) -> dict[str, float]:
    """``{short kind name: reliability}`` of the groups under :data:`LOW_RELIABILITY`."""
    from mtprune.reliability import short_names

    name = short_names(rel)
    return {name[g]: r.spearman for g, r in rel.items() if r.spearman < LOW_RELIABILITY}


def low_reliability_warning(low: dict[str, float], examples: int) -> str:
    kinds = ", ".join(f"{k} {v:.2f}" for k, v in low.items())
    return (f"Reliability under {LOW_RELIABILITY} ({kinds} at {examples:,} examples): these maps are mostly the draw "
            "of examples, not the task. Another draw of as many examples would light up other units: add examples "
            "before reading single units.")


def unit_uncertainty(scores, group: str, layer: int, unit: int, sparsity: float) -> dict | None:
    """One unit's score with its standard error, its rank in the layer with the 95% interval, and
    its chance to be kept by another draw at ``sparsity`` (the share of the layer pruned); None
    without fold sums."""
    from mtprune.plots import layer_ranks
    from mtprune.reliability import keep_stability, rank_intervals

    ses = scores.standard_errors() if scores.spec.info.needs_data else None
    if ses is None:
        return None
    n = int(scores.n_units[group][layer])
    total = np.asarray(scores.arrays[group][layer, :n], dtype=np.float64)
    se = np.asarray(ses[group][layer, :n], dtype=np.float64)
    low, high = rank_intervals(total, se, seed=layer)  # the seed to_frame uses: the same interval as the CSV
    _, kept = keep_stability(total, se, sparsity, seed=layer)
    return {"score": float(total[unit]), "se": float(se[unit]), "rank": int(layer_ranks(scores.arrays[group])[layer, unit]),
            "rank_low": int(low[unit]), "rank_high": int(high[unit]), "n": n, "kept": float(kept[unit]),
            "sparsity": float(sparsity)}


def unit_line(scores, group: str, layer: int, unit: int, task: str, sparsity: float) -> str:
    """The drill-down's first line: ``**neuron 17 of layer 3** (encoder.3.ffn[17]) · score 0.012 ±
    0.004 (95%) · rank 806, 95% 640-980 of 1,536 in its layer for sst2``, and on a second line ``Kept in 97%
    of draws of as many examples at 50% pruned per layer``."""
    from mtprune.plots import layer_ranks, unit_word

    stack, kind = group.split(".")
    head = f"**{unit_word(group)} {unit} of layer {layer}** ({stack}.{layer}.{kind}[{unit}])"
    u = unit_uncertainty(scores, group, layer, unit, sparsity)
    n = int(scores.n_units[group][layer])
    if u is None:
        a = scores.arrays[group]
        why = ("this method reads no examples: no draw to vary" if not scores.spec.info.needs_data
               else "its interval is unknown: no fold sums")
        return (f"{head} · score {a[layer, unit]:.4g}, rank {int(layer_ranks(a)[layer, unit])} of {n:,} in its layer "
                f"for {task} ({why})")
    return (f"{head} · score {u['score']:.4g} ± {1.96 * u['se']:.2g} (95%) · rank {u['rank']:,}, 95% "
            f"{u['rank_low']:,}-{u['rank_high']:,} of {n:,} in its layer for {task}  \n"
            f"{keep_words(u['kept'], sparsity).capitalize()}")


def keep_words(chance: float, sparsity: float) -> str:
    """``kept in 97% of draws at 50% pruned per layer`` (the Prune page's setting)."""
    if sparsity <= 0:
        return "kept by every draw: nothing is pruned at the Prune page's setting (0%)"
    return (f"kept in {100 * chance:.0f}% of draws of as many examples at {100 * sparsity:.0f}% pruned per layer "
            "(the Prune page's setting)")


def doublings(first: int, last: int) -> list[int]:
    """``[64, 128, ..., 1024]``: the draws from ``first`` doubling to ``last`` (which ends the list)."""
    out = [int(first)]
    while out[-1] < last:
        out.append(min(2 * out[-1], int(last)))
    return out


def reliability_series(rels: dict[int, dict]) -> dict[str, list[float]]:
    """``{kind label: [reliability at each count]}`` from ``{examples: {group: GroupReliability}}``
    (:func:`mtprune.plots.reliability_curve`); NaN where unknown."""
    groups = list(dict.fromkeys(g for rel in rels.values() for g in rel))
    return {group_label(g): [rel[g].spearman if g in rel else float("nan") for rel in rels.values()] for g in groups}
