"""A job cancelled midway in a real browser: `streamlit run app.py` in a subprocess, headless
Chromium through Playwright (as tests/test_browser.py). Evaluate all 872 sst2 rows on Prune and
evaluate, press the Cancel button under the job's progress bar while the dense model runs: one line
says it was cancelled, and nothing of it is on disk (no run, no history row, no half-written cache
file). Evaluate again and switch to another page while it runs: the Jobs panel in the sidebar shows
its progress and then that it is done; back on the page, the run is there, and its accuracies are
those the library measures itself, uncancelled."""

from __future__ import annotations

import re

import pytest

from tests.test_browser import SLOW, _idle, _metric, _nav, _shot, _title, browser, cache_dir, server  # noqa: F401

pytestmark = pytest.mark.browser

ROWS = 872  # sst2/validation: long enough to press Cancel while the dense model runs


def _files(folder, pattern: str) -> list:
    return sorted(p for p in folder.rglob(pattern) if p.is_file()) if folder.exists() else []


def test_a_cancelled_job_leaves_nothing_and_completes_on_a_second_try(server, browser, cache_dir):  # noqa: F811
    page = browser.new_page(viewport={"width": 1440, "height": 2200})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server}/prune?sb.examples=16&prune.ffn=60", timeout=60_000)
    page.get_by_role("heading", name="Prune and evaluate", exact=True).wait_for(timeout=SLOW)
    _idle(page)
    page.get_by_role("button", name="Compute attributions").click()
    evaluate = page.get_by_role("button", name="Evaluate on sst2/validation")
    evaluate.wait_for(timeout=SLOW)
    _idle(page)
    page.get_by_text("all rows", exact=True).first.click()
    _idle(page)

    # the first try: cancelled while the dense model runs
    evaluate.click()
    page.get_by_text(re.compile(rf"dense model \(1 of 2\) · [1-9][\d,]* / {ROWS:,} rows")).first.wait_for(timeout=SLOW)
    _shot(page, "jobs-1-running")
    page.get_by_role("button", name=re.compile(r"Cancel$")).first.click()
    said = page.get_by_text(re.compile(r"cancelled after \d+ s: nothing half-done was kept\. Press its button")).first
    said.wait_for(timeout=SLOW)
    _idle(page)
    _shot(page, "jobs-2-cancelled")
    assert page.locator('[data-testid="stMetricLabel"]', has_text="Pruned accuracy").count() == 0
    assert _files(cache_dir / "runs", "*") == []  # no run kept
    assert _files(cache_dir, "*.tmp") == []  # no half-written file anywhere in the cache
    history = _files(cache_dir / "history", "*.csv")
    assert not history or "ffn60" not in history[0].read_text()
    page.get_by_text("Your evaluations of this model will be listed here").wait_for()

    # the second try, left for another page while it runs: the Jobs panel follows it there
    evaluate.click()
    page.get_by_text(re.compile(rf"model \((1|2) of 2\) · [\d,]+ / {ROWS:,} rows")).first.wait_for(timeout=SLOW)
    page.locator('[data-testid="stSidebarNav"] a', has_text="Model and task").first.click()
    _title(page, "Model and task").wait_for(timeout=SLOW)
    side = page.locator('[data-testid="stSidebar"]')
    side.get_by_text("Jobs", exact=True).wait_for(timeout=SLOW)
    if side.locator('[data-testid="stProgress"]').count():  # still running (a fast machine may be done by now)
        _shot(page, "jobs-3-running-in-the-panel")
    side.get_by_text(re.compile(r"Evaluating ffn60 \(layer\) on sst2/validation \(all rows\): done in \d+ s")
                     ).wait_for(timeout=SLOW)
    _idle(page)
    _shot(page, "jobs-4-done-in-the-panel")
    _nav(page, "Prune and evaluate")
    page.locator('[data-testid="stMetricLabel"]', has_text="Pruned accuracy").wait_for(timeout=SLOW)
    dense, pruned = _metric(page, "Dense accuracy"), _metric(page, "Pruned accuracy")
    assert _metric(page, "Examples").replace(",", "") == str(ROWS)
    assert len(_files(cache_dir / "runs", "*.safetensors")) == 1  # the run, kept whole
    assert not errors, errors

    # the same result as the library's own evaluation, never cancelled
    from mtprune.attribution import AttributionSpec, lookup_cached
    from mtprune.checkpoints import load_adapter
    from mtprune.evaluation import evaluate as run_eval
    from mtprune.pipeline import choose_mask

    adapter = load_adapter("default", device="cpu")
    scores, _ = lookup_cached(adapter, AttributionSpec(task="sst2", method="ap", examples=16), cache_dir=cache_dir)
    mask = choose_mask(adapter, "sst2", scores, sparsity={"ffn": 0.6, "heads": 0.0}, scope="layer")
    assert f"{run_eval(adapter, 'sst2', 'validation').accuracy:.3f}" == dense
    assert f"{run_eval(adapter, 'sst2', 'validation', mask=mask, prune='auto').accuracy:.3f}" == pruned
