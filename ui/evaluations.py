"""Evaluations and the library glue behind them: attribution scores with a progress bar (from
memory, the disk cache or computed), evaluations remembered for the session (dense, soft-pruned,
repaired), the masks and costs of the Prune page's settings, the rows an evaluation reads, and the
model's run history on disk. Everything that runs the model holds :func:`ui.session.model_busy`."""

from __future__ import annotations

import time

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
    """Dense (``mask=None``) or soft-pruned evaluation, remembered for the session."""
    from mtprune.evaluation import evaluate as run_eval

    digest = mask.digest() if mask is not None else None
    hit = find_eval(ctx, task, split, limit, digest)
    if hit is not None:
        if progress:
            progress(hit.n, hit.n)
        return hit
    with model_busy(ctx):
        res = run_eval(ctx.adapter, task, split, limit=limit, progress=progress, mask=mask)
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
