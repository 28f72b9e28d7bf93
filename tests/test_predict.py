"""Prediction on users' own image files: preprocessing that matches the training data, every
format, bad inputs, the out-of-distribution warning, and the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import trainlab_here
from PIL import Image

import trainlab
from trainlab.data.images import open_image, prepare_digit


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, data_dir):
    """A mnist-tfjs-cnn model trained on 20,000 digits (about 5 s), saved to disk."""
    runs = tmp_path_factory.mktemp("runs")
    run = trainlab.train("mnist-tfjs-cnn", progress="none", runs_dir=runs, data_dir=data_dir,  # lr 0.01: a stronger
                         overrides={"data.limit_train": 20000, "data.limit_test": 2000, "optimizer.lr": 0.01})  # short run
    return trainlab.load_run(run.run_dir)


@pytest.fixture(scope="module")
def digits(data_dir):
    ds = trainlab.load_dataset("mnist", data_dir=data_dir)
    return ds.x_test[:200, :, :, 0], ds.y_test[:200]


def photographed(img: np.ndarray, variant: str, rng) -> Image.Image:
    """How a user's own picture of a digit tends to look."""
    ink = Image.fromarray(255 - img)  # dark ink on white paper
    if variant == "light-background":
        return ink.resize((112, 112), Image.BICUBIC)
    if variant == "off-centre":
        canvas = Image.new("L", (160, 120), 255)
        big = ink.resize((56, 56), Image.BICUBIC)
        canvas.paste(big, (int(rng.integers(0, 100)), int(rng.integers(0, 60))))
        return canvas
    if variant == "other-size":
        return ink.resize((61, 61), Image.BICUBIC)  # a different size (photos keep their aspect ratio)
    if variant == "jpeg":
        buf = io.BytesIO()
        gray_paper = Image.eval(ink.resize((90, 90), Image.BICUBIC), lambda v: int(40 + v * 0.8))  # grey paper, grey ink
        gray_paper.save(buf, "JPEG", quality=35)
        return Image.open(io.BytesIO(buf.getvalue()))
    raise ValueError(variant)


VARIANTS = ["light-background", "off-centre", "other-size", "jpeg"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_users_images_score_like_the_test_set(cnn_run, digits, variant, tmp_path):
    x, y = digits
    reference = (cnn_run.predict(x).labels == y).mean()
    rng = np.random.default_rng(0)
    files = []
    for i, img in enumerate(x):
        path = tmp_path / f"{i:03d}.{'jpg' if variant == 'jpeg' else 'png'}"
        photographed(img, variant, rng).save(path)
        files.append(path)
    preds = cnn_run.predict([str(f) for f in files])
    acc = (preds.labels == y).mean()
    naive = (cnn_run.predict([str(f) for f in files], style="photo").labels == y).mean()
    print(f"{variant}: test items {reference:.3f}, files {acc:.3f}, naive resize {naive:.3f}")
    assert acc >= reference - 0.02
    assert naive < reference - 0.3  # plain resizing of the same files fails badly


def test_digit_preparation_recovers_the_original(digits):
    x, _ = digits
    restored = prepare_digit(Image.fromarray(255 - x[0]).resize((200, 200), Image.BICUBIC))[..., 0].astype(float)
    original = x[0].astype(float)
    corr = np.corrcoef(restored.ravel(), original.ravel())[0, 1]
    assert corr > 0.8  # same digit, same place


# --- formats -----------------------------------------------------------------------------------

def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _digit_rgb(digits) -> Image.Image:
    return Image.fromarray(255 - digits[0][0]).convert("RGB").resize((56, 56))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_each_format_decodes_to_the_same_digit(fmt, digits):
    im = _digit_rgb(digits)
    arr = prepare_digit(open_image(_encode(im, fmt)))
    ref = prepare_digit(im)
    assert arr.shape == (28, 28, 1)
    assert np.abs(arr.astype(int) - ref.astype(int)).mean() < 12


def test_sixteen_bit_palette_and_rgba(digits):
    g = 255 - digits[0][0]
    sixteen = Image.fromarray(g.astype(np.uint16) * 257)
    assert np.array_equal(np.asarray(open_image(_encode(sixteen, "PNG"))), g)
    palette = Image.fromarray(g).convert("P")
    assert open_image(_encode(palette, "PNG")).mode in ("L", "RGB")
    rgba = Image.new("RGBA", (28, 28), (0, 0, 0, 0))  # fully transparent: composited on white
    assert np.asarray(open_image(_encode(rgba, "PNG"))).min() == 255


def test_gif_first_frame_and_exif_rotation():
    a, b = Image.new("L", (10, 10), 0), Image.new("L", (10, 10), 255)
    data = _encode(a, "GIF", save_all=True, append_images=[b])
    assert np.asarray(open_image(data)).max() == 0
    wide = Image.new("RGB", (40, 20), "white")
    exif = wide.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    rotated = open_image(_encode(wide, "JPEG", exif=exif))
    assert rotated.size == (20, 40)


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"), (b"this is not an image", "not an image"),
])
def test_bad_bytes(data, message):
    with pytest.raises(ValueError, match=message):
        open_image(data)


def test_decompression_bomb_is_refused():
    big = Image.new("1", (10000, 5000))  # 50 Mpx, tiny as a 1-bit PNG
    with pytest.raises(ValueError, match="pixel limit"):
        open_image(_encode(big, "PNG"))


def test_bad_inputs_do_not_stop_the_batch(cnn_run, digits, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(255 - digits[0][0]).save(good)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    preds = cnn_run.predict([str(good), str(tmp_path / "empty.png"), str(tmp_path / "text.jpg"), str(tmp_path / "missing.png")])
    assert preds.files == [str(good)] and preds.class_names[0] == "7"
    assert [f.split("/")[-1] for f, _ in preds.failures] == ["empty.png", "text.jpg", "missing.png"]


def test_out_of_distribution_warning(cnn_run, digits):
    x, _ = digits
    noise = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    warned_noise = sum(bool(w) for w in cnn_run.predict(noise).warnings)
    warned_digits = sum(bool(w) for w in cnn_run.predict(x).warnings)
    assert warned_noise == 5
    assert warned_digits <= 0.1 * len(x)  # calibrated to flag a few percent of real digits at most


# --- the CLI -----------------------------------------------------------------------------------

def test_predict_cli_json_show_and_exit_code(cnn_run, digits, tmp_path, data_dir):
    img = tmp_path / "seven.png"
    Image.fromarray(255 - digits[0][0]).resize((80, 80)).save(img)
    (tmp_path / "bad.png").write_bytes(b"junk")
    cmd = [sys.executable, "-m", "trainlab", "predict", str(cnn_run.run_dir), str(img), str(tmp_path / "bad.png"),
           "--test-index", "0", "--json", "--top-k", "2", "--show", str(tmp_path / "views"), "--data-dir", str(data_dir)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1  # one input failed
    records = [json.loads(line) for line in p.stdout.splitlines()]
    assert {"file", "label", "class_name", "probability", "top_k"} <= set(records[0])
    assert records[0]["class_name"] == "7" and len(records[0]["top_k"]) == 2
    assert records[1]["file"].startswith("test[0]")
    assert "bad.png" in p.stderr and "Traceback" not in p.stderr
    assert len(list((tmp_path / "views").glob("*.png"))) == 2


def test_fashion_test_image_0_is_an_ankle_boot(tmp_path, data_dir):
    run = trainlab.train("fashion-mlp", epochs=1, progress="none", runs_dir=tmp_path, data_dir=data_dir,
                         overrides={"data.limit_train": 10000, "data.limit_test": 100})
    p = trainlab_here("predict", run.run_id, "--test-index", "0", "--json",
                        "--runs-dir", str(tmp_path), "--data-dir", str(data_dir))
    assert p.returncode == 0, p.stderr
    rec = json.loads(p.stdout.splitlines()[0])
    assert rec["label"] == 9 and rec["class_name"] == "Ankle boot" and len(rec["top_k"]) == 3
    assert abs(sum(t["probability"] for t in rec["top_k"]) - 1) < 0.2


def test_test_index_ranges_and_the_predictions_figure(cnn_run, tmp_path, data_dir):
    from trainlab.analysis.predict import parse_indices
    from trainlab.errors import TrainlabError
    assert parse_indices(["0:3", "7", ":2"]) == [0, 1, 2, 7, 0, 1]
    with pytest.raises(TrainlabError, match="give a number N or a range A:B"):
        parse_indices(["a:b"])
    out = tmp_path / "predictions.png"
    p = trainlab_here("predict", str(cnn_run.run_dir), "--test-index", "0:6",
                        "--plot", str(out), "--data-dir", str(data_dir))
    assert p.returncode == 0, p.stderr
    assert [line.split(":")[0] for line in p.stdout.splitlines()[:6]] == [f"test[{i}] (true" for i in range(6)]
    assert Image.open(out).size[0] > 800 and f"wrote {out}" in p.stdout


def test_the_low_confidence_warning_never_reads_a_number_below_itself():
    from trainlab.engine.inference import ood_warnings
    from trainlab.runs.record import OODThresholds
    ood = OODThresholds(confidence_p02=0.9912, mean_range=(0.0, 1.0), std_range=(0.0, 1.0), n=100)
    (w,) = ood_warnings(ood, 0.9887, 0.5, 0.5)
    assert w.startswith("low confidence 0.989 (below 0.991,"), w
    assert ood_warnings(ood, 0.995, 0.5, 0.5) == [] and ood_warnings(None, 0.1, 9, 9) == []
