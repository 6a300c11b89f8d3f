"""Long work as jobs: a computation run in a background thread that others watch, join and cancel.

* A :class:`Job` is one computation, named by the **key of its result** (the scores' cache key, a
  run's id, an experiment's settings). :meth:`JobRegistry.submit` starts it in a daemon thread;
  asking for a key whose job is still running returns that job (the caller **joins** it: a second
  session waits on the same work, with its progress, instead of computing it again or waiting
  blind).
* **Progress**: the job's :meth:`Job.progress` is the ``progress(done, total)`` callback the library
  already takes (attribution, evaluation, repair per layer, experiments). A job goes through
  stages (:meth:`Job.begin`: "dense", "pruned", "repairing"...); the time left is the stage's
  elapsed time per unit done, times the units left (:meth:`Job.eta`), unknown before the first.
* **Cancel** is cooperative: :meth:`JobRegistry.cancel` sets a flag and the job's next progress
  callback (or :meth:`Job.check`) raises :class:`JobCancelled`, which unwinds the library call.
  Nothing half-written stays: the disk cache, runs, result tables and the run history write
  through :func:`mtprune.io.atomic_write` (a temporary file renamed into place, removed on any
  exception), so an unwound computation leaves what was there before. A session that joined a job
  another session still waits on only leaves it; the last one cancels it.
* Finished jobs stay in the registry for a while (:attr:`JobRegistry.keep`): their result (or
  error) can be collected by the sessions that waited on them, also after a page switch.

Nothing here imports streamlit: the dashboard's panel is :mod:`ui.jobs`.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from mtprune.errors import MtpruneError
from mtprune.text import fmt_seconds, plural

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
STATUSES = (RUNNING, DONE, FAILED, CANCELLED)


class JobCancelled(BaseException):
    """Raised in a job's thread by its progress callback once the job was cancelled. A
    BaseException, like asyncio's CancelledError, so that no ``except Exception`` on the way
    swallows it."""


class Job:
    """One computation in a background thread: its stage, progress, time left, status and outcome.

    Read from any thread; written by its own thread (progress) and by :class:`JobRegistry`
    (sessions, cancel). ``sessions`` are the sessions waiting on it (the first started it)."""

    def __init__(self, key: str, label: str, *, session: str | None = None, steps: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.id = uuid.uuid4().hex[:10]
        self.key = key
        self.label = label
        self.steps = steps  # stages in all, when known
        self.step = 0  # the current stage, from 1
        self.stage = ""
        self.unit = ""
        self.done = 0.0
        self.total = 0.0
        self.note = ""  # a line from the work (a draw's reliability, waiting for the model)
        self.status = RUNNING
        self.result: Any = None
        self.error: BaseException | None = None
        self.sessions: list[str] = [session] if session else []
        self.left: set[str] = set()  # sessions that left it (they do not join it again by themselves)
        self.collected: set[str] = set()  # sessions that took its outcome
        self._clock = clock
        self.started = clock()
        self.finished: float | None = None
        self._stage_t0 = self.started
        self._cancel = threading.Event()
        self._end = threading.Event()
        self._lock = threading.Lock()

    # -- progress, from the job's thread ----------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`JobCancelled` when the job was cancelled (call it between steps)."""
        if self._cancel.is_set():
            raise JobCancelled(self.label)

    def begin(self, stage: str, unit: str = "", total: float = 0) -> None:
        """A new stage: its name (may be empty), what its progress counts (``rows``, ``layers``...),
        its timer."""
        self.check()
        self.step += 1
        self.stage, self.unit = stage, unit
        self.done, self.total = 0.0, float(total)
        self.note = ""
        self._stage_t0 = self._clock()

    def progress(self, done: float, total: float, *_) -> None:
        """The library's ``progress(done, total)`` callback: records it, or raises
        :class:`JobCancelled` when the job was cancelled."""
        self.check()
        self.done, self.total = float(done), float(total)

    def say(self, text: str) -> None:
        """A line from the work, shown under the progress (``log`` callbacks)."""
        self.check()
        self.note = " ".join(str(text).split())

    @contextmanager
    def holding(self, lock, what: str = "the model") -> Iterator[None]:
        """Hold ``lock`` (a threading lock) for the work; while another holder has it, wait and
        say so, and stay cancellable."""
        if not lock.acquire(blocking=False):
            self.note = f"waiting for {what}: another job or session is running it"
            while not lock.acquire(timeout=0.2):
                self.check()
            self.note = ""
        try:
            yield
        finally:
            lock.release()

    # -- reading ----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def cancelling(self) -> bool:
        return self.running and self._cancel.is_set()

    def elapsed(self) -> float:
        return (self.finished if self.finished is not None else self._clock()) - self.started

    def stage_fraction(self) -> float:
        if self.total <= 0:
            return 0.0
        return min(max(self.done / self.total, 0.0), 1.0)

    def fraction(self) -> float:
        """How far the whole job is, in [0, 1]: stages done plus the current one's share."""
        if not self.running:
            return 1.0 if self.status == DONE else self.stage_fraction()
        if self.steps:
            return min(max((max(self.step, 1) - 1 + self.stage_fraction()) / self.steps, 0.0), 1.0)
        return self.stage_fraction()

    def eta(self) -> float | None:
        """Seconds left in the current stage at its pace so far; None before its first unit is
        done (no pace yet) or when it is over."""
        if not self.running or self.done <= 0 or self.total <= 0 or self.done >= self.total:
            return None
        spent = self._clock() - self._stage_t0
        return spent / self.done * (self.total - self.done)

    def describe(self) -> str:
        """One line: ``pruned (2 of 4) · 120 / 200 rows · about 3 s left``, or the outcome."""
        if not self.running:
            return self.outcome()
        if self.cancelling:
            return "cancelling: it stops at its next step"
        parts = []
        if self.stage:
            parts.append(self.stage + (f" ({self.step} of {self.steps})" if self.steps and self.steps > 1 else ""))
        if self.total > 0:
            parts.append(f"{self.done:,.0f} / {self.total:,.0f}" + (f" {self.unit}" if self.unit else ""))
            left = self.eta()
            if left is not None:
                parts.append(f"about {fmt_seconds(left)} left")
            elif self.done < self.total:
                parts.append("estimating the time left")
        parts.append(f"{fmt_seconds(self.elapsed())} so far")
        line = " · ".join(parts)
        return f"{line} · {self.note}" if self.note else line

    def outcome(self) -> str:
        """How it ended, in words (empty while it runs)."""
        took = fmt_seconds(self.elapsed())
        if self.status == DONE:
            return f"done in {took}"
        if self.status == CANCELLED:
            return f"cancelled after {took}: nothing half-done was kept"
        if self.status == FAILED:
            return f"failed after {took}: {error_line(self.error)}"
        return ""

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is over (or ``timeout`` seconds); whether it is over."""
        return self._end.wait(timeout)

    # -- sessions ---------------------------------------------------------------------------------
    def attach(self, session: str | None) -> None:
        if session:
            with self._lock:
                self.left.discard(session)
                if session not in self.sessions:
                    self.sessions.append(session)

    def joined_by(self, session: str | None) -> bool:
        """Whether ``session`` waits on this job without having started it."""
        return bool(session) and session in self.sessions[1:]

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.label!r}, {self.status}, {self.describe()!r})"


def error_line(exc: BaseException | None) -> str:
    """An exception as the one line the user reads (MtpruneError as it is)."""
    if exc is None:
        return ""
    if isinstance(exc, MtpruneError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class JobRegistry:
    """The jobs of one process, by id and by the key of their result.

    >>> job = REGISTRY.submit(key, "attributing sst2", lambda job: attribute_cached(..., progress=job.progress))
    >>> job.wait(); job.result
    """

    def __init__(self, keep: int = 32, clock: Callable[[], float] = time.monotonic):
        self.keep = keep  # finished jobs kept (their outcome can still be collected)
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._by_key: dict[str, Job] = {}

    def submit(self, key: str, label: str, fn: Callable[[Job], Any], *, session: str | None = None,
               steps: int | None = None) -> Job:
        """The running job of ``key`` (``session`` joins it), or a new one running ``fn(job)`` in a
        background thread. A finished job of the same key is replaced: asking again computes again
        (callers look for a stored result first)."""
        with self._lock:
            job = self._by_key.get(key)
            if job is not None and job.running:
                job.attach(session)
                return job
            job = Job(key, label, session=session, steps=steps, clock=self._clock)
            self._jobs[job.id] = job
            self._by_key[key] = job
            self._forget_old()
        threading.Thread(target=self._run, args=(job, fn), name=f"mtprune-job-{job.id}", daemon=True).start()
        return job

    def _run(self, job: Job, fn: Callable[[Job], Any]) -> None:
        try:
            result = fn(job)
        except JobCancelled:
            job.status = CANCELLED
        except BaseException as exc:  # the job's thread is the last place to catch it
            job.error = exc
            job.status = FAILED
            if not isinstance(exc, MtpruneError):
                print(f"mtprune job {job.label!r} failed:", file=sys.stderr)
                traceback.print_exception(exc, file=sys.stderr)
        else:
            job.result = result
            job.status = DONE
        finally:
            job.finished = self._clock()
            job._end.set()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if not j.running]
        for j in finished[: max(len(finished) - self.keep, 0)]:
            del self._jobs[j.id]
            if self._by_key.get(j.key) is j:
                del self._by_key[j.key]

    def get(self, key: str) -> Job | None:
        """The latest job of ``key`` (running or finished and still kept), or None."""
        return self._by_key.get(key)

    def find(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def jobs(self, session: str | None = None) -> list[Job]:
        """Every kept job (of ``session``: those it waits on), newest first."""
        with self._lock:
            out = list(self._jobs.values())
        return [j for j in reversed(out) if session is None or session in j.sessions]

    def cancel(self, job_id: str, session: str | None = None) -> str:
        """Cancel the job (or, when other sessions still wait on it, take ``session`` off it);
        returns what happened in one line. A job that already finished, or one not kept any more,
        is an :class:`MtpruneError` in one line, and its outcome stays as it was."""
        job = self.find(job_id)
        if job is None:
            raise MtpruneError("that job is not known any more (it finished a while ago, or the app restarted): "
                               "nothing to cancel")
        with job._lock:
            if not job.running:
                kept = "; its result is kept" if job.status == DONE else ""
                raise MtpruneError(f"{job.label} had already finished ({job.outcome()}): nothing to cancel{kept}")
            others = [s for s in job.sessions if s != session]
            if session is not None and session in job.sessions and others:
                job.sessions.remove(session)
                job.left.add(session)
                return f"You left {job.label}: it keeps running for {plural(len(others), 'other session')}."
            job._cancel.set()
        return f"Cancelling {job.label}: it stops at its next step, and nothing half-done is kept."


REGISTRY = JobRegistry()  # the process's jobs (the dashboard's sessions share it)


def registry() -> JobRegistry:
    return REGISTRY
