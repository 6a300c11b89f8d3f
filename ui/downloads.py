"""Downloads of the hard-pruned model (a model directory, or ONNX), each built once per model,
mask and name in the process and then served from memory."""

from __future__ import annotations

import streamlit as st

from ui.session import Context, model_lock


@st.cache_data(show_spinner="building the hard-pruned model...", max_entries=2)
def _pruned_zip(fingerprint: str, digest: str, folder: str, measured_key: tuple, _adapter, _mask, _measured) -> bytes:
    from mtprune.checkpoints import zip_model
    from mtprune.pruning import hard_prune

    with model_lock(fingerprint):  # no spinner: this runs outside the script
        small = hard_prune(_adapter, _mask)
    return zip_model(small, _mask, folder=folder, measured=_measured)


def pruned_zip(ctx: Context, mask, folder: str, measured: dict) -> bytes:
    """The hard-pruned model as a zip of the folder ``folder/``: built once per model, mask and
    name, then served from memory. Its tasks.json records ``measured`` (:func:`ui.evaluations.measured_with`: soft
    and hard pruning remove the same units, the same function), else "not measured". Read
    ``measured`` when the page runs: a download's callable runs outside the session."""
    key = tuple((t, r.split, r.n) for t, r in measured.items())
    return _pruned_zip(ctx.fingerprint, mask.digest(), folder, key, ctx.adapter, mask, measured)


@st.cache_data(show_spinner="exporting to ONNX...", max_entries=2)
def _onnx_zip(fingerprint: str, digest: str, task: str, folder: str, _adapter, _mask) -> bytes:
    from mtprune.export import zip_onnx
    from mtprune.pruning import hard_prune

    with model_lock(fingerprint):  # no spinner: this runs outside the script
        small = hard_prune(_adapter, _mask)
    return zip_onnx(small, task, folder, evaluate=False)


def onnx_zip(ctx: Context, mask, folder: str) -> bytes:
    """The hard-pruned model and the task's head as an ONNX directory in a zip (``folder/``),
    exported once per model, mask and task, then served from memory."""
    return _onnx_zip(ctx.fingerprint, mask.digest(), ctx.task.name, folder, ctx.adapter, mask)
