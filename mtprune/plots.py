"""Plotly figure builders (no streamlit): what the dashboard draws, usable from notebooks too.

Every builder takes plain arrays in the layout of :class:`mtprune.attribution.Scores` and
:class:`mtprune.masks.Mask` (``[n_layers, max_units]``, NaN / False where a layer has fewer
units) and returns a ``plotly.graph_objects.Figure``; ``top_units`` returns a DataFrame.
Export helpers turn a figure into standalone HTML or PNG bytes (PNG through kaleido, which needs a
Chrome or Chromium on the machine).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mtprune.units import KIND_LABELS  # one vocabulary for every chart
KEPT_COLOR = "#2a9d8f"
PRUNED_COLOR = "#e9c46a"
DENSE_COLOR = "#264653"
PRUNED_MODEL_COLOR = "#e76f51"
# show the value in every cell when the map is this small (heads: 6 x 12)
_TEXT_CELLS = 400


def group_label(group: str) -> str:
    """``encoder.ffn`` -> ``encoder FFN neurons``."""
    stack, _, kind = group.partition(".")
    return f"{stack} {KIND_LABELS.get(kind, kind)}" if kind else group


def unit_word(group: str) -> str:
    return "head" if group.endswith("heads") else "group" if group.endswith(".kv") else "neuron"


def _as_array(array) -> np.ndarray:
    a = np.asarray(array, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"expected a [layers, units] array, got shape {a.shape}")
    return a


def layer_ranks(array) -> np.ndarray:
    """Rank of every unit within its layer, 1 = highest score; 0 where the layer has no unit."""
    a = _as_array(array)
    filled = np.where(np.isnan(a), -np.inf, a)
    order = np.argsort(-filled, axis=1, kind="stable")
    ranks = np.empty_like(order)
    rows = np.arange(a.shape[0])[:, None]
    ranks[rows, order] = np.arange(1, a.shape[1] + 1)[None, :]
    return np.where(np.isnan(a), 0, ranks)


def _sorted_view(a: np.ndarray, *others: np.ndarray):
    """Each row sorted by score, highest first (NaN padding last); ``others`` follow the order."""
    filled = np.where(np.isnan(a), -np.inf, a)
    order = np.argsort(-filled, axis=1, kind="stable")
    take = lambda x: np.take_along_axis(x, order, axis=1)  # noqa: E731
    return take(a), order, [take(o) for o in others]


def _color_values(a: np.ndarray, scale: str) -> tuple[np.ndarray, str]:
    """What the colour shows: the score, log10 of its magnitude, or its percentile in the layer."""
    if scale == "linear":
        return a, "score"
    if scale == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = np.abs(a)
            pos = mag[np.isfinite(mag) & (mag > 0)]
            floor = pos.min() if pos.size else 1e-12
            return np.log10(np.where(np.isnan(a), np.nan, np.maximum(mag, floor))), "log10 |score|"
    if scale == "percentile":
        n = np.sum(~np.isnan(a), axis=1, keepdims=True).clip(min=1)
        ranks = layer_ranks(a)
        pct = np.where(np.isnan(a), np.nan, 100.0 * (n - ranks) / np.maximum(n - 1, 1))
        return pct, "percentile in layer"
    raise ValueError(f"scale must be linear, log or percentile, not {scale!r}")


def _f32(a: np.ndarray) -> np.ndarray:
    """float32 with NaN for gaps: plotly sends it as a compact typed array and leaves NaN cells empty."""
    return np.ascontiguousarray(a, dtype=np.float32)


def _cell_text(a: np.ndarray) -> list[list[str]]:
    return [["" if np.isnan(v) else f"{v:.2g}" for v in row] for row in a]


def _figure(data: list[dict], layout: dict) -> go.Figure:
    """One go.Figure from plain dicts: one validation pass (many update calls cost ten times more,
    which matters when a slider redraws several figures)."""
    return go.Figure({"data": data, "layout": layout})


def _title(text: str) -> dict:
    return {"text": text}


_LEGEND_TOP = {"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"}
_LEGEND_BELOW = {"orientation": "h", "y": -0.22, "x": 0, "xanchor": "left", "yanchor": "top"}


def _layers_axis(n_layers: int) -> dict:
    return {"title": _title("layer"), "autorange": "reversed", "dtick": 1}


def _pick_layer(units: np.ndarray, valid: np.ndarray, hover: str | None = None, custom=None) -> dict:
    """A transparent marker on every cell of a layers x units map, so that a click on a cell is a
    point selection (plotly heatmaps send no selection events): ``customdata[0]`` is the unit's
    index, ``y`` its layer. With ``hover``, the markers carry the map's hover text."""
    layer, col = np.nonzero(valid)
    cd = units[layer, col][:, None] if custom is None else custom[layer, col]
    trace = {"type": "scatter", "mode": "markers", "x": col.astype(np.int32), "y": layer.astype(np.int32),
             "customdata": _f32(cd), "name": "pick", "showlegend": False,
             "marker": {"color": "rgba(0,0,0,0)", "size": 9, "line": {"width": 0}},
             "selected": {"marker": {"color": "rgba(255,255,255,0.95)", "size": 11}},
             "unselected": {"marker": {"opacity": 0}}}
    if hover:
        trace["hovertemplate"] = hover
    else:
        trace["hoverinfo"] = "skip"
    return trace


def selectable(fig: go.Figure) -> go.Figure:
    """Let a click select one cell (for ``st.plotly_chart(on_select=...)``) and keep the zoom."""
    fig.update_layout(clickmode="event+select", dragmode="zoom", hovermode="closest")
    return fig


def score_heatmap(array, *, group: str = "", title: str | None = None, sort_units: bool = False,
                  scale: str = "linear", height: int | None = None, pickable: bool = False,
                  layer_reliability: Sequence[float] | None = None) -> go.Figure:
    """Layers x units heatmap of attribution scores.

    Hover shows the layer, the unit's index, its score and its rank in the layer (1 = most
    needed), and with ``layer_reliability`` (one value per layer: the expected Spearman correlation
    of the layer's scores with another draw of as many examples) the layer's reliability. ``sort_units`` orders every layer's units by score, highest first (the x axis becomes
    the rank; the hover still names the unit). ``scale`` colours by the score (``linear``), by
    log10 of its magnitude (``log``) or by its percentile within the layer (``percentile``).
    Arrays go to plotly as float32 typed arrays: a 6 x 1536 map stays small and fast to send.
    """
    a, units, ranks, color, clabel = _map_view(_as_array(array), sort_units, scale)
    n_layers, width = a.shape
    signed = (scale == "linear" and bool(np.nanmin(a) < 0)) if np.isfinite(a).any() else False
    word = unit_word(group)
    custom, hover = _map_hover(a, units, ranks, group, layer_reliability)
    trace = {
        "type": "heatmap", "z": _f32(color), "x": np.arange(width), "y": np.arange(n_layers),
        "customdata": _f32(np.stack(custom, axis=-1)), "hovertemplate": hover + "<extra></extra>",
        "hoverongaps": False, "colorscale": "RdBu_r" if signed else "Viridis",
        "colorbar": {"title": {"text": clabel, "side": "right"}},
    }
    if signed:
        trace["zmid"] = 0
    if a.size <= _TEXT_CELLS:
        trace.update(text=_cell_text(a), texttemplate="%{text}", textfont={"size": 10})
    data = [trace]
    if pickable:  # the markers take the hover: the cell's own would be hidden behind them
        data.append(_pick_layer(units, ~np.isnan(a), trace.pop("hovertemplate"), trace["customdata"]))
        trace["hoverinfo"] = "skip"
    return (selectable if pickable else (lambda f: f))(_figure(data, {
        "title": _title(title or f"{group_label(group)}: attribution by layer".strip(": ")),
        "xaxis": {"title": _title(f"{word} rank in layer (sorted by score)" if sort_units else f"{word} index")},
        "yaxis": _layers_axis(n_layers), "height": height or max(260, 60 + 38 * n_layers),
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    }))


def reliability_curve(examples: Sequence[int], values: dict[str, Sequence[float]], *, target: float | None = None,
                      title: str | None = None) -> go.Figure:
    """Reliability (the expected Spearman correlation with another draw of as many examples)
    against the number of examples, one line per kind (``values``: label -> one value per count),
    on a log2 axis; ``target`` a dotted line."""
    data = [{"type": "scatter", "mode": "lines+markers", "x": list(examples), "y": _nan_none(np.asarray(v, float)),
             "name": name, "hovertemplate": f"{name}: %{{y:.2f}} at %{{x:,}} examples<extra></extra>"}
            for name, v in values.items()]
    shapes = []
    if target is not None:
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": target, "y1": target,
                       "line": {"dash": "dot", "color": "#888"}})
    return _figure(data, {
        "title": _title(title or "reliability against examples"),
        "xaxis": {"title": _title("examples"), "type": "log", "tickvals": list(examples),
                  "ticktext": [f"{n:,}" for n in examples]},
        "yaxis": {"title": _title("reliability (Spearman with another draw)"), "range": [0, 1.02]},
        "shapes": shapes, "height": 320, "legend": _LEGEND_TOP, "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    })


def keep_heatmap(keep, n_units: Sequence[int] | None = None, *, scores=None, group: str = "",
                 title: str | None = None, sort_units: bool = False) -> go.Figure:
    """Layers x units map of a mask: kept units in one colour, pruned in another.

    Two heatmap traces (kept, pruned), so the hover says which. ``scores`` (same layout) adds the
    score and rank to the hover and, with ``sort_units``, orders every layer by score so the kept
    units line up on the left.
    """
    k = np.asarray(keep, dtype=bool)
    n_layers, width = k.shape
    valid = np.ones_like(k, dtype=bool)
    if n_units is not None:
        valid = np.arange(width)[None, :] < np.asarray(list(n_units))[:, None]
    state = np.where(valid, k.astype(float), np.nan)
    units = np.tile(np.arange(width), (n_layers, 1))
    word = unit_word(group)
    if scores is not None:
        s = np.where(valid, _as_array(scores), np.nan)
        ranks = layer_ranks(s)
        if sort_units:
            s, _, (state, units, ranks) = _sorted_view(s, state, units, ranks)
        custom = _f32(np.stack([units, ranks, np.where(np.isnan(s), 0.0, s)], axis=-1))
        extra = "<br>score %{customdata[2]:.4g}<br>rank %{customdata[1]} in layer"
    else:
        custom = _f32(units[..., None])
        extra = ""
    data = []
    for name, value, color in (("kept", 1.0, KEPT_COLOR), ("pruned", 0.0, PRUNED_COLOR)):
        data.append({
            "type": "heatmap", "z": _f32(np.where(state == value, 1.0, np.nan)), "customdata": custom,
            "x": np.arange(width), "y": np.arange(n_layers), "name": name,
            "hovertemplate": f"layer %{{y}}<br>{word} %{{customdata[0]}}: <b>{name}</b>{extra}<extra></extra>",
            "hoverongaps": False, "colorscale": [[0, color], [1, color]], "showscale": False,
            "showlegend": False,
        })
        # a legend entry (heatmaps have none of their own)
        data.append({"type": "scatter", "x": [None], "y": [None], "mode": "markers", "name": name,
                     "hoverinfo": "skip", "marker": {"symbol": "square", "size": 12, "color": color}})
    kept, total = int((k & valid).sum()), int(valid.sum())
    sorted_x = sort_units and scores is not None
    return _figure(data, {
        "title": _title(title or f"{group_label(group)}: {kept} of {total} kept"),
        "xaxis": {"title": _title(f"{word} rank in layer (sorted by score)" if sorted_x else f"{word} index")},
        "yaxis": _layers_axis(n_layers), "height": max(240, 60 + 34 * n_layers),
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "legend": {**_LEGEND_TOP, "itemclick": False, "itemdoubleclick": False},
    })


def kept_per_layer(keep, n_units: Sequence[int], *, group: str = "", title: str | None = None) -> go.Figure:
    """Stacked bars: kept and pruned units of every layer."""
    k = np.asarray(keep, dtype=bool)
    n = np.asarray(list(n_units))
    valid = np.arange(k.shape[1])[None, :] < n[:, None]
    kept = (k & valid).sum(1)
    layers = list(range(k.shape[0]))
    data = [
        {"type": "bar", "x": layers, "y": kept.tolist(), "name": "kept", "marker": {"color": KEPT_COLOR},
         "hovertemplate": "layer %{x}: %{y} kept<extra></extra>"},
        {"type": "bar", "x": layers, "y": (n - kept).tolist(), "name": "pruned",
         "marker": {"color": PRUNED_COLOR}, "hovertemplate": "layer %{x}: %{y} pruned<extra></extra>"},
    ]
    return _figure(data, {
        "barmode": "stack", "title": _title(title or f"{group_label(group)} kept per layer"),
        "xaxis": {"title": _title("layer"), "dtick": 1}, "yaxis": {"title": _title(f"{unit_word(group)}s")},
        "height": 300, "margin": {"l": 60, "r": 20, "t": 50, "b": 40}, "legend": _LEGEND_TOP,
    })


def _tick_text(v: float) -> str:
    """A log axis label in full: ``0.001``, ``20``, ``1e-06`` (never plotly's bare ``2``, ``5``)."""
    return f"{v:g}" if 1e-4 <= v < 1e5 else f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")


def log_ticks(values) -> dict:
    """``tickvals`` / ``ticktext`` of a log axis over the positive ``values``: one tick per power
    of ten, each labelled in full (``0.001, 0.01, 0.1``), with 2 and 5 between them when the values
    span under two decades; at most ~8 ticks."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    if not v.size:
        return {}
    lo, hi = int(np.floor(np.log10(v.min()))), int(np.ceil(np.log10(v.max())))
    hi = max(hi, lo + 1)
    decades = np.arange(lo, hi + 1)
    step = max(1, int(np.ceil(len(decades) / 8)))
    steps = (1, 2, 5) if hi - lo <= 2 else (1,)
    ticks = [float(f"{m}e{d}") for d in decades[::step] for m in steps]
    ticks = [t for t in ticks if float(f"1e{lo}") <= t <= float(f"1e{hi}")]
    return {"tickvals": ticks, "ticktext": [_tick_text(t) for t in ticks]}


def score_distribution(array, *, group: str = "", log: bool = False, title: str | None = None) -> go.Figure:
    """The distribution of scores in every layer, one box per layer (outliers as points); with
    ``log`` the magnitudes on a log axis labelled in full at every power of ten (:func:`log_ticks`)."""
    a = _as_array(array)
    data, shown = [], []
    for layer in range(a.shape[0]):
        v = a[layer][~np.isnan(a[layer])]
        if log:
            v = np.abs(v)
            v = v[v > 0]
        shown.append(v)
        data.append({"type": "box", "y": _f32(v), "name": f"layer {layer}", "boxpoints": "outliers",
                     "marker": {"size": 3}, "line": {"width": 1}, "showlegend": False})
    yaxis = {"title": _title("|score| (log scale)" if log else "score")}
    if log:
        yaxis.update(type="log", **log_ticks(np.concatenate(shown) if shown else []))
    return _figure(data, {
        "title": _title(title or f"{group_label(group)}: score distribution per layer"),
        "yaxis": yaxis, "height": 340, "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
    })


def score_shares(array) -> np.ndarray:
    """Per layer, the cumulative share of the layer's total |score| held by its top units:
    ``out[l, i]`` is the share of the ``i + 1`` best units (NaN past a layer's units)."""
    a = np.abs(_as_array(array))
    filled = np.where(np.isnan(a), -np.inf, a)
    srt = -np.sort(-filled, axis=1)
    srt = np.where(np.isinf(srt), np.nan, srt)
    total = np.nansum(srt, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nancumsum(srt, axis=1) / np.where(total > 0, total, np.nan) + 0 * srt


def score_concentration(array, *, group: str = "", title: str | None = None) -> go.Figure:
    """How concentrated the scores are: per layer, the share of the layer's total |score| (y) held
    by its top x % of units. A diagonal would mean every unit matters equally."""
    a = _as_array(array)
    shares = score_shares(a)
    data = []
    for layer in range(a.shape[0]):
        row = shares[layer][~np.isnan(shares[layer])]
        n = len(row)
        if not n:
            continue
        step = max(1, n // 200)  # at most ~200 points per line
        idx = np.unique(np.r_[np.arange(0, n, step), n - 1])
        data.append({"type": "scatter", "x": (100 * (idx + 1) / n).round(2), "y": (100 * row[idx]).round(2),
                     "mode": "lines", "name": f"layer {layer}",
                     "hovertemplate": f"layer {layer}: the top %{{x:.0f}}% hold %{{y:.0f}}% of the score<extra></extra>"})
    data.append({"type": "scatter", "x": [0, 100], "y": [0, 100], "mode": "lines", "name": "all equal",
                 "line": {"color": "#888888", "dash": "dot"}, "hoverinfo": "skip"})
    return _figure(data, {
        "title": _title(title or f"{group_label(group)}: how much of the score the top units hold"),
        "xaxis": {"title": _title(f"top {unit_word(group)}s of the layer (%)"), "range": [0, 100]},
        "yaxis": {"title": _title("share of the layer's score (%)"), "range": [0, 101]},
        "height": 360, "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
    })


def top_units(array, k: int = 20, *, group: str = "", ascending: bool = False) -> pd.DataFrame:
    """The ``k`` highest-scoring units over all layers (lowest with ``ascending``)."""
    a = _as_array(array)
    ranks = layer_ranks(a)
    layer, unit = np.nonzero(~np.isnan(a))
    score = a[layer, unit]
    order = np.argsort(score if ascending else -score, kind="stable")[: max(int(k), 0)]
    word = unit_word(group)
    return pd.DataFrame({
        "rank": np.arange(1, len(order) + 1),
        "layer": layer[order],
        word: unit[order],
        "score": score[order],
        "rank in layer": ranks[layer[order], unit[order]],
    })


def top_units_bar(table: pd.DataFrame, *, group: str = "", title: str | None = None) -> go.Figure:
    """Horizontal bars of a ``top_units`` table, the top unit first."""
    word = unit_word(group)
    labels = [f"L{layer} {word[0]}{u}" for layer, u in zip(table["layer"], table[word])]
    return _figure(
        [{"type": "bar", "x": table["score"].tolist(), "y": labels, "orientation": "h",
          "marker": {"color": DENSE_COLOR}, "hovertemplate": "%{y}: %{x:.4g}<extra></extra>"}],
        {"title": _title(title or f"top {len(table)} {group_label(group)}"), "xaxis": {"title": _title("score")},
         "yaxis": {"autorange": "reversed"}, "height": max(240, 40 + 18 * len(table)),
         "margin": {"l": 90, "r": 20, "t": 50, "b": 40}},
    )


def layer_bars(array, layer: int, *, group: str = "", sort_units: bool = False, keep=None,
               title: str | None = None) -> go.Figure:
    """One layer of a map up close: a bar per unit (its score), coloured kept / pruned when ``keep``
    (that layer's row of a mask) is given; ``sort_units`` orders them by score. Bars are
    selectable: ``customdata[0]`` is the unit's index."""
    a = _as_array(array)
    if not 0 <= layer < a.shape[0]:
        raise ValueError(f"there is no layer {layer}: the map has {a.shape[0]}")
    row = a[layer]
    units = np.flatnonzero(~np.isnan(row))
    if sort_units:
        units = units[np.argsort(-row[units], kind="stable")]
    ranks = layer_ranks(a)[layer]
    word = unit_word(group)
    x = np.arange(len(units)) if sort_units else units
    colors = DENSE_COLOR
    if keep is not None:
        k = np.asarray(keep, dtype=bool)
        colors = [KEPT_COLOR if k[u] else PRUNED_COLOR for u in units]
    trace = {"type": "bar", "x": x.astype(np.int32), "y": _f32(row[units]), "marker": {"color": colors, "line": {"width": 0}},
             "customdata": _f32(np.stack([units, ranks[units]], axis=-1)), "name": f"layer {layer}",
             "hovertemplate": f"layer {layer} {word} %{{customdata[0]}}<br>score %{{y:.4g}}<br>rank %{{customdata[1]}}"
                              " in layer<extra></extra>",
             "selected": {"marker": {"color": "#d62828"}}, "unselected": {"marker": {"opacity": 0.85}}}
    fig = _figure([trace], {
        "title": _title(title or f"{group_label(group)}, layer {layer}: every {word}'s score"),
        "xaxis": {"title": _title(f"{word} rank in layer (sorted by score)" if sort_units else f"{word} index")},
        "yaxis": {"title": _title("score")}, "bargap": 0, "height": 300, "showlegend": False,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    })
    return selectable(fig)


def wrap_title(text: str, width: int = 42) -> str:
    """A title that fits a narrow chart: past ``width`` characters, what follows its last `` (``
    (else its last space before ``width``) goes to a smaller second line, so nothing is cut."""
    if len(text) <= width or "<br>" in text:
        return text
    cut = text.rfind(" (")
    if cut <= 0:
        cut = text.rfind(" ", 0, width)
    if cut <= 0:
        return text
    return f"{text[:cut]}<br><sup>{text[cut + 1:]}</sup>"


def unit_across_tasks(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """One unit's percentile within its layer in every task (a table of ``views.unit_task_table``):
    100 = the layer's most needed unit for that task. The median (50) is named on the axis, where no
    bar's rank label can cover it; a long title wraps (:func:`wrap_title`)."""
    d = table.dropna(subset=["percentile"])
    colors = [PRUNED_MODEL_COLOR if bool(c) else DENSE_COLOR for c in d.get("selected", [False] * len(d))]
    fig = _figure([{"type": "bar", "x": d["task"].tolist(), "y": d["percentile"].tolist(), "marker": {"color": colors},
                    "text": [f"rank {int(r):,}" for r in d["rank in layer"]], "textposition": "outside",
                    "cliponaxis": False, "customdata": d["score"].tolist(),
                    "hovertemplate": "%{x}: percentile %{y:.1f} in the layer<br>score %{customdata:.4g}<extra></extra>"}],
                  {"title": _title(wrap_title(title or "this unit in every task")),
                   "yaxis": {"title": _title("percentile in layer"), "range": [0, 112],
                             "tickvals": [0, 25, 50, 75, 100], "ticktext": ["0", "25", "median 50", "75", "100"]},
                   "height": 320, "margin": {"l": 80, "r": 20, "t": 70, "b": 40}})
    fig.add_hline(y=50, line_dash="dot", line_color="#888888")
    return fig


def confusion_figure(matrix: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """A confusion matrix (rows: gold label, columns: predicted), counts in the cells."""
    z = matrix.to_numpy(dtype=float)
    share = z / np.maximum(z.sum(1, keepdims=True), 1)
    fig = _figure([{"type": "heatmap", "z": share.tolist(), "x": [str(c) for c in matrix.columns],
                    "y": [str(i) for i in matrix.index], "text": z.astype(int).tolist(), "texttemplate": "%{text}",
                    "colorscale": "Blues", "zmin": 0, "zmax": 1, "showscale": False,
                    "hovertemplate": "gold %{y}, predicted %{x}: %{text} rows<extra></extra>"}],
                  {"title": _title(title or "confusion matrix"), "xaxis": {"title": _title("predicted"), "side": "top"},
                   "yaxis": {"title": _title("gold"), "autorange": "reversed"},
                   "height": 150 + 45 * len(matrix), "margin": {"l": 80, "r": 20, "t": 80, "b": 20}})
    return fig


SERIES_COLORS = (DENSE_COLOR, PRUNED_MODEL_COLOR, "#2a9d8f", "#e9c46a", "#8d99ae", "#6a4c93", "#1982c4")


def value_range(lows: Sequence[float], highs: Sequence[float], *, pad: float = 0.12,
                floor: float = 0.0) -> tuple[float, float, bool]:
    """The value axis of bars: ``(start, end, zoomed)``. It starts at ``floor`` (0) unless the
    values and their intervals sit so high that a 0-based axis would squeeze their differences into
    a sliver: then it is zoomed to them (``pad`` of their span on either side; a share of the top
    left for the labels), and ``zoomed`` says so (the chart must say it too)."""
    lo = [float(x) for x in lows if np.isfinite(x)]
    hi = [float(x) for x in highs if np.isfinite(x)]
    if not lo or not hi:
        return floor, 1.0, False
    bottom, top = min(lo), max(hi)
    span = max(top - bottom, 0.02 * max(abs(top), 1e-9), 1e-9)
    end = top + 2.2 * pad * span  # room above the whiskers for the value labels
    start = bottom - pad * span
    # a 0-based axis is honest and fine when the data fill most of it
    if start <= floor + 0.35 * (end - floor):
        return floor, max(end, floor + 1e-9), False
    return start, end, True


def _bar_slots(n_series: int, groupwidth: float = 0.8) -> tuple[float, list[float]]:
    """Bar width and each series' centre offset within a category of a grouped bar chart."""
    width = groupwidth / max(n_series, 1)
    return width, [-groupwidth / 2 + (i + 0.5) * width for i in range(n_series)]


def grouped_bars(labels: Sequence[str], series: dict[str, Sequence[float]], *, metric: str = "accuracy",
                 title: str | None = None, intervals: dict | None = None) -> go.Figure:
    """Grouped bars: one group per label (a task, a target set), one bar per series.

    ``intervals`` maps a series to its ``(lows, highs)``: drawn as error bars (95% intervals). Each
    bar's value is printed above the top of its whisker (or of the bar), never across it. The value
    axis is zoomed to the values and their intervals when a 0-based axis would hide their
    differences (:func:`value_range`); the axis title then says where it starts."""
    labels = list(labels)
    intervals = intervals or {}
    width, offsets = _bar_slots(len(series))
    data, notes, lows, highs = [], [], [], []
    for i, (name, values) in enumerate(series.items()):
        v = np.asarray([float(x) for x in values], dtype=float)
        bar = {"type": "bar", "x": labels, "y": v.tolist(), "name": name, "width": width,
               "offset": offsets[i] - width / 2, "marker": {"color": SERIES_COLORS[i % len(SERIES_COLORS)]},
               "hovertemplate": "%{x} " + name + ": %{y:.4f}<extra></extra>"}
        top = v.copy()
        lows.extend(v.tolist())
        if name in intervals:
            lo, hi = (np.asarray(x, dtype=float) for x in intervals[name])
            bar["error_y"] = {"type": "data", "symmetric": False, "array": np.nan_to_num(hi - v).tolist(),
                              "arrayminus": np.nan_to_num(v - lo).tolist(), "thickness": 1.5, "width": 4,
                              "color": "#333333"}
            bar["customdata"] = np.stack([lo, hi], axis=-1).tolist()
            bar["hovertemplate"] = "%{x} " + name + ": %{y:.4f}<br>95% interval %{customdata[0]:.3f}-%{customdata[1]:.3f}<extra></extra>"
            top = np.where(np.isfinite(hi), np.maximum(hi, v), v)
            lows.extend(lo.tolist())
        highs.extend(top.tolist())
        for j, (val, y) in enumerate(zip(v, top)):
            if np.isfinite(val):  # the label sits on the whisker's cap, above it
                notes.append({"x": j + offsets[i], "y": float(y), "xref": "x", "yref": "y", "text": f"{val:.3f}",
                              "showarrow": False, "yanchor": "bottom", "yshift": 2, "font": {"size": 11}})
        data.append(bar)
    start, end, zoomed = value_range(lows, highs)
    axis_title = f"{metric} (axis starts at {start:.2f}, not 0)" if zoomed else metric
    return _figure(data, {
        "barmode": "group", "title": _title(title or metric), "annotations": notes,
        "yaxis": {"title": _title(axis_title), "range": [start, end]}, "height": 400,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 90}, "legend": _LEGEND_BELOW,
    })


def dense_vs_pruned(labels: Sequence[str], dense: Sequence[float], pruned: Sequence[float], *,
                    metric: str = "accuracy", title: str | None = None,
                    pruned_name: str = "pruned") -> go.Figure:
    """Grouped bars, dense against pruned, one group per label (a task, a target set...)."""
    return grouped_bars(labels, {"dense": dense, pruned_name: pruned}, metric=metric,
                        title=title or f"{metric}: dense against pruned")


def figure_html(fig: go.Figure) -> bytes:
    """A standalone HTML page of the figure (plotly.js inlined: it opens offline)."""
    return fig.to_html(include_plotlyjs=True, full_html=True).encode("utf-8")


def figure_png(fig: go.Figure, scale: float = 2.0, width: int = 1100) -> bytes:
    """PNG bytes through kaleido (needs Chrome or Chromium installed)."""
    from mtprune.errors import MtpruneError

    try:
        return fig.to_image(format="png", scale=scale, width=width)
    except Exception as exc:  # kaleido raises several types when no browser is found
        raise MtpruneError(f"could not render a PNG (kaleido needs Chrome or Chromium): {exc}") from None


# --- experiment charts
# Figures of mtprune.experiments: metric against sparsity (sweeps, paper settings, unseen
# domains), task overlap, multi-task parameter quotas; and save_figure (HTML, then PNG).

_SERIES_COLORS = {
    "ap": "#e76f51", "ig": "#f4a261", "activation": "#2a9d8f", "random-label": "#8338ec",
    "random": "#6c757d", "magnitude": "#e9c46a", "svd": "#264653", "dense": "#000000", "fisher": "#1982c4",
}
_EXTRA_COLORS = ("#1d3557", "#d62828", "#588157", "#bc6c25", "#7209b7", "#3a86ff", "#fb8500", "#606c38")


def _series_color(name: str, i: int) -> str:
    base = str(name).split(" ")[0]
    if name in _SERIES_COLORS:
        return _SERIES_COLORS[name]
    if base in _SERIES_COLORS and " " not in str(name):
        return _SERIES_COLORS[base]
    return _EXTRA_COLORS[i % len(_EXTRA_COLORS)]


def _nan_none(a: np.ndarray):
    """A list of lists with None for NaN (plotly leaves those cells empty)."""
    out = np.asarray(a, dtype=float).astype(object)
    out[np.isnan(np.asarray(a, dtype=float))] = None
    return out.tolist()


def _facets(n: int, cols: int) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    return (n + cols - 1) // cols, cols


def _mean_std(df: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    g = df.groupby(keys, sort=False)[metric]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def sweep_figure(df: pd.DataFrame, metric: str = "accuracy", *, title: str | None = None, cols: int = 3,
                 series: str = "series", height_per_row: int = 300, points: pd.DataFrame | None = None) -> go.Figure:
    """One panel per task: ``metric`` against sparsity, one line per method (the ``series``
    column, else ``method``), the mean over trials. The shaded band is the spread over trials
    (lowest to highest) when there are several, else the 95% interval of the one evaluation
    (``<metric>_low`` / ``<metric>_high`` columns) where the rows have it.

    ``points`` (columns ``task``, ``sparsity``, ``value``, optional ``low``, ``high``, ``label``)
    adds single runs as markers with their intervals: the dashboard's run history."""
    from plotly.subplots import make_subplots

    if df.empty:
        raise ValueError("no rows to plot")
    if metric not in df.columns:
        raise ValueError(f"the rows have no {metric!r} column")
    d = df.copy()
    if series not in d.columns:
        from mtprune.experiments.sweep import series_label

        d[series] = series_label(d)
    tasks = list(dict.fromkeys(d["task"]))
    names = list(dict.fromkeys(d[series]))
    keys = ["task", series, "sparsity"]
    g = d.groupby(keys, sort=False)
    stats = g[metric].agg(["mean", "min", "max", "count"]).reset_index()
    lo_col, hi_col = f"{metric}_low", f"{metric}_high"
    if lo_col in d.columns and hi_col in d.columns:
        stats = stats.merge(g[[lo_col, hi_col]].mean().reset_index(), on=keys, how="left")
    rows, cols = _facets(len(tasks), cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=tasks, shared_xaxes=False,
                        horizontal_spacing=0.06, vertical_spacing=min(0.12, 0.28 / rows))
    for i, task in enumerate(tasks):
        r, c = i // cols + 1, i % cols + 1
        for j, name in enumerate(names):
            s = stats[(stats["task"] == task) & (stats[series] == name)].sort_values("sparsity")
            if s.empty:
                continue
            color = _series_color(name, j)
            trials = int(s["count"].max())
            if trials > 1:
                low, high, what = s["min"], s["max"], f"spread over {trials} trials"
            elif lo_col in s.columns and s[lo_col].notna().all():
                low, high, what = s[lo_col], s[hi_col], "95% interval"
            else:
                low = high = what = None
            if low is not None:
                fig.add_trace(go.Scatter(
                    x=np.r_[s["sparsity"], s["sparsity"][::-1]], y=np.r_[high, low[::-1]], fill="toself",
                    fillcolor=_hex_rgba(color, 0.18), line=dict(width=0), mode="lines", hoverinfo="skip",
                    name=f"{name} ({what})", legendgroup=str(name), showlegend=False), row=r, col=c)
            band = "" if low is None else (f"<br>{what}: " + "%{customdata[0]:.4f}-%{customdata[1]:.4f}")
            fig.add_trace(go.Scatter(
                x=s["sparsity"], y=s["mean"], mode="lines+markers", name=str(name),
                legendgroup=str(name), showlegend=i == 0, line=dict(color=color, width=2),
                marker=dict(size=5), customdata=None if low is None else np.stack([low, high], axis=-1),
                hovertemplate=(f"{task} · {name}<br>sparsity %{{x:.0%}}<br>{metric} %{{y:.4f}}"
                               + (" (mean)" if trials > 1 else "") + band + "<extra></extra>"),
            ), row=r, col=c)
        if points is not None and len(points):
            pt = points[points["task"] == task] if "task" in points.columns else points
            if len(pt):
                err = None
                if {"low", "high"} <= set(pt.columns):
                    err = dict(type="data", symmetric=False, array=(pt["high"] - pt["value"]).fillna(0),
                               arrayminus=(pt["value"] - pt["low"]).fillna(0), thickness=1.2, width=4)
                fig.add_trace(go.Scatter(
                    x=pt["sparsity"], y=pt["value"], mode="markers", name="your runs", legendgroup="runs",
                    showlegend=i == 0, marker=dict(symbol="diamond", size=10, color="#000000"), error_y=err,
                    text=pt["label"] if "label" in pt.columns else None,
                    hovertemplate="%{text}<br>sparsity %{x:.0%}<br>" + metric + " %{y:.4f}<extra>your run</extra>"),
                    row=r, col=c)
        fig.update_xaxes(title_text="sparsity (share pruned)" if r == rows else None, range=[-0.03, 1.03],
                         tickformat=".0%", row=r, col=c)
        fig.update_yaxes(title_text=metric if c == 1 else None, row=r, col=c)
    fig.update_layout(title=title or f"{metric} against sparsity", height=80 + height_per_row * rows,
                      margin=dict(l=60, r=20, t=80, b=50),
                      legend=dict(orientation="h", y=1.0 + 0.12 / rows, x=1, xanchor="right", yanchor="bottom"))
    return fig


def _hex_rgba(color: str, alpha: float) -> str:
    c = color.lstrip("#")
    return f"rgba({int(c[0:2], 16)}, {int(c[2:4], 16)}, {int(c[4:6], 16)}, {alpha})"


def frontier_figure(df: pd.DataFrame, metric: str = "accuracy", *, x: str = "flops_kept", title: str | None = None,
                    cols: int = 2, height_per_row: int = 340, series: str | None = None) -> go.Figure:
    """The accuracy / cost frontier: one panel per task, ``metric`` against the share of the
    prunable FLOPs kept (``x``), one line per method, selection and repair (or per value of the
    ``series`` column; mean over trials, a band of one standard deviation where there are several),
    the dense model (sparsity 0) as a dashed line."""
    from plotly.subplots import make_subplots

    from mtprune.experiments.sweep import series_label

    d = df[df[x].notna()].copy() if x in df else pd.DataFrame()
    if d.empty:
        raise ValueError(f"no rows with {x!r} to plot")
    dense = d[d["sparsity"].fillna(-1) == 0]
    pts = d[d["sparsity"].fillna(-1) != 0].copy()
    pts["series"] = pts[series].astype(str) if series else series_label(pts)
    tasks = list(dict.fromkeys(d["task"]))
    names = list(dict.fromkeys(pts["series"]))
    rows, cols = _facets(len(tasks), cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=tasks, horizontal_spacing=0.08,
                        vertical_spacing=min(0.14, 0.3 / rows))
    for i, task in enumerate(tasks):
        r, c = i // cols + 1, i % cols + 1
        t_pts = pts[pts["task"] == task]
        for j, name in enumerate(names):
            s = t_pts[t_pts["series"] == name]
            if s.empty:
                continue
            key = "budget" if s["budget"].fillna("").astype(str).ne("").all() else "sparsity"
            g = s.groupby(key, sort=False).agg(x=(x, "mean"), mean=(metric, "mean"), std=(metric, "std"),
                                               n=(metric, "count")).reset_index().sort_values("x")
            g["std"] = g["std"].fillna(0.0)
            color = _series_color(name, j)
            if int(g["n"].max()) > 1:
                fig.add_trace(go.Scatter(x=list(g["x"]) + list(g["x"])[::-1],
                                         y=list(g["mean"] + g["std"]) + list(g["mean"] - g["std"])[::-1],
                                         fill="toself", fillcolor=_hex_rgba(color, 0.15), line=dict(width=0),
                                         hoverinfo="skip", showlegend=False, legendgroup=str(name)), row=r, col=c)
            fig.add_trace(go.Scatter(
                x=g["x"], y=g["mean"], mode="lines+markers", name=str(name), legendgroup=str(name),
                showlegend=i == 0, line=dict(color=color, width=2), marker=dict(size=6),
                customdata=np.stack([g[key].astype(str), g["std"], g["n"]], axis=1),
                hovertemplate=(f"{task} · {name}<br>%{{customdata[0]}}<br>FLOPs kept %{{x:.3f}}<br>{metric} "
                               "%{y:.4f} ± %{customdata[1]:.4f} (%{customdata[2]} trials)<extra></extra>"),
            ), row=r, col=c)
        dval = dense[dense["task"] == task][metric]
        if len(dval):
            fig.add_hline(y=float(dval.mean()), line=dict(color="#000000", dash="dash", width=1), row=r, col=c,
                          annotation_text="dense" if i == 0 else None)
        fig.update_xaxes(title_text="share of prunable FLOPs kept" if r == rows else None, autorange="reversed",
                         row=r, col=c)
        fig.update_yaxes(title_text=metric if c == 1 else None, row=r, col=c)
    fig.update_layout(title=title or f"{metric} against FLOPs kept", height=90 + height_per_row * rows,
                      margin=dict(l=60, r=20, t=90, b=60),
                      legend=dict(orientation="h", y=-0.12 / rows, x=0, xanchor="left", yanchor="top"))
    return fig


def summary_bars(table: pd.DataFrame, *, metric: str = "accuracy", title: str | None = None) -> go.Figure:
    """Grouped bars of a task x method table (:func:`mtprune.experiments.sweep.summarize`)."""
    std = table.attrs.get("std")
    fig = go.Figure()
    for j, col in enumerate(table.columns):
        err = std[col].fillna(0).tolist() if std is not None and col in std else None
        fig.add_trace(go.Bar(x=[str(i) for i in table.index], y=table[col], name=str(col),
                             marker_color=_series_color(col, j),
                             error_y=dict(type="data", array=err, visible=bool(err and any(err))),
                             hovertemplate=f"%{{x}} · {col}: %{{y:.4f}}<extra></extra>"))
    lo, hi = table.attrs.get("range", (None, None))
    rng = f" (mean over sparsities {lo:g}-{hi:g})" if lo is not None else ""
    fig.update_layout(barmode="group", title=title or f"{metric}{rng}", yaxis_title=metric, height=380,
                      margin=dict(l=60, r=20, t=60, b=40),
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return fig


def overlap_heatmap(matrix: pd.DataFrame, *, title: str | None = None, chance: float | None = None,
                    pairs: pd.DataFrame | None = None) -> go.Figure:
    """Task x task Jaccard similarity of kept units. The diagonal (a mask with itself, always 1) is
    left blank. With ``chance`` (what random masks of the same size share) the colour is relative to
    it, white at chance, and the colour bar marks it. With ``pairs``
    (:attr:`mtprune.experiments.overlap.OverlapResult.pairs`, floors known) the colour is relative to
    the within-task floor instead (:func:`_overlap_floor_heatmap`)."""
    if pairs is not None and len(pairs) and pairs[["floor_a", "floor_b"]].notna().all(axis=None):
        return _overlap_floor_heatmap(matrix, pairs, title)
    m = matrix.astype(float)
    z = m.to_numpy().copy()
    if z.shape[0] == z.shape[1]:
        np.fill_diagonal(z, np.nan)
    text = np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.2f}")(z)
    trace = dict(z=_nan_none(z), x=[str(c) for c in m.columns], y=[str(i) for i in m.index], text=text,
                 texttemplate="%{text}", colorscale="Viridis", zmin=0, zmax=1, hoverongaps=False,
                 hovertemplate="%{y} · %{x}: Jaccard %{z:.4f}<extra></extra>",
                 colorbar=dict(title=dict(text="Jaccard", side="right")))
    if chance is not None and np.isfinite(chance):
        vals = z[np.isfinite(z)]
        span = max(float(np.max(np.abs(vals - chance))) if vals.size else 0.0, 0.05)
        lo, hi = max(0.0, chance - span), min(1.0, chance + span)
        trace.update(colorscale="RdBu", zmid=chance, zmin=lo, zmax=hi,
                     hovertemplate=f"%{{y}} · %{{x}}: Jaccard %{{z:.4f}} (random masks: {chance:.3f})<extra></extra>",
                     colorbar=dict(title=dict(text="Jaccard", side="right"),
                                   tickvals=[lo, chance, hi], ticktext=[f"{lo:.2f}", f"chance {chance:.2f}", f"{hi:.2f}"]))
    fig = go.Figure(go.Heatmap(**trace))
    fig.update_layout(title=title or "overlap of kept units (Jaccard)",
                      height=max(320, 90 + 52 * len(m)), width=max(420, 160 + 60 * len(m)),
                      margin=dict(l=80, r=20, t=60, b=60))
    fig.update_yaxes(autorange="reversed")
    return fig


def _overlap_floor_heatmap(matrix: pd.DataFrame, pairs: pd.DataFrame, title: str | None) -> go.Figure:
    """Every pair's Jaccard placed between chance (0, white) and the within-task floor (1, blue):
    ``(J - chance) / (floor - chance)``, the floor the mean of the two tasks' floors; red is less
    than chance. The diagonal shows each task's floor; ``*`` marks a pair distinguishable from the
    floors (``distinct``)."""
    names = [str(t) for t in matrix.index]
    n = len(names)
    z, text, hover = np.full((n, n), np.nan), [[""] * n for _ in range(n)], [[""] * n for _ in range(n)]
    floors = {}
    for r in pairs.itertuples():
        floors.setdefault(str(r.task_a), r.floor_a)
        floors.setdefault(str(r.task_b), r.floor_b)
        i, j = names.index(str(r.task_a)), names.index(str(r.task_b))
        top = float(np.mean([r.floor_a, r.floor_b]))
        z[i, j] = z[j, i] = (r.jaccard - r.chance) / (top - r.chance) if top - r.chance > 1e-9 else np.nan
        text[i][j] = text[j][i] = f"{r.jaccard:.2f}" + ("*" if r.distinct else "")
        hover[i][j] = hover[j][i] = (f"{r.task_a} · {r.task_b}: Jaccard {r.jaccard:.3f}<br>floors {r.floor_a:.3f} "
                                     f"({r.task_a}), {r.floor_b:.3f} ({r.task_b}); chance {r.chance:.3f}<br>"
                                     f"p = {r.p_floor:.3g}: {r.verdict}")
    for i, t in enumerate(names):
        z[i, i] = 1.0
        text[i][i] = f"floor {floors.get(t, np.nan):.2f}"
        hover[i][i] = f"{t} with another draw of its examples: Jaccard {floors.get(t, np.nan):.3f} (the floor)"
    lo, hi = min(-0.25, float(np.nanmin(z))), max(1.0, float(np.nanmax(z)))
    fig = go.Figure(go.Heatmap(
        z=_nan_none(z), x=names, y=names, text=text, texttemplate="%{text}", hovertext=hover,
        hovertemplate="%{hovertext}<extra></extra>", colorscale="RdBu", zmid=0, zmin=lo, zmax=hi,
        hoverongaps=False, colorbar=dict(title=dict(text="chance → floor", side="right"), tickvals=[0, 1],
                                         ticktext=["chance", "floor (same task)"])))
    fig.update_layout(title=(title or "overlap of kept units (Jaccard)")
                      + "<br><sup>* below both tasks' within-task floors (p < 0.05)</sup>",
                      height=max(340, 110 + 52 * n), width=max(460, 200 + 60 * n),
                      margin=dict(l=80, r=20, t=80, b=60))
    fig.update_yaxes(autorange="reversed")
    return fig


def overlap_layers_figure(per_layer: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Jaccard similarity per layer, one thin line per task pair, their mean in bold, one panel per
    unit group; the dashed line is what random masks keeping as many units would share."""
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    groups = list(dict.fromkeys(per_layer["group"]))
    fig = make_subplots(rows=1, cols=len(groups), subplot_titles=[group_label(g) for g in groups],
                        horizontal_spacing=0.08)
    pairs = list(dict.fromkeys(zip(per_layer["task_a"], per_layer["task_b"])))
    palette = qualitative.Dark24
    for gi, g in enumerate(groups):
        d = per_layer[per_layer["group"] == g]
        for j, (a, b) in enumerate(pairs):
            s = d[(d["task_a"] == a) & (d["task_b"] == b)].sort_values("layer")
            fig.add_trace(go.Scatter(
                x=s["layer"], y=s["jaccard"], mode="lines+markers", name=f"{a} · {b}", legendgroup=f"{a}·{b}",
                showlegend=gi == 0, line=dict(color=palette[j % len(palette)], width=1), marker=dict(size=4),
                opacity=0.8, hovertemplate=f"{a} · {b}<br>layer %{{x}}: Jaccard %{{y:.3f}}<extra></extra>",
            ), row=1, col=gi + 1)
        mean = d.groupby("layer")[["jaccard", "chance"]].mean()
        if len(pairs) > 1:
            fig.add_trace(go.Scatter(x=mean.index, y=mean["jaccard"], mode="lines+markers", name="mean of the pairs",
                                     legendgroup="mean", showlegend=gi == 0, line=dict(color="#000000", width=3),
                                     hovertemplate="mean<br>layer %{x}: %{y:.3f}<extra></extra>"),
                          row=1, col=gi + 1)
        fig.add_trace(go.Scatter(x=mean.index, y=mean["chance"], mode="lines", name="random masks",
                                 legendgroup="chance", showlegend=gi == 0,
                                 line=dict(color="#6c757d", dash="dash", width=2),
                                 hovertemplate="random masks<br>layer %{x}: %{y:.3f}<extra></extra>"),
                      row=1, col=gi + 1)
        fig.update_xaxes(title_text="layer", dtick=1, row=1, col=gi + 1)
        fig.update_yaxes(title_text="Jaccard" if gi == 0 else None, range=[0, 1.02], row=1, col=gi + 1)
    rows_of_legend = (len(pairs) + 2 + 4) // 5
    fig.update_layout(title=title or "overlap of kept units per layer", height=400 + 22 * rows_of_legend,
                      margin=dict(l=60, r=20, t=70, b=60 + 22 * rows_of_legend),
                      legend=dict(orientation="h", y=-0.18, x=0, xanchor="left", yanchor="top"))
    return fig


def transfer_heatmap(matrix: pd.DataFrame, *, metric: str = "accuracy", title: str | None = None) -> go.Figure:
    """The transfer matrix (:func:`mtprune.experiments.transfer.transfer_matrix`): every cell the
    evaluated task's ``metric`` with that mask and its 95% interval, coloured by the change from the
    task's dense model (red: lost, blue: kept or gained); a cell's marks (``attrs["marks"]``: its
    paired tests against the task's own mask and the random mask) on a third line, with the legend
    under the title."""
    lo, hi = matrix.attrs.get("low"), matrix.attrs.get("high")
    marks = matrix.attrs.get("marks")
    dense = matrix.loc["dense"] if "dense" in matrix.index else None
    z = matrix.to_numpy(dtype=float)
    change = z - dense.to_numpy(dtype=float)[None, :] if dense is not None else z
    text = [[("" if np.isnan(v) else f"{v:.3f}" + (f"<br>[{lo.iloc[i, j]:.3f}, {hi.iloc[i, j]:.3f}]"
                                                    if lo is not None and not np.isnan(lo.iloc[i, j]) else "")
              + (f"<br><b>{marks.iloc[i, j]}</b>" if marks is not None and marks.iloc[i, j] else ""))
             for j, v in enumerate(row)] for i, row in enumerate(z)]
    if marks is not None and marks.ne("").any().any():
        from mtprune.experiments.transfer import MARKS_LEGEND

        title = (title or f"{metric} of each task (columns) with each task's mask (rows)") + \
            f"<br><sup>{MARKS_LEGEND}</sup>"
    bound = float(np.nanmax(np.abs(change))) if np.isfinite(change).any() else 1.0
    fig = _figure([{
        "type": "heatmap", "z": _nan_none(change), "x": list(matrix.columns), "y": list(matrix.index),
        "text": text, "texttemplate": "%{text}", "colorscale": "RdBu", "zmid": 0, "zmin": -bound, "zmax": bound,
        "colorbar": {"title": {"text": "change from dense"}},
        "hovertemplate": f"mask from %{{y}}<br>evaluated on %{{x}}<br>{metric} %{{text}}<br>change from dense "
                         "%{z:+.3f}<extra></extra>",
    }], {"title": _title(title or f"{metric} of each task (columns) with each task's mask (rows)"),
         "xaxis": {"title": _title("evaluated task"), "side": "top"}, "yaxis": {"title": _title("mask from"),
                                                                                "autorange": "reversed"},
         "height": 170 + 70 * len(matrix.index), "margin": {"l": 110, "r": 20, "t": 140, "b": 30}})
    fig.update_layout(title_y=0.98, title_yanchor="top")
    return fig


def unseen_figure(df: pd.DataFrame, metric: str = "accuracy", *, title: str | None = None, cols: int = 4) -> go.Figure:
    """One panel per (source -> target) pair: the target's ``metric`` against sparsity for masks
    from the source (and the target's own mask in the cross-task case); dotted: dense."""
    from plotly.subplots import make_subplots

    d = df.copy()
    d["series"] = np.where(d["mask_from"] == d["source"], d["method"] + " (" + d["source"] + " mask)",
                           d["method"] + " (" + d["mask_from"] + " mask, own)")
    pairs = list(dict.fromkeys(zip(d["source"], d["target"])))
    names = list(dict.fromkeys(d["series"].str.replace(r" \(.*", "", regex=True)))
    rows, cols = _facets(len(pairs), cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"{s} → {t}" for s, t in pairs],
                        horizontal_spacing=0.05, vertical_spacing=min(0.12, 0.28 / rows))
    shown = set()
    for i, (src, tgt) in enumerate(pairs):
        r, c = i // cols + 1, i % cols + 1
        p = d[(d["source"] == src) & (d["target"] == tgt)]
        stats = _mean_std(p, ["series", "mask_from", "method", "sparsity"], metric)
        for name in dict.fromkeys(stats["series"]):
            s = stats[stats["series"] == name].sort_values("sparsity")
            own = s["mask_from"].iloc[0] != src
            method = s["method"].iloc[0]
            legend = f"{method}{' (own mask)' if own else ''}"
            fig.add_trace(go.Scatter(
                x=s["sparsity"], y=s["mean"], mode="lines+markers", name=legend, legendgroup=legend,
                showlegend=legend not in shown,
                line=dict(color=_series_color(method, names.index(method) if method in names else 0),
                          dash="dash" if own else "solid", width=2), marker=dict(size=4),
                error_y=dict(type="data", array=s["std"], visible=bool(s["count"].max() > 1), thickness=1, width=2),
                hovertemplate=f"{src} → {tgt} · {name}<br>sparsity %{{x:.0%}}<br>{metric} %{{y:.4f}}<extra></extra>",
            ), row=r, col=c)
            shown.add(legend)
        dense = p[p["sparsity"] == 0][metric]
        if len(dense):
            fig.add_hline(y=float(dense.iloc[0]), line=dict(color="#000000", dash="dot", width=1), row=r, col=c)
        fig.update_xaxes(title_text="sparsity (share pruned)" if r == rows else None, range=[-0.03, 1.03],
                         tickformat=".0%", row=r, col=c)
        fig.update_yaxes(title_text=metric if c == 1 else None, row=r, col=c)
    fig.update_layout(title=title or f"unseen domains: {metric} of masks built on another task",
                      height=80 + 280 * rows, margin=dict(l=60, r=20, t=80, b=50),
                      legend=dict(orientation="h", y=1.0 + 0.12 / rows, x=1, xanchor="right", yanchor="bottom"))
    return fig


def quota_figure(df: pd.DataFrame, metric: str = "accuracy", *, title: str | None = None) -> go.Figure:
    """Joint mask against ensemble (:mod:`mtprune.experiments.quota`): ``metric`` per task and on
    average, for every multi-task parameter quota (bars for one quota; lines against the quota for
    several); dotted: the dense model. The quota is the column ``budget``, and the chart's words are
    those of before the rename."""
    d = df[df["setting"].isin(["joint", "ensemble"])].copy()
    dense = df[df["setting"] == "dense"].groupby("task")[metric].mean()
    tasks = list(dict.fromkeys(d["task"]))
    quotas = sorted(d["budget"].unique())
    colors = {"joint": PRUNED_MODEL_COLOR, "ensemble": KEPT_COLOR}
    total = float(df["prunable_params"].dropna().iloc[0]) if "prunable_params" in df and df["prunable_params"].notna().any() else None
    if len(quotas) == 1:
        fig = go.Figure()
        for setting in ("joint", "ensemble"):
            s = d[d["setting"] == setting].set_index("task").reindex(tasks)
            fig.add_trace(go.Bar(x=tasks, y=s[metric], name=setting, marker_color=colors[setting],
                                 text=[f"{v:.3f}" for v in s[metric]], textposition="outside",
                                 hovertemplate=f"%{{x}} · {setting}: %{{y:.4f}}<extra></extra>"))
        if len(dense):
            fig.add_trace(go.Scatter(x=[t for t in tasks if t in dense.index], y=[dense[t] for t in tasks if t in dense.index],
                                     mode="markers", name="dense", marker=dict(symbol="line-ew-open", size=28,
                                                                                color=DENSE_COLOR, line=dict(width=2)),
                                     hovertemplate="%{x} dense: %{y:.4f}<extra></extra>"))
        q = quotas[0]
        share = f" ({100 * q / total:.0f}% of the prunable parameters)" if total else ""
        fig.update_layout(barmode="group", title=title or f"one mask for all tasks against one per task: budget {q:,}{share}",
                          yaxis_title=metric, yaxis_range=[0, 1.08], height=400, margin=dict(l=60, r=20, t=60, b=40),
                          legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
        return fig
    from plotly.subplots import make_subplots

    rows, cols = _facets(len(tasks), 4)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=tasks, horizontal_spacing=0.05,
                        vertical_spacing=min(0.12, 0.28 / rows))
    xs = (100 * np.asarray(quotas, dtype=float) / total) if total else np.asarray(quotas, dtype=float)
    for i, task in enumerate(tasks):
        r, c = i // cols + 1, i % cols + 1
        for setting in ("joint", "ensemble"):
            s = d[(d["setting"] == setting) & (d["task"] == task)].sort_values("budget")
            x = 100 * s["budget"] / total if total else s["budget"]
            fig.add_trace(go.Scatter(x=x, y=s[metric], mode="lines+markers", name=setting, legendgroup=setting,
                                     showlegend=i == 0, line=dict(color=colors[setting], width=2),
                                     hovertemplate=f"{task} · {setting}<br>budget %{{x:.1f}}<br>{metric} %{{y:.4f}}<extra></extra>"),
                          row=r, col=c)
        if task in dense.index:  # a trace, not a shape: the axis range then includes it
            fig.add_trace(go.Scatter(x=[xs.min(), xs.max()], y=[float(dense[task])] * 2, mode="lines", name="dense",
                                     legendgroup="dense", showlegend=i == 0,
                                     line=dict(color=DENSE_COLOR, dash="dot", width=1.5),
                                     hovertemplate=f"{task} dense: %{{y:.4f}}<extra></extra>"), row=r, col=c)
        fig.update_xaxes(title_text=("budget, % of prunable parameters" if total else "budget") if r == rows else None,
                         row=r, col=c)
    fig.update_layout(title=title or f"{metric}: one mask for all tasks against one per task",
                      height=80 + 260 * rows, margin=dict(l=60, r=20, t=80, b=50),
                      legend=dict(orientation="h", y=1.0 + 0.12 / rows, x=1, xanchor="right", yanchor="bottom"))
    return fig


def save_figure(fig: go.Figure, path, png: bool = True, width: int = 1100, scale: float = 2.0) -> list:
    """Write ``<path>.html`` (always, first) and ``<path>.png``; returns the paths written.

    ``path`` may end in .html or .png (the other one is named after it). A PNG that cannot be
    rendered raises a one-line :class:`~mtprune.errors.MtpruneError` after the HTML is written.
    """
    from pathlib import Path

    from mtprune.io import atomic_write_bytes

    p = Path(path)
    base = p.with_suffix("") if p.suffix.lower() in (".html", ".png") else p
    html = base.with_name(base.name + ".html")
    atomic_write_bytes(html, figure_html(fig))
    written = [html]
    if png:
        out = base.with_name(base.name + ".png")
        atomic_write_bytes(out, figure_png(fig, scale=scale, width=width))
        written.append(out)
    return written


def mask_difference_figure(diff: dict, *, group: str = "", names: Sequence[str] = ("A", "B"),
                           title: str | None = None) -> go.Figure:
    """Two masks per layer, stacked: the units both keep, those only the first keeps and those only
    the second keeps (``diff``: one group of :func:`mtprune.runs.mask_difference`)."""
    layers = list(range(len(diff["both"])))
    a, b = names
    parts = [("both", "kept by both", KEPT_COLOR), ("only_a", f"only {a}", DENSE_COLOR),
             ("only_b", f"only {b}", PRUNED_MODEL_COLOR)]
    data = [{"type": "bar", "x": layers, "y": list(diff[k]), "name": name, "marker": {"color": color},
             "hovertemplate": f"layer %{{x}}: %{{y}} {unit_word(group)}s {name}<extra></extra>"}
            for k, name, color in parts]
    return _figure(data, {
        "barmode": "stack", "title": _title(title or f"{group_label(group)}: the two masks per layer"),
        "xaxis": {"title": _title("layer"), "dtick": 1}, "yaxis": {"title": _title(f"{unit_word(group)}s kept")},
        "height": 300, "margin": {"l": 60, "r": 20, "t": 50, "b": 40}, "legend": _LEGEND_TOP,
    })


# ----------------------------------------------------------------------------------------------
# wide maps (1,536 FFN neurons a layer): a binned overview, a window narrow enough to click, and
# one unit's page (its rank in every task, the change in P(gold) without it)

OVERVIEW_BINS = 64  # bins of a wide map's overview (24 neurons each for 1,536)
WINDOW = 48  # units a window shows by default
MAX_WINDOW = 64  # the widest window whose cells a click still tells apart (about 10 px a unit in 650 px)


def bin_edges(width: int, bins: int = OVERVIEW_BINS) -> np.ndarray:
    """``bins + 1`` edges cutting ``width`` units into bins of (nearly) equal size; fewer bins
    when there are fewer units."""
    if width < 1 or bins < 1:
        raise ValueError(f"need at least one unit and one bin, not {width} units and {bins} bins")
    return np.linspace(0, width, min(bins, width) + 1).round().astype(int)


def _map_hover(a: np.ndarray, units: np.ndarray, ranks: np.ndarray, group: str, layer_reliability=None):
    """``(customdata arrays, hover template)`` of a score map's cells: layer, unit, score, rank in
    layer and, when given, the layer's reliability."""
    custom = [units, ranks, np.where(np.isnan(a), 0.0, a)]
    hover = (f"layer %{{y}}<br>{unit_word(group)} %{{customdata[0]}}<br>score %{{customdata[2]:.4g}}"
             "<br>rank %{customdata[1]} in layer")
    if layer_reliability is not None:
        custom.append(np.broadcast_to(np.asarray(layer_reliability, dtype=np.float64)[:, None], a.shape))
        hover += "<br>layer reliability %{customdata[3]:.2f}"
    return custom, hover


def _map_view(a: np.ndarray, sort_units: bool, scale: str):
    """``(scores, units, ranks, colour values, colour label)``, sorted by score per layer when asked."""
    n_layers, width = a.shape
    units = np.tile(np.arange(width), (n_layers, 1))
    ranks = layer_ranks(a)
    if sort_units:
        a, _, (units, ranks) = _sorted_view(a, units, ranks)
    color, clabel = _color_values(a, scale)
    return a, units, ranks, color, clabel


def _bin_stats(a, units, ranks, color, edges):
    """Per layer and bin: the colour of its strongest unit (largest colour value), that unit, its
    rank and score, and the bin's mean score; NaN / -1 for an empty bin."""
    n_layers, nb = a.shape[0], len(edges) - 1
    z, mean = np.full((n_layers, nb), np.nan), np.full((n_layers, nb), np.nan)
    top, rank, score = np.full((n_layers, nb), -1.0), np.full((n_layers, nb), -1.0), np.full((n_layers, nb), np.nan)
    rows = np.arange(n_layers)
    for b in range(nb):
        sl = slice(edges[b], edges[b + 1])
        c = color[:, sl]
        has = (~np.isnan(c)).any(axis=1)
        if not has.any():
            continue
        j = np.argmax(np.where(np.isnan(c), -np.inf, c), axis=1) + edges[b]
        z[has, b] = color[rows, j][has]
        top[has, b], rank[has, b], score[has, b] = units[rows, j][has], ranks[rows, j][has], a[rows, j][has]
        mean[has, b] = np.nanmean(a[has, sl], axis=1)  # a bin with a colour has a score
    return z, top, rank, score, mean


def _window_shape(start: int, stop: int, n_layers: int) -> dict:
    return {"type": "rect", "xref": "x", "yref": "y", "x0": start - 0.5, "x1": stop - 0.5, "y0": -0.5,
            "y1": n_layers - 0.5, "line": {"color": "#d62828", "width": 2}, "fillcolor": "rgba(0,0,0,0)"}


def binned_heatmap(array, *, group: str = "", bins: int = OVERVIEW_BINS, sort_units: bool = False,
                   scale: str = "log", layer_reliability: Sequence[float] | None = None,
                   window: tuple[int, int] | None = None, title: str | None = None) -> go.Figure:
    """A wide map's overview: every layer's units cut into ``bins`` bins, each bin coloured by its
    strongest unit (the largest colour value of ``scale``), so that no unit, however narrow, is
    lost in the drawing. The x axis keeps the units' own positions (index, or rank with
    ``sort_units``). Hover names the bin's units, its strongest one (score, rank) and the bin's
    mean score. A click selects the bin's strongest unit (``customdata[0]``, the layer in ``y``);
    the toolbar's box select brushes a range of units (horizontally, across all layers);
    ``window`` ``(start, stop)`` is drawn as a red frame."""
    a = _as_array(array)
    n_layers, width = a.shape
    a, units, ranks, color, clabel = _map_view(a, sort_units, scale)
    edges = bin_edges(width, bins)
    z, top, rank, score, mean = _bin_stats(a, units, ranks, color, edges)
    centers = (edges[:-1] + edges[1:] - 1) / 2.0
    word = unit_word(group)
    rel = np.zeros(z.shape) if layer_reliability is None else \
        np.broadcast_to(np.asarray(layer_reliability, dtype=np.float64)[:, None], z.shape)
    cd = _f32(np.stack([top, rank, np.nan_to_num(score), rel], axis=-1))  # score_heatmap's columns
    what = "ranks" if sort_units else f"{word}s"
    span = [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])]
    text = np.array([[f"{span[b]} (mean score {m:.4g})" for b, m in enumerate(row)] for row in mean], dtype=object)
    hover = (f"layer %{{y}}<br>{what} %{{text}}<br>strongest: {word} %{{customdata[0]}}"
             "<br>score %{customdata[2]:.4g}<br>rank %{customdata[1]} in layer")
    if layer_reliability is not None:
        hover += "<br>layer reliability %{customdata[3]:.2f}"
    heat = {"type": "heatmap", "z": _f32(z), "x": centers, "y": np.arange(n_layers), "hoverinfo": "skip",
            "colorscale": "Viridis", "colorbar": {"title": {"text": clabel, "side": "right"}}}
    valid = ~np.isnan(z)
    pick = _pick_layer(np.tile(np.arange(len(centers)), (n_layers, 1)), valid, hover + "<extra></extra>", cd)
    pick["x"] = centers[pick["x"]]
    pick["text"] = text[np.nonzero(valid)].tolist()
    pick["marker"]["size"] = 12
    shapes = [_window_shape(*window, n_layers)] if window is not None else []
    n_per = int(np.ceil(width / (len(edges) - 1)))
    fig = _figure([heat, pick], {
        "title": _title(title or f"{group_label(group)}: {len(edges) - 1} bins of about {n_per} {word}s, "
                                 "each the colour of its strongest"),
        "xaxis": {"title": _title(f"{word} rank in layer (sorted by score)" if sort_units else f"{word} index"),
                  "range": [-0.5, width - 0.5]},
        "yaxis": _layers_axis(n_layers), "height": max(260, 60 + 38 * n_layers), "shapes": shapes,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    })
    fig.update_layout(selectdirection="h")  # the toolbar's box select brushes a range of units across all layers
    return selectable(fig)  # a click selects a bin (plotly's select drag mode would swallow clicks)


def window_heatmap(array, start: int, stop: int, *, group: str = "", sort_units: bool = False, scale: str = "log",
                   layer_reliability: Sequence[float] | None = None, selected: tuple[int, int] | None = None,
                   title: str | None = None) -> go.Figure:
    """Units ``start`` to ``stop - 1`` of every layer (positions in the sorted view with
    ``sort_units``), one cell each, coloured on the whole map's scale (as the overview). At
    :data:`MAX_WINDOW` units or fewer a click lands on the cell aimed at: ``customdata[0]`` is the
    unit, ``y`` its layer. ``selected`` ``(layer, unit)`` is framed when it is in the window."""
    a = _as_array(array)
    n_layers, width = a.shape
    if not 0 <= start < stop <= width:
        raise ValueError(f"a window of units {start}-{stop - 1} does not fit {width} units")
    a, units, ranks, color, clabel = _map_view(a, sort_units, scale)
    lo, hi = (float(np.nanmin(color)), float(np.nanmax(color))) if np.isfinite(color).any() else (0.0, 1.0)
    sl = slice(start, stop)
    a, units, ranks, color = a[:, sl], units[:, sl], ranks[:, sl], color[:, sl]
    word = unit_word(group)
    custom, hover = _map_hover(a, units, ranks, group, layer_reliability)
    cd = _f32(np.stack(custom, axis=-1))
    x = np.arange(start, stop)
    heat = {"type": "heatmap", "z": _f32(color), "x": x, "y": np.arange(n_layers), "zmin": lo, "zmax": hi,
            "hoverinfo": "skip", "colorscale": "Viridis", "xgap": 1,
            "colorbar": {"title": {"text": clabel, "side": "right"}}}
    pick = _pick_layer(units, ~np.isnan(a), hover + "<extra></extra>", cd)
    pick["x"] = pick["x"] + start
    pick["marker"]["size"] = 14
    shapes = []
    if selected is not None:
        layer, unit = selected
        hit = np.flatnonzero(units[layer] == unit) if 0 <= layer < n_layers else []
        if len(hit):
            c = start + int(hit[0])
            shapes.append({"type": "rect", "xref": "x", "yref": "y", "x0": c - 0.5, "x1": c + 0.5, "y0": layer - 0.5,
                           "y1": layer + 0.5, "line": {"color": "#d62828", "width": 3}})
    fig = _figure([heat, pick], {
        "title": _title(title or f"{group_label(group)} {start}-{stop - 1}: one cell per {word} (click one)"),
        "xaxis": {"title": _title(f"{word} rank in layer (sorted by score)" if sort_units else f"{word} index"),
                  "range": [start - 0.5, stop - 0.5]},
        "yaxis": _layers_axis(n_layers), "height": max(260, 60 + 38 * n_layers), "shapes": shapes,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    })
    return selectable(fig)


def unit_rank_figure(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """One unit's percentile in its layer in every task with the 95% interval of its rank (a table
    with ``task``, ``percentile``, ``percentile_low``, ``percentile_high``, ``rank``, ``n_units``,
    ``selected``; rows without a percentile are left out): 100 = the layer's most needed unit."""
    d = table.dropna(subset=["percentile"])
    low = d["percentile_low"].fillna(d["percentile"]) if "percentile_low" in d else d["percentile"]
    high = d["percentile_high"].fillna(d["percentile"]) if "percentile_high" in d else d["percentile"]
    colors = [PRUNED_MODEL_COLOR if bool(c) else DENSE_COLOR for c in d.get("selected", [False] * len(d))]
    trace = {"type": "scatter", "mode": "markers", "y": d["task"].tolist(), "x": d["percentile"].tolist(),
             "marker": {"color": colors, "size": 11},
             "error_x": {"type": "data", "symmetric": False, "array": (high - d["percentile"]).tolist(),
                         "arrayminus": (d["percentile"] - low).tolist(), "color": "#666666", "thickness": 1.5},
             "customdata": np.stack([d["rank"].to_numpy(dtype=float), d["n_units"].to_numpy(dtype=float)], -1),
             "hovertemplate": "%{y}: percentile %{x:.1f}<br>rank %{customdata[0]:,} of %{customdata[1]:,}"
                              "<extra></extra>"}
    fig = _figure([trace], {
        "title": _title(wrap_title(title or "percentile in its layer, every task (95% interval of the rank)", 60)),
        "xaxis": {"title": _title("percentile in layer (100 = most needed)"), "range": [-3, 103],
                  "tickvals": [0, 25, 50, 75, 100]},
        "yaxis": {"autorange": "reversed", "type": "category"}, "height": 110 + 34 * max(len(d), 1),
        "margin": {"l": 70, "r": 20, "t": 60, "b": 45}, "showlegend": False})
    fig.add_vline(x=50, line_dash="dot", line_color="#888888")
    return fig


def removal_histogram(changes: Sequence[float], *, mean: float | None = None, interval: tuple[float, float] | None = None,
                      title: str | None = None) -> go.Figure:
    """Every row's change in P(gold) when one unit is switched off (without - with), with the mean
    and its interval as lines."""
    x = np.asarray(changes, dtype=np.float64)
    fig = _figure([{"type": "histogram", "x": x, "nbinsx": 40, "marker": {"color": DENSE_COLOR},
                    "hovertemplate": "change %{x}<br>%{y} rows<extra></extra>"}], {
        "title": _title(title or f"change in P(gold) without it, {len(x):,} rows"),
        "xaxis": {"title": _title("P(gold) without it - with it")}, "yaxis": {"title": _title("rows")},
        "height": 280, "bargap": 0.05, "margin": {"l": 60, "r": 20, "t": 50, "b": 45}, "showlegend": False})
    if interval is not None:
        fig.add_vrect(x0=interval[0], x1=interval[1], fillcolor=PRUNED_MODEL_COLOR, opacity=0.2, line_width=0)
    if mean is not None:
        fig.add_vline(x=mean, line_color=PRUNED_MODEL_COLOR, line_width=2)
    return fig


def strongest_bin_center(array, *, bins: int = OVERVIEW_BINS, sort_units: bool = False, scale: str = "log") -> int:
    """The position (unit index, or rank - 1 with ``sort_units``) at the middle of the overview's
    strongest bin (:func:`binned_heatmap`): where a window opens when nothing is picked yet."""
    a = _as_array(array)
    a, units, ranks, color, _ = _map_view(a, sort_units, scale)
    edges = bin_edges(a.shape[1], bins)
    z = _bin_stats(a, units, ranks, color, edges)[0]
    if not np.isfinite(z).any():
        return 0
    b = int(np.unravel_index(np.nanargmax(z), z.shape)[1])
    return int((edges[b] + edges[b + 1]) // 2)
