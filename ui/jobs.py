"""Jobs in the dashboard (:mod:`mtprune.jobs`): long work a page starts runs in a background thread
of the server. The page waits for it in place (a progress bar with the time left and a Cancel
button); a click, a page switch or a reload stops the waiting, not the job, and the **Jobs** panel
at the foot of the sidebar shows it on every page (redrawn every second while something runs, and
rerunning the page when a job it showed running finishes, so its result appears). A second session
asking for the same result (the same key) joins the running job and waits on the same progress.

Wait (:func:`follow`, :func:`run`) at page level, not inside an ``st.fragment``: a click on a
fragment's widget does not interrupt a run in progress, so a Cancel button drawn inside one would
only act once the job is over (Prune and evaluate finds its job in its fragment and waits for it
below). Imports :mod:`ui.session` only."""

from __future__ import annotations

import streamlit as st

from mtprune.errors import MtpruneError
from mtprune.jobs import CANCELLED, DONE, FAILED, REGISTRY, Job, error_line
from ui.session import session_id

POLL = 0.25  # seconds between two looks at a job watched in place
PANEL_EVERY = 1.0  # seconds between two redraws of the panel while a job runs
FINISHED_SHOWN = 3  # the session's last finished jobs the panel lists
_FLASH = "_jobs.flash"  # a line the Cancel button's callback leaves for the next run
_SEEN = "_jobs.seen_running"  # the jobs the panel last drew running


def start(key: str, label: str, work, steps: int | None = None) -> Job:
    """The running job of ``key`` (this session joins it), or a new one running ``work(job)``."""
    return REGISTRY.submit(key, label, work, session=session_id(), steps=steps)


def pending(key: str) -> Job | None:
    """The job of ``key`` this page should wait on: a running one (another session's too, unless
    this session left it), or one this session waited on that finished since and whose outcome it
    has not taken. Shows the line a Cancel button left, if any."""
    flash()
    job = REGISTRY.get(key)
    if job is None:
        return None
    sid = session_id()
    if job.running:
        return None if sid in job.left else job
    return job if sid in job.sessions and sid not in job.collected else None


def run(key: str, label: str, work, steps: int | None = None):
    """Start (or join) the job of ``key`` and wait for it in place: its result; None when it was
    cancelled (said in one line); its error raised again when it failed."""
    return follow(start(key, label, work, steps))


def follow(job: Job):
    """Wait for ``job`` in place, with its progress, the time left and a Cancel button (a click, a
    page switch or a reload stops the waiting, not the job). Its result when it is done; None when
    it was cancelled (one line says so); its error again when it failed (an unexpected one as one
    :class:`MtpruneError` line: its traceback is in the server's log)."""
    sid = session_id()
    job.attach(sid)
    if job.running:
        _watch(job)
    job.collected.add(sid)
    if job.status == DONE:
        return job.result
    if job.status == FAILED:
        if isinstance(job.error, MtpruneError):
            raise job.error
        raise MtpruneError(f"{job.label} failed: {error_line(job.error)}")
    if job.status == CANCELLED:
        st.info(f"{_capital(job.label)}: {job.outcome()}. Press its button again to run it.", icon=":material/cancel:")
    return None


def _watch(job: Job) -> None:
    slot = st.empty()
    with slot.container(border=True):
        who = ("joined: another session started it, and its progress is shown here" if job.joined_by(session_id())
               else "a job: switching pages does not stop it (Jobs, in the sidebar)")
        st.caption(f"**{_capital(job.label)}** · {who}")
        bar = st.progress(job.fraction(), text=job.describe())
        st.button("Cancel", key=f"jobs.cancel.{job.id}", on_click=_cancel, args=(job.id,), icon=":material/cancel:",
                  help="stop it at its next step; nothing half-done is kept (the cache and the history stay "
                       "as they were)" + ("; another session waiting on it keeps it running" if len(job.sessions) > 1
                                          else ""))
    while not job.wait(POLL):
        bar.progress(job.fraction(), text=job.describe())  # each redraw lets a click stop the waiting
    slot.empty()


def _cancel(job_id: str) -> None:
    """The Cancel button's callback: a job that already finished, or one this session only left,
    is said in one line on the next run."""
    try:
        text = REGISTRY.cancel(job_id, session_id())
    except MtpruneError as exc:
        st.session_state[_FLASH] = ("warning", str(exc))
        return
    if text.startswith("You left"):
        st.session_state[_FLASH] = ("info", text)


def flash() -> None:
    """The line a Cancel button's callback left, once."""
    kind, text = st.session_state.pop(_FLASH, (None, None))
    if text:
        (st.warning if kind == "warning" else st.info)(text, icon=":material/info:")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# ----------------------------------------------------------------------------------------------
# the panel


def panel() -> None:
    """The Jobs panel at the foot of the sidebar: this session's running jobs (progress, time left,
    Cancel), its last finished ones, and what other sessions run. While a job runs it is redrawn
    every second, and when one it showed running finishes the whole page reruns (its result
    appears, and the polling stops when nothing runs). Nothing is drawn while there is nothing to
    show."""
    sid = session_id()
    running = {j.id for j in REGISTRY.jobs() if j.running}
    st.session_state[_SEEN] = running
    if not (REGISTRY.jobs(sid) or running or _FLASH in st.session_state):
        return
    with st.sidebar:
        st.fragment(_panel_body, run_every=PANEL_EVERY if running else None)()


def _panel_body() -> None:
    sid = session_id()
    if st.session_state.get(_SEEN, set()) - {j.id for j in REGISTRY.jobs() if j.running}:
        st.rerun()  # a job drawn running has finished: the page shows its outcome
    mine = REGISTRY.jobs(sid)
    st.markdown("**Jobs**")
    flash()
    for j in [j for j in mine if j.running]:
        st.caption(_capital(j.label) + (" · joined" if j.joined_by(sid) else ""))
        st.progress(j.fraction(), text=j.describe())
        st.button("Cancel", key=f"jobs.panel.cancel.{j.id}", on_click=_cancel, args=(j.id,), icon=":material/cancel:")
    for j in [j for j in mine if not j.running][:FINISHED_SHOWN]:
        icon = {DONE: ":material/check:", CANCELLED: ":material/cancel:", FAILED: ":material/error:"}[j.status]
        st.caption(f"{icon} {_capital(j.label)}: {j.outcome()}")
    for j in REGISTRY.jobs():
        if j.running and sid not in j.sessions:
            st.caption(f":material/group: Another session: {j.label} · {j.describe()}")
