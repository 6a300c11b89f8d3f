"""Downloads of the pruned (and repaired) model, one task's head alone with its model card: a model
directory or ONNX in a zip, each **built by a job** (:mod:`ui.jobs`: progress per repair layer and
per stage, the time left, Cancel, the Jobs panel; another session asking for the same build joins
it) and then served from the session's memory (the last two builds of each kind)."""

from __future__ import annotations

import streamlit as st

from mtprune.io import stable_hash
from ui import jobs as J
from ui import state
from ui.session import Context, model_lock

KEEP = 2  # builds of each kind a session keeps (a model zip is ~40 MB)
KINDS = {
    "model": {"what": "the hard-pruned model", "mime": "application/zip", "write": "writing the model directory "
              "and its card"},
    "onnx": {"what": "the pruned model as ONNX", "mime": "application/zip", "write": "exporting to ONNX"},
}


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


def _work(kind: str, adapter, lock, mask, task: str, folder: str, measured: dict, solver: str, calib: int,
          flops: float | None):
    """The job building one download: ``work(job) -> bytes``. The repair reports per layer; a
    cancel stops it at the next layer or stage, and every file is written in a temporary directory
    that goes with it (nothing half-built is kept). No session state (a job's thread runs it)."""
    from mtprune.export import zip_model, zip_onnx
    from mtprune.pruning import hard_prune

    def work(job):
        source = None
        if solver == "none":
            with job.holding(lock):
                job.begin("slicing the pruned units away")
                small = hard_prune(adapter, mask)
        else:
            from mtprune.tasks import get_task
            from ui.evaluations import repaired_model

            small, _ = repaired_model(job, adapter, lambda: job.holding(lock), task, mask, solver, calib)
            source = f"{task}/{get_task(task).train_split}"
        job.begin(KINDS[kind]["write"])
        if kind == "model":
            data = zip_model(small, task, folder, mask=mask, measured=measured, flops_kept=flops, calibration=source)
        else:
            data = zip_onnx(small, task, folder, evaluate=False, mask=mask, measured=measured, flops_kept=flops)
        job.check()  # cancelled while it wrote: the bytes are dropped
        return data
    return work


def build_and_download(ctx: Context, kind: str, mask, folder: str, measured: dict, solver: str = "none",
                       calib: int = 512, flops: float | None = None, *, label: str, disabled: bool = False,
                       help: str = "") -> bytes | None:
    """A **Build** button that starts the job making the download ``kind`` (``model`` or ``onnx``)
    of ``mask`` repaired by ``solver`` on ``calib`` rows, named ``folder``; once built, the download
    button ``label`` serving it (its bytes are returned). A build started before a page switch, or
    by another session, is waited on here. Read ``measured`` when the page runs (its card records
    it)."""
    memo = (kind, ctx.fingerprint, mask.digest(), ctx.task.name, solver, int(calib), folder,
            tuple((t, r.split, r.n, round(r.accuracy, 6)) for t, r in measured.items()), flops)
    store = state.store("exports")
    data = store.get(memo)
    slot = st.empty()  # the Build button, replaced by the download once built
    if data is None and not disabled:
        key = "export:" + stable_hash([repr(memo)], 24)
        what = KINDS[kind]["what"]
        if slot.button(f"Build {what}", key=f"export.build.{kind}", icon=":material/build:",
                     help=help + ". Built as a job: its progress, the time left and Cancel show here and in the "
                                 "Jobs panel"):
            data = J.run(key, f"building {what} ({folder})", _work(kind, ctx.adapter, model_lock(ctx.fingerprint),
                         mask, ctx.task.name, folder, measured, solver, int(calib), flops),
                         steps=2)
        else:
            job = J.pending(key)
            data = J.follow(job) if job is not None else None
        if data is not None:
            mine = [k for k in store if k[0] == kind]  # oldest first
            for old in mine[: max(0, len(mine) - KEEP + 1)]:
                del store[old]
            store[memo] = data
    if data is not None:
        slot.download_button(label, data, file_name=f"{folder}.zip", mime=KINDS[kind]["mime"], key=f"export.{kind}",
                           icon=":material/folder_zip:", on_click="ignore",
                           help=f"built: {len(data) / 1e6:.1f} MB; " + help)
    elif disabled:
        slot.button(f"Build {KINDS[kind]['what']}", key=f"export.build.{kind}", icon=":material/build:", disabled=True,
                  help=help)
    return data
