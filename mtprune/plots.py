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

KIND_LABELS = {"ffn": "FFN neurons", "heads": "attention heads"}
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
    return "head" if group.endswith("heads") else "neuron"


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


def _none_nan(a: np.ndarray):
    """A list of lists with None for NaN (plotly leaves those cells empty)."""
    out = a.astype(object)
    out[np.isnan(a)] = None
    return out.tolist()


def score_heatmap(array, *, group: str = "", title: str | None = None, sort_units: bool = False,
                  scale: str = "linear", height: int | None = None) -> go.Figure:
    """Layers x units heatmap of attribution scores.

    Hover shows the layer, the unit's index, its score and its rank in the layer (1 = most
    needed). ``sort_units`` orders every layer's units by score, highest first (the x axis becomes
    the rank; the hover still names the unit). ``scale`` colours by the score (``linear``), by
    log10 of its magnitude (``log``) or by its percentile within the layer (``percentile``).
    """
    a = _as_array(array)
    n_layers, width = a.shape
    units = np.tile(np.arange(width), (n_layers, 1))
    ranks = layer_ranks(a)
    if sort_units:
        a, _, (units, ranks) = _sorted_view(a, units, ranks)
    color, clabel = _color_values(a, scale)
    signed = scale == "linear" and np.nanmin(a) < 0 if np.isfinite(a).any() else False
    custom = np.stack([units, ranks, np.where(np.isnan(a), 0.0, a)], axis=-1)
    word = unit_word(group)
    hover = (f"layer %{{y}}<br>{word} %{{customdata[0]}}<br>score %{{customdata[2]:.4g}}"
             f"<br>rank %{{customdata[1]}} in layer<extra></extra>")
    hm = go.Heatmap(
        z=_none_nan(color), x=list(range(width)), y=list(range(n_layers)), customdata=custom,
        hovertemplate=hover, hoverongaps=False,
        colorscale="RdBu_r" if signed else "Viridis", zmid=0 if signed else None,
        colorbar=dict(title=dict(text=clabel, side="right")),
    )
    if a.size <= _TEXT_CELLS:
        hm.update(text=np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.2g}")(a), texttemplate="%{text}",
                  textfont=dict(size=10))
    fig = go.Figure(hm)
    fig.update_layout(
        title=title or f"{group_label(group)}: attribution by layer".strip(": "),
        xaxis_title=f"{word} rank in layer (sorted by score)" if sort_units else f"{word} index",
        yaxis_title="layer", height=height or max(260, 60 + 38 * n_layers),
        margin=dict(l=60, r=20, t=50, b=50),
    )
    fig.update_yaxes(autorange="reversed", dtick=1)
    return fig


def keep_heatmap(keep, n_units: Sequence[int] | None = None, *, scores=None, group: str = "",
                 title: str | None = None, sort_units: bool = False) -> go.Figure:
    """Layers x units map of a mask: kept units in one colour, pruned in another.

    ``scores`` (same layout) adds the score and rank to the hover and, with ``sort_units``,
    orders every layer by score so the kept units line up on the left.
    """
    k = np.asarray(keep, dtype=bool)
    n_layers, width = k.shape
    valid = np.ones_like(k, dtype=bool)
    if n_units is not None:
        valid = np.arange(width)[None, :] < np.asarray(list(n_units))[:, None]
    z = np.where(valid, k.astype(float), np.nan)
    units = np.tile(np.arange(width), (n_layers, 1))
    word = unit_word(group)
    if scores is not None:
        s = np.where(valid, _as_array(scores), np.nan)
        ranks = layer_ranks(s)
        if sort_units:
            s, _, (z, units, ranks) = _sorted_view(s, z, units, ranks)
        custom = np.stack([units, ranks, np.where(np.isnan(s), 0.0, s)], axis=-1)
        hover = (f"layer %{{y}}<br>{word} %{{customdata[0]}}<br>%{{text}}<br>score %{{customdata[2]:.4g}}"
                 f"<br>rank %{{customdata[1]}} in layer<extra></extra>")
    else:
        custom = units[..., None]
        hover = f"layer %{{y}}<br>{word} %{{customdata[0]}}<br>%{{text}}<extra></extra>"
    text = np.where(np.isnan(z), "", np.where(z > 0.5, "kept", "pruned"))
    fig = go.Figure(go.Heatmap(
        z=_none_nan(z), customdata=custom, text=text, hovertemplate=hover, hoverongaps=False,
        x=list(range(width)), y=list(range(n_layers)),
        colorscale=[[0.0, PRUNED_COLOR], [0.5, PRUNED_COLOR], [0.5, KEPT_COLOR], [1.0, KEPT_COLOR]],
        zmin=0, zmax=1, showscale=True,
        colorbar=dict(tickvals=[0.25, 0.75], ticktext=["pruned", "kept"], len=0.6),
    ))
    kept, total = int((k & valid).sum()), int(valid.sum())
    fig.update_layout(
        title=title or f"{group_label(group)}: {kept} of {total} kept",
        xaxis_title=f"{word} rank in layer (sorted by score)" if (sort_units and scores is not None)
        else f"{word} index",
        yaxis_title="layer", height=max(240, 60 + 34 * n_layers), margin=dict(l=60, r=20, t=50, b=50),
    )
    fig.update_yaxes(autorange="reversed", dtick=1)
    return fig


def kept_per_layer(keep, n_units: Sequence[int], *, group: str = "", title: str | None = None) -> go.Figure:
    """Stacked bars: kept and pruned units of every layer."""
    k = np.asarray(keep, dtype=bool)
    n = np.asarray(list(n_units))
    valid = np.arange(k.shape[1])[None, :] < n[:, None]
    kept = (k & valid).sum(1)
    layers = list(range(k.shape[0]))
    fig = go.Figure([
        go.Bar(x=layers, y=kept, name="kept", marker_color=KEPT_COLOR,
               hovertemplate="layer %{x}: %{y} kept<extra></extra>"),
        go.Bar(x=layers, y=n - kept, name="pruned", marker_color=PRUNED_COLOR,
               hovertemplate="layer %{x}: %{y} pruned<extra></extra>"),
    ])
    fig.update_layout(barmode="stack", title=title or f"{group_label(group)} kept per layer",
                      xaxis_title="layer", yaxis_title=f"{unit_word(group)}s", height=300,
                      margin=dict(l=60, r=20, t=50, b=40), xaxis=dict(dtick=1),
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return fig


def score_distribution(array, *, group: str = "", log: bool = False, title: str | None = None) -> go.Figure:
    """The distribution of scores in every layer, one box per layer (outliers as points)."""
    a = _as_array(array)
    fig = go.Figure()
    for layer in range(a.shape[0]):
        v = a[layer][~np.isnan(a[layer])]
        if log:
            v = np.abs(v)
            v = v[v > 0]
        fig.add_trace(go.Box(y=v, name=f"layer {layer}", boxpoints="outliers", marker_size=3,
                             line_width=1, showlegend=False))
    fig.update_layout(title=title or f"{group_label(group)}: score distribution per layer",
                      yaxis_title="|score| (log scale)" if log else "score", height=340,
                      margin=dict(l=60, r=20, t=50, b=40))
    if log:
        fig.update_yaxes(type="log")
    return fig


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
    labels = [f"L{r.layer} {word[0]}{r[word]}" for _, r in table.iterrows()]
    fig = go.Figure(go.Bar(x=table["score"], y=labels, orientation="h", marker_color=DENSE_COLOR,
                           hovertemplate="%{y}: %{x:.4g}<extra></extra>"))
    fig.update_layout(title=title or f"top {len(table)} {group_label(group)}", xaxis_title="score",
                      height=max(240, 40 + 18 * len(table)), margin=dict(l=90, r=20, t=50, b=40))
    fig.update_yaxes(autorange="reversed")
    return fig


def dense_vs_pruned(labels: Sequence[str], dense: Sequence[float], pruned: Sequence[float], *,
                    metric: str = "accuracy", title: str | None = None,
                    pruned_name: str = "pruned") -> go.Figure:
    """Grouped bars, dense against pruned, one group per label (a task, a target set...)."""
    fig = go.Figure([
        go.Bar(x=list(labels), y=list(dense), name="dense", marker_color=DENSE_COLOR,
               text=[f"{v:.3f}" for v in dense], textposition="outside",
               hovertemplate="%{x} dense: %{y:.4f}<extra></extra>"),
        go.Bar(x=list(labels), y=list(pruned), name=pruned_name, marker_color=PRUNED_MODEL_COLOR,
               text=[f"{v:.3f}" for v in pruned], textposition="outside",
               hovertemplate="%{x} " + pruned_name + ": %{y:.4f}<extra></extra>"),
    ])
    top = max([*dense, *pruned, 0.0])
    fig.update_layout(barmode="group", title=title or f"{metric}: dense against pruned",
                      yaxis_title=metric, yaxis_range=[0, max(1.0, top * 1.12)], height=340,
                      margin=dict(l=60, r=20, t=50, b=40),
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return fig


# ----------------------------------------------------------------------------------------------
# export


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
