"""What the **One unit** page and the wide maps of **Attribution heatmaps** show, as words, tables
and windows (no streamlit): a unit's standing in every task, where it fires, what P(gold) loses
without it, the masks that keep it (:mod:`mtprune.unit_profile`); and which units of a wide map a
window shows (:data:`mtprune.plots.MAX_WINDOW` at most, so that a click lands on the unit aimed at)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from mtprune.plots import MAX_WINDOW, WINDOW, unit_word
from mtprune.text import plural

PAGE = "app_pages/unit.py"  # the unit's page, opened with ?unit=<id>


def describe_unit(ref, n_units: int) -> str:
    """``neuron 1265 of the 1,536 FFN neurons of encoder layer 2``."""
    from mtprune.units import KIND_LABELS

    stack, kind = ref.group.split(".")
    what = KIND_LABELS.get(kind, kind)
    return f"{unit_word(ref.group)} {ref.unit} of the {n_units:,} {what} of {stack} layer {ref.layer}"


# ----------------------------------------------------------------------------------------------
# its standing in every task


def standing_table(rows: Sequence, selected: str | None = None) -> pd.DataFrame:
    """One row per task: score ± its 95% half-width, rank with its 95% interval of the layer's
    units, percentile (and its interval), examples, the layer's reliability, or what is missing."""
    out = []
    for s in rows:
        iv = s.percentile_interval()
        half = 1.96 * s.se if s.se is not None else None
        out.append({
            "task": s.task, "score": s.score, "± (95%)": half,
            "rank": s.rank, "rank 95%": f"{s.rank_low:,}-{s.rank_high:,}" if s.rank_low is not None else "",
            "of": s.n_units or None, "percentile": s.percentile,
            "percentile_low": iv[0] if iv else None, "percentile_high": iv[1] if iv else None,
            "examples": s.examples, "layer reliability": s.layer_reliability,
            "status": s.status, "selected": s.task == selected, "n_units": s.n_units or None,
        })
    return pd.DataFrame(out)


def _num(v, fmt: str) -> str:
    return "" if v is None or v != v else format(v, fmt)  # v != v: NaN


def standing_display(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the page shows it, in words: ``0.00093 ± 0.00074``, ``240 (95% 71-1,254) of
    1,536``; blank where a task has no scores (its status says why)."""
    rows = []
    for d in table.to_dict("records"):
        score = _num(d["score"], ".4g")
        if score and _num(d["± (95%)"], ".2g"):
            score += f" ± {d['± (95%)']:.2g}"
        rank = ""
        if _num(d["rank"], "d" if isinstance(d["rank"], int) else ".0f"):
            iv = f" (95% {d['rank 95%']})" if d["rank 95%"] else ""
            rank = f"{int(d['rank']):,}{iv} of {int(d['of']):,}" + ("" if iv else ", interval unknown")
        rows.append({"task": d["task"], "score (95%)": score, "rank in layer": rank,
                     "percentile": _num(d["percentile"], ".1f"), "examples": _num(d["examples"], ",.0f"),
                     "layer reliability": _num(d["layer reliability"], ".2f"), "status": d["status"]})
    return pd.DataFrame(rows, columns=["task", "score (95%)", "rank in layer", "percentile", "examples",
                                       "layer reliability", "status"])


# ----------------------------------------------------------------------------------------------
# where it fires


def firing_caption(f) -> str:
    """``872 rows (21,943 tokens) of sst2/validation, every row read; peak per row: median 1.68,
    90% 4.64, max 6.96``."""
    p = f.peaks
    return (f"{plural(f.rows, 'row')} ({plural(f.tokens, 'token')}) of {f.task}/{f.split}, every row read; the unit's "
            f"peak per row: median {p['median']:.3g}, 90th percentile {p['q90']:.3g}, max {p['max']:.3g}")


def top_row_line(r, labels: Sequence[str]) -> str:
    """``row 258 · peak 6.96 at "no" · gold negative``."""
    from mtprune.text import join_pieces

    word = next((w for w, idx in join_pieces(r.tokens) if r.at in idx), r.tokens[r.at] if r.tokens else "")
    gold = f" · gold **{labels[r.label]}**" if r.label is not None and 0 <= r.label < len(labels) else ""
    return f"row {r.row:,} · peak {r.peak:.3g} at “{word}”{gold}"


def words_table(f) -> pd.DataFrame:
    """The words of the highest mean activation: mean with its 95% interval, occurrences, largest."""
    rows = []
    for w in f.words:
        lo, hi = w.interval()
        rows.append({"word": w.word, "mean activation": round(w.mean, 4), "95% low": round(lo, 4),
                     "95% high": round(hi, 4), "n": w.count, "largest": round(w.peak, 4)})
    return pd.DataFrame(rows, columns=["word", "mean activation", "95% low", "95% high", "n", "largest"])


def peak_words_table(f) -> pd.DataFrame:
    """The words at which rows peak, with how many rows (and their share)."""
    return pd.DataFrame([{"word": w, "rows": n, "share of rows": round(n / f.rows, 4)} for w, n in f.peak_words],
                        columns=["word", "rows", "share of rows"])


# ----------------------------------------------------------------------------------------------
# without it


def removal_words(e) -> str:
    """``-0.0111 (95% -0.0243 to +0.0021, n = 128 rows of sst2/validation): no measurable change;
    P(gold) 0.912 with it, 0.901 without``."""
    return (f"{e.mean:+.4f} (95% {e.low:+.4f} to {e.high:+.4f}, t-interval, n = {plural(e.n, 'row')} of "
            f"{e.task}/{e.split}): **{e.verdict}**; mean P(gold) {e.p_gold:.3f} with it, {e.p_gold_without:.3f} "
            f"without it")


# ----------------------------------------------------------------------------------------------
# the masks that keep it


def settings_words(settings: dict) -> str:
    """How Prune and evaluate chooses units now: ``ffn 50%, heads 0% pruned per layer`` or ``budget flops:0.6``."""
    if settings.get("mode") == "budget":
        return f"budget {settings['budget']} over heads and FFN neurons"
    return (", ".join(f"{k} {p:.0%}" for k, p in settings["sparsity"].items())
            + (" pruned per layer" if settings.get("scope", "layer") == "layer" else " pruned over the whole model"))


def masks_table(uses: Sequence) -> pd.DataFrame:
    """One row per distinct mask: kept or not, the units it keeps in the layer, its task, how it
    was made, where it is (the runs holding it)."""
    rows = [{"kept": "yes" if u.kept else "no",
             "kept in its layer": f"{u.kept_in_layer:,} / {u.n_in_layer:,}" if u.n_in_layer else "kind not pruned",
             "task": u.task, "how": u.how, "mask": u.digest[:12],
             "where": ", ".join(u.sources[:4]) + (f" and {len(u.sources) - 4} more" if len(u.sources) > 4 else "")}
            for u in uses]
    return pd.DataFrame(rows, columns=["kept", "kept in its layer", "task", "how", "mask", "where"])


def masks_caption(uses: Sequence) -> str:
    kept = sum(u.kept for u in uses)
    return (f"Kept by {kept} of the {plural(len(uses), 'distinct mask')} known here: the Prune page's settings now, "
            "this session's runs and the model's saved runs.")


# ----------------------------------------------------------------------------------------------
# windows of a wide map


def window_around(position: int, width: int, size: int = WINDOW) -> tuple[int, int]:
    """``(first, last)`` units of a window of ``size`` centred on ``position``, inside ``width``."""
    size = max(1, min(size, width))
    first = int(min(max(position - size // 2, 0), width - size))
    return first, first + size - 1


def clamp_window(first: int, last: int, width: int) -> tuple[tuple[int, int], bool]:
    """The window inside the map and at most :data:`MAX_WINDOW` units wide: ``((first, last),
    narrowed)``."""
    first, last = sorted((int(first), int(last)))
    first, last = max(first, 0), min(last, width - 1)
    if last - first + 1 > MAX_WINDOW:
        return (first, first + MAX_WINDOW - 1), True
    return (first, last), False


def window_of_box(box: dict, width: int) -> tuple[tuple[int, int], bool]:
    """The window a horizontal brush covers (its x range, in unit positions), clamped."""
    xs = [float(v) for v in box.get("x", [])]
    if not xs:
        raise ValueError("a brush without an x range")
    first, last = int(np.ceil(min(xs) - 0.5)), int(np.floor(max(xs) + 0.5))
    return clamp_window(first, max(first, last), width)


def position_of(a: np.ndarray, layer: int, unit: int, sort_units: bool) -> int:
    """Where a unit stands on the x axis: its index, or its rank - 1 when sorted."""
    if not sort_units:
        return int(unit)
    from mtprune.plots import layer_ranks

    return int(layer_ranks(a)[layer, unit]) - 1
