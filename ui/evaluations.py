"""Evaluations and the library glue behind them: attribution scores (from memory, the disk cache,
or computed by a job: :mod:`ui.jobs`), evaluations remembered for the session (dense: its logits kept
on disk; pruned: a sliced copy where the mask allows, else hooks; repaired), runs kept whole on disk
(:mod:`mtprune.runs`: reopened, listed, deleted), the masks and costs of the Prune page's settings,
the rows an evaluation reads, the experiments' rows (sweep, unseen, transfer: jobs too), and the
model's run history on disk. Long work runs as a job (a background thread: progress, the time left,
Cancel; a second session asking for the same result joins it) and touches no session state in its
thread. Everything that runs the shared model (or copies it) holds its lock
(:func:`ui.session.model_busy`, or the job's :meth:`mtprune.jobs.Job.holding`)."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from mtprune.errors import MtpruneError
from ui import jobs as J
from ui import state
from ui import views as V
from ui import widgets as W
from ui.session import Context, model_busy, model_lock, session_id
from ui.widgets import error, rows_words


# ----------------------------------------------------------------------------------------------
# scores


def is_auto(ctx: Context, spec) -> bool:
    """Whether ``spec`` asks for the sidebar's auto examples: the sidebar chose auto, the method
    reads examples and the spec keeps the sidebar's count (the first draw's, a placeholder)."""
    return ctx.auto is not None and spec.info.needs_data and spec.examples == ctx.spec.examples


def _auto_of(ctx: Context, spec, auto: bool | None = None):
    """The :class:`ui.session.AutoExamples` ``spec`` is computed with, or None (see :func:`scores_for`)."""
    return ctx.auto if (is_auto(ctx, spec) if auto is None else auto and ctx.auto is not None) else None


def scores_job_key(ctx: Context, spec, auto) -> str:
    """The key of the job that computes these scores (two sessions asking for it share the job)."""
    from mtprune.io import stable_hash

    return "scores:" + stable_hash([ctx.fingerprint, spec.key(), None if auto is None else [auto.target, auto.cap]], 24)


def scores_job(ctx: Context, spec=None, auto: bool | None = None):
    """The job computing ``spec``'s scores that this page should wait on (:func:`ui.jobs.pending`), or None."""
    spec = spec if spec is not None else ctx.spec
    return J.pending(scores_job_key(ctx, spec, _auto_of(ctx, spec, auto)))


def scores_for(ctx: Context, spec=None, compute: bool = False, label: str = "computing attributions",
               auto: bool | None = None):
    """Scores for ``spec`` (default: the sidebar's) on the current model.

    From memory, else from the library's disk cache, else (when ``compute``) computed by a job
    (:mod:`ui.jobs`: a progress bar with the time left and a Cancel button; another session asking
    for the same scores joins it) and written to the disk cache. With the sidebar's auto examples
    (``auto``; None: :func:`is_auto`) the draws double until the reliability target
    (:func:`mtprune.examples_auto.attribute_auto`) and the note ends with the line that says how many
    examples were read and why. Returns (scores, note) where note says where they came from;
    (None, None) when not available and not computed (or the job was cancelled).
    """
    spec = spec if spec is not None else ctx.spec
    auto = _auto_of(ctx, spec, auto)
    key = (ctx.fingerprint, spec.key(), auto)
    store = state.store("scores")
    if key in store:
        return store[key]
    t0 = time.perf_counter()
    scores, chosen = _cached(ctx, spec, auto)
    note = f"loaded from the disk cache in {time.perf_counter() - t0:.2f} s" if scores is not None else None
    if scores is None and compute:
        got = _compute(ctx, spec, auto, label)
        if got is None:
            return None, None
        scores, hit, chosen, secs = got
        note = (f"loaded from the disk cache in {secs:.2f} s" if hit
                else f"computed in {secs:.1f} s (now cached on disk)")
    if scores is None:
        return None, None
    if chosen is not None:
        note += f"; {V.auto_words(chosen)}"
    store[key] = (scores, note)
    return scores, note


def _cached(ctx: Context, spec, auto):
    """``(scores, AutoExamples or None)`` from the disk cache, or (None, None)."""
    from mtprune.attribution import lookup_cached
    from mtprune.examples_auto import lookup_auto

    if auto is None:
        found = lookup_cached(ctx.adapter, spec)
        return (found[0], None) if found else (None, None)
    found = lookup_auto(ctx.adapter, spec, auto.target, auto.cap)
    return (found[0], found[2]) if found else (None, None)


def scores_work(ctx: Context, spec, auto):
    """What the job computing ``spec``'s scores runs: ``work(job) -> (scores, cache_hit,
    AutoExamples or None, seconds)`` (auto: each draw's reliability as the line under its bar)."""
    from mtprune.attribution import attribute_cached
    from mtprune.examples_auto import attribute_auto

    adapter, lock = ctx.adapter, model_lock(ctx.fingerprint)

    def work(job):
        t0 = time.perf_counter()
        with job.holding(lock):
            job.begin("attributing" if auto is None else f"attributing, doubling until reliability {auto.target:g}",
                      "examples")
            if auto is None:
                scores, hit, _ = attribute_cached(adapter, spec, progress=job.progress)
                return scores, hit, None, time.perf_counter() - t0
            scores, hit, _, chosen = attribute_auto(adapter, spec, auto.target, auto.cap, progress=job.progress,
                                                    log=lambda text: job.say(f"reliability at {text.strip()}"))
            return scores, hit, chosen, time.perf_counter() - t0

    return work


def _compute(ctx: Context, spec, auto, label: str):
    """``(scores, cache_hit, AutoExamples or None, seconds)`` computed by a job waited on here;
    None when it was cancelled."""
    what = label if spec.task in label else f"{label} for {spec.task}"
    return J.run(scores_job_key(ctx, spec, auto), f"{what} ({W.method_label(spec.method)})",
                 scores_work(ctx, spec, auto))


def compute_on_next_run(key: str) -> None:
    """Make :func:`scores_or_button` with this ``key`` compute at once on the next run (a button's
    callback that changed the sidebar's settings calls it)."""
    st.session_state[f"_now.{key}"] = True


def scores_or_button(ctx: Context, key: str, spec=None):
    """Scores for the page, or a "Compute attributions" button (the page stops until they exist).
    A job already computing them (started before a page switch, or by another session) is waited
    on here, with its progress."""
    spec = spec if spec is not None else ctx.spec
    scores, note = scores_for(ctx, spec)
    if scores is not None:
        return scores, note
    job = scores_job(ctx, spec)
    if job is not None and not job.running:  # one this session waited on has ended since: say how
        try:
            J.follow(job)
        except MtpruneError as exc:
            error(exc)
        job = None
    now = st.session_state.pop(f"_now.{key}", False) or job is not None
    if not now:
        st.info(f"No attribution scores yet for {describe(ctx, spec)}.", icon=":material/info:")
    if now or st.button("Compute attributions", key=key, type="primary"):
        try:
            got, _ = scores_for(ctx, spec, compute=True)
        except MtpruneError as exc:
            error(exc)
            st.stop()
        if got is not None:
            st.rerun()
        st.button("Compute attributions", key=f"{key}.again", type="primary", on_click=compute_on_next_run,
                  args=(key,))  # after a cancel: start again
    st.stop()


def describe(ctx: Context, spec=None) -> str:
    """``spec.describe()``, with the sidebar's auto examples in words instead of the placeholder count."""
    spec = spec if spec is not None else ctx.spec
    text = spec.describe()
    if is_auto(ctx, spec):
        where = f"{spec.task}/{spec.resolved_split} examples"
        text = text.replace(f"{spec.examples} {where}", f"{where}, as many as reliability {ctx.auto.target:g} needs "
                                                         f"(from {spec.examples} up to {ctx.auto.cap:,})")
    return text


# ----------------------------------------------------------------------------------------------
# evaluation, remembered for the session


def _eval_key(ctx: Context, task: str, split: str, limit, digest: str | None):
    # the layout ui.session.best_dense and measured_with read
    return (ctx.fingerprint, task, split, limit, digest or "dense")


def find_eval(ctx: Context, task: str, split: str, limit, digest: str | None = None):
    """The session's evaluation of the model (``digest`` None: dense; else that mask's) on the first
    ``limit`` rows (None: all rows), or None."""
    return state.store("evals").get(_eval_key(ctx, task, split, limit, digest))


def _evaluate_model(adapter, hold, task: str, split: str, limit, mask, progress):
    """Dense (``mask=None``) or pruned evaluation, no session state (a job's thread runs it):
    ``hold()`` holds the model's lock. The dense model's logits are kept on disk; a pruned model is
    a sliced copy where the mask allows it (evaluated outside the lock), else hooks on the model."""
    from dataclasses import replace

    from mtprune.evaluation import evaluate as run_eval
    from mtprune.evaluation import pruned_model

    target = None
    with hold():
        if mask is None or mask.keeps_all():
            res = run_eval(adapter, task, split, limit=limit, progress=progress, mask=mask, cache_logits=mask is None)
        else:
            target, context, _ = pruned_model(adapter, mask, "auto")
            if context is not None:  # hooks on the shared model: under its lock
                target = None
                res = run_eval(adapter, task, split, limit=limit, progress=progress, mask=mask, prune="soft")
    if target is not None:  # a sliced copy of this evaluation's own
        res = replace(run_eval(target, task, split, limit=limit, progress=progress), how="hard")
    return res


def evaluate(ctx: Context, task: str, split: str, limit, mask=None, progress=None):
    """Dense (``mask=None``) or pruned evaluation, remembered for the session. The dense model's
    logits are kept on disk (another session, page or reload reads them); a pruned model is a
    sliced copy where the mask allows it (it runs outside the model's lock), else hooks on the
    shared model."""
    digest = mask.digest() if mask is not None else None
    hit = find_eval(ctx, task, split, limit, digest)
    if hit is not None:
        if progress:
            progress(hit.n, hit.n)
        return hit
    res = _evaluate_model(ctx.adapter, lambda: model_busy(ctx), task, split, limit, mask, progress)
    state.store("evals")[_eval_key(ctx, task, split, limit, digest)] = res
    return res


def _stage(job, name: str, have, compute):
    """One stage of a job: ``have`` when the session has it already, else ``compute()``."""
    job.begin(name, "rows")
    if have is not None:
        job.progress(have.n, have.n)
        return have
    return compute()


def evaluate_dense_and_pruned(ctx: Context, task: str, split: str, limit, mask, label: str = "evaluating"):
    """Dense and pruned evaluations as one job waited on here (:mod:`ui.jobs`), remembered for the
    session: (dense, pruned). A cancelled job stops the page (one line says so)."""
    from mtprune.io import stable_hash

    dense, pruned = find_eval(ctx, task, split, limit), find_eval(ctx, task, split, limit, mask.digest())
    if dense is not None and pruned is not None:
        return dense, pruned
    adapter, lock = ctx.adapter, model_lock(ctx.fingerprint)

    def work(job):
        def hold():
            return job.holding(lock)

        d = _stage(job, "dense model", dense,
                   lambda: _evaluate_model(adapter, hold, task, split, limit, None, job.progress))
        p = _stage(job, "pruned model", pruned,
                   lambda: _evaluate_model(adapter, hold, task, split, limit, mask, job.progress))
        return d, p

    key = "evals:" + stable_hash([ctx.fingerprint, task, split, limit, mask.digest()], 24)
    got = J.run(key, f"{label} dense and pruned on {task}/{split} ({rows_words(limit)})", work, steps=2)
    if got is None:
        st.stop()
    evals = state.store("evals")
    evals[_eval_key(ctx, task, split, limit, None)] = got[0]
    evals[_eval_key(ctx, task, split, limit, mask.digest())] = got[1]
    return got


def repair_words(solver: str, variant: str = "standard") -> str:
    """``lsq`` or ``lsq, pooled-last``: a repair as labels and progress lines name it."""
    return solver if variant == "standard" else f"{solver}, {variant}"


def repaired_model(job, adapter, hold, task: str, mask, solver: str, calib: int, variant: str = "standard",
                   scores=None):
    """``(the hard-pruned model repaired, RepairReport)``: ``solver`` (its ``variant`` of the
    layer-wise fit; the intermediate target is the mask of ``scores`` at the square root of the
    budget) on ``calib`` train rows of ``task``, progress per layer as a stage of ``job``; ``hold()``
    holds the model's lock. No session state (a job's thread runs it)."""
    from mtprune.pipeline import repair_teacher
    from mtprune.repair import RepairSettings, calibration_rows, repair

    settings = RepairSettings.of(solver, variant)
    job.begin(f"repairing ({repair_words(solver, variant)}) on {calib:,} {task} rows", "layers")
    rows = calibration_rows(task, int(calib))
    with hold():
        return repair(adapter, mask, rows, task, settings, progress=job.progress,
                      teacher=repair_teacher(adapter, task, scores, mask, settings))


def _repair_and_evaluate(job, adapter, hold, task: str, split: str, limit, mask, solver: str, calib: int,
                         variant: str = "standard", scores=None):
    """:func:`repaired_model`, then evaluated: (EvalResult, RepairReport)."""
    from mtprune.evaluation import evaluate as run_eval

    small, report = repaired_model(job, adapter, hold, task, mask, solver, calib, variant, scores)
    job.begin("repaired model", "rows")
    return run_eval(small, task, split, limit=limit, progress=job.progress), report


# ----------------------------------------------------------------------------------------------
# runs (mtprune.runs): whole evaluations on disk, per model


def run_store(ctx: Context):
    from mtprune.runs import RunStore

    return RunStore(ctx.fingerprint)


def run_key(ctx: Context, spec, task: str, split: str, limit, digest: str, solver: str, calib: int,
            variant: str = "standard", rearrange: int = 0) -> str:
    """The id of the run these settings make (:func:`mtprune.runs.run_id`): the same settings, the
    same run, read back instead of evaluated again. ``digest`` is the mask the settings choose;
    ``rearrange``: the rows whose gradients re-choose its units (0: not rearranged)."""
    from mtprune.runs import run_id
    from mtprune.solvers import get_solver

    refits = get_solver(solver).refits
    repair = [solver, int(calib)] + ([variant] if variant != "standard" else []) if refits else None
    return run_id({"model": ctx.fingerprint, "task": task, "split": split, "limit": limit, "mask": digest,
                   "scores": spec.key() if spec is not None else None, "repair": repair,
                   **({"rearrange": int(rearrange)} if rearrange else {})})


def find_run(ctx: Context, rid: str):
    """The run ``rid`` from the session or the disk, or None when there is none (or it does not read)."""
    from mtprune.errors import MtpruneError

    runs = state.store("runs")
    if rid in runs:
        return runs[rid]
    store = run_store(ctx)
    if not store.exists(rid):
        return None
    try:
        runs[rid] = store.load(rid)
    except MtpruneError:
        return None
    return runs[rid]


def load_run(ctx: Context, rid: str):
    """The run ``rid`` of this model; MtpruneError (one line) when it was deleted, is another
    model's or is not a run id."""
    runs = state.store("runs")
    if rid not in runs:
        runs[rid] = run_store(ctx).load(rid)
    return runs[rid]


@st.cache_resource(show_spinner=False, max_entries=32)
def _list_runs(root: str, fingerprint: str, task: str | None, mtime: int) -> list:
    from mtprune.runs import RunStore

    del mtime  # part of the cache key: a run written or deleted changes the folder's time
    return RunStore(fingerprint, Path(root)).list(task)


def list_runs(ctx: Context, task: str | None = None) -> list:
    """This model's runs (:class:`mtprune.runs.RunInfo`, of ``task``), newest first; their headers
    are read again only when the model's folder of runs changed."""
    store = run_store(ctx)
    try:
        mtime = store.root.stat().st_mtime_ns
    except OSError:
        return []
    return list(_list_runs(str(store.base.parent), ctx.fingerprint, task, mtime))


def delete_run(ctx: Context, rid: str) -> None:
    state.store("runs").pop(rid, None)
    run_store(ctx).delete(rid)


@st.cache_data(show_spinner=False, max_entries=64)
def _reliability(fingerprint: str, spec_key: str, examples, _scores) -> dict:
    return _scores.reliability_summary()


def reliability_of(ctx: Context, scores) -> dict | None:
    """What a run keeps of its scores' reliability (:meth:`mtprune.attribution.Scores.reliability_summary`),
    computed once per scores in the process."""
    if scores is None:
        return None
    return _reliability(ctx.fingerprint, scores.spec.key(), scores.meta.get("examples"), scores)


def run_job_key(rid: str) -> str:
    """The key of the job that makes the run ``rid``."""
    return "run:" + rid


def start_run(ctx: Context, scores, mask, limit, solver: str, calib: int, settings: dict,
              history: dict | None = None, variant: str = "standard", rearrange: int = 0):
    """Dense, pruned and (with a refitting ``solver``) repaired on the first ``limit`` rows of the
    sidebar's task and split, as one :class:`mtprune.runs.Run` kept on disk. The run these settings
    make when it exists (read back; with ``history`` its models' rows are added to the run history
    again), else None, and a job makes it (:func:`run_job_key`: progress per stage, the repair's per
    layer; another session asking for the same run joins it; nothing of a cancelled one is kept):
    wait for it with :func:`follow_run` at page level. ``settings``: how the mask was chosen, kept
    with the run; ``history``: the fields of :func:`ui.views.history_record` (but the repair) with
    which each of its models goes into the run history once the run is written."""
    from mtprune.solvers import get_solver

    task, split = ctx.task.name, ctx.split
    rid = run_key(ctx, scores.spec if scores is not None else None, task, split, limit, mask.digest(), solver, calib,
                  variant, rearrange)
    run = find_run(ctx, rid)
    if run is not None:
        _remember(ctx, run)
        if history is not None:
            _notes(_record_history(run, ctx.model_name, history, session_id()))
        return run
    refits = get_solver(solver).refits
    label = (f"evaluating {settings.get('how') or 'a mask'}{', rearranged' if rearrange else ''} on {task}/{split} "
             f"({rows_words(limit)})" + (f", repaired ({repair_words(solver, variant)})" if refits else ""))
    J.start(run_job_key(rid), label, _run_work(ctx, scores, mask, limit, solver, calib, settings, history, rid,
                                               variant, rearrange),
            steps=(4 if refits else 2) + bool(rearrange))
    return None


def run_job(ctx: Context, rid: str):
    """The job making the run ``rid`` that this page should wait on (:func:`ui.jobs.pending`), or None."""
    return J.pending(run_job_key(rid))


def follow_run(ctx: Context, rid: str):
    """The run ``rid`` that a job makes (started here, before a page switch, or by another
    session), waited on here; None when no job makes it (or it was cancelled)."""
    job = run_job(ctx, rid)
    return _collect_run(ctx, J.follow(job)) if job is not None else None


def _collect_run(ctx: Context, got):
    if got is None:
        return None
    run, report, notes = got
    state.store("runs")[run.id] = run
    _remember(ctx, run, report)
    _notes(notes)
    return run


def _notes(lines: list[str]) -> None:
    for line in lines:
        st.warning(line, icon=":material/warning:")


def _remember(ctx: Context, run, report=None) -> None:
    """The session's evaluations know the run's models too (the sidebar, Export's measured accuracy)."""
    evals = state.store("evals")
    evals.setdefault(_eval_key(ctx, run.task, run.split, run.limit, None), run.dense)
    evals.setdefault(_eval_key(ctx, run.task, run.split, run.limit, run.mask_digest), run.results["pruned"])
    if run.repair and report is not None and run.repair.get("variant", "standard") == "standard":  # what Export builds
        key = (ctx.fingerprint, run.task, run.split, run.limit, run.mask_digest, run.repair["solver"],
               int(run.repair["calibration_rows"]))
        state.store("repaired")[key] = (run.final, report)


def _run_work(ctx: Context, scores, mask, limit, solver: str, calib: int, settings: dict, history, rid: str,
              variant: str = "standard", rearrange: int = 0):
    """The job that makes the run ``rid``: ``work(job) -> (Run, RepairReport or None, notes)``.
    With ``rearrange`` rows it first re-chooses the mask's units (Kwon et al.'s rearrangement, the
    rows drawn as the scores' were): the run keeps the rearranged mask. Everything it needs from
    the session is read here; the job's thread touches no session state."""
    from mtprune.runs import Run
    from mtprune.solvers import get_solver

    adapter, lock, fp = ctx.adapter, model_lock(ctx.fingerprint), ctx.fingerprint
    task, split, digest = ctx.task.name, ctx.split, mask.digest()
    have = find_eval(ctx, task, split, limit), None if rearrange else find_eval(ctx, task, split, limit, digest)
    refits = get_solver(solver).refits
    model = ctx.facts.get("name") or ctx.model_name
    reliability, sid, name = reliability_of(ctx, scores), session_id(), ctx.model_name
    spec = scores.spec if scores is not None else None

    def work(job):
        def hold():
            return job.holding(lock)

        used = mask  # the mask evaluated and kept: the settings' one, or it rearranged
        if rearrange:
            from mtprune.rearrange import rearrange as rechoose, rearrange_rows

            job.begin(f"rearranging the mask on {rearrange:,} {task} rows")
            rows = rearrange_rows(task, rearrange, spec.seed if spec else 0, spec.split if spec else None)
            with hold():
                used = rechoose(adapter, task, mask, rows)
        results = {"dense": _stage(job, "dense model", have[0], lambda: _evaluate_model(
                       adapter, hold, task, split, limit, None, job.progress)),
                   "pruned": _stage(job, "pruned model", have[1], lambda: _evaluate_model(
                       adapter, hold, task, split, limit, used, job.progress))}
        repair = report = None
        if refits:
            results[f"pruned + {solver}"], report = _repair_and_evaluate(job, adapter, hold, task, split, limit, used,
                                                                         solver, calib, variant, scores)
            repair = {"solver": solver, "calibration_rows": int(calib), "variant": variant,
                      "summary": report.summary(), "report": report.to_dict()}
        job.check()  # the last moment a cancel stops it: from here the run is written whole
        run = Run(id=rid, fingerprint=fp, model=model, task=task, split=split, limit=limit, results=results,
                  mask=used, settings=settings, repair=repair, reliability=reliability, session=sid)
        return run, report, _keep(run, name, history, sid)

    return work


def _keep(run, model_name: str, history: dict | None, sid: str) -> list[str]:
    """Write the run to disk, then (with ``history``) its models' rows to the run history; what
    could not be written, in lines."""
    from mtprune.runs import RunStore

    notes = []
    try:
        RunStore(run.fingerprint).save(run)
    except (OSError, MtpruneError) as exc:
        notes.append(f"the run could not be kept on disk ({exc}): it lasts for this session")
    return notes + (_record_history(run, model_name, history, sid) if history is not None else [])


def _record_history(run, model_name: str, history: dict, sid: str) -> list[str]:
    """Each of the run's models (pruned, repaired) as one row of the model's run history."""
    from mtprune.evaluation import compare
    from mtprune.history import RunHistory

    h = RunHistory.for_model(run.fingerprint)
    for name, res in run.others.items():
        record = V.history_record(model_name, res, compare(run.dense, res), **history,
                                  repair=run.repair["solver"] if run.repair and name != "pruned" else "none")
        try:
            h.append({**record, "run": run.id, "session": sid})
        except OSError as exc:
            return [f"the run could not be added to the history ({exc})"]
    return [h.notice] if h.notice else []


def experiment(ctx: Context, store_name: str, memo, label: str, run, *, start: bool, unit: str = "evaluations"):
    """The rows of an experiment (a sweep, unseen domains, a transfer matrix) with the settings
    ``memo``, kept in the session's store ``store_name``. With ``start``: computed by a job waited
    on here (``run(progress=...) -> DataFrame``, the library call, under the model's lock; another
    session with the same settings joins it). Else the session's rows of these settings, or those of
    a job still computing them (started before a page switch, or by another session), waited on
    here. None when there are none yet (or the job was cancelled)."""
    from mtprune.io import stable_hash

    store = state.store(store_name)
    key = f"{store_name}:" + stable_hash([ctx.fingerprint, repr(memo)], 24)
    if start:
        lock = model_lock(ctx.fingerprint)

        def work(job):
            with job.holding(lock):
                job.begin("", unit)
                return run(progress=job.progress)

        df = J.run(key, label, work)
    elif memo in store:
        return store[memo]
    else:
        job = J.pending(key)
        df = J.follow(job) if job is not None else None
    if df is not None:
        store[memo] = df
    return store.get(memo)


def measured_with(ctx: Context, mask) -> dict:
    """``{task: EvalResult}``: this session's evaluation (the most rows) of the sidebar's task with
    this very mask; empty when it was not evaluated."""
    best = [v for k, v in state.store("evals").items()
            if k[0] == ctx.fingerprint and k[1] == ctx.task.name and k[4] == mask.digest()]
    return {ctx.task.name: max(best, key=lambda r: r.n)} if best else {}


@st.cache_data(show_spinner=False, max_entries=16)
def eval_rows(task: str, split: str, limit: int | None) -> list[dict]:
    """The rows an evaluation of ``limit`` rows reads (to show their text beside the predictions)."""
    from mtprune.evaluation import eval_rows as rows_of

    return rows_of(task, split, limit)


@st.cache_data(show_spinner="reading examples...", max_entries=16)
def example_rows(task: str, split: str, seed: int, n: int) -> list[dict]:
    """``n`` class-balanced rows of a split (the Guide page shows a few)."""
    from mtprune.tasks import load_rows, sample_rows

    return sample_rows(load_rows(task, split), n, seed=seed)


# ----------------------------------------------------------------------------------------------
# masks and costs


def costs(ctx: Context, measure: str = "flops"):
    """The model's unit costs for the task in ``measure`` (:func:`mtprune.costs.prepare_costs`: once
    per model, task and measure in the process, shared by every session)."""
    from mtprune.costs import prepare_costs

    with st.spinner("measuring the task's average length..."):
        return prepare_costs(ctx.adapter, ctx.task, measure)


def flops_kept(ctx: Context, mask) -> float:
    from mtprune.pipeline import flops_kept as kept

    costs(ctx, "flops")  # under the spinner the first time
    return kept(ctx.adapter, ctx.task, mask)


def mask_for_settings(ctx: Context, scores, settings: dict):
    """The mask Prune and evaluate shows for its settings (``ui.state.prune_settings``)."""
    from mtprune.pipeline import choose_mask

    if settings.get("mode") == "budget":
        costs(ctx, settings["budget"].measure)
        return choose_mask(ctx.adapter, ctx.task, scores, budget=settings["budget"], kinds="all")
    return choose_mask(ctx.adapter, ctx.task, scores, sparsity=settings["sparsity"], scope=settings["scope"])


# ----------------------------------------------------------------------------------------------
# the run history (mtprune.history), per model, on disk


def history(ctx: Context):
    from mtprune.history import RunHistory

    return RunHistory.for_model(ctx.fingerprint)


def history_table(ctx: Context):
    """The model's run history; says once, as a warning, when a corrupt file was set aside."""
    h = history(ctx)
    df = h.load()
    if h.notice:
        st.warning(h.notice, icon=":material/warning:")
    return df


def record_run(ctx: Context, record: dict) -> None:
    """Append an evaluation to the model's run history (a failure to write is said, not raised)."""
    h = history(ctx)
    try:
        h.append({**record, "session": session_id()})
    except OSError as exc:
        st.warning(f"the run could not be added to the history ({exc})", icon=":material/warning:")
    if h.notice:
        st.warning(h.notice, icon=":material/warning:")
