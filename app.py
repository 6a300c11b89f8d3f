"""The mtprune dashboard: `streamlit run app.py`.

This entry point draws the shared sidebar (model, task, split, attribution settings) and routes
to the pages in app_pages/ with st.navigation. Every page file declares itself with a literal
``PAGE = {"section": ..., "title": ..., "icon": ..., "order": ...}``, read here without running
the page: a new page is one new file. Pages are thin: the work is in the mtprune library.

The page files are not in a folder named ``pages/``: Streamlit treats a ``pages/`` folder beside
the entry point as the old (v1) multipage layout and wraps the entry point in its own navigation
until st.navigation has run once (and under AppTest on every run, where the sidebar then vanishes
after the first rerun).
"""

import ast
import time
from pathlib import Path

import streamlit as st

from ui import jobs as J
from ui import session as S

_t0 = time.perf_counter()

st.set_page_config(page_title="mtprune", page_icon=":material/content_cut:", layout="wide")


@st.cache_data(show_spinner=False)
def page_table() -> list[dict]:
    """Every page's declaration, in order: ``{"path", "section", "title", "icon", "order", "default"}``."""
    out = []
    for f in sorted((Path(__file__).parent / "app_pages").glob("*.py")):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PAGE" for t in node.targets):
                out.append({"path": f"app_pages/{f.name}", "default": False, **ast.literal_eval(node.value)})
    return sorted(out, key=lambda p: p["order"])


sections: dict[str, list] = {}
for p in page_table():
    sections.setdefault(p["section"], []).append(
        st.Page(p["path"], title=p["title"], icon=p["icon"], default=p["default"]))
page = st.navigation(sections)
S.sidebar()
try:
    page.run()
finally:  # after the page (which may stop early): the jobs it started are listed, none it waits on is drawn twice
    J.panel()  # the Jobs panel at the foot of the sidebar: long work of every page, with Cancel
st.session_state["_run_seconds"] = time.perf_counter() - _t0  # server time of this run (benchmark)
