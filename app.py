"""The mtprune dashboard: `streamlit run app.py`.

This entry point draws the shared sidebar (model, task, split, attribution settings) and routes
to the pages in app_pages/ with st.navigation. Pages are thin: the work is in the mtprune library.

The page files are not in a folder named ``pages/``: Streamlit treats a ``pages/`` folder beside
the entry point as the old (v1) multipage layout and wraps the entry point in its own navigation
until st.navigation has run once (and under AppTest on every run, where the sidebar then vanishes
after the first rerun).
"""

import time

import streamlit as st

from ui import common

_t0 = time.perf_counter()

st.set_page_config(page_title="mtprune", page_icon=":material/content_cut:", layout="wide")

PAGES = {
    "Explore": [
        st.Page("app_pages/model.py", title="Model and task", icon=":material/memory:", default=True),
        st.Page("app_pages/heatmaps.py", title="Attribution heatmaps", icon=":material/grid_on:"),
        st.Page("app_pages/prune.py", title="Prune and evaluate", icon=":material/content_cut:"),
    ],
    "Compare": [
        st.Page("app_pages/overlap.py", title="Task overlap", icon=":material/join_inner:"),
        st.Page("app_pages/unseen.py", title="Unseen domains", icon=":material/travel_explore:"),
    ],
    "Share and learn": [
        st.Page("app_pages/export.py", title="Export", icon=":material/download:"),
        st.Page("app_pages/guide.py", title="Learn the method", icon=":material/school:"),
    ],
}

page = st.navigation(PAGES)
common.sidebar()
page.run()
st.session_state["_run_seconds"] = time.perf_counter() - _t0  # server time of this run (benchmark)
