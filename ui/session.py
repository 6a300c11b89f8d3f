"""The session's selection: the sidebar (model, task, split, attribution settings) and the
:class:`Context` it returns to every page (``need_model`` / ``need_task``), the cached model shared
by every session and its lock (``model_busy``), the model's facts, the session id. Evaluations are
in :mod:`ui.evaluations`; words and tables in :mod:`ui.views`; page state in :mod:`ui.state`."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import streamlit as st

from mtprune.errors import MtpruneError
from mtprune.tasks import TaskSpec, get_task
from mtprune.text import human_count
from ui import state
from ui import views as V
from ui.widgets import URL, error, reset_if_invalid

CTX = "_ctx"
DEFAULT_EXAMPLES = None  # an empty count: auto (mtprune.examples_auto), as many as the reliability target needs


@dataclass(frozen=True)
class AutoExamples:
    """The sidebar's "auto" examples: draws doubling until every kind's reliability reaches
    ``target``, up to ``cap`` examples (:func:`mtprune.examples_auto.attribute_auto`)."""

    target: float
    cap: int


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
    auto: AutoExamples | None = None  # examples chosen automatically (ctx.spec holds the first draw's count)
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
def model_lock(fingerprint: str) -> threading.RLock:
    return threading.RLock()


@contextmanager
def model_busy(ctx_or_adapter):
    """Hold the model while running it. A loaded model is shared by every session (a cached
    resource), and soft masks and attribution set hooks on it: two sessions running it at once
    would see each other's hooks. Everything that runs the model goes through this lock."""
    adapter = getattr(ctx_or_adapter, "adapter", ctx_or_adapter)
    lock = model_lock(adapter.fingerprint())
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


@st.cache_resource(show_spinner=False)
def _devices() -> list[str]:
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


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
    from mtprune.examples_auto import FIRST
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
                                   key="sb.examples", bind=URL, disabled=not info.needs_data, placeholder="auto",
                                   help="class-balanced examples the scores are computed on; empty: auto, "
                                        "doubling from 64 until the reliability below is reached")
        auto = _auto_settings(examples is None and info.needs_data)
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
        ctx.auto = auto
        ctx.spec = AttributionSpec(task=task.name, method=method, variant=variant,
                                   examples=int(examples) if examples is not None else FIRST,
                                   seed=int(seed), split=None if attr_split == task.train_split else attr_split,
                                   steps=int(steps), unsupervised=bool(unsupervised and info.unsupervised))
    except MtpruneError as exc:
        ctx.spec_error = str(exc)


def set_examples(n: int) -> None:
    """Set the sidebar's example count (from a button's callback, before the sidebar is drawn)."""
    st.session_state["sb.examples"] = int(n)


def _auto_settings(on: bool) -> AutoExamples | None:
    """The reliability target and the cap of auto examples (their inputs disabled for a count)."""
    from mtprune.examples_auto import DEFAULT_CAP, DEFAULT_TARGET, FIRST

    left, right = st.columns(2)
    target = left.number_input("Reliability", min_value=0.05, max_value=0.99, value=DEFAULT_TARGET, step=0.05,
                               key="sb.reliability", bind=URL, disabled=not on,
                               help="auto: the expected Spearman correlation of every kind's scores with "
                                    "another draw of as many examples that stops the doubling")
    cap = right.number_input("Up to", min_value=FIRST, max_value=100000, value=DEFAULT_CAP, step=FIRST,
                             key="sb.max_examples", bind=URL, disabled=not on,
                             help="auto: the most examples it reads (it also stops at the split's labelled rows)")
    return AutoExamples(float(target), int(cap)) if on else None


def best_dense(ctx: Context, task: str, split: str):
    """The dense evaluation of the task and split on the most rows this session, or None (for the
    sidebar's caption; the store's keys are :func:`ui.evaluations._eval_key`'s)."""
    hits = [v for k, v in state.store("evals").items() if k[:3] == (ctx.fingerprint, task, split) and k[4] == "dense"]
    return max(hits, key=lambda r: r.n) if hits else None


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
# the session


def session_id() -> str:
    import uuid

    return st.session_state.setdefault("_session_id", uuid.uuid4().hex[:8])
