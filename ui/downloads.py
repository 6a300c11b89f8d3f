"""Downloads of the pruned (and repaired) model, one task's head alone with its model card: a model
directory or ONNX, each built once per model, mask, repair and name in the process and then served
from memory."""

from __future__ import annotations

import streamlit as st

from ui import state
from ui.session import Context, model_lock


def _build(adapter, mask, task: str, solver: str, calib: int):
    """``(model, calibration source)``: hard-pruned, or pruned and repaired by ``solver`` on ``calib``
    rows of the task's train split, as the Prune page repairs (the same rows, the same model)."""
    from mtprune.pruning import hard_prune

    if solver == "none":
        return hard_prune(adapter, mask), None
    from mtprune.pipeline import prune
    from mtprune.repair import calibration_rows
    from mtprune.tasks import get_task

    rows = calibration_rows(task, int(calib))
    done = prune(adapter, task, mask=mask, repair_with=solver, calibration=rows)
    return done.adapter, f"{task}/{get_task(task).train_split}"


@st.cache_data(show_spinner="building the pruned model and its model card...", max_entries=2)
def _model_zip(fingerprint: str, digest: str, task: str, solver: str, calib: int, folder: str, measured_key: tuple,
               flops: float | None, _adapter, _mask, _measured) -> bytes:
    from mtprune.export import zip_model

    with model_lock(fingerprint):  # no spinner: this runs outside the script
        small, source = _build(_adapter, _mask, task, solver, calib)
    return zip_model(small, task, folder, mask=_mask, measured=_measured, flops_kept=flops, calibration=source)


def measured_for(ctx: Context, mask, solver: str, calib: int) -> dict:
    """``{task: EvalResult}``: this session's evaluation (the most rows) of the sidebar's task with
    this very mask and repair; empty when it was not evaluated (the model card then says so)."""
    from ui.evaluations import measured_with

    if solver == "none":
        return measured_with(ctx, mask)
    digest = mask.digest()
    best = [v[0] for k, v in state.store("repaired").items()
            if k[0] == ctx.fingerprint and k[1] == ctx.task.name and k[4] == digest and k[5] == solver
            and int(k[6]) == int(calib)]
    return {ctx.task.name: max(best, key=lambda r: r.n)} if best else {}


def model_zip(ctx: Context, mask, folder: str, measured: dict, solver: str = "none", calib: int = 512,
              flops: float | None = None) -> bytes:
    """The pruned (repaired) model serving the sidebar's task alone, as a zip of the folder
    ``folder/`` with its model card. Its card and config record ``measured``
    (:func:`measured_for`), else "not measured". Read ``measured`` when the page runs: a download's
    callable runs outside the session."""
    key = tuple((t, r.split, r.n) for t, r in measured.items())
    return _model_zip(ctx.fingerprint, mask.digest(), ctx.task.name, solver, int(calib), folder, key, flops,
                      ctx.adapter, mask, measured)


@st.cache_data(show_spinner="exporting to ONNX...", max_entries=2)
def _onnx_zip(fingerprint: str, digest: str, task: str, solver: str, calib: int, folder: str, measured_key: tuple,
              flops: float | None, _adapter, _mask, _measured) -> bytes:
    from mtprune.export import zip_onnx

    with model_lock(fingerprint):  # no spinner: this runs outside the script
        small, _ = _build(_adapter, _mask, task, solver, calib)
    return zip_onnx(small, task, folder, evaluate=False, mask=_mask, measured=_measured, flops_kept=flops)


def onnx_zip(ctx: Context, mask, folder: str, measured: dict, solver: str = "none", calib: int = 512,
             flops: float | None = None) -> bytes:
    """The pruned (repaired) model and the task's head as an ONNX directory in a zip (``folder/``),
    with its model card; exported once per model, mask, repair and task, then served from memory."""
    key = tuple((t, r.split, r.n) for t, r in measured.items())
    return _onnx_zip(ctx.fingerprint, mask.digest(), ctx.task.name, solver, int(calib), folder, key, flops,
                     ctx.adapter, mask, measured)
