"""Sharing runs by the standards: the self-contained HTML report (opened offline in Chromium, its
charts drawn), the model card beside an export, TensorBoard event files read back with
TensorBoard's own EventAccumulator, and an MLflow store read back with MLflow's client."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import MNIST_TINY
from helpers import trainlab_here

import trainlab
from trainlab.recipes import validate
from trainlab.settings import load_settings


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("share")
    settings = load_settings(runs_dir=root / "runs", data_dir=data_dir, offline=True)
    a = trainlab.train(validate(MNIST_TINY), settings=settings, progress="none")
    b = trainlab.train(validate({**MNIST_TINY, "optimizer": {"name": "sgd", "lr": 0.05}}), settings=settings, progress="none")
    return settings, a, b, root


def test_the_report_is_one_file_that_opens_offline_with_its_charts(two_runs, tmp_path):
    from test_dashboard_browser import CHROMIUM, ensure_chromium
    settings, a, b, _ = two_runs
    r = trainlab_here("report", a.run_id, b.run_id, "--out", tmp_path / "report.html", "--runs-dir", settings.runs_dir,
                      "--data-dir", settings.data_dir)
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "report.html").read_text()
    assert f"wrote {tmp_path / 'report.html'}" in r.stdout and len(html) < 3_000_000
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing to fetch
    assert "optimizer.name" in html and "Confusion matrix" in html and "highest-loss mistakes" in html
    assert "library_name: onnx" in html and "torch" in html and "threads" in html  # model card, environment
    ensure_chromium()
    import playwright.sync_api as pw
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        fetched, errors = [], []
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else
                   (fetched.append(route.request.url), route.abort()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((tmp_path / "report.html").as_uri())
        page.wait_for_selector(".uplot canvas")
        charts = page.evaluate("[...document.querySelectorAll('.uplot')].map(u => u.querySelector('canvas').width)")
        assert len(charts) == 4 and min(charts) > 100
        legend = page.inner_text("#charts")
        assert a.run_id[-6:] in legend and b.run_id[-6:] in legend
        assert page.locator(".gallery img").count() > 0
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert fetched == [] and errors == []


def test_the_dashboard_offers_the_report_as_a_download(two_runs):
    from fastapi.testclient import TestClient

    from trainlab.web.app import create_app
    settings, a, b, _ = two_runs
    with TestClient(create_app(settings), base_url="http://127.0.0.1", headers={"X-Trainlab": "1"}) as client:
        r = client.get(f"/api/v1/report?runs={a.run_id},{b.run_id}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert 'attachment; filename="report-2-runs.html"' == r.headers["content-disposition"]
        assert client.get("/api/v1/report?runs=../../etc").status_code == 404


def test_export_writes_a_model_card_with_the_hub_header(two_runs, tmp_path):
    settings, a, _, _ = two_runs
    (tmp_path / "README.md").write_text("# my project\n")  # someone else's README is never overwritten
    r = trainlab_here("export", a.run_id, "--out", tmp_path / "m.onnx", "--runs-dir", settings.runs_dir, "--data-dir",
                      settings.data_dir)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "README.md").read_text() == "# my project\n" and "card model-card.md" in r.stdout
    card = (tmp_path / "model-card.md").read_text()
    head = yaml.safe_load(card.split("---")[1])
    assert head["library_name"] == "onnx" and "image-classification" in head["tags"] and head["datasets"] == ["ylecun/mnist"]
    result = head["model-index"][0]["results"][0]
    acc = next(m for m in result["metrics"] if m["type"] == "accuracy")
    assert abs(acc["value"] - a.metrics.test_acc) < 1e-4 and result["dataset"]["split"] == "test"
    for section in ("## Intended use", "## Training data and preparation", "## Evaluation", "## Limits", "## How to use"):
        assert section in card
    assert "Out-of-distribution thresholds" in card and "| 7 |" in card
    again = trainlab_here("export", a.run_id, "--runs-dir", settings.runs_dir, "--data-dir", settings.data_dir)
    assert again.returncode == 0 and (a.run_dir / "README.md").read_text().startswith("---\nlibrary_name: onnx")


def test_tensorboard_reads_what_we_write(two_runs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    settings, a, b, _ = two_runs
    r = trainlab_here("runs", "export", a.run_id, b.run_id, "--tensorboard", tmp_path / "tb", "--runs-dir", settings.runs_dir,
                      "--data-dir", settings.data_dir)
    assert r.returncode == 0, r.stderr
    acc = EventAccumulator(str(tmp_path / "tb" / a.run_id), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"epoch/loss", "epoch/acc", "epoch/val_acc", "batch/loss"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("epoch/loss")] == [h["epoch"] for h in a.history]
    assert abs(acc.Scalars("epoch/val_acc")[-1].value - a.history[-1]["val_acc"]) < 1e-6
    assert {"curves", "confusion_matrix"} <= set(tags["images"])
    assert "hparams" in acc.PluginTagToContent("hparams") or acc.PluginTagToContent("hparams")


def test_mlflow_reads_what_we_log(two_runs, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    settings, a, _, _ = two_runs
    monkeypatch.chdir(tmp_path)  # the sqlite store keeps artifacts beside it
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = trainlab_here("runs", "export", a.run_id, "--mlflow", uri, "--runs-dir", settings.runs_dir, "--data-dir", settings.data_dir)
    assert r.returncode == 0, r.stderr
    assert f"{a.run_id}: MLflow run" in r.stdout and "INFO" not in r.stderr
    client = MlflowClient(tracking_uri=uri)
    (found,) = client.search_runs([client.get_experiment_by_name("trainlab").experiment_id])
    assert found.data.tags["trainlab.run_id"] == a.run_id and found.info.status == "FINISHED"
    assert found.data.params["optimizer.name"] == "adam" and found.data.params["batch_size"] == str(a.recipe.batch_size)
    history = client.get_metric_history(found.info.run_id, "val_acc")
    assert [m.step for m in history] == [h["epoch"] for h in a.history]
    assert abs(found.data.metrics["test_acc"] - a.metrics.test_acc) < 1e-6
    names = {f.path for f in client.list_artifacts(found.info.run_id)} | {f.path for f in client.list_artifacts(found.info.run_id, "model")}
    assert {"report.html", "recipe.yaml", "run.json", "model/model.safetensors"} <= names
    again = trainlab_here("runs", "export", a.run_id, "--mlflow", uri, "--runs-dir", settings.runs_dir)
    assert again.returncode == 0 and "already in MLflow" in again.stdout


def test_a_missing_extra_or_destination_is_one_line(two_runs, monkeypatch):
    import sys
    settings, a, _, _ = two_runs
    r = trainlab_here("runs", "export", a.run_id, "--runs-dir", settings.runs_dir)
    assert r.returncode == 2 and "say where: --tensorboard DIR and/or --mlflow URI" in r.stderr
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if `pip install 'trainlab[mlflow]'` had not been run
    r = trainlab_here("runs", "export", a.run_id, "--mlflow", "sqlite:///x.db", "--runs-dir", settings.runs_dir)
    assert r.returncode == 2 and r.stderr.strip() == "error: --mlflow needs mlflow: pip install 'trainlab[mlflow]'"
