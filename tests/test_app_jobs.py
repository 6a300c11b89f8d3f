"""Jobs in the dashboard (ui.jobs), under streamlit.testing's AppTest: Compute, Evaluate and a sweep
run as jobs and each evaluated model's row reaches the history; the Jobs panel shows a running job with its progress
and a Cancel button that stops it with nothing cached; the job survives a page switch and the page
that needs it shows its result without computing again; a second session joins a running job
instead of computing it; cancelling a job that already finished is one line and keeps its result.
(A click while a page waits in place needs a real browser: test_browser_jobs.py.) The default
model, 16 attribution examples (64 for a job cancelled between its batches), 16 evaluation rows."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from mtprune.jobs import CANCELLED, DONE, REGISTRY
from tests.test_app import APP, EXAMPLES, app, compute_scores, frame, goto, module_cache, ok  # noqa: F401

WAIT = 120  # seconds
GATED = 64  # examples of a gated job: two batches of 32, so that a cancel lands between them


def _sid(at) -> str:
    return at.session_state["_session_id"]


def _ctx(at):
    return at.session_state["_ctx"]


def _gated_scores_job(at, session: str, task: str = "sst2"):
    """The job Compute starts for the sidebar's scores of ``task``, started for ``session``; it
    waits after each batch until ``gate`` is set: (job, gate, calls, spec)."""
    from ui.evaluations import scores_job_key, scores_work

    at.sidebar.number_input(key="sb.examples").set_value(GATED).run()
    ctx = _ctx(at)
    spec = ctx.spec.for_task(task)
    assert spec.examples == GATED
    gate, started, calls = threading.Event(), threading.Event(), []

    def work(job):
        calls.append(1)
        report = job.progress

        def progress(done, total):
            report(done, total)
            started.set()
            gate.wait(WAIT)
        job.progress = progress
        return scores_work(ctx, spec, None)(job)

    job = REGISTRY.submit(scores_job_key(ctx, spec, None), f"computing attributions for {task}", work,
                          session=session)
    assert started.wait(WAIT)
    return job, gate, calls, spec


def _panel_captions(at) -> list[str]:
    return [c.value for c in at.sidebar.caption]


def test_compute_and_evaluate_are_jobs_and_reach_the_history(app):
    at = goto(app, "prune")
    compute_scores(at, "prune")
    sid = _sid(at)
    mine = REGISTRY.jobs(sid)
    assert mine and mine[0].status == DONE and mine[0].key.startswith("scores:")
    at.slider(key="prune.ffn").set_value(60).run()
    at.number_input(key="prune.limit").set_value(16)
    at.button(key="prune.evaluate").click().run()
    ok(at)
    rid = at.query_params["run"][0] if isinstance(at.query_params["run"], list) else at.query_params["run"]
    job = REGISTRY.get(f"run:{rid}")
    assert job is not None and job.status == DONE and job.steps == 2 and job.sessions == [sid]
    assert job.result[0].id == rid and job.stage == "pruned model" and job.done == job.total == 16
    history = frame(at, "how", "verdict")
    assert (history["run"] == rid).sum() == 1 and history.iloc[0]["how"] == "ffn60 (layer)"
    # the sweep too: one point, its rows read back from the job
    at.multiselect(key="prune.sweep.methods").set_value(["ap"])
    at.text_input(key="prune.sweep.sparsities").set_value("50")
    at.number_input(key="prune.sweep.limit").set_value(8)
    at.button(key="prune.sweep.run").click().run()
    ok(at)
    sweep = REGISTRY.jobs(sid)[0]
    assert sweep.label == "sweep of sst2 (1 point)" and sweep.status == DONE and sweep.done == sweep.total == 1
    assert list(sweep.result["n_eval"]) == [8]
    # the panel lists the last three, done
    at.run()
    captions = _panel_captions(at)
    assert any(":material/check: Sweep of sst2 (1 point): done in" in c for c in captions)
    assert any("Evaluating ffn60 (layer) on sst2/validation (the first 16 rows): done in" in c for c in captions)
    assert any(c.startswith(":material/check: Computing attributions for sst2") for c in captions)


def test_cancel_from_the_panel_leaves_nothing_then_compute_gives_the_same_scores(app):
    from mtprune.attribution import attribute, lookup_cached

    at = goto(app, "model")
    job, gate, calls, spec = _gated_scores_job(at, _sid(at), task="sst2")
    at.run()
    ok(at)
    assert job.running and any("Computing attributions for sst2" in c for c in _panel_captions(at))
    bars = [p for p in at.sidebar.get("progress")]
    assert bars and re.search(r"attributing · \d+ / \d+ examples · about \d+ s left", bars[0].proto.text)
    at.sidebar.button(key=f"jobs.panel.cancel.{job.id}").click().run()
    ok(at)
    gate.set()  # the batch under way ends; the next progress call stops the job
    assert job.wait(WAIT) and job.status == CANCELLED
    at.run()
    assert any("cancelled after" in c and "nothing half-done was kept" in c for c in _panel_captions(at))
    assert lookup_cached(_ctx(at).adapter, spec) is None  # nothing in the cache
    # the same scores, computed again on the page: those of an uncancelled computation
    goto(at, "prune")
    assert any("cancelled after" in i.value for i in at.info)  # the page says how its job ended
    compute_scores(at, "prune")
    again = REGISTRY.get(job.key)
    assert again is not job and again.status == DONE and calls == [1]
    scores = again.result[0]
    plain = attribute(_ctx(at).adapter, spec)
    for g in plain.arrays:
        np.testing.assert_allclose(scores.arrays[g], plain.arrays[g], rtol=1e-5, atol=1e-7)


def test_a_job_survives_a_page_switch_and_a_second_session_joins_it(app):
    from streamlit.testing.v1 import AppTest

    at = goto(app, "model")
    job, gate, calls, spec = _gated_scores_job(at, "another-session", task="qnli")
    at.run()
    assert any(c.startswith(":material/group: Another session: computing attributions for qnli") for c in
               _panel_captions(at))
    # this session opens a page that needs those scores: it joins the running job and waits with it
    at.sidebar.selectbox(key="sb.task").set_value("qnli").run()
    me = _sid(at)

    def release():
        while me not in job.sessions and not job.wait(0.05):
            pass
        gate.set()

    threading.Thread(target=release, daemon=True).start()
    goto(at, "prune")
    ok(at)
    assert job.status == DONE and job.sessions == ["another-session", me] and calls == [1]
    assert not [b for b in at.button if b.key == "prune.compute"]  # scores shown, nothing computed again
    assert at.slider(key="prune.ffn") is not None
    # a third session, later: the scores come from the disk cache
    fresh = AppTest.from_file(APP, default_timeout=WAIT)
    fresh.query_params["sb.examples"] = str(EXAMPLES)
    fresh.query_params["sb.task"] = "qnli"
    fresh.run()
    goto(fresh, "prune")
    ok(fresh)
    assert REGISTRY.get(job.key) is job  # no new job


def test_cancelling_a_job_that_already_finished_is_one_line(app):
    at = goto(app, "model")
    job, gate, calls, spec = _gated_scores_job(at, _sid(at), task="mrpc")
    at.run()
    cancel = at.sidebar.button(key=f"jobs.panel.cancel.{job.id}")  # drawn while it ran
    gate.set()
    assert job.wait(WAIT) and job.status == DONE
    result = job.result
    cancel.click().run()
    assert not at.exception and not at.error
    lines = [w.value for w in at.sidebar.warning]
    assert len(lines) == 1 and lines[0].startswith("computing attributions for mrpc had already finished (done in")
    assert lines[0].endswith("nothing to cancel; its result is kept")
    assert job.status == DONE and job.result is result
    at.run()  # the line is said once; the app keeps running
    assert not at.sidebar.warning and not at.exception


@pytest.fixture(autouse=True)
def _no_job_left_running():
    yield
    for j in REGISTRY.jobs():
        if j.running:
            REGISTRY.cancel(j.id)
            j.wait(WAIT)


def test_an_export_build_is_a_job_that_cancels_cleanly_then_builds(app):
    """Export's model zip is built by a job: repairing reports per layer, a cancel midway keeps no
    bytes, and pressing Build again makes the zip (repaired, its card saying so)."""
    import io
    import json
    import zipfile

    from mtprune.masks import mask_from_scores
    from ui.downloads import _work

    at = goto(app, "export")
    compute_scores(at, "export")
    ctx = _ctx(at)
    scores = next(iter(at.session_state["_state.stores"]["scores"].values()))[0]
    mask = mask_from_scores(scores, {"ffn": 0.5, "heads": 0.0}, scope="layer")
    gate, started = threading.Event(), threading.Event()
    inner = _work("model", ctx.adapter, threading.Lock(), mask, "sst2", "cancelled", {}, "lsq", 32, None)

    def work(job):
        report = job.progress

        def progress(done, total, *_):
            report(done, total)
            started.set()
            gate.wait(WAIT)
        job.progress = progress
        return inner(job)

    job = REGISTRY.submit("export:test-cancel", "building the hard-pruned model", work, session="s")
    assert started.wait(WAIT)
    assert job.stage == "repairing (lsq) on 32 sst2 rows" and job.unit == "layers" and job.done == 1
    REGISTRY.cancel(job.id, "s")
    gate.set()
    assert job.wait(WAIT) and job.status == CANCELLED and job.result is None

    at.selectbox(key="export.repair").set_value("lsq").run()
    at.number_input(key="export.calib").set_value(32).run()
    at.button(key="export.build.model").click().run()
    ok(at)
    done = [j for j in REGISTRY.jobs(_sid(at)) if j.key.startswith("export:")][0]
    assert done.status == DONE and done.steps == 2 and done.stage == "writing the model directory and its card"
    (memo, data), = at.session_state["_state.stores"]["exports"].items()
    assert memo[4:6] == ("lsq", 32) and memo[6].endswith("-lsq")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        cfg = json.loads(z.read(f"{memo[6]}/config.json"))
    assert cfg["mtprune_pruned"]["repair"]["method"] == "lsq"
    assert cfg["mtprune_pruned"]["repair"]["calibration_rows"] == 32
