"""Jobs (mtprune.jobs): progress and the time left, a cancel midway that leaves nothing in the cache
(and a second run that gives what an uncancelled run gives), two requests for one key joining one
job, a session leaving a job another still waits on, a cancel while waiting for the model, repair's
progress per layer, and cancelling a job that already finished (one line, its result kept). Tiny
random models, the six conftest rows."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from mtprune import attribution as attr
from mtprune.attribution import AttributionSpec, attribute_cached
from mtprune.cache import DiskCache
from mtprune.errors import MtpruneError
from mtprune.jobs import CANCELLED, DONE, FAILED, Job, JobCancelled, JobRegistry
from tests.conftest import SST2_ROWS, random_scores

WAIT = 30  # seconds: a job on a tiny model ends long before


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def rows_patch(monkeypatch):
    """Tiny models read the six conftest rows instead of the data files."""
    monkeypatch.setattr(attr, "sample_for", lambda spec: [dict(r) for r in SST2_ROWS][: spec.examples])


def _spec():
    return AttributionSpec(task="sst2", method="ap", examples=6)


def _files(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def test_progress_fraction_and_time_left():
    clock = Clock()
    job = Job("k", "evaluating", steps=2, clock=clock)
    job.begin("dense model", "rows")
    assert job.eta() is None and "estimating" not in job.describe()  # no total yet, no pace
    job.progress(0, 10)
    assert job.eta() is None and "estimating the time left" in job.describe()
    clock.t += 4
    job.progress(2, 10)  # 2 rows in 4 s: 8 rows left take 16 s
    assert job.eta() == pytest.approx(16.0)
    assert job.fraction() == pytest.approx(0.1)  # stage 1 of 2, a fifth of it
    assert job.describe() == "dense model (1 of 2) · 2 / 10 rows · about 16 s left · 4 s so far"
    clock.t += 1
    job.begin("pruned model", "rows")
    job.progress(5, 10)
    assert job.fraction() == pytest.approx(0.75)
    clock.t += 5  # the pace of this stage alone: 5 rows in 5 s
    assert job.eta() == pytest.approx(5.0)
    job.progress(10, 10)
    assert job.eta() is None and job.describe() == "pruned model (2 of 2) · 10 / 10 rows · 10 s so far"


def test_cancel_midway_leaves_no_cache_entry_and_a_second_run_gives_the_same_scores(tiny_multitask, rows_patch,
                                                                                      tmp_path):
    reg = JobRegistry()
    spec = _spec()
    seen = []

    def work(job):
        def progress(done, total):
            seen.append(done)
            if done == 2:
                reg.cancel(job.id)  # the user's click, while the third batch waits
            job.progress(done, total)
        return attribute_cached(tiny_multitask, spec, progress=progress, batch_size=2, cache_dir=tmp_path)

    job = reg.submit("scores:x", "attributing sst2", work, session="a")
    assert job.wait(WAIT)
    assert job.status == CANCELLED and job.result is None and seen == [2]
    assert job.outcome().startswith("cancelled after") and "nothing half-done was kept" in job.outcome()
    assert DiskCache(tmp_path, namespace="scores").entries() == [] and _files(tmp_path) == []  # no entry, no temp file
    # a second try, as a new job of the same key, completes; its scores are an uncancelled run's
    again = reg.submit("scores:x", "attributing sst2", lambda j: attribute_cached(
        tiny_multitask, spec, progress=j.progress, batch_size=2, cache_dir=tmp_path), session="a")
    assert again is not job and again.wait(WAIT) and again.status == DONE
    scores, hit, path = again.result
    assert not hit and path.exists() and again.done == again.total == 6
    plain, _, _ = attribute_cached(tiny_multitask, spec, batch_size=2, cache_dir=tmp_path / "other")
    for g in plain.arrays:
        np.testing.assert_array_equal(scores.arrays[g], plain.arrays[g])
    assert "nothing to cancel" in pytest.raises(MtpruneError, reg.cancel, again.id).value.args[0]


def test_two_requests_for_one_key_join_one_job():
    reg = JobRegistry()
    gate, calls = threading.Event(), []

    def work(job):
        calls.append(1)
        job.begin("counting", "steps")
        for i in range(1, 4):
            gate.wait(WAIT)
            job.progress(i, 3)
        return 42

    first = reg.submit("run:abc", "evaluating", work, session="a")
    second = reg.submit("run:abc", "evaluating", work, session="b")
    assert second is first and first.sessions == ["a", "b"]
    assert first.joined_by("b") and not first.joined_by("a")
    assert [j.id for j in reg.jobs("b")] == [first.id]
    other = reg.submit("run:xyz", "evaluating", lambda j: 7, session="b")  # another key: its own job
    assert other is not first and other.wait(WAIT) and other.result == 7
    gate.set()
    assert first.wait(WAIT) and first.result == 42 and calls == [1]  # computed once for both sessions
    again = reg.submit("run:abc", "evaluating", lambda j: 43, session="a")  # a finished job is not reused
    assert again is not first and again.wait(WAIT) and again.result == 43


def test_a_session_leaves_a_job_another_still_waits_on():
    reg = JobRegistry()
    gate = threading.Event()

    def work(job):
        while not gate.wait(0.01):
            job.check()
        return "rows"

    job = reg.submit("transfer:1", "transfer matrix", work, session="a")
    reg.submit("transfer:1", "transfer matrix", work, session="b")
    said = reg.cancel(job.id, "a")
    assert said == "You left transfer matrix: it keeps running for 1 other session."
    assert job.running and job.sessions == ["b"] and "a" in job.left
    said = reg.cancel(job.id, "b")  # the last one waiting: the job stops
    assert said.startswith("Cancelling transfer matrix")
    assert job.wait(WAIT) and job.status == CANCELLED


def test_cancelling_a_finished_job_is_one_line_and_keeps_its_result():
    reg = JobRegistry()
    job = reg.submit("sweep:1", "sweep of sst2", lambda j: {"accuracy": 0.9}, session="a")
    assert job.wait(WAIT) and job.status == DONE
    with pytest.raises(MtpruneError) as err:
        reg.cancel(job.id, "a")
    line = str(err.value)
    assert "\n" not in line and line.startswith("sweep of sst2 had already finished (done in")
    assert line.endswith("nothing to cancel; its result is kept")
    assert job.status == DONE and job.result == {"accuracy": 0.9}
    with pytest.raises(MtpruneError, match="not known any more"):
        reg.cancel("nosuchjob")


def test_a_failed_job_keeps_its_one_line():
    reg = JobRegistry()

    def work(job):
        raise MtpruneError("sst2 has no labelled rows")

    job = reg.submit("evals:1", "evaluating", work)
    assert job.wait(WAIT) and job.status == FAILED
    assert job.outcome().endswith(": sst2 has no labelled rows") and isinstance(job.error, MtpruneError)


def test_a_job_waiting_for_the_model_can_be_cancelled():
    reg = JobRegistry()
    lock = threading.RLock()
    lock.acquire()  # another session runs the model
    ran = []

    def work(job):
        with job.holding(lock):
            ran.append(1)

    job = reg.submit("scores:y", "attributing", work)
    for _ in range(200):
        if job.note:
            break
        job.wait(0.01)
    assert job.note.startswith("waiting for the model") and job.note in job.describe()
    reg.cancel(job.id)
    assert job.wait(WAIT) and job.status == CANCELLED and ran == []
    lock.release()


def test_repair_reports_progress_per_layer_and_a_cancel_leaves_the_dense_model(tiny_multitask):
    from mtprune.masks import mask_from_scores
    from mtprune.pipeline import prune

    rows = [dict(r) for r in SST2_ROWS] * 5
    mask = mask_from_scores(random_scores(tiny_multitask), {"ffn": 0.5, "heads": 0.5})
    before = {k: v.clone() for k, v in tiny_multitask.model.state_dict().items()}
    reg, layers_done = JobRegistry(), []

    def work(job, stop_at=None):
        def progress(done, total):
            layers_done.append((done, total))
            if done == stop_at:
                reg.cancel(job.id)
            job.progress(done, total)
        job.begin("repairing", "layers")
        return prune(tiny_multitask, "sst2", mask=mask, repair_with="lsq", calibration=rows, progress=progress)

    job = reg.submit("repair", "repairing", lambda j: work(j, stop_at=1))
    assert job.wait(WAIT) and job.status == CANCELLED and layers_done == [(1, 2)]
    after = tiny_multitask.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and not tiny_multitask.model.training
    layers_done.clear()
    job = reg.submit("repair", "repairing", work)
    assert job.wait(WAIT) and job.status == DONE, job.outcome()
    assert layers_done == [(1, 2), (2, 2)] and job.describe() == job.outcome()
    assert job.result.report.sites and job.result.mask.digest() == mask.digest()


def test_job_cancelled_is_not_an_exception_the_library_catches():
    assert not issubclass(JobCancelled, Exception)  # `except Exception` on the way cannot swallow it
