"""What the **Your own sentences** page shows of an :class:`mtprune.explain.Explanation`, as words
and tables (no streamlit): the words coloured by their attribution (HTML, every piece of the
user's text escaped), the probabilities of every label, the units per layer."""

from __future__ import annotations

import html

import pandas as pd

UP = "214, 39, 40"  # red: raises the predicted label's probability
DOWN = "31, 119, 180"  # blue: lowers it


def words_html(words, segment: int = 0, peak: float | None = None) -> str:
    """The words of one text, each on a background as strong as its attribution (relative to
    ``peak``, default the largest magnitude among them): red raises P(label), blue lowers it; the
    value in each word's tooltip. Every word is HTML-escaped."""
    chosen = [w for w in words if w.segment == segment]
    top = float(peak) if peak else max((abs(w.score) for w in chosen), default=0.0)
    parts = []
    for w in chosen:
        alpha = 0.0 if top <= 0 else min(1.0, abs(w.score) / top)
        color = UP if w.score >= 0 else DOWN
        parts.append(f'<span title="{w.score:+.4f}" style="background: rgba({color}, {alpha:.2f}); '
                     f'border-radius: 3px; padding: 1px 2px">{html.escape(w.text)}</span>')
    return '<div style="line-height: 2.0; font-size: 1.05em">' + " ".join(parts) + "</div>"


def peak_of(words) -> float:
    """The largest magnitude of any word's attribution (one scale for both texts of a pair)."""
    return max((abs(w.score) for w in words), default=0.0)


def probability_table(res) -> pd.DataFrame:
    """One row per label, one column per model: the probabilities."""
    table = {"label": list(res.dense.labels)}
    for p in res.predictions():
        table[p.model] = [round(v, 4) for v in p.probs]
    return pd.DataFrame(table)


def prediction_words(p, dense=None) -> str:
    """``P 0.978``; beside the dense model, how the dense label's probability moved: ``P 0.972
    (-0.025 from dense)``, or ``P 0.61 · P(negative) 0.390, -0.607 from dense`` when the label flipped."""
    text = f"P {p.p:.3f}"
    if dense is None or p is dense:
        return text
    moved = p.probs[dense.index] - dense.p
    if p.label == dense.label:
        return f"{text} ({moved:+.3f} from dense)"
    return f"{text} · P({dense.label}) {p.probs[dense.index]:.3f}, {moved:+.3f} from dense"


def units_frame(res) -> pd.DataFrame:
    """Every site's top units: the unit's address, its effect on P(label) for this sentence, its
    standing in the task's cached scores (or "reliability unknown") and whether the mask keeps it."""
    rows = []
    for s in res.sites:
        stack, layer, kind = s.site.split(".")
        for u in s.top:
            rows.append({"layer": int(layer), "kind": kind, "unit": u.unit_id, "effect on P": u.effect,
                         "in the task's scores": u.reliability_text(),
                         "kept": "" if u.kept is None else "yes" if u.kept else "pruned",
                         "share of layer": abs(u.effect) / s.total if s.total > 0 else 0.0})
    cols = ["layer", "kind", "unit", "effect on P", "in the task's scores", "kept", "share of layer"]
    return pd.DataFrame(rows, columns=cols)
