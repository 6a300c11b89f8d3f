"""End to end in a real browser: `streamlit run app.py` in a subprocess, driven by Playwright in
headless Chromium (Debian's /usr/bin/chromium; Playwright's own browser download is not used).

Open the app, pick sst2, compute attributions, open a unit's drill-down, move the sparsity slider,
evaluate, read the accuracy, its interval and the verdict, reload (settings and history stay),
compute a transfer matrix for three tasks, download the mask and the model. A second test runs two
browser sessions evaluating different masks at once. Screenshots go to artifacts/screenshots/
(git-ignored; CI keeps them as artifacts)."""

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
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser-cache")


@pytest.fixture(scope="module")
def server(tmp_path_factory, shared_home, cache_dir):
    """The dashboard on a free port, with its own score cache."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (scripts/test does it)")
    port = _free_port()
    env = dict(os.environ, MTPRUNE_CACHE=str(cache_dir), PYTHONUNBUFFERED="1")
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


def _until_evaluable(page) -> None:
    """On Prune and evaluate: compute the scores if the page asks for them (waiting for either
    button, since counting one while the script still runs could miss it), then wait for Evaluate."""
    either = re.compile(r"^(Compute attributions|Evaluate on sst2.validation)$")
    page.get_by_role("button", name=either).first.wait_for(timeout=SLOW)
    if page.get_by_role("button", name="Compute attributions").count():
        page.get_by_role("button", name="Compute attributions").click()
        _idle(page)
    page.get_by_role("button", name="Evaluate on sst2/validation").wait_for(timeout=SLOW)


def _title(page, name: str):
    """The page's own heading ``name`` (the sidebar has a "Model and task" heading too)."""
    return page.get_by_test_id("stMainBlockContainer").get_by_role("heading", name=name, exact=True)


def _nav(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    _title(page, title).wait_for(timeout=SLOW)
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
    _title(page, "Model and task").wait_for(timeout=SLOW)
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
    # a click on that cell opens the unit's drill-down
    unit = re.search(r"neuron (\d+)", text).group(1)
    page.mouse.click(box["x"] + box["width"] * 0.37, box["y"] + box["height"] * 0.4)
    page.get_by_text(re.compile(rf"neuron {unit} of layer \d")).first.wait_for(timeout=SLOW)
    _idle(page)
    page.get_by_text(re.compile(r"Switched off alone, it moves P\(gold\)")).first.wait_for(timeout=SLOW)
    assert "unit=encoder.ffn" in page.url
    _shot(page, "2b-unit-drill-down")

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
    page.get_by_text(re.compile(r"95% interval 0\.\d{3}-[01]\.\d{3} · 32 rows")).first.wait_for()
    verdict = page.get_by_text(re.compile(r"McNemar p = ")).first.inner_text()
    assert verdict.startswith(("No measurable change", "Pruned is lower", "Pruned is higher")), verdict
    page.get_by_text("Which examples changed").wait_for()
    _shot(page, "4-evaluated")
    address = page.url  # the settings live in it
    assert "prune.ffn=70" in address, address

    # export: download the mask
    _nav(page, "Export")
    with page.expect_download(timeout=60_000) as dl:
        page.get_by_role("button", name="Mask (JSON)").click()
    path = SHOTS.parent / dl.value.suggested_filename
    dl.value.save_as(str(path))
    assert dl.value.suggested_filename == "minilm-l6-mt6-sst2-ap-ffn70.mask.json"  # model, task, method, mask
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
    page.get_by_role("button", name="Build the hard-pruned model").click()  # a job, then its download
    page.get_by_role("button", name="Hard-pruned model (zip)").wait_for(timeout=SLOW)
    with page.expect_download(timeout=SLOW) as dl:
        page.get_by_role("button", name="Hard-pruned model (zip)").click()
    zpath = tmp_path / dl.value.suggested_filename  # ~40 MB: not kept
    dl.value.save_as(str(zpath))
    import zipfile

    name = "minilm-l6-mt6-sst2-ap-ffn70"  # model, task, method, mask (no repair asked)
    assert dl.value.suggested_filename == f"{name}.zip"
    with zipfile.ZipFile(zpath) as z:
        cfg = json.loads(z.read(f"{name}/config.json"))
        card = z.read(f"{name}/README.md").decode()
        assert f"{name}/heads.safetensors" not in z.namelist()  # sst2's head alone, as a stock classifier
    assert cfg["mtprune_pruned"]["sizes"]["encoder.0.ffn"] == 461  # 70 % of 1536 gone
    assert cfg["architectures"] == ["BertForSequenceClassification"] and len(cfg["id2label"]) == 2
    m = cfg["mtprune_pruned"]["measured"]["sst2"]  # what was measured on it, never the dense model's figure
    assert m["rows"] == 32 and round(m["accuracy"], 3) == pruned and f"{pruned:.3f}" in card
    # the same mask as ONNX: a graph and its description, named after the model, task, method and mask
    page.get_by_role("button", name="Build the pruned model as ONNX").click()
    page.get_by_role("button", name="Pruned model as ONNX (zip)").wait_for(timeout=SLOW)
    with page.expect_download(timeout=SLOW) as dl:
        page.get_by_role("button", name="Pruned model as ONNX (zip)").click()
    opath = tmp_path / dl.value.suggested_filename
    dl.value.save_as(str(opath))
    assert dl.value.suggested_filename == f"{name}-onnx.zip"
    with zipfile.ZipFile(opath) as z:
        desc = json.loads(z.read(f"{name}-onnx/mtprune_onnx.json"))
        assert z.getinfo(f"{name}-onnx/model.onnx").file_size > 1e6
    assert desc["task"] == "sst2" and desc["check"]["max_logit_difference"] < 1e-4
    assert desc["pruned"]["sizes"]["encoder.0.ffn"] == 461
    _shot(page, "5-export")
    # a reload keeps the settings (they are in the address) and the run history (on disk)
    page.goto(address, timeout=60_000)
    page.get_by_role("heading", name="Prune and evaluate", exact=True).wait_for(timeout=SLOW)
    _idle(page)
    assert _metric(page, "encoder FFN neurons kept") == "2,766 / 9,216"
    page.get_by_role("heading", name="Run history").wait_for()
    page.get_by_text(re.compile(r"Every evaluation of this model on this page \(1 in all")).wait_for()
    _shot(page, "6-reloaded")

    # the transfer matrix of three tasks
    page.goto(f"{server}/overlap?sb.examples=32&overlap.tasks=sst2&overlap.tasks=rte&overlap.tasks=cb",
              timeout=60_000)
    page.get_by_role("heading", name="Task overlap", exact=True).wait_for(timeout=SLOW)
    # either the button that computes the missing scores or the page's second part, whichever
    # the run draws (counting the button while the script still runs could miss it)
    compute = page.get_by_role("button", name=re.compile(r"Compute them"))
    transfer = page.get_by_role("heading", name="Does one task's mask serve another?")
    compute.or_(transfer).first.wait_for(timeout=SLOW)
    if compute.count():
        compute.click()
        _idle(page)
    transfer.wait_for(timeout=SLOW)
    _number(page, "Examples per task", 16)
    page.get_by_role("button", name=re.compile(r"Compute the transfer matrix")).click()
    page.get_by_text(re.compile(r"with each task's mask \(rows\)")).first.wait_for(timeout=SLOW)
    _idle(page)
    _shot(page, "7-transfer")

    assert not errors, errors
    print(f"end to end in {time.time() - t0:.0f} s; dense {dense:.3f}, pruned {pruned:.3f}")


def test_two_sessions_evaluate_at_once(server, browser, cache_dir, default_adapter):
    """Two browser sessions evaluate different masks on the one shared model at the same time:
    each gets its own, correct result, and the run history keeps both rows."""
    from mtprune.attribution import AttributionSpec, attribute_cached
    from mtprune.evaluation import evaluate
    from mtprune.history import RunHistory
    from mtprune.masks import mask_from_scores

    pages = []
    for ffn in (30, 90):
        ctx = browser.new_context(viewport={"width": 1440, "height": 2000})
        page = ctx.new_page()
        page.goto(f"{server}/prune?sb.examples=32&prune.ffn={ffn}&prune.limit=24", timeout=60_000)
        page.get_by_role("heading", name="Prune and evaluate", exact=True).wait_for(timeout=SLOW)
        _until_evaluable(page)
        pages.append((ffn, page))
    for _, page in pages:  # both at once: the second waits for the model's lock
        page.get_by_role("button", name="Evaluate on sst2/validation").click()
    got = {}
    for ffn, page in pages:
        page.locator('[data-testid="stMetricLabel"]', has_text="Pruned accuracy").wait_for(timeout=SLOW)
        _idle(page)
        got[ffn] = float(_metric(page, "Pruned accuracy"))
        _shot(page, f"8-concurrent-ffn{ffn}")
    # the same masks, evaluated here by the library
    with_env = os.environ.get("MTPRUNE_CACHE")
    os.environ["MTPRUNE_CACHE"] = str(cache_dir)
    try:
        scores, _, _ = attribute_cached(default_adapter, AttributionSpec(task="sst2", examples=32))
    finally:
        if with_env is None:
            os.environ.pop("MTPRUNE_CACHE")
        else:
            os.environ["MTPRUNE_CACHE"] = with_env
    for ffn, acc in got.items():
        mask = mask_from_scores(scores, {"ffn": ffn / 100, "heads": 0.0}, scope="layer")
        want = evaluate(default_adapter, "sst2", "validation", limit=24, mask=mask).accuracy
        assert acc == pytest.approx(want, abs=5e-4), (ffn, acc, want)
    history = RunHistory.for_model(default_adapter.fingerprint(), cache_dir).load()
    rows = history[history["rows"] == 24]
    assert set(rows["how"]) >= {"ffn30 (layer)", "ffn90 (layer)"} and rows["session"].nunique() == 2
