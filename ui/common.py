"""Streamlit glue shared by app.py and the pages: the sidebar (model, task, split, attribution
settings), cached model loading, scores from the library's disk cache with a progress bar,
evaluations remembered for the session, and error display. Words and tables are in
:mod:`ui.views`; state shared between pages in :mod:`ui.state`."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import streamlit as st

from mtprune.errors import MtpruneError
from mtprune.tasks import TaskSpec, get_task
from mtprune.text import human_count
from ui import state
from ui import views as V

CTX = "_ctx"
DEFAULT_EXAMPLES = 64
URL = "query-params"  # widgets bound to the address: settings survive a reload and can be shared


@dataclass
class Context:
    """What the sidebar selected, for every page."""

    model_name: str = "default"
    adapter: object = None
    error: str | None = None  # the model could not be loaded
    prompt: str | None = None  # nothing to load yet (a local directory not typed in)
    task: TaskSpec | None = None
    task_error: str | None = None  # the model has no head for the task
    split: str = "validation"
    spec: object = None
    spec_error: str | None = None
    facts: dict = field(default_factory=dict)  # adapter.info()

    @property
    def fingerprint(self) -> str:
        return self.adapter.fingerprint()


# ----------------------------------------------------------------------------------------------
# cached resources


@st.cache_resource(show_spinner=False, max_entries=3)
def load_model(resolved: str, signature: str, device: str = "cpu"):
    """The adapter for a resolved model source; ``signature`` changes when its files do."""
    from mtprune.checkpoints import load_adapter

    del signature  # part of the cache key only
    adapter = load_adapter(resolved, device=device)
    adapter.fingerprint()  # once, here: cache keys need it
    return adapter


@st.cache_resource(show_spinner=False)
def _model_lock(fingerprint: str) -> threading.RLock:
    return threading.RLock()


@contextmanager
def model_busy(ctx_or_adapter):
    """Hold the model while running it. A loaded model is shared by every session (a cached
    resource), and soft masks and attribution set hooks on it: two sessions running it at once
    would see each other's hooks. Everything that runs the model goes through this lock."""
    adapter = getattr(ctx_or_adapter, "adapter", ctx_or_adapter)
    lock = _model_lock(adapter.fingerprint())
    if not lock.acquire(blocking=False):
        with st.spinner("another session is running this model; waiting..."):
            lock.acquire()
    try:
        yield adapter
    finally:
        lock.release()


@st.cache_data(show_spinner=False, max_entries=32)
def _facts(fingerprint: str, _adapter) -> dict:
    return _adapter.info()


@st.cache_data(show_spinner="reading examples...", max_entries=16)
def example_rows(task: str, split: str, seed: int, n: int) -> list[dict]:
    """``n`` class-balanced rows of a split (the Guide page shows a few)."""
    from mtprune.tasks import load_rows, sample_rows

    return sample_rows(load_rows(task, split), n, seed=seed)


@st.cache_resource(show_spinner=False)
def _devices() -> list[str]:
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def error(exc: BaseException | str) -> None:
    """One line in red; MtpruneError text as is."""
    st.error(str(exc), icon=":material/error:")


def reset_if_invalid(key: str, options: list, fallback) -> None:
    if key in st.session_state and st.session_state[key] not in options:
        st.session_state[key] = fallback


# ----------------------------------------------------------------------------------------------
# the sidebar


def _choose_model(ctx: Context, sb) -> None:
    options = V.model_options()
    reset_if_invalid("sb.model", options, options[0])
    choice = sb.selectbox("Model", options, key="sb.model", bind=URL,
                          help="`default` is the multi-task MiniLM in MTPRUNE_HOME/models; or any local "
                               "model directory (multi-task, sequence classifier, T5, causal LM)")
    name = choice
    if choice == V.OTHER_MODEL:
        name = sb.text_input("Model directory", key="sb.model_dir", bind=URL, placeholder="/path/to/model").strip()
    ctx.model_name = name
    devices = _devices()
    device = sb.selectbox("Device", devices, key="sb.device", bind=URL) if len(devices) > 1 else "cpu"
    if not name:
        ctx.prompt = "Type the path of a local model directory in the sidebar (a folder with config.json and weights)."
        return
    from mtprune.checkpoints import source_signature

    try:
        resolved, signature = source_signature(name)
        with sb.spinner(f"loading {name}..."):
            ctx.adapter = load_model(resolved, signature, device)
    except MtpruneError as exc:
        ctx.error = str(exc)
    except Exception as exc:  # a broken directory can fail in many ways: one line
        ctx.error = f"could not load {name}: {type(exc).__name__}: {exc}"
    # (an error is shown once, on the page: see need_model)


def _choose_task(ctx: Context, sb) -> None:
    tasks = V.task_options(ctx.adapter)
    reset_if_invalid("sb.task", tasks, tasks[0])
    task_name = sb.selectbox("Task", tasks, key="sb.task", bind=URL, format_func=lambda t: V.task_label(t, ctx.adapter))
    ctx.task = get_task(task_name)
    if ctx.adapter is not None and not ctx.adapter.supports(ctx.task):
        try:
            ctx.adapter.head_for(ctx.task)
        except MtpruneError as exc:
            ctx.task_error = str(exc)
    splits = V.split_options(ctx.task)
    if st.session_state.get("_sb.split_task") != task_name:  # a new task: its validation split
        st.session_state["sb.split"] = V.default_eval_split(ctx.task)
        st.session_state["_sb.split_task"] = task_name
    reset_if_invalid("sb.split", splits, V.default_eval_split(ctx.task))
    ctx.split = sb.selectbox("Evaluation split", splits, key="sb.split", bind=URL,
                             help="the split the Prune, Unseen and Guide pages evaluate on")


def _attribution_settings(ctx: Context, sb) -> None:
    from mtprune.attribution import VARIANTS, AttributionSpec
    from mtprune.methods import all_methods

    task = ctx.task
    with sb.expander("Attribution settings", expanded=False):
        methods = {n: m for n, m in all_methods().items() if m.scores}
        names = list(methods)
        reset_if_invalid("sb.method", names, names[0])
        method = st.selectbox("Method", names, key="sb.method", bind=URL, format_func=lambda m: methods[m].label,
                              help="; ".join(f"{m.label}: {m.help}" for m in methods.values()))
        info = methods[method]
        reset_if_invalid("sb.variant", list(VARIANTS), VARIANTS[0])
        variant = st.selectbox("Score", list(VARIANTS), key="sb.variant", bind=URL, disabled=not info.uses_variant,
                               help="abs: the magnitude of each example's effect, summed; "
                                    "signed: the effects summed with their signs")
        examples = st.number_input("Examples", min_value=1, max_value=100000, value=DEFAULT_EXAMPLES, step=16,
                                   key="sb.examples", bind=URL, disabled=not info.needs_data,
                                   help="class-balanced examples the scores are computed on")
        seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, key="sb.seed", bind=URL,
                               disabled=not info.uses_seed)
        if "sb.attr_split" not in st.session_state or st.session_state.get("_sb.attr_task") != task.name:
            st.session_state["sb.attr_split"] = task.train_split
            st.session_state["_sb.attr_task"] = task.name
        reset_if_invalid("sb.attr_split", list(task.splits), task.train_split)
        attr_split = st.selectbox("Examples from", list(task.splits), key="sb.attr_split", bind=URL,
                                  disabled=not info.needs_data)
        steps = st.number_input("Integration steps", min_value=1, max_value=512, value=20, key="sb.steps", bind=URL,
                                disabled=not info.uses_steps, help="integrated gradients only")
        unsupervised = st.checkbox("Label-free", key="sb.unsupervised", bind=URL, disabled=not info.unsupervised,
                                   help="no gold labels: sum the attribution over all candidate labels "
                                        f"({', '.join(m.label for m in methods.values() if m.unsupervised)})")
    try:
        ctx.spec = AttributionSpec(task=task.name, method=method, variant=variant, examples=int(examples),
                                   seed=int(seed), split=None if attr_split == task.train_split else attr_split,
                                   steps=int(steps), unsupervised=bool(unsupervised and info.unsupervised))
    except MtpruneError as exc:
        ctx.spec_error = str(exc)


def _model_caption(ctx: Context, sb) -> None:
    ctx.facts = f = _facts(ctx.adapter.fingerprint(), ctx.adapter)
    lines = [f"**{f['name']}** · {f['format']} · {human_count(f['parameters'])} parameters",
             f"{f['layers']} layers; per layer: {V.units_line(f)}"]
    rec, what = V.recorded_accuracy(ctx.adapter, ctx.task)
    dense = best_dense(ctx, ctx.task.name, ctx.split)
    if dense is not None:
        lines.append(f"{ctx.task.name}/{ctx.split} accuracy, measured: **{dense.describe()}**")
    elif rec is not None:
        lines.append(f"{ctx.task.name} accuracy **{rec:.3f}**, {what}")
    else:
        lines.append(f"{ctx.task.name} accuracy: {what}")
    sb.caption("  \n".join(lines))


def sidebar() -> Context:
    """Draw the shared sidebar and return (and store) the selection."""
    ctx = Context()
    sb = st.sidebar
    sb.markdown("### Model and task")
    _choose_model(ctx, sb)
    _choose_task(ctx, sb)
    _attribution_settings(ctx, sb)
    if ctx.adapter is not None:
        _model_caption(ctx, sb)
    st.session_state[CTX] = ctx
    return ctx


def context() -> Context:
    ctx = st.session_state.get(CTX)
    return ctx if ctx is not None else Context(error="the sidebar has not run")


def need_model(title: str | None = None) -> Context:
    """The selection; stop the page with one st.error line when the model did not load (under the
    page's ``title``, drawn first, so a page with an error keeps its title), or with a prompt when
    there is nothing to load yet."""
    if title:
        st.title(title)
    ctx = context()
    if ctx.prompt:
        st.info(ctx.prompt, icon=":material/folder_open:")
        st.stop()
    if ctx.error:
        error(ctx.error)
        st.stop()
    return ctx


def need_task(title: str | None = None) -> Context:
    """As need_model, and the model must serve the selected task."""
    ctx = need_model(title)
    if ctx.task_error:
        error(ctx.task_error)
        st.stop()
    if ctx.spec_error:
        error(ctx.spec_error)
        st.stop()
    return ctx


# ----------------------------------------------------------------------------------------------
# scores


def scores_for(ctx: Context, spec=None, compute: bool = False, label: str = "computing attributions"):
    """Scores for ``spec`` (default: the sidebar's) on the current model.

    From memory, else from the library's disk cache, else (when ``compute``) computed with a
    progress bar and written to the disk cache. Returns (scores, note) where note says where they
    came from; (None, None) when not available and not computed.
    """
    from mtprune.attribution import attribute_cached, lookup_cached

    spec = spec if spec is not None else ctx.spec
    key = (ctx.fingerprint, spec.key())
    store = state.store("scores")
    if key in store:
        return store[key]
    t0 = time.perf_counter()
    found = lookup_cached(ctx.adapter, spec)
    scores, note = (found[0], f"loaded from the disk cache in {time.perf_counter() - t0:.2f} s") if found else (None, None)
    if scores is None and compute:
        bar = st.progress(0.0, text=f"{label}...")
        with model_busy(ctx):
            scores, hit, _ = attribute_cached(ctx.adapter, spec, progress=eta_progress(bar, f"{label}, examples"))
        bar.empty()
        secs = time.perf_counter() - t0
        note = f"loaded from the disk cache in {secs:.2f} s" if hit else f"computed in {secs:.1f} s (now cached on disk)"
    if scores is None:
        return None, None
    store[key] = (scores, note)
    return scores, note


def scores_or_button(ctx: Context, key: str, spec=None):
    """Scores for the page, or a "Compute attributions" button (the page stops until they exist)."""
    spec = spec if spec is not None else ctx.spec
    scores, note = scores_for(ctx, spec)
    if scores is not None:
        return scores, note
    st.info(f"No attribution scores yet for {spec.describe()}.", icon=":material/info:")
    if st.button("Compute attributions", key=key, type="primary"):
        try:
            scores_for(ctx, spec, compute=True)
        except MtpruneError as exc:
            error(exc)
            st.stop()
        st.rerun()
    st.stop()


# ----------------------------------------------------------------------------------------------
# evaluation, remembered for the session


def _eval_key(ctx: Context, task: str, split: str, limit, digest: str | None):
    return (ctx.fingerprint, task, split, limit, digest or "dense")


def find_eval(ctx: Context, task: str, split: str, limit, digest: str | None = None):
    """The session's evaluation of the model (``digest`` None: dense; else that mask's) on the first
    ``limit`` rows (None: all rows), or None."""
    return state.store("evals").get(_eval_key(ctx, task, split, limit, digest))


def best_dense(ctx: Context, task: str, split: str):
    """The dense evaluation of the task and split on the most rows this session, or None."""
    hits = [v for k, v in state.store("evals").items() if k[:3] == (ctx.fingerprint, task, split) and k[4] == "dense"]
    return max(hits, key=lambda r: r.n) if hits else None


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


def rows_input(label: str, key: str, default: int, help: str, container=None, step: int = 50) -> int | None:
    """An example count with an "all rows" choice beside it: the count, or None for every row."""
    c = container or st
    left, right = c.columns([3, 2], vertical_alignment="bottom")
    every = right.checkbox("all rows", key=f"{key}.all", bind=URL, persist_state="session",
                           help="every labeled row of the split")
    n = left.number_input(label, min_value=1, max_value=1_000_000, value=default, step=step, key=key, bind=URL,
                          persist_state="session", disabled=every, help=help)
    return None if every else int(n)


def rows_words(limit: int | None) -> str:
    return "all rows" if limit is None else f"the first {limit} rows"


def eta_progress(bar, label: str):
    """A ``progress(done, total)`` callback that moves ``bar`` and says how long is left."""
    from ui.views import eta_text

    t0 = time.perf_counter()

    def cb(done, total, *_):
        bar.progress(min(done / total, 1.0) if total else 1.0,
                     text=f"{label}: {eta_text(done, total, time.perf_counter() - t0)}")
    return cb


# ----------------------------------------------------------------------------------------------
# the run history (mtprune.history), per model, on disk


def session_id() -> str:
    import uuid

    return st.session_state.setdefault("_session_id", uuid.uuid4().hex[:8])


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


@st.cache_data(show_spinner=False, max_entries=16)
def eval_rows(task: str, split: str, limit: int | None) -> list[dict]:
    """The rows an evaluation of ``limit`` rows reads (to show their text beside the predictions)."""
    from mtprune.evaluation import eval_rows as rows_of

    return rows_of(task, split, limit)


def show_metric(col, label: str, res, reference=None, help: str | None = None) -> None:
    """A metric with its 95% interval under it; the change from ``reference`` as the delta."""
    lo, hi = res.interval()
    col.metric(label, f"{res.accuracy:.3f}", help=help,
               delta=None if reference is None else f"{res.accuracy - reference.accuracy:+.3f}")
    col.caption(f"95% interval {lo:.3f}-{hi:.3f} · {res.n} rows")


def show_verdict(cmp, a: str = "dense", b: str = "pruned") -> None:
    """The paired test in one line: a warning when ``b`` is measurably lower."""
    show = {"lower": st.warning, "higher": st.success}.get(cmp.verdict, st.info)
    show(cmp.sentence(a, b), icon=":material/balance:")


def show_examples(ctx: Context, task: str, split: str, limit, reference, others: dict, key: str) -> None:
    """After an evaluation: the rows whose prediction flipped, each model's confusion matrix and
    every row sortable by the change in P(gold), with its text (LIT's side-by-side view)."""
    from mtprune import plots

    rows = eval_rows(task, split, limit)
    names = list(others)
    which = names[0]
    if len(names) > 1:
        which = st.segmented_control("Compare the dense model with", names, default=names[0], key=f"{key}.which") or names[0]
    table = V.flips_table(rows, task, reference, others[which], "dense", which)
    flips, conf, every = st.tabs(["Flipped examples", "Confusion matrices", "Every row"])
    cfg = {"text": st.column_config.TextColumn(width="large"),
           "change in P(gold)": st.column_config.NumberColumn(format="%+.3f")}
    with flips:
        for kind, note in (("right -> wrong", f"the dense model was right, the {which} model is wrong"),
                           ("wrong -> right", f"the dense model was wrong, the {which} model is right")):
            part = table[table["what changed"] == kind].sort_values("change in P(gold)",
                                                                     ascending=kind == "right -> wrong")
            st.markdown(f"**{kind}** · {len(part)} rows ({note})")
            if len(part):
                st.dataframe(part.drop(columns=["what changed"]), hide_index=True, column_config=cfg,
                             height=min(38 + 35 * len(part), 300), key=f"{key}.flips.{kind}")
    with conf:
        cols = st.columns(1 + len(names))
        for col, (name, res) in zip(cols, [("dense", reference), *others.items()]):
            with col:
                show_figure(plots.confusion_figure(V.confusion_frame(res, task), title=f"{name}: {res.accuracy:.3f}"),
                            key=f"{key}.confusion.{name}")
    with every:
        st.caption("Click a column's header to sort: by *change in P(gold)* to see the rows the pruning hurt most.")
        st.dataframe(table, hide_index=True, column_config=cfg, height=400, key=f"{key}.every")


def show_figure(fig, key: str | None = None) -> None:
    st.plotly_chart(fig, key=key, config={"displaylogo": False})


@st.cache_data(show_spinner="building the hard-pruned model...", max_entries=2)
def _pruned_zip(fingerprint: str, digest: str, folder: str, measured_key: tuple, _adapter, _mask, _measured) -> bytes:
    from mtprune.checkpoints import zip_model
    from mtprune.pruning import hard_prune

    with _model_lock(fingerprint):  # no spinner: this runs outside the script
        small = hard_prune(_adapter, _mask)
    return zip_model(small, _mask, folder=folder, measured=_measured)


def measured_with(ctx: Context, mask) -> dict:
    """``{task: EvalResult}``: this session's evaluation (the most rows) of the sidebar's task with
    this very mask; empty when it was not evaluated."""
    best = [v for k, v in state.store("evals").items()
            if k[0] == ctx.fingerprint and k[1] == ctx.task.name and k[4] == mask.digest()]
    return {ctx.task.name: max(best, key=lambda r: r.n)} if best else {}


def pruned_zip(ctx: Context, mask, folder: str, measured: dict) -> bytes:
    """The hard-pruned model as a zip of the folder ``folder/``: built once per model, mask and
    name, then served from memory. Its tasks.json records ``measured`` (:func:`measured_with`: soft
    and hard pruning remove the same units, the same function), else "not measured". Read
    ``measured`` when the page runs: a download's callable runs outside the session."""
    key = tuple((t, r.split, r.n) for t, r in measured.items())
    return _pruned_zip(ctx.fingerprint, mask.digest(), folder, key, ctx.adapter, mask, measured)


@st.cache_data(show_spinner="exporting to ONNX...", max_entries=2)
def _onnx_zip(fingerprint: str, digest: str, task: str, folder: str, _adapter, _mask) -> bytes:
    from mtprune.export import zip_onnx
    from mtprune.pruning import hard_prune

    with _model_lock(fingerprint):  # no spinner: this runs outside the script
        small = hard_prune(_adapter, _mask)
    return zip_onnx(small, task, folder, evaluate=False)


def onnx_zip(ctx: Context, mask, folder: str) -> bytes:
    """The hard-pruned model and the task's head as an ONNX directory in a zip (``folder/``),
    exported once per model, mask and task, then served from memory."""
    return _onnx_zip(ctx.fingerprint, mask.digest(), ctx.task.name, folder, ctx.adapter, mask)


def method_label(name: str) -> str:
    from mtprune.methods import all_methods

    m = all_methods().get(name)
    return m.label if m is not None else name


def sweep_section(ctx: Context, key: str) -> None:
    """The metric against sparsity for chosen methods: :func:`mtprune.experiments.run_sweep`, its
    rows kept in a CSV in the cache (a second run with the same settings reads them back); the
    model's run history drawn on it as points."""
    from mtprune import experiments as X
    from mtprune import plots
    from mtprune.methods import method_names

    methods_all = method_names()
    c = st.columns([3, 2, 1, 1])
    methods = c[0].multiselect("Methods", methods_all, default=[m for m in ("ap", "random") if m in methods_all],
                               key=f"{key}.methods", persist_state="session", bind=URL, format_func=method_label)
    text = c[1].text_input("FFN neurons pruned (%)", "0, 20, 40, 60, 80", key=f"{key}.sparsities",
                           persist_state="session", bind=URL,
                           help="percentages, as on the sliders, separated by commas")
    limit = c[2].number_input("Examples", min_value=1, max_value=100000, value=100, step=50,
                              key=f"{key}.limit", persist_state="session", bind=URL, help="evaluation rows per point")
    trials = c[3].number_input("Trials", min_value=1, max_value=20, value=1, key=f"{key}.trials",
                               persist_state="session", bind=URL,
                               help="repeats of the seeded baselines (random masks): the chart shades their spread")
    scope = state.prune_settings(["ffn"])["scope"]
    scope = scope if scope in ("layer", "global") else "layer"
    try:
        cfg = V.sweep_config(ctx.spec, methods, V.parse_percentages(text), scope=scope, trials=int(trials))
    except MtpruneError as exc:
        error(exc)
        return
    memo = (ctx.fingerprint, repr(cfg), int(limit), ctx.split)
    results = state.store("sweeps")
    n_points = len(X.plan_runs(cfg, ctx.task.name)) * len(cfg.sparsities)
    if st.button(f"Run the sweep ({n_points} points; cached points are read back)", key=f"{key}.run",
                 disabled=not methods):
        bar = st.progress(0.0, text="sweeping...")
        try:
            with model_busy(ctx):
                df = X.run_sweep(ctx.adapter, cfg, X.EvalSettings(limit=int(limit), split=ctx.split),
                                 out=str(V.experiment_csv("sweep", ctx.adapter)), log=None,
                                 progress=eta_progress(bar, "sweep, points"))
            results[memo] = df
        except MtpruneError as exc:
            error(exc)
        bar.empty()
    df = results.get(memo)
    if df is None:
        st.caption("Pick methods and sparsities, then run the sweep: each point prunes the model with "
                   "that method's mask and evaluates it.")
        return
    metric = st.segmented_control("Metric", list(ctx.task.metrics), default=ctx.task.metrics[0],
                                  key=f"{key}.metric") or ctx.task.metrics[0]
    d = df[df["task"] == ctx.task.name].copy()
    d["series"] = d["method"].map(method_label)
    runs = V.history_points(history_table(ctx), ctx.task.name, ctx.split, metric)
    show_figure(plots.sweep_figure(d, metric, points=runs,
                                   title=f"{ctx.task.name}/{ctx.split}: {metric} against FFN sparsity"),
                key=f"{key}.chart")
    st.caption("Lines: the sweep (shaded: the spread over trials, or the 95% interval of one evaluation). "
               "Diamonds: your evaluations on this page with FFN neurons only, from the run history.")
    with st.expander("The sweep's rows"):
        cols = [c for c in ("method", "sparsity", "trial", "accuracy", "accuracy_low", "accuracy_high", "f1", "mcc",
                            "n_eval", "params", "kept_units") if c in d.columns]
        st.dataframe(d[cols].assign(method=d["method"].map(method_label)), hide_index=True)
