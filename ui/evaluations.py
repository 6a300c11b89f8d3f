"""Evaluations and the library glue behind them: attribution scores with a progress bar (from
memory, the disk cache or computed), evaluations remembered for the session (dense: its logits kept
on disk; pruned: a sliced copy where the mask allows, else hooks; repaired), runs kept whole on disk
(:mod:`mtprune.runs`: reopened, listed, deleted), the masks and costs of the Prune page's settings,
the rows an evaluation reads, and the model's run history on disk. Everything that runs the shared
model (or copies it) holds :func:`ui.session.model_busy`."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from mtprune.errors import MtpruneError
from ui import state
from ui import views as V
from ui.session import Context, model_busy, session_id
from ui.widgets import error, eta_progress


# ----------------------------------------------------------------------------------------------
# scores


def is_auto(ctx: Context, spec) -> bool:
    """Whether ``spec`` asks for the sidebar's auto examples: the sidebar chose auto, the method
    reads examples and the spec keeps the sidebar's count (the first draw's, a placeholder)."""
    return ctx.auto is not None and spec.info.needs_data and spec.examples == ctx.spec.examples


def scores_for(ctx: Context, spec=None, compute: bool = False, label: str = "computing attributions",
               auto: bool | None = None):
    """Scores for ``spec`` (default: the sidebar's) on the current model.

    From memory, else from the library's disk cache, else (when ``compute``) computed with a
    progress bar and written to the disk cache. With the sidebar's auto examples (``auto``; None:
    :func:`is_auto`) the draws double until the reliability target
    (:func:`mtprune.examples_auto.attribute_auto`) and the note ends with the line that says how many
    examples were read and why. Returns (scores, note) where note says where they came from;
    (None, None) when not available and not computed.
    """
    spec = spec if spec is not None else ctx.spec
    auto = ctx.auto if (is_auto(ctx, spec) if auto is None else auto and ctx.auto is not None) else None
    key = (ctx.fingerprint, spec.key(), auto)
    store = state.store("scores")
    if key in store:
        return store[key]
    t0 = time.perf_counter()
    scores, chosen = _cached(ctx, spec, auto)
    note = f"loaded from the disk cache in {time.perf_counter() - t0:.2f} s" if scores is not None else None
    if scores is None and compute:
        scores, hit, chosen = _compute(ctx, spec, auto, label)
        secs = time.perf_counter() - t0
        note = f"loaded from the disk cache in {secs:.2f} s" if hit else f"computed in {secs:.1f} s (now cached on disk)"
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


def _compute(ctx: Context, spec, auto, label: str):
    """``(scores, cache_hit, AutoExamples or None)``, computed under a progress bar (auto: a line
    under it says each draw's reliability)."""
    from mtprune.attribution import attribute_cached
    from mtprune.examples_auto import attribute_auto

    bar = st.progress(0.0, text=f"{label}...")
    line = st.empty()
    try:
        with model_busy(ctx):
            if auto is None:
                scores, hit, _ = attribute_cached(ctx.adapter, spec, progress=eta_progress(bar, f"{label}, examples"))
                return scores, hit, None
            progress = eta_progress(bar, f"{label}, examples (doubling until reliability {auto.target:g})")
            scores, hit, _, chosen = attribute_auto(ctx.adapter, spec, auto.target, auto.cap, progress=progress,
                                                    log=lambda text: line.caption(f"reliability at {text.strip()}"))
            return scores, hit, chosen
    finally:
        bar.empty()
        line.empty()


def compute_on_next_run(key: str) -> None:
    """Make :func:`scores_or_button` with this ``key`` compute at once on the next run (a button's
    callback that changed the sidebar's settings calls it)."""
    st.session_state[f"_now.{key}"] = True


def scores_or_button(ctx: Context, key: str, spec=None):
    """Scores for the page, or a "Compute attributions" button (the page stops until they exist)."""
    spec = spec if spec is not None else ctx.spec
    scores, note = scores_for(ctx, spec)
    if scores is not None:
        return scores, note
    now = st.session_state.pop(f"_now.{key}", False)
    if not now:
        st.info(f"No attribution scores yet for {describe(ctx, spec)}.", icon=":material/info:")
    if now or st.button("Compute attributions", key=key, type="primary"):
        try:
            scores_for(ctx, spec, compute=True)
        except MtpruneError as exc:
            error(exc)
            st.stop()
        st.rerun()
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


def evaluate(ctx: Context, task: str, split: str, limit, mask=None, progress=None):
    """Dense (``mask=None``) or pruned evaluation, remembered for the session. The dense model's
    logits are kept on disk (another session, page or reload reads them); a pruned model is a
    sliced copy where the mask allows it (it runs outside the model's lock), else hooks on the
    shared model."""
    from dataclasses import replace

    from mtprune.evaluation import evaluate as run_eval
    from mtprune.evaluation import pruned_model

    digest = mask.digest() if mask is not None else None
    hit = find_eval(ctx, task, split, limit, digest)
    if hit is not None:
        if progress:
            progress(hit.n, hit.n)
        return hit
    target = None
    with model_busy(ctx):
        if mask is None or mask.keeps_all():
            res = run_eval(ctx.adapter, task, split, limit=limit, progress=progress, mask=mask,
                           cache_logits=mask is None)
        else:
            target, context, _ = pruned_model(ctx.adapter, mask, "auto")
            if context is not None:  # hooks on the shared model: under its lock
                target = None
                res = run_eval(ctx.adapter, task, split, limit=limit, progress=progress, mask=mask, prune="soft")
    if target is not None:  # a sliced copy of this session's own
        res = replace(run_eval(target, task, split, limit=limit, progress=progress), how="hard")
        del target
    state.store("evals")[_eval_key(ctx, task, split, limit, digest)] = res
    return res


def evaluate_dense_and_pruned(ctx: Context, task: str, split: str, limit, mask, label: str = "evaluating"):
    """Dense and pruned evaluations with one progress bar: (dense, pruned)."""
    bar = st.progress(0.0, text=f"{label}...")
    cb_dense, cb_pruned = V.split_progress(lambda f, t: bar.progress(f, text=f"{label} {t}"), ["dense", "pruned"])
    try:
        dense = evaluate(ctx, task, split, limit, None, cb_dense)
        pruned = evaluate(ctx, task, split, limit, mask, cb_pruned)
    finally:
        bar.empty()
    return dense, pruned


def evaluate_repaired(ctx: Context, task: str, split: str, limit, mask, solver: str, calib: int, progress=None):
    """The hard-pruned model repaired by ``solver`` on ``calib`` train rows, evaluated;
    (EvalResult, RepairReport), remembered for the session."""
    from mtprune.evaluation import evaluate as run_eval
    from mtprune.pipeline import prune
    from mtprune.repair import calibration_rows

    key = (ctx.fingerprint, task, split, limit, mask.digest(), solver, int(calib))
    store = state.store("repaired")
    if key in store:
        return store[key]
    rows = calibration_rows(task, int(calib))
    with model_busy(ctx):
        done = prune(ctx.adapter, task, mask=mask, repair_with=solver, calibration=rows)
    res = run_eval(done.adapter, task, split, limit=limit, progress=progress)
    store[key] = (res, done.report)
    return res, done.report


# ----------------------------------------------------------------------------------------------
# runs (mtprune.runs): whole evaluations on disk, per model


def run_store(ctx: Context):
    from mtprune.runs import RunStore

    return RunStore(ctx.fingerprint)


def run_key(ctx: Context, spec, task: str, split: str, limit, digest: str, solver: str, calib: int) -> str:
    """The id of the run these settings make (:func:`mtprune.runs.run_id`): the same settings, the
    same run, read back instead of evaluated again."""
    from mtprune.runs import run_id
    from mtprune.solvers import get_solver

    refits = get_solver(solver).refits
    return run_id({"model": ctx.fingerprint, "task": task, "split": split, "limit": limit, "mask": digest,
                   "scores": spec.key() if spec is not None else None,
                   "repair": [solver, int(calib)] if refits else None})


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


def evaluate_run(ctx: Context, scores, mask, limit, solver: str, calib: int, settings: dict):
    """Dense, pruned and (with a refitting ``solver``) repaired on the first ``limit`` rows of the
    sidebar's task and split, as one :class:`mtprune.runs.Run` kept on disk (the same settings
    evaluated before: read back). ``settings``: how the mask was chosen, kept with the run."""
    from mtprune.runs import Run
    from mtprune.solvers import get_solver

    task, split = ctx.task.name, ctx.split
    rid = run_key(ctx, scores.spec if scores is not None else None, task, split, limit, mask.digest(), solver, calib)
    run = find_run(ctx, rid)
    if run is not None:  # the session's evaluations know it too (the sidebar, Export's measured accuracy)
        evals = state.store("evals")
        evals.setdefault(_eval_key(ctx, task, split, limit, None), run.dense)
        evals.setdefault(_eval_key(ctx, task, split, limit, mask.digest()), run.results["pruned"])
        return run
    dense, pruned = evaluate_dense_and_pruned(ctx, task, split, limit, mask)
    results, repair = {"dense": dense, "pruned": pruned}, None
    if get_solver(solver).refits:
        with st.spinner(f"repairing on {calib} {task} rows, then evaluating..."):
            res, report = evaluate_repaired(ctx, task, split, limit, mask, solver, calib)
        results[f"pruned + {solver}"] = res
        repair = {"solver": solver, "calibration_rows": int(calib), "summary": report.summary(),
                  "report": report.to_dict()}
    run = Run(id=rid, fingerprint=ctx.fingerprint, model=ctx.facts.get("name") or ctx.model_name, task=task,
              split=split, limit=limit, results=results, mask=mask, settings=settings, repair=repair,
              reliability=reliability_of(ctx, scores), session=session_id())
    state.store("runs")[rid] = run
    try:
        run_store(ctx).save(run)
    except (OSError, MtpruneError) as exc:
        st.warning(f"the run could not be kept on disk ({exc}): it lasts for this session", icon=":material/warning:")
    return run


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
