"""Page state that outlives one page: named accessors over ``st.session_state``, so that no page
reads another page's raw keys.

* the mask settings of **Prune and evaluate** (sparsity per kind, scope), which Export, Unseen and
  Overlap start from;
* the heatmap view of **Attribution heatmaps**, which Export draws the same way;
* the session's stores: scores, evaluations, sweep and unseen results.
"""

from __future__ import annotations

import streamlit as st

_PRUNE = "_state.prune_settings"
_HEATMAP = "_state.heatmap_view"
_STORES = "_state.stores"
STORES = ("scores", "evals", "sweeps", "unseen")


def prune_settings(kinds) -> dict:
    """The sparsity per kind and the scope last set on Prune and evaluate (defaults: FFN 50 %,
    heads 0 %, per layer)."""
    s = st.session_state.get(_PRUNE) or {}
    per = s.get("sparsity", {})
    return {"sparsity": {k: per.get(k, 0.5 if k == "ffn" else 0.0) for k in kinds}, "scope": s.get("scope", "layer")}


def remember_prune_settings(sparsity: dict, scope: str) -> None:
    st.session_state[_PRUNE] = {"sparsity": dict(sparsity), "scope": scope}


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
