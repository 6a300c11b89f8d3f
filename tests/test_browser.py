"""End to end in a real browser: `streamlit run app.py` in a subprocess, driven by Playwright in
headless Chromium (Debian's /usr/bin/chromium; Playwright's own browser download is not used).

Open the app, pick sst2, compute attributions, move the sparsity slider, evaluate, read the
accuracy, download the mask. Screenshots go to artifacts/screenshots/ (git-ignored)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SLOW = 180_000  # ms: loading the model, attributing, evaluating on a shared CPU


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, shared_home):
    """The dashboard on a free port, with its own score cache."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/test does it)")
    port = _free_port()
    env = dict(os.environ, MTPRUNE_CACHE=str(tmp_path_factory.mktemp("browser-cache")),
               PYTHONUNBUFFERED="1")
    log = open(tmp_path_factory.mktemp("streamlit-log") / "streamlit.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("streamlit did not answer on /_stcore/health within 60 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.seek(0)
    text = log.read()
    log.close()
    assert "Traceback" not in text, text[-3000:]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _idle(page, timeout=SLOW) -> None:
    """Wait until the script run is over (Streamlit shows a status widget while running)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def _nav(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=SLOW)
    _idle(page)


def _metric(page, label: str) -> str:
    m = page.locator('[data-testid="stMetric"]', has=page.locator('[data-testid="stMetricLabel"]', has_text=label))
    return m.first.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _select(page, label: str, option: str) -> None:
    box = page.locator('[data-testid="stSelectbox"]', has=page.get_by_text(label, exact=True)).first
    box.click()
    page.get_by_role("option", name=option).first.click()
    _idle(page)


def _number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True).first
    field.fill(str(value))
    field.press("Enter")
    _idle(page)


def test_end_to_end(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 2200}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    t0 = time.time()
    page.goto(server, timeout=60_000)
    page.get_by_role("heading", name="Model and task", exact=True).wait_for(timeout=SLOW)
    page.get_by_text("22.7M parameters").first.wait_for(timeout=SLOW)
    _idle(page)

    # pick sst2 and a small attribution sample
    _select(page, "Task", "mrpc: paraphrase detection")
    page.get_by_role("heading", name="Task: mrpc").wait_for()
    _select(page, "Task", "sst2: movie review sentiment")
    page.get_by_role("heading", name="Task: sst2").wait_for()
    page.locator('[data-testid="stExpander"] summary', has_text="Attribution settings").click()
    _number(page, "Examples", 32)
    _shot(page, "1-model")

    # attribution heatmaps, computed with a progress bar
    _nav(page, "Attribution heatmaps")
    page.get_by_role("button", name="Compute attributions").click()
    page.locator(".js-plotly-plot").first.wait_for(timeout=SLOW)
    _idle(page)
    page.get_by_text(re.compile(r"Scores computed in")).wait_for()
    assert page.locator(".js-plotly-plot").count() >= 2
    # the hover names the layer, the unit, its score and its rank (read from typed-array customdata)
    heat = page.locator(".js-plotly-plot .nsewdrag").first
    box = heat.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.37, box["y"] + box["height"] * 0.4)
    hover = page.locator(".hoverlayer .hovertext").first
    hover.wait_for(timeout=10_000)
    text = " ".join(hover.locator("text").all_text_contents())
    assert re.search(r"layer \d", text) and re.search(r"neuron \d+", text), text
    assert re.search(r"score \d", text) and re.search(r"rank \d+ in layer", text), text
    _shot(page, "2-heatmaps")

    # prune: move the slider, the mask and the counts follow
    _nav(page, "Prune and evaluate")
    assert _metric(page, "encoder FFN neurons kept") == "4,608 / 9,216"
    thumb = page.get_by_role("slider").first
    thumb.focus()
    for _ in range(4):  # 50 % -> 70 %
        thumb.press("ArrowRight")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')]"
        ".some(e => e.innerText.includes('2,766 / 9,216'))", timeout=30_000)
    _idle(page)
    _shot(page, "3-prune")

    # evaluate the pruned model on 32 validation rows
    _number(page, "Evaluation examples", 32)
    page.get_by_role("button", name="Evaluate on sst2/validation").click()
    page.locator('[data-testid="stMetricLabel"]', has_text="Pruned accuracy").wait_for(timeout=SLOW)
    _idle(page)
    dense, pruned = float(_metric(page, "Dense accuracy")), float(_metric(page, "Pruned accuracy"))
    assert 0.6 <= dense <= 1.0 and 0.0 <= pruned <= 1.0
    assert _metric(page, "Examples") == "32"
    _shot(page, "4-evaluated")

    # export: download the mask
    _nav(page, "Export")
    with page.expect_download(timeout=60_000) as dl:
        page.get_by_role("button", name="Mask (JSON)").click()
    path = SHOTS.parent / dl.value.suggested_filename
    dl.value.save_as(str(path))
    mask = json.loads(path.read_text())
    assert mask["format"] == "mtprune mask v1"
    assert mask["meta"]["sparsity_per_kind"]["ffn"] == pytest.approx(0.7)
    assert sum(len(layer) for layer in mask["keep"]["encoder.ffn"]) == 2766
    # the chart as PNG (kaleido renders it through the same chromium) and the hard-pruned model
    with page.expect_download(timeout=SLOW) as dl:
        page.get_by_role("button", name="PNG", exact=True).click()
    png = SHOTS.parent / dl.value.suggested_filename
    dl.value.save_as(str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with page.expect_download(timeout=SLOW) as dl:
        page.get_by_role("button", name="Hard-pruned model (zip)").click()
    zpath = tmp_path / dl.value.suggested_filename  # ~40 MB: not kept
    dl.value.save_as(str(zpath))
    import zipfile

    with zipfile.ZipFile(zpath) as z:
        cfg = json.loads(z.read("pruned/config.json"))
    assert cfg["mtprune_pruned"]["sizes"]["encoder.0.ffn"] == 461  # 70 % of 1536 gone
    _shot(page, "5-export")
    assert not errors, errors
    print(f"end to end in {time.time() - t0:.0f} s; dense {dense:.3f}, pruned {pruned:.3f}")
