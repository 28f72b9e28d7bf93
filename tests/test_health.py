"""Data health (`trainlab data check`, `trainlab data fix`, `data.corrections`): flipped labels are
found, planted train/test duplicates are found, decisions go to a corrections file that training
applies and records, and bad input is one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from helpers import trainlab_here
from PIL import Image

from trainlab.data.health import check_data, duplicate_groups
from trainlab.errors import TrainlabError
from trainlab.settings import load_settings

CLASSES = ("amber", "blue", "coral", "dusk")


def shapes_tree(root, per_class=50, seed=0):
    """<split>/<class>/<i>.png, 10x10: each class its own brightness and stripe under noise."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", per_class // 5)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.normal(40 + 55 * c, 18, (10, 10, 3))
                a[c * 2: c * 2 + 2] += 70
                Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """The tree with 5% of its training labels flipped (files moved to another class's folder)
    and three training images copied into the test split (leaks)."""
    root = shapes_tree(tmp_path_factory.mktemp("health") / "tree")
    rng = np.random.default_rng(1)
    files = sorted((root / "train").glob("*/*.png"))
    moved = []
    for f in rng.choice(files, len(files) // 20, replace=False):
        others = [c for c in CLASSES if c != f.parent.name]
        dest = root / "train" / others[rng.integers(len(others))] / f"flipped-{f.parent.name}-{f.name}"
        shutil.move(f, dest)
        moved.append(f"train/{dest.parent.name}/{dest.name}")
    leaks = []
    for f in sorted((root / "train" / "blue").glob("[0-9]*.png"))[:3]:
        dest = root / "test" / "blue" / f"copy-{f.name}"
        shutil.copy(f, dest)
        leaks.append((f"train/blue/{f.name}", f"test/blue/copy-{f.name}"))
    return root, moved, leaks


def test_flipped_labels_and_planted_leaks_are_found(flipped, tmp_path):
    root, moved, leaks = flipped
    settings = load_settings(runs_dir=tmp_path / "runs", cache_dir=tmp_path / "cache")
    report = check_data(str(root), settings=settings)
    assert report.images == 243 and report.folds == 5 and report.recipe == "mnist-fast"
    top = {s["file"] for s in report.suspects(len(moved))}  # a tree's files are named from its root
    assert len(top & set(moved)) >= 0.8 * len(moved), (sorted(top), moved)
    flagged = {s["file"] for s in report.of("label")}
    assert len(flagged & set(moved)) >= 0.8 * len(moved)
    groups = [{m["file"] for m in g["members"]} for g in report.of("leak")]
    for a, b in leaks:
        assert any({a, b} <= g for g in groups), (a, b, groups)
    assert not report.of("duplicate")  # noise images of one class are not near-duplicates of each other
    label = report.of("label")[0]
    assert set(label) == {"kind", "split", "index", "file", "given", "suggested", "score"} and label["index"] is None


def test_duplicates_survive_a_jpeg_round_trip_but_lookalike_digits_do_not_match(data_dir):
    from trainlab.data.registry import load_dataset
    ds = load_dataset("mnist", settings=load_settings(data_dir=data_dir))
    ones = ds.x_train[ds.y_train == 1][:600]
    assert duplicate_groups(ones) == [] or max(len(g) for g in duplicate_groups(ones)) <= 3
    import io
    out = io.BytesIO()
    Image.fromarray(ones[5][..., 0]).save(out, "JPEG", quality=75)
    again = np.asarray(Image.open(out))[..., None]
    groups = duplicate_groups(np.concatenate([ones[:50], again[None]]))
    assert [5, 50] in groups


def test_data_check_cli_json_lines_and_bad_input(flipped, tmp_path):
    root, moved, _ = flipped
    r = trainlab_here("data", "check", root, "--folds", "3", "--top", "5", "--json", extra_env={"TRAINLAB_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    items = [json.loads(line) for line in r.stdout.splitlines()]
    assert items and all(set(i) >= {"kind", "split", "index", "file"} for i in items)
    assert len([i for i in items if i["kind"] == "label"]) <= 5 and items[0]["kind"] == "label"
    text = trainlab_here("data", "check", root, "--folds", "2", "--picture", tmp_path / "top.png", extra_env={"TRAINLAB_CACHE": str(tmp_path)})
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("checked 243 tree images (all) with 2-fold mnist-fast") and (tmp_path / "top.png").is_file()
    for args, message in [(["--split", "dev"], "--split 'dev': use train, test or all"), (["--folds", "1"], "--folds 1: use 2-20"),
                          (["--top", "0"], "--top 0: give at least 1")]:
        bad = trainlab_here("data", "check", root, *args)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    unknown = trainlab_here("data", "check", "mnistt")
    assert unknown.returncode == 2 and "did you mean 'mnist'" in unknown.stderr


def test_an_unreadable_file_is_reported_not_fatal(tmp_path):
    root = shapes_tree(tmp_path / "t", per_class=10)
    (root / "train" / "amber" / "broken.png").write_bytes(b"not a png at all")
    report = check_data(str(root), folds=2, settings=load_settings(runs_dir=tmp_path / "runs", cache_dir=tmp_path / "c"))
    (bad,) = report.of("unreadable")
    assert bad["file"] == "train/amber/broken.png" and "not an image" in bad["reason"]
    assert report.images == 48


def test_corrections_relabel_and_exclude_and_training_records_them(tmp_path, data_dir):
    fixes = tmp_path / "fixes.yaml"
    env = {"TRAINLAB_DATA": str(data_dir), "TRAINLAB_RUNS": str(tmp_path / "runs")}
    r = trainlab_here("data", "fix", fixes, "--dataset", "mnist", "--relabel", "947=9", "--exclude", "test:1234",
                      "--keep", "train:5", extra_env=env)
    assert r.returncode == 0, r.stderr
    assert "3 decisions added (relabel test:947, exclude test:1234, keep train:5)" in r.stdout
    saved = yaml.safe_load(fixes.read_text())
    assert saved["dataset"] == "mnist" and [c["action"] for c in saved["corrections"]] == ["relabel", "exclude", "keep"]
    for args, message in [
        (["--relabel", "test:99999=1"], "test index 99999 does not exist; the test split has images 0..9999"),
        (["--relabel", "test:3=cat"], "label 'cat' is not a class of mnist; allowed: 0, 1"),
        (["--dataset", "fashion-mnist", "--exclude", "2"], "corrects 'mnist', not 'fashion-mnist'"),
        (["--relabel", "947"], "--relabel '947': give SPLIT:INDEX=LABEL"),
        (["--exclude", "dev:3"], "the split is train or test"),
    ]:
        bad = trainlab_here("data", "fix", fixes, *args, extra_env=env)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert yaml.safe_load(fixes.read_text()) == saved  # a refused fix writes nothing
    import trainlab
    run = trainlab.train("mnist-mlp", overrides={"data.corrections": str(fixes), "data.limit_train": 500, "data.validation": "none"},
                         epochs=1, runs_dir=tmp_path / "runs", data_dir=data_dir, progress="none")
    record = json.loads((run.run_dir / "run.json").read_text())["dataset"]
    assert record["corrections"]["relabeled"] == 1 and record["corrections"]["excluded"] == 1 and record["n_test"] == 9999
    assert len(record["corrections"]["sha256"]) == 64
    x, y = run.split("test")
    assert len(y) == 9999 and int(y[947]) == 9  # index 947 relabeled; 1234 gone (947 < 1234: same position)
    other = tmp_path / "other.yaml"
    other.write_text("dataset: fashion-mnist\ncorrections: []\n")
    with pytest.raises(TrainlabError, match="corrects 'fashion-mnist', not 'mnist'"):
        trainlab.train("mnist-mlp", overrides={"data.corrections": str(other)}, epochs=1, save=False, data_dir=data_dir,
                       progress="none")
    broken = tmp_path / "broken.yaml"
    broken.write_text("dataset: mnist\ncorrections:\n  - {split: test, index: 3, action: burn}\n")
    with pytest.raises(TrainlabError, match=r"corrections.0.action: 'burn' is not allowed; allowed: keep, relabel, exclude"):
        trainlab.train("mnist-mlp", overrides={"data.corrections": str(broken)}, epochs=1, save=False, data_dir=data_dir,
                       progress="none")


def test_the_health_api_checks_and_saves_decisions(tmp_path, data_dir):
    import time

    from fastapi.testclient import TestClient

    from trainlab.web.app import create_app
    settings = load_settings(runs_dir=tmp_path / "runs", data_dir=data_dir)
    with TestClient(create_app(settings), raise_server_exceptions=False, base_url="http://127.0.0.1",
                    headers={"X-Trainlab": "1"}) as client:
        job = client.post("/api/v1/health/checks", json={"dataset": "mnist", "split": "test", "folds": 2, "limit": 300}).json()["job"]
        for _ in range(300):
            state = client.get(f"/api/v1/health/checks/{job['id']}").json()
            if state["job"]["state"] not in ("queued", "starting", "running"):
                break
            time.sleep(0.5)
        assert state["job"]["state"] == "completed", state
        report = state["report"]
        assert report["images"] == 300 and report["requested"] == "mnist"
        assert all(i["image"].startswith("data:image/png") for i in report["issues"] if i["kind"] == "label")
        ok = client.post("/api/v1/health/corrections", json={"dataset": "mnist", "split": "test", "index": 7, "action": "exclude"})
        assert ok.status_code == 200 and ok.json()["decisions"] == 1
        listed = client.get("/api/v1/health/corrections?dataset=mnist").json()
        assert listed["decisions"][0] | {"when": None} == {"split": "test", "index": 7, "action": "exclude", "when": None}
        for body, status, message in [
            ({"dataset": "mnist", "split": "test", "index": 10**6, "action": "exclude"}, 422, "does not exist"),
            ({"dataset": "mnist", "split": "test", "index": 1, "action": "relabel", "label": "cat"}, 422, "not a class of mnist"),
            ({"dataset": "/etc", "split": "test", "index": 1, "action": "exclude"}, 403, "recipes from the page may use"),
            ({"dataset": "mnist", "split": "test", "action": "exclude"}, 422, "give index"),
        ]:
            r = client.post("/api/v1/health/corrections", json=body)
            assert r.status_code == status and message in r.json()["error"], r.json()
        assert client.get("/api/v1/health/checks/999").status_code == 404
        assert client.post("/api/v1/health/checks", json={"dataset": "mnist", "folds": 1}).status_code == 422


def test_a_weak_cross_fit_says_its_label_findings_are_unreliable():
    from trainlab.data.health import HealthReport
    weak = HealthReport("photos", "all", 3, "mnist-fast", 60, ["a", "b"], accuracy=0.47)
    assert "right on only 47% of the images they never saw" in weak.summary()
    assert "note" not in HealthReport("mnist", "all", 5, "mnist-fast", 70000, ["0"], accuracy=0.988).summary()
