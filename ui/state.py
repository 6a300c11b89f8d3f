"""Page state that outlives one page: named accessors over ``st.session_state``, so that no page
reads another page's raw keys.

* the mask settings of **Prune and evaluate** (sparsity per kind, scope), which Export, Unseen and
  Overlap start from;
* the heatmap view of **Attribution heatmaps**, which Export draws the same way;
* the unit picked on **Attribution heatmaps** for its drill-down (also in the address, ``?unit=``,
  so that a reload or a shared link opens the same unit);
* the session's stores: scores, evaluations, sweep, unseen, repair, probe and transfer results.
"""

from __future__ import annotations

import streamlit as st

from mtprune.costs import Budget

_PRUNE = "_state.prune_settings"
_HEATMAP = "_state.heatmap_view"
_STORES = "_state.stores"
_UNIT = "_state.unit"
_SEEN = "_state.seen_selections"
STORES = ("scores", "evals", "sweeps", "unseen", "repaired", "probe", "transfer")


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
