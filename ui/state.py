"""Page state that outlives one page: named accessors over ``st.session_state``, so that no page
reads another page's raw keys.

* the mask settings of **Prune and evaluate** (sparsity per kind, scope), which Export, Unseen and
  Overlap start from;
* the heatmap view of **Attribution heatmaps**, which Export draws the same way;
* the unit picked on **Attribution heatmaps** for its drill-down (also in the address, ``?unit=``,
  so that a reload or a shared link opens the same unit);
* the run open on **Prune and evaluate** (also in the address, ``?run=<id>``, so that a reload or a
  shared link reopens it) and the two runs compared there (``?compare=<id>,<id>``);
* the session's stores: scores, evaluations, runs, sweep, unseen, repair, probe and transfer results.
"""

from __future__ import annotations

import streamlit as st

from mtprune.costs import Budget

_PRUNE = "_state.prune_settings"
_HEATMAP = "_state.heatmap_view"
_STORES = "_state.stores"
_UNIT = "_state.unit"
_SEEN = "_state.seen_selections"
_RUN = "_state.run"
_COMPARE = "_state.compare"
STORES = ("scores", "evals", "runs", "sweeps", "unseen", "repaired", "probe", "transfer", "exports")


DEFAULT_BUDGET = Budget("flops", 0.6)


def prune_settings(kinds) -> dict:
    """How Prune and evaluate last chose units: ``mode`` ``sparsity`` (a share per kind, the same in
    every layer or global: ``sparsity``, ``scope``; defaults FFN 50 %, heads 0 %, per layer) or
    ``budget`` (``budget``, a :class:`mtprune.costs.Budget` over heads and neurons of all layers,
    default flops:0.6)."""
    s = st.session_state.get(_PRUNE) or {}
    per = s.get("sparsity", {})
    return {"mode": s.get("mode", "sparsity"),
            "sparsity": {k: per.get(k, 0.5 if k == "ffn" else 0.0) for k in kinds},
            "scope": s.get("scope", "layer"), "budget": s.get("budget") or DEFAULT_BUDGET}


def remember_prune_settings(sparsity: dict, scope: str, mode: str = "sparsity", budget=None) -> None:
    old = st.session_state.get(_PRUNE) or {}
    st.session_state[_PRUNE] = {"mode": mode, "sparsity": dict(sparsity), "scope": scope,
                                "budget": budget or old.get("budget") or DEFAULT_BUDGET}


def heatmap_view() -> dict:
    """How Attribution heatmaps draws scores now (units sorted or not, colour scale)."""
    return dict(st.session_state.get(_HEATMAP) or {"sort_units": False, "scale": "log"})


def remember_heatmap_view(sort_units: bool, scale: str) -> None:
    st.session_state[_HEATMAP] = {"sort_units": bool(sort_units), "scale": scale}


def store(name: str) -> dict:
    """One of the session's result stores (a dict kept across reruns)."""
    if name not in STORES:
        raise KeyError(f"no session store {name!r}; stores: {', '.join(STORES)}")
    return st.session_state.setdefault(_STORES, {}).setdefault(name, {})


def selected_unit() -> dict | None:
    """The unit picked for the drill-down: ``{"group", "layer", "unit"}``, or None. Read from the
    address on a fresh session (``?unit=encoder.ffn:3:17``)."""
    pick = st.session_state.get(_UNIT)
    if pick is None:
        raw = st.query_params.get("unit")
        try:
            group, layer, unit = str(raw).split(":")
            pick = {"group": group, "layer": int(layer), "unit": int(unit)}
        except (ValueError, AttributeError):
            return None
        st.session_state[_UNIT] = pick
    return dict(pick)


def select_unit(group: str, layer: int, unit: int) -> None:
    st.session_state[_UNIT] = {"group": group, "layer": int(layer), "unit": int(unit)}
    st.query_params["unit"] = f"{group}:{int(layer)}:{int(unit)}"


def clear_unit() -> None:
    st.session_state.pop(_UNIT, None)
    if "unit" in st.query_params:
        del st.query_params["unit"]


def new_selection(key: str, selection) -> bool:
    """True once for every new, non-empty selection of chart or table ``key`` (so that the latest
    click of several charts wins and a rerun does not pick it again)."""
    seen = st.session_state.setdefault(_SEEN, {})
    sig = repr(selection)
    if seen.get(key) == sig:
        return False
    seen[key] = sig
    if isinstance(selection, dict):
        return any(selection.get(k) for k in ("points", "box", "lasso", "rows", "cells"))
    return bool(selection)


def opened_run() -> dict | None:
    """The run open on Prune and evaluate: ``{"id", "at"}`` (``at``: the digest of the mask the
    page's settings made when it was opened; None until the page has drawn it), or None. Read from
    the address on a fresh session (``?run=3f2a9c0b71de``)."""
    pick = st.session_state.get(_RUN)
    if pick is None:
        raw = st.query_params.get("run")
        if not raw:
            return None
        pick = {"id": str(raw), "at": None}
        st.session_state[_RUN] = pick
    return dict(pick)


def open_run(run_id: str, at: str | None = None) -> None:
    st.session_state[_RUN] = {"id": run_id, "at": at}
    st.query_params["run"] = run_id


def close_run() -> None:
    st.session_state.pop(_RUN, None)
    if "run" in st.query_params:
        del st.query_params["run"]


def compared_runs() -> tuple[str | None, str | None]:
    """The two runs compared on Prune and evaluate (either None), from the address on a fresh
    session (``?compare=<id>,<id>``)."""
    pair = st.session_state.get(_COMPARE)
    if pair is None:
        raw = str(st.query_params.get("compare") or "")
        ids = [x.strip() for x in raw.split(",")] if raw else []
        pair = ((ids + [None, None])[:2]) if ids else [None, None]
        pair = [x or None for x in pair]
        st.session_state[_COMPARE] = pair
    return pair[0], pair[1]


def compare_runs(a: str | None, b: str | None) -> None:
    st.session_state[_COMPARE] = [a, b]
    if a or b:
        st.query_params["compare"] = f"{a or ''},{b or ''}"
    elif "compare" in st.query_params:
        del st.query_params["compare"]
