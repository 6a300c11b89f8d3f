"""Widgets and displays every page uses: errors in one line, a choice reset when its options
change, an example count with its "all rows" choice, progress with the time left, a metric with its
interval, the paired test's verdict, a figure, a method's label. ``URL`` is what settings widgets
bind to. Imports no other module of ui/ but :mod:`ui.views`."""

from __future__ import annotations

import time

import streamlit as st

URL = "query-params"  # widgets bound to the address: settings survive a reload and can be shared


def error(exc: BaseException | str) -> None:
    """One line in red; MtpruneError text as is."""
    st.error(str(exc), icon=":material/error:")


def reset_if_invalid(key: str, options: list, fallback) -> None:
    if key in st.session_state and st.session_state[key] not in options:
        st.session_state[key] = fallback


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
    from mtprune.text import plural

    return "all rows" if limit is None else ("the first row" if limit == 1 else f"the first {plural(limit, 'row')}")


def eta_progress(bar, label: str):
    """A ``progress(done, total)`` callback that moves ``bar`` and says how long is left."""
    from ui.views import eta_text

    t0 = time.perf_counter()

    def cb(done, total, *_):
        bar.progress(min(done / total, 1.0) if total else 1.0,
                     text=f"{label}: {eta_text(done, total, time.perf_counter() - t0)}")
    return cb


def uploaded_mask(label: str, key: str, adapter):
    """A file uploader for a mask saved by mtprune: ``(mask, file name)`` once a file that is a mask
    for ``adapter`` is given; ``(None, None)`` before, and after one error line when it is not."""
    from mtprune.errors import MtpruneError
    from mtprune.masks import mask_from_bytes

    up = st.file_uploader(label, key=key)
    if up is None:
        return None, None
    try:
        mask = mask_from_bytes(up.name, up.getvalue())
        mask.check_matches(adapter)
    except MtpruneError as exc:
        error(exc)
        return None, None
    return mask, up.name


def show_metric(col, label: str, res, reference=None, help: str | None = None) -> None:
    """A metric with its 95% interval under it; the change from ``reference`` as the delta."""
    lo, hi = res.interval()
    col.metric(label, f"{res.accuracy:.3f}", help=help,
               delta=None if reference is None else f"{res.accuracy - reference.accuracy:+.3f}")
    col.caption(f"95% interval {lo:.3f}-{hi:.3f} · {res.n:,} row{'' if res.n == 1 else 's'}")


def show_verdict(cmp, a: str = "dense", b: str = "pruned") -> None:
    """The paired test in one line: a warning when ``b`` is measurably lower."""
    show = {"lower": st.warning, "higher": st.success}.get(cmp.verdict, st.info)
    show(cmp.sentence(a, b), icon=":material/balance:")


def show_figure(fig, key: str | None = None) -> None:
    st.plotly_chart(fig, key=key, config={"displaylogo": False})


def method_label(name: str) -> str:
    from mtprune.methods import all_methods

    m = all_methods().get(name)
    return m.label if m is not None else name
