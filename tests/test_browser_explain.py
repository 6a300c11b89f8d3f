"""In a real browser (headless Chromium, as tests/test_browser.py): type a sentence on **Your own
sentences**, press Explain, and read the dense and the pruned model's predictions, the coloured
words and the unit table; an empty sentence is one error line and the page keeps working."""

from __future__ import annotations

import re
import time

import pytest

from tests.test_browser import SLOW, _idle, _metric, _nav, _number, _shot, _title, browser, cache_dir, server  # noqa: F401

pytestmark = pytest.mark.browser

TEXT = "The film was stupefying, an utterly <wonderful> mess."


def _explain(page, text: str) -> None:
    box = page.get_by_label("sentence", exact=True).first
    box.fill(text)
    box.press("Control+Enter")  # a text area commits on Ctrl+Enter (or when it loses focus)
    _idle(page)
    page.get_by_role("button", name="Explain", exact=True).click()
    _idle(page)


def test_type_a_sentence_and_see_both_predictions(server, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 2000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    t0 = time.time()
    page.goto(server, timeout=60_000)
    _title(page, "Model and task").wait_for(timeout=SLOW)
    _idle(page)
    page.locator('[data-testid="stExpander"] summary', has_text="Attribution settings").click()
    _number(page, "Examples", 16)

    _nav(page, "Your own sentences")
    page.get_by_role("button", name="Compute attributions").click()  # the Prune page's mask needs scores
    page.get_by_text(re.compile(r"the settings of Prune and evaluate")).first.wait_for(timeout=SLOW)
    _idle(page)
    _explain(page, TEXT)
    page.locator('[data-testid="stMetricLabel"]', has_text="Pruned model").wait_for(timeout=SLOW)
    _idle(page)
    dense, pruned = _metric(page, "Dense model"), _metric(page, "Pruned model")
    assert dense in ("negative", "positive") and pruned in ("negative", "positive")
    page.get_by_text(re.compile(r"^P 0\.\d{3}$")).first.wait_for()  # the dense model's probability
    moved = (rf"^P 0\.\d{{3}} \([+-]0\.\d{{3}} from dense\)$" if pruned == dense else
             rf"^P 0\.\d{{3}} · P\({dense}\) 0\.\d{{3}}, -0\.\d{{3}} from dense$")
    page.get_by_text(re.compile(moved)).first.wait_for()
    # the words, coloured, as typed (pieces joined; the user's angle brackets shown, not parsed)
    words = page.locator("span[title]", has_text="stupefying")
    assert words.count() == 1 and re.fullmatch(r"[+-]\d\.\d{4}", words.first.get_attribute("title"))
    assert page.locator("span[title]", has_text="<").count() == 1
    assert page.locator("wonderful").count() == 0  # no element made of the user's text
    page.get_by_text(re.compile(r"Units that carry P\((negative|positive)\), per layer")).wait_for()
    assert page.locator('[data-testid="stDataFrame"]').count() >= 2  # probabilities, units
    _shot(page, "explain-1-sentence")

    # an empty sentence: one line, and the page still answers
    _explain(page, "   ")
    alert = page.locator('[data-testid="stAlert"]', has_text="the sentence is empty")
    alert.wait_for(timeout=SLOW)
    assert alert.inner_text().strip().splitlines()[-1] == "the sentence is empty: type some text"
    _explain(page, "a gorgeous, witty film")
    page.locator('[data-testid="stMetricLabel"]', has_text="Pruned model").wait_for(timeout=SLOW)
    assert page.locator("span[title]", has_text="gorgeous").count() == 1
    _shot(page, "explain-2-again")
    assert not errors, errors
    assert time.time() - t0 < 300
