"""The dashboard in a real browser: Python Playwright drives Debian's Chromium against
`trainlab dashboard` on a temporary runs folder. It starts a run from the Train page, watches the
live chart grow, sees a run started in a terminal appear live, compares the two, clicks a cell of
the confusion matrix, draws a digit with the mouse, and saves a screenshot of each page
(to $TRAINLAB_SCREENSHOTS when set: the README's pictures come from here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import playwright.sync_api as playwright_api
import pytest
from conftest import MNIST_TINY
from helpers import free_port

CHROMIUM = "/usr/bin/chromium"


def ensure_chromium() -> None:
    if not Path(CHROMIUM).exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium here and none could be installed (apt-get install chromium)")


# a small MNIST CNN that trains for ~10 s here: long enough to watch its chart grow
LIVE_OVERRIDES = {"data.limit_train": 12000, "data.limit_test": 1000, "epochs": 2}  # live for a few seconds
TERMINAL_RECIPE = {**MNIST_TINY, "name": "terminal-mlp", "optimizer": {"name": "sgd", "lr": 0.01}, "batch_size": 8, "epochs": 30,
                   "data": {**MNIST_TINY["data"], "limit_train": 6000, "limit_test": 1000}}


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, data_dir):
    ensure_chromium()
    runs = tmp_path_factory.mktemp("dash") / "runs"
    port = free_port()
    env = {**os.environ, "TRAINLAB_DATA": str(data_dir), "TRAINLAB_RUNS": str(runs), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "trainlab", "dashboard", "--port", str(port), "--no-browser"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"the dashboard did not start: {proc.stdout.read()}")
    yield url, runs, env
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def page(dashboard):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                    "--disable-background-networking"])
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        yield pg
        browser.close()
        assert errors == []


def shoot(page, name: str, tmp_path_factory) -> None:
    folder = Path(os.environ.get("TRAINLAB_SCREENSHOTS") or tmp_path_factory.getbasetemp() / "screens")
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"dashboard-{name}.png"), full_page=name not in ("train",))


def points(page) -> int:
    return int(page.get_attribute("#loss-chart", "data-points") or 0)


def test_the_lesson_in_the_browser(dashboard, page, tmp_path_factory):
    url, runs, env = dashboard
    # 1-2. open the dashboard, start a small CNN from the Train page's generated form
    page.goto(url + "#/train")
    page.wait_for_selector("#f-data-limit_train")
    page.select_option("#preset", "mnist-tfjs-cnn")
    page.wait_for_function("document.querySelector('#f-epochs').value === '1'")
    for key, value in LIVE_OVERRIDES.items():
        page.fill(f"#f-{key.replace('.', '-')}", str(value))
    page.fill("#f-optimizer-lr", "-1")
    page.click("#start")
    page.wait_for_function("document.querySelector('#train-error').textContent.includes('optimizer.lr')")
    page.fill("#f-optimizer-lr", "0.001")
    shoot(page, "train", tmp_path_factory)
    page.click("#start")
    page.wait_for_url("**/#/run/*", timeout=60_000)
    live_id = page.url.rsplit("/", 1)[1]
    # 3. the live chart's point count grows while it trains, and the progress text moves
    page.wait_for_function("Number(document.querySelector('#loss-chart').dataset.points || 0) > 2", timeout=60_000)
    first, text1 = points(page), page.inner_text("#progress-text")
    page.wait_for_timeout(1500)
    second, text2 = points(page), page.inner_text("#progress-text")
    assert second > first and text1 != text2 and "Training... (" in text2
    shoot(page, "run-live", tmp_path_factory)
    # the one-epoch lesson ends with its validation point drawn, and the results name it
    page.wait_for_selector("#run-status.completed", timeout=120_000)
    page.wait_for_function("Number(document.querySelector('#acc-chart').dataset.valPoints || 0) >= 1", timeout=10_000)
    assert page.inner_text("#final-val-acc").strip() not in ("", "–")
    # 4. a run started in a terminal appears live on the Runs page
    recipe = runs.parent / "terminal.yaml"
    recipe.write_text(json.dumps(TERMINAL_RECIPE))
    term = subprocess.Popen([sys.executable, "-m", "trainlab", "train", str(recipe), "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    page.goto(url + "#/runs")
    row = page.wait_for_selector("tr:has-text('terminal-mlp'):has(.status.running)", timeout=60_000)
    page.wait_for_selector("tr:has-text('terminal-mlp') .bar", timeout=30_000)
    shoot(page, "runs-live", tmp_path_factory)
    term_id = row.get_attribute("data-id")
    # Stop on its Run page ends the terminal's training as Ctrl-C does; Resume continues it as a job
    page.goto(url + f"#/run/{term_id}")
    page.wait_for_selector("#stop-btn:not([hidden])")
    page.click("#stop-btn")
    assert term.wait(60) == 130, term.stderr.read()
    page.wait_for_selector("#resume-btn:not([hidden])", timeout=30_000)
    assert "interrupted" in page.inner_text("#run-status")
    page.click("#resume-btn")
    page.goto(url + "#/runs")
    page.wait_for_selector(f"tr[data-id='{live_id}']:has(.status.completed)", timeout=120_000)
    page.wait_for_selector(f"tr[data-id='{term_id}']:has(.status.completed)", timeout=120_000)
    page.goto(url + f"#/run/{live_id}")
    page.wait_for_function("document.querySelector('#progress-text').textContent.includes('test accuracy')", timeout=30_000)
    assert float(page.inner_text("#test-acc")) > 0.8
    from trainlab.system.cpus import native_bf16  # the CNN trains in bf16-mixed where the CPU multiplies bf16 in hardware
    assert f"precision\t{'bf16-mixed' if native_bf16() else 'fp32'}" in page.inner_text("#results")
    assert page.get_attribute("#report-link", "href") == f"/api/v1/report?runs={live_id}"
    shoot(page, "run", tmp_path_factory)
    # 5. compare the two
    page.goto(url + "#/runs")
    page.wait_for_selector(f"tr[data-id='{term_id}'] .pick")
    page.check(f"tr[data-id='{live_id}'] .pick")
    page.check(f"tr[data-id='{term_id}'] .pick")
    page.click("#compare-btn")
    page.wait_for_selector("#cmp-diff table")
    diff = page.inner_text("#cmp-diff")
    assert "optimizer.name" in diff and "sgd" in diff and "rmsprop" in diff
    assert int(page.get_attribute("#cmp-vacc", "data-points")) == 30
    shoot(page, "compare", tmp_path_factory)
    with page.expect_download() as download:  # the report of both, as one HTML file
        page.click("#report-link")
    saved = Path(download.value.path()).read_text()
    assert download.value.suggested_filename == "report-2-runs.html" and live_id in saved and term_id in saved
    # 6. the confusion matrix: click the most frequent mistake, see its images
    page.goto(url + f"#/errors/{live_id}")
    page.wait_for_selector(".heat td[data-t]")
    cells = page.eval_on_selector_all(".heat td[data-t]", "tds => tds.map(td => [td.dataset.t, td.dataset.p, +td.textContent])")
    t, p, _ = max((c for c in cells if c[0] != c[1]), key=lambda c: c[2])
    page.click(f".heat td[data-t='{t}'][data-p='{p}']")
    page.wait_for_selector("#cell figure img")
    assert page.locator("#cell figure").count() >= 1
    shoot(page, "errors", tmp_path_factory)
    # the Data page: sample images with class names
    page.goto(url + "#/data/mnist")
    page.wait_for_selector("#samples figure")
    assert page.locator("#samples figure").count() == 40
    shoot(page, "data", tmp_path_factory)
    # 7. draw a 7 with the mouse on the Try-it page, read back the prediction
    page.goto(url + f"#/try/{live_id}")
    page.wait_for_selector("#canvas")
    draw_digit(page, 7)
    page.wait_for_function("document.querySelector('#pred-name').textContent !== '–'", timeout=30_000)
    assert page.inner_text("#pred-name").split()[0] in [str(d) for d in range(10)]
    assert page.locator(".probs .p").count() == 5 and page.get_attribute("#seen", "src").startswith("data:image/png")
    shoot(page, "try", tmp_path_factory)


def draw_digit(page, digit: int, seed: int = 3) -> None:
    """Trace one of trainlab.data.handwriting's strokes for `digit` with mouse events on the canvas."""
    from trainlab.data.handwriting import digit_strokes, mouse_path
    rng = np.random.default_rng(seed)
    box = page.locator("#canvas").bounding_box()
    for stroke in digit_strokes(digit, rng):
        path = mouse_path(stroke, rng, canvas=int(box["width"]))
        page.mouse.move(box["x"] + path[0][0], box["y"] + path[0][1])
        page.mouse.down()
        for x, y in path[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y)
        page.mouse.up()


NARROW_PAGES = ["#/runs", "#/train", "#/compare", "#/data/mnist", "#/health", "#/errors", "#/try", "#/studies", "#/run/{run}",
                "#/compare/{run},{other}"]


def test_a_phone_sized_window_never_scrolls_sideways(dashboard, page, tmp_path_factory):
    """At a phone's 390 x 844 every page fits its width (wide tables scroll inside their card; charts
    shrink to their box), the report file too, and the long Train form keeps Start on screen."""
    url, runs, _ = dashboard
    ids = sorted(p.name for p in runs.iterdir() if (p / "run.json").is_file())
    page.set_viewport_size({"width": 390, "height": 844})
    for route in NARROW_PAGES:
        if "{run}" in route and len(ids) < 2:
            continue
        page.goto(url + route.format(run=ids[-1] if ids else "", other=ids[0] if ids else ""))
        page.wait_for_selector("main h1")
        page.wait_for_timeout(500)
        wide = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
        culprits = page.evaluate("""[...document.querySelectorAll('body, body *')].filter(e =>
            e.getBoundingClientRect().width > window.innerWidth + 1).slice(0, 6).map(e =>
            e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().width))""")
        assert wide <= 1, f"{route}: the page is {wide} px wider than the window: {culprits}"
        if route.startswith("#/run/"):
            shoot(page, "phone-run", tmp_path_factory)
        if route.startswith("#/compare/"):
            shoot(page, "phone-compare", tmp_path_factory)
    if ids:  # the report file, opened on the phone
        report = runs.parent / "report.html"
        report.write_bytes(urllib.request.urlopen(url + f"api/v1/report?runs={ids[-1]}", timeout=60).read())
        page.goto(report.as_uri())
        page.wait_for_selector("#charts .uplot")
        assert page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth") <= 1
        shoot(page, "phone-report", tmp_path_factory)
    page.goto(url + "#/train")
    page.wait_for_selector("#f-data-limit_train")
    box = page.locator("#start").bounding_box()
    assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= 844, box
    shoot(page, "narrow-train", tmp_path_factory)
    # a list field that is not JSON is refused before anything is sent, naming the field
    page.fill("#f-model-layers", "[{")
    page.click("#start")
    page.wait_for_function("document.querySelector('#train-error').textContent.includes('model.layers: not valid JSON')")


def test_data_health_relabels_an_image_into_the_corrections_file(dashboard, page, tmp_path_factory):
    """The Data health page: a check runs as a job, its suspects show with their images, and
    Relabel saves the decision to <runs>/corrections/mnist.yaml (the dataset's files untouched)."""
    import yaml
    url, runs, _ = dashboard
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(url + "#/health")
    page.wait_for_selector("#h-start")
    page.select_option("#h-ds", "mnist")
    page.select_option("#h-split", "test")
    page.fill("#h-folds", "2")
    page.fill("#h-limit", "400")
    page.click("#h-start")
    try:
        page.wait_for_selector(".suspect", timeout=120_000)
    except playwright_api.TimeoutError:
        pytest.fail(f"no suspects shown: {page.inner_text('main')[:800]}")
    card = page.locator(".suspect").first
    split, index = card.get_attribute("data-split"), int(card.get_attribute("data-index"))
    card.locator("[data-label]").select_option("3")
    card.locator("[data-act=relabel]").click()
    page.wait_for_function("document.querySelector('.suspect .decided').textContent.includes('relabeled 3')")
    shoot(page, "health", tmp_path_factory)
    saved = yaml.safe_load((runs / "corrections" / "mnist.yaml").read_text())
    assert saved["dataset"] == "mnist"
    assert saved["corrections"][-1] | {"when": None} == {"split": split, "index": index, "action": "relabel", "label": "3",
                                                         "when": None}


PRUNE_SPACE = "objective: val_acc\nparams:\n  optimizer.lr: {choice: [0.01, 1.0e-7]}\n"
# RandomSampler(seed=294) draws lr 0.01 three times then 1e-7 in worker 0 (seed 294) and in worker 1
# (seed 295): each 1e-7 trial starts after its worker's three complete ones, so the median pruner
# (3 startup trials) cuts it, whatever the timing of the two workers


def test_a_search_from_the_cli_grows_on_the_study_page(dashboard, page, tmp_path_factory):
    """`trainlab tune --jobs 2` in a terminal: its Study page's table, history and parallel coordinates
    grow while it runs, a pruned trial's intermediate curve is cut short, and Train this recipe
    starts a dashboard job that completes."""
    url, runs, env = dashboard
    page.set_viewport_size({"width": 1280, "height": 900})
    folder = runs.parent
    (folder / "space.yaml").write_text(PRUNE_SPACE)
    (folder / "prune.yaml").write_text(json.dumps({**MNIST_TINY, "name": "prune-me", "epochs": 3,
                                                   "data": {**MNIST_TINY["data"], "limit_train": 6000}}))
    page.goto(url + "#/study/browser-search")
    tune = subprocess.Popen([sys.executable, "-m", "trainlab", "tune", str(folder / "prune.yaml"), "--space", str(folder / "space.yaml"),
                             "--trials", "8", "--jobs", "2", "--sampler", "random", "--seed", "294", "--study", "browser-search",
                             "--no-plots"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        page.wait_for_function("document.querySelectorAll('#trials tr[data-state=complete]').length >= 1", timeout=120_000)
        first = page.locator("#trials tr[data-state]").count()
        lines_first = int(page.get_attribute("#parcoords", "data-lines") or 0)
        hist_first = int(page.get_attribute("#history-chart", "data-points") or 0)
        page.wait_for_function("document.querySelectorAll('#trials tr[data-state=complete]').length >= 6", timeout=180_000)
        assert page.locator("#trials tr[data-state]").count() >= max(first, 6)
        assert int(page.get_attribute("#parcoords", "data-lines")) > lines_first
        assert int(page.get_attribute("#history-chart", "data-points")) > hist_first
        out, err = tune.communicate(timeout=300)
        assert tune.returncode == 0, err
    finally:
        if tune.poll() is None:
            tune.kill()
    page.wait_for_function("document.querySelectorAll('#trials tr[data-state=pruned]').length === 2", timeout=30_000)
    cut = [int(n) for n in page.get_attribute("#steps-chart", "data-pruned").split(",")]
    assert len(cut) == 2 and all(n < 3 for n in cut)  # the pruned curves end early; complete ones have 3 epochs
    page.wait_for_selector("#importances")
    shoot(page, "study", tmp_path_factory)
    page.click("#show-best")
    assert "prune-me-tuned" in page.inner_text("#best-yaml")
    page.click("#train-best")
    page.wait_for_function("document.querySelector('#best-status').dataset.job", timeout=30_000)
    job = page.get_attribute("#best-status", "data-job")
    deadline = time.time() + 180
    while True:
        state = json.loads(urllib.request.urlopen(url + f"api/v1/jobs/{job}", timeout=10).read())["state"]
        if state not in ("queued", "starting", "running") or time.time() > deadline:
            break
        time.sleep(0.5)
    assert state == "completed"
    page.goto(url + "#/studies")
    page.wait_for_selector("#studies tr:has-text('browser-search')")


def test_a_run_beside_a_busy_program_shows_it_on_its_run_page(dashboard, page, tmp_path_factory):
    """A run trained in a terminal while another program keeps a CPU busy (started once the run sends
    its first sample): its Run page charts the other program's load and the run's own share."""
    url, runs, env = dashboard
    recipe = runs.parent / "busy.yaml"
    recipe.write_text(json.dumps({**TERMINAL_RECIPE, "name": "beside-busy", "epochs": 8}))
    term = subprocess.Popen([sys.executable, "-m", "trainlab", "train", str(recipe), "-q", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    busy = None
    try:
        deadline = time.time() + 120
        while busy is None and time.time() < deadline and term.poll() is None:
            logs = list(runs.glob("*beside-busy*/events.jsonl"))
            if logs and '"system"' in logs[0].read_text():
                busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(0.05)
        out, err = term.communicate(timeout=300)
    finally:
        if busy is not None:
            busy.kill()
    assert term.returncode == 0 and busy is not None, err
    run_id = json.loads(out.strip().splitlines()[-1])["run_id"]
    page.goto(url + f"#/run/{run_id}")
    page.wait_for_function("Number(document.querySelector('#cpu-chart').dataset.points || 0) >= 2", timeout=30_000)
    assert float(page.get_attribute("#cpu-chart", "data-max-others")) >= 0.5
    page.wait_for_selector("#peak-mem")
    shoot(page, "run-busy", tmp_path_factory)
