"""In a real browser (headless Chromium, as tests/test_browser.py): brushing the FFN map's overview
moves its window, a click in the window lands on the neuron aimed at, the drill-down links to the
unit's page, the link opens it (and a reload keeps it), and a unit id that does not exist is one
error line while the page keeps working. The task is cb (56 validation rows), attribution on 16
examples: a few seconds each."""

from __future__ import annotations

import re
import time

import pytest

from tests.test_browser import SLOW, _idle, _number, _select, _shot, browser, cache_dir, server  # noqa: F401

pytestmark = pytest.mark.browser


def _hover(page, plot, fx: float, fy: float) -> str:
    """The hover text at a point of a chart (fractions of its plot area)."""
    box = plot.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
    hover = page.locator(".hoverlayer .hovertext").first
    hover.wait_for(timeout=10_000)
    return " ".join(hover.locator("text").all_text_contents())


def test_a_click_picks_the_neuron_aimed_at_and_its_link_opens_the_unit_page(server, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 2000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    t0 = time.time()
    page.goto(f"{server}/heatmaps", timeout=60_000)
    page.get_by_role("heading", name="Attribution heatmaps", exact=True).wait_for(timeout=SLOW)
    _idle(page)
    _select(page, "Task", "cb: CommitmentBank, 3-way entailment")
    page.locator('[data-testid="stExpander"] summary', has_text="Attribution settings").click()
    _number(page, "Examples", 16)
    page.get_by_role("button", name="Compute attributions").click()
    page.get_by_text(re.compile(r"one cell per neuron \(click one\)")).first.wait_for(timeout=SLOW)
    _idle(page)
    # brush the overview (its toolbar's box select) from 10% to 13% of its width: the window follows
    overview = page.locator(".js-plotly-plot", has=page.get_by_text(re.compile("64 bins of about 24 neurons"))).first
    overview.hover()
    overview.locator('[data-title="Box Select"]').click()
    box = overview.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.10, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.13, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()
    page.get_by_text(re.compile(r"the window below now shows neurons \d+-\d+")).wait_for(timeout=SLOW)
    _idle(page)
    title = page.get_by_text(re.compile(r"encoder FFN neurons \d+-\d+: one cell per neuron")).first.text_content()
    first, last = map(int, re.search(r"neurons (\d+)-(\d+)", title).groups())
    assert abs(first - 0.10 * 1536) <= 2 and abs(last - 0.13 * 1536) <= 2, title
    # a click in the window lands on the cell aimed at
    fx, fy = 0.63, 0.42  # the middle of a cell of layer 2 (6 layers, top to bottom)
    n = last - first + 1
    window = page.locator(".js-plotly-plot", has=page.get_by_text(re.compile("one cell per neuron"))).first
    text = _hover(page, window, fx, fy)
    aimed, layer = re.search(r"neuron (\d+)", text).group(1), re.search(r"layer (\d)", text).group(1)
    assert (int(aimed), layer) == (int(first - 0.5 + fx * n + 0.5), "2"), text
    box = window.locator(".nsewdrag").first.bounding_box()
    assert box["width"] / n >= 10  # pixels per neuron: a click tells neighbours apart
    page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
    page.get_by_text(re.compile(rf"neuron {aimed} of layer {layer}\b")).first.wait_for(timeout=SLOW)
    _idle(page)
    _shot(page, "unit-1-window-click")

    # the drill-down's link opens the unit's page at its address
    uid = f"encoder.{layer}.ffn.{aimed}"
    page.get_by_role("link", name=re.compile(rf"Its page, {re.escape(uid)}")).click()
    page.get_by_role("heading", name=uid, exact=True).wait_for(timeout=SLOW)
    _idle(page)
    moved = re.compile(r"Switched off alone, .* moves P\(gold\) by [+-]0\.\d{4} \(95% ")
    page.get_by_text(moved).wait_for(timeout=SLOW)
    assert f"unit={uid}" in page.url
    assert page.get_by_text(re.compile(r"56 rows \([\d,]+ tokens\) of cb/validation, every row read")).count() == 1
    assert page.locator('[data-testid="stHtml"]').count() >= 1  # the rows where it fires, coloured
    _shot(page, "unit-2-page")

    # a reload keeps the unit (the address holds it)
    page.reload()
    page.get_by_role("heading", name=uid, exact=True).wait_for(timeout=SLOW)
    _idle(page)

    # a unit the model does not have: one line, and the page answers the next id
    box = page.get_by_label("Unit id", exact=True)
    box.fill("encoder.9.ffn.1")
    box.press("Enter")
    _idle(page)
    alert = page.locator('[data-testid="stAlert"]', has_text="this model has no unit encoder.9.ffn.1")
    alert.wait_for(timeout=SLOW)
    assert "encoder.0-5.ffn.0-1535" in alert.inner_text()
    box.fill(uid.replace(".ffn.", ".ffn[") + "]")  # as the drill-down prints it: read from the disk cache
    box.press("Enter")
    page.get_by_role("heading", name=uid, exact=True).wait_for(timeout=SLOW)
    _idle(page)
    assert page.locator('[data-testid="stAlert"]', has_text="this model has no unit").count() == 0
    assert not errors, errors
    assert time.time() - t0 < 300
