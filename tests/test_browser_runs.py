"""A run reopened in a real browser: `streamlit run app.py` in a subprocess, headless Chromium
through Playwright (as tests/test_browser.py). Evaluate on Prune and evaluate, reload the page:
the whole panel is back; open the run's bare address in a new browser session (a shared link):
the same panel, read from disk; a second run compared with the first from their address."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest

from tests.test_browser import (SLOW, _idle, _metric, _shot, _until_evaluable, browser, cache_dir,  # noqa: F401
                                server)

pytestmark = pytest.mark.browser


def _open(page, url: str) -> None:
    page.goto(url, timeout=60_000)
    page.get_by_role("heading", name="Prune and evaluate", exact=True).wait_for(timeout=SLOW)
    _idle(page)


def test_a_run_reopens_after_a_reload_and_from_its_link(server, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1440, "height": 2200})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _open(page, f"{server}/prune?sb.examples=16&prune.ffn=70&prune.limit=16")
    _until_evaluable(page)
    page.get_by_role("button", name="Evaluate on sst2/validation").click()
    page.locator('[data-testid="stMetricLabel"]', has_text="Pruned accuracy").wait_for(timeout=SLOW)
    _idle(page)
    dense, pruned = _metric(page, "Dense accuracy"), _metric(page, "Pruned accuracy")
    run = parse_qs(urlparse(page.url).query)["run"][0]
    assert re.fullmatch(r"[0-9a-f]{12}", run), page.url

    # a reload: the same address, the whole panel back
    page.reload(timeout=60_000)
    page.locator('[data-testid="stMetricLabel"]', has_text="Pruned accuracy").wait_for(timeout=SLOW)
    _idle(page)
    assert (_metric(page, "Dense accuracy"), _metric(page, "Pruned accuracy")) == (dense, pruned)
    page.get_by_text(re.compile(r"McNemar p = ")).first.wait_for()
    page.get_by_text("Which examples changed").wait_for()
    _shot(page, "runs-1-reloaded")

    # the run's bare address in another browser session: the sliders at their defaults, the run's panel
    other = browser.new_context(viewport={"width": 1440, "height": 2200}).new_page()
    other.on("pageerror", lambda exc: errors.append(str(exc)))
    _open(other, f"{server}/prune?sb.examples=16&run={run}")
    other.locator('[data-testid="stMetricLabel"]', has_text="Pruned accuracy").wait_for(timeout=SLOW)
    _idle(other)
    assert (_metric(other, "Dense accuracy"), _metric(other, "Pruned accuracy")) == (dense, pruned)
    other.get_by_text(re.compile(rf"Run {run}")).first.wait_for()
    other.get_by_text("This run's mask is not the one the settings above make now", exact=False).wait_for()
    assert _metric(other, "encoder FFN neurons kept") == "4,608 / 9,216"  # the sliders' own mask: 50 %
    _shot(other, "runs-2-shared-link")

    # a link to a run that is not there: one line, the page still works
    _open(other, f"{server}/prune?sb.examples=16&run=0123456789ab")
    other.get_by_text(re.compile(r"there is no run 0123456789ab of this model")).wait_for(timeout=SLOW)
    assert other.locator('[data-testid="stAlertContentError"]').count() == 1
    assert "run=" not in other.url

    # a second run (another mask, the same rows), then the two compared from their address
    _open(other, f"{server}/prune?sb.examples=16&prune.ffn=30&prune.limit=16")
    other.get_by_role("button", name="Evaluate on sst2/validation").click()
    other.locator('[data-testid="stMetricLabel"]', has_text="Pruned accuracy").wait_for(timeout=SLOW)
    _idle(other)
    second = parse_qs(urlparse(other.url).query)["run"][0]
    assert second != run
    _open(other, f"{server}/prune?sb.examples=16&compare={run},{second}")
    other.get_by_role("heading", name="Compare two runs").wait_for(timeout=SLOW)
    other.get_by_text(re.compile(r"Where they differ · \d+ of 16 rows")).wait_for(timeout=SLOW)
    other.get_by_text(re.compile(r"units differ\)")).first.wait_for(timeout=SLOW)
    _shot(other, "runs-3-compared")
    assert not errors, errors
