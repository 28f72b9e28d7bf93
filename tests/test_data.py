"""Dataset loading: real files, the lookup order, downloads, caches and every bad-input case."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import threading
import time
import zipfile
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import write_cifar_archive, write_idx_dataset, write_tree

from trainlab.data import registry as tdata
from trainlab.data import trees
from trainlab.data.readers import parse_idx, read_cifar10_archive
from trainlab.data.registry import DATASETS, load_dataset
from trainlab.data.trees import load_image_tree
from trainlab.errors import DataError
from trainlab.settings import load_settings

# --- the real datasets -------------------------------------------------------------------------

def test_mnist_loads_and_matches_known_facts(data_dir):
    ds = load_dataset("mnist", data_dir=data_dir)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert ds.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    x = ds.x_train.astype(np.float64) / 255
    assert abs(x.mean() - 0.1307) < 1e-3 and abs(x.std() - 0.3081) < 1e-3
    assert ds.classes == [str(i) for i in range(10)]


def test_fashion_mnist_knows_its_class_names(data_dir):
    ds = load_dataset("fashion-mnist", data_dir=data_dir)
    assert ds.classes[9] == "Ankle boot" and ds.y_test[0] == 9


def test_verify_reports_each_file(data_dir):
    lines = tdata.verify_dataset("mnist", load_settings(data_dir=data_dir))
    assert len(lines) == 4 and all(line.startswith("ok") for line in lines)


def test_env_var_is_a_data_dir(data_dir, monkeypatch):
    monkeypatch.setenv("TRAINLAB_DATA", str(data_dir))
    assert load_dataset("mnist").x_test.shape[0] == 10000


# --- lookup order ------------------------------------------------------------------------------

def test_lookup_order_data_dir_then_cache_then_system(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAINLAB_DATA", raising=False)
    spec = DATASETS["mnist"]
    dirs = tdata.search_dirs(spec, load_settings(data_dir=tmp_path / "explicit"))
    assert dirs[0] == tmp_path / "explicit" / "mnist"
    assert dirs[2] == tmp_path / "cache" / "trainlab" / "datasets" / "mnist"
    assert dirs[3] == tmp_path / "system-datasets" / "mnist"
    # a file in the system folder is found when nothing comes earlier
    write_idx_dataset(tmp_path / "system-datasets" / "mnist")
    found = tdata.locate(spec, load_settings(), download=False)
    assert all(str(p).startswith(str(tmp_path / "system-datasets")) for p in found.values())
    # the cache wins over the system folder
    write_idx_dataset(tmp_path / "cache" / "trainlab" / "datasets" / "mnist")
    found = tdata.locate(spec, load_settings(), download=False)
    assert all("cache" in str(p) for p in found.values())


def test_uncompressed_idx_files_are_accepted(tmp_path):
    contents = write_idx_dataset(tmp_path / "mnist", compress=False)
    spec = _spec_for(contents)
    ds = tdata.load_idx_dataset(spec, tdata.locate(spec, load_settings(data_dir=tmp_path), download=False))
    assert ds.x_train.shape == (60, 28, 28, 1)


# --- bad input: one clear error each -----------------------------------------------------------

def test_missing_file_offline_lists_the_options(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz not found" in msg
    assert "--data-dir" in msg and "TRAINLAB_DATA" in msg and "trainlab datasets fetch mnist" in msg
    assert "\n" not in msg


def test_truncated_gzip(tmp_path):
    write_idx_dataset(tmp_path / "mnist")
    f = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(DataError, match="truncated or not a valid gzip"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_corrupt_gzip(tmp_path):
    write_idx_dataset(tmp_path / "mnist")
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-garbage-garbage")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: truncated or not a valid gzip"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_wrong_magic_number(tmp_path):
    write_idx_dataset(tmp_path / "mnist")
    f = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(f.read_bytes()))
    raw[0:4] = b"\x12\x34\x56\x78"
    f.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="wrong magic number"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_images_and_labels_swapped_is_named(tmp_path):
    contents = write_idx_dataset(tmp_path / "mnist")
    with pytest.raises(DataError, match="are images and labels swapped"):
        parse_idx(contents["train-labels-idx1-ubyte"], "x", expect_ndim=3)


def test_idx_length_mismatch(tmp_path):
    contents = write_idx_dataset(tmp_path / "mnist")
    with pytest.raises(DataError, match="truncated or padded IDX"):
        parse_idx(contents["train-images-idx3-ubyte"][:-5], "x", expect_ndim=3)


def test_checksum_mismatch(tmp_path):
    write_idx_dataset(tmp_path / "mnist")  # well-formed, but not the real MNIST
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_unknown_dataset_name_suggests():
    with pytest.raises(DataError, match="did you mean 'mnist'"):
        load_dataset("mnsit")


# --- downloads ---------------------------------------------------------------------------------

def _spec_for(contents: dict[str, bytes], mirrors=()) -> tdata.DatasetSpec:
    files = tuple(tdata.RemoteFile(n + ".gz", hashlib.sha256(contents[n]).hexdigest()) for n in tdata._IDX_NAMES)
    return replace(DATASETS["mnist"], files=files, mirrors=tuple(mirrors))


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_verifies_and_caches(tmp_path, http_server, monkeypatch):
    monkeypatch.delenv("TRAINLAB_DATA", raising=False)
    root, url = http_server
    contents = write_idx_dataset(root)
    monkeypatch.setitem(DATASETS, "mnist", _spec_for(contents, [url + "missing/", url]))
    ds = load_dataset("mnist", download=True, progress=False)
    assert ds.x_train.shape == (60, 28, 28, 1)
    cache = tmp_path / "cache" / "trainlab" / "datasets" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(n + ".gz" for n in tdata._IDX_NAMES)
    # second load comes from the cache, even with the server gone
    (root / "train-images-idx3-ubyte.gz").unlink()
    assert load_dataset("mnist", download=False).x_train.shape[0] == 60


def test_corrupt_download_leaves_nothing_in_the_cache(tmp_path, http_server, monkeypatch):
    monkeypatch.delenv("TRAINLAB_DATA", raising=False)
    root, url = http_server
    contents = write_idx_dataset(root)
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 8))
    monkeypatch.setitem(DATASETS, "mnist", _spec_for(contents, [url]))
    with pytest.raises(DataError, match="could not download t10k-labels-idx1-ubyte.gz; tried 1 mirror") as err:
        load_dataset("mnist", download=True, progress=False)
    assert "checksum mismatch" in str(err.value) and "downloads are off" not in str(err.value)
    cache = tmp_path / "cache" / "trainlab" / "datasets" / "mnist"
    names = [p.name for p in cache.iterdir()]
    assert "t10k-labels-idx1-ubyte.gz" not in names
    assert not any(n.startswith(".part") for n in names)


# --- CIFAR-10 python archive --------------------------------------------------------------------

def test_cifar_archive_is_read_in_the_canonical_format(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    x, y = write_cifar_archive(path)
    x_train, y_train, x_test, y_test = read_cifar10_archive(path)
    assert x_train.shape == (20, 32, 32, 3) and x_test.shape == (4, 32, 32, 3)
    assert np.array_equal(x_train, x) and np.array_equal(y_train, y)


def test_cifar_archive_checksum_is_checked(tmp_path):
    (tmp_path / "cifar10").mkdir()
    write_cifar_archive(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False, verify=False)
    assert ds.classes[3] == "cat" and ds.x_train.shape == (20, 32, 32, 3)


def test_cifar_archive_refuses_code_in_pickles(tmp_path):
    import io
    import pickle
    import tarfile
    blob = pickle.dumps(os.system)  # a pickle that would import a callable
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(DataError, match="corrupt"):
        read_cifar10_archive(path)


def test_cifar_missing_offline_names_both_copies_and_a_broken_jpeg_copy_is_named(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz \(or its image-tree copy cifar10-jpeg.zip\)"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    (tmp_path / "cifar10-jpeg.zip").write_bytes(b"")  # cut short: the copy is used, and its failure is one line
    with pytest.raises(DataError, match=r"its image-tree copy .*cifar10-jpeg.zip could not be read .*replace it") as e:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert "\n" not in str(e.value)


# --- image trees -------------------------------------------------------------------------------

def test_tree_with_splits(tmp_path):
    write_tree(tmp_path / "tree", classes=("cat", "dog", "emu"), per_class=4)
    ds = load_image_tree(tmp_path / "tree", cache_dir=tmp_path / "cache")
    assert ds.classes == ["cat", "dog", "emu"]
    assert ds.x_train.shape == (12, 8, 8, 3) and ds.x_test.shape == (12, 8, 8, 3)
    assert sorted(np.bincount(ds.y_train).tolist()) == [4, 4, 4]
    # split order is shuffled with a fixed seed, so a tail validation split is class-mixed
    assert ds.y_train.tolist() != sorted(ds.y_train.tolist())
    # classes are tied to content: dog images are the brighter ones
    means = [ds.x_train[ds.y_train == k].mean() for k in range(3)]
    assert means[0] < means[1] < means[2]


def test_tree_without_splits_holds_out_a_seeded_fraction(tmp_path):
    write_tree(tmp_path / "flat", per_class=10, splits=())
    a = load_image_tree(tmp_path / "flat", test_fraction=0.3, split_seed=1)
    b = load_image_tree(tmp_path / "flat", test_fraction=0.3, split_seed=1)
    c = load_image_tree(tmp_path / "flat", test_fraction=0.3, split_seed=2)
    assert len(a.x_test) == 6 and len(a.x_train) == 14
    assert np.array_equal(a.x_test, b.x_test) and not np.array_equal(a.x_test, c.x_test)


def test_tree_in_a_zip_with_a_wrapping_folder(tmp_path):
    write_tree(tmp_path / "src" / "wrapped", per_class=3, mode="L", fmt="jpg")
    zpath = tmp_path / "tree.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted((tmp_path / "src").rglob("*")):
            zf.write(p, p.relative_to(tmp_path / "src").as_posix())
    ds = load_image_tree(zpath, cache_dir=tmp_path / "cache")
    assert ds.classes == ["cat", "dog"] and ds.x_train.shape == (6, 8, 8, 1)


def test_tree_cache_is_reused_and_keyed_by_content(tmp_path):
    root = write_tree(tmp_path / "tree", per_class=3)
    first = load_image_tree(root, cache_dir=tmp_path / "cache")
    cache_dir = Path(first.info["cache"])
    assert (cache_dir / "meta.json").is_file()
    assert not [p for p in cache_dir.parent.iterdir() if p.name.startswith(".tmp")]
    t0 = time.perf_counter()
    second = load_image_tree(root, cache_dir=tmp_path / "cache")
    assert time.perf_counter() - t0 < 1.0 and np.array_equal(first.x_train, second.x_train)
    assert second.info["cache"] == first.info["cache"]
    # change one file's content: a new cache entry
    img = root / "train" / "cat" / "0.png"
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    os.utime(img, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert load_image_tree(root, cache_dir=tmp_path / "cache").info["cache"] != first.info["cache"]


def test_tree_resizes_to_a_common_size(tmp_path):
    root = write_tree(tmp_path / "t", per_class=2, splits=("train",))
    from PIL import Image
    Image.fromarray(np.zeros((20, 12, 3), np.uint8)).save(root / "train" / "cat" / "big.png")
    ds = load_image_tree(root, size=(8, 8), test_fraction=0.5, cache_dir=tmp_path / "cache")
    assert ds.x_train.shape[1:] == (8, 8, 3)


def test_tree_size_is_the_median_scaled_down_never_the_first_giant(tmp_path):
    from PIL import Image
    root = tmp_path / "photos"
    sizes = [(40, 30), (1200, 900), (640, 480), (800, 600), (1024, 768)]
    for c, cls in enumerate(("cats", "dogs", "owls")):
        (root / cls).mkdir(parents=True)
        Image.new("RGB", (3000, 3000), (c * 90, 0, 0)).save(root / cls / "a-first.jpg", quality=30)  # sorts first
        for i in range(8):
            Image.new("RGB", sizes[i % len(sizes)], (c * 90, 50, 50)).save(root / cls / f"b{i}.jpg")
    ds = load_image_tree(root, cache_dir=tmp_path / "cache")
    assert ds.x_train.shape[1:] == (48, 64, 3)  # the median 800x600, at most 64 px a side
    (note,) = [n for n in ds.notes if "training at" in n]
    assert "64x48" in note and "3000x3000" in note and "data.image_size" in note
    chosen = load_image_tree(root, size=(20, 30), cache_dir=tmp_path / "cache")  # data.image_size
    assert chosen.x_train.shape[1:] == (20, 30, 3)
    same = write_tree(tmp_path / "same", per_class=2, splits=("train",), size=(8, 8))
    assert not [n for n in load_image_tree(same, test_fraction=0.5).notes if "training at" in n]  # one size: nothing to say


def test_phone_portraits_stored_landscape_count_as_portraits(tmp_path):
    """A phone stores a portrait photo as landscape pixels with an EXIF Orientation of 6: the chosen
    size and each image's file name follow what the photo shows."""
    from PIL import Image
    root = tmp_path / "phone"
    for c, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            exif = Image.Exif()
            exif[0x0112] = 6
            Image.new("RGB", (1600, 1200), (c * 120, 60, 60)).save(root / cls / f"IMG_{i}.jpg", exif=exif)
    ds = load_image_tree(root, cache_dir=tmp_path / "cache")
    assert ds.x_train.shape[1:] == (64, 48, 3)  # shown 1200 wide, 1600 high
    (note,) = [n for n in ds.notes if "training at" in n]
    assert "training at 48x64 (the median 1200x1600" in note
    assert sorted(ds.files["train"] + ds.files["test"]) == sorted(f"{c}/IMG_{i}.jpg" for c in "ab" for i in range(4))
    assert len(ds.files["test"]) == len(ds.x_test)
    assert load_image_tree(root, cache_dir=tmp_path / "cache").files == ds.files  # from the cache too


def test_a_decompression_bomb_first_in_a_tree_is_refused_from_its_header(tmp_path):
    from PIL import Image
    root = write_tree(tmp_path / "t", per_class=3, splits=("train",))
    Image.new("1", (10_000, 8_000)).save(root / "train" / "cat" / "0-bomb.png")  # 80 MP, a few KB on disk
    with pytest.raises(DataError, match="0-bomb.png.*over the .*-pixel limit"):
        load_image_tree(root, test_fraction=0.5, cache_dir=tmp_path / "cache")


def test_a_tree_too_big_to_decode_is_refused_before_decoding(tmp_path, monkeypatch):
    import trainlab.data.trees as trees
    root = write_tree(tmp_path / "t", per_class=3, splits=("train",))
    monkeypatch.setattr(trees, "MAX_DECODED_FRACTION", 1e-9)
    with pytest.raises(DataError, match="data.image_size"):
        load_image_tree(root, test_fraction=0.5)


def test_empty_class_folder(tmp_path):
    root = write_tree(tmp_path / "tree", per_class=2)
    (root / "train" / "fox").mkdir()
    with pytest.raises(DataError, match="class folder 'train/fox' has no images"):
        load_image_tree(root, cache_dir=tmp_path / "cache")


def test_unreadable_image_is_named(tmp_path):
    root = write_tree(tmp_path / "tree", per_class=2)
    (root / "train" / "dog" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="broken.png"):
        load_image_tree(root, cache_dir=tmp_path / "cache")


def test_tree_with_no_images_or_a_bad_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_image_tree(tmp_path / "empty", cache_dir=tmp_path / "cache")
    root = write_tree(tmp_path / "mixed", per_class=1)
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "stray.png")
    with pytest.raises(DataError, match="cannot tell the layout"):
        load_image_tree(root, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="no such file"):
        load_image_tree(tmp_path / "nope", cache_dir=tmp_path / "cache")


def test_source_tree_maps_onto_the_dataset_classes(tmp_path):
    classes = list(reversed(DATASETS["cifar10"].classes))  # folder order differs from label order
    root = write_tree(tmp_path / "c10", classes=classes, per_class=1, size=(32, 32))
    ds = load_dataset("cifar10", source=str(root))
    assert ds.classes == list(DATASETS["cifar10"].classes)
    # the brightest folder ('airplane', last in `classes`) must get label 0
    brightest = ds.y_train[np.argmax(ds.x_train.reshape(len(ds.x_train), -1).mean(1))]
    assert brightest == 0


def test_source_tree_with_other_classes_is_refused(tmp_path):
    root = write_tree(tmp_path / "pets", per_class=1, size=(32, 32))
    with pytest.raises(DataError, match="classes do not match cifar10"):
        load_dataset("cifar10", source=str(root))


def test_shared_cifar_jpeg_zip_layout_is_understood(data_dir):
    zpath = data_dir / "cifar10-jpeg.zip"
    if not zpath.is_file():  # the README's data directory holds it; its absence is a set-up error
        pytest.fail(f"{zpath} is missing: TRAINLAB_DATA must point at the shared datasets, zip included")
    files, folders, _, _ = trees._tree_entries(zpath)
    prefix, groups = trees._layout(zpath, files, folders)
    assert prefix == "cifar10-jpeg/" and set(groups) == {"train", "test"}
    assert sorted(groups["train"]) == sorted(DATASETS["cifar10"].classes)
    assert len(groups["train"]["cat"]) == 5000 and len(groups["test"]["cat"]) == 1000


def test_a_mixed_tree_takes_the_majority_mode_with_a_notice(tmp_path):
    root = write_tree(tmp_path / "mixed", per_class=3, splits=(), mode="RGB")
    write_tree(tmp_path / "gray", per_class=1, splits=(), mode="L")
    for cls in ("cat", "dog"):
        (tmp_path / "gray" / cls / "0.png").rename(root / cls / "gray.png")
    ds = load_image_tree(root)
    assert ds.x_train.shape[-1] == 3 and len(ds.notes) == 1
    assert "mixes grayscale (2) and colour (6)" in ds.notes[0] and "converted to RGB" in ds.notes[0]
    gray = write_tree(tmp_path / "mostly-gray", per_class=3, splits=(), mode="L")
    write_tree(tmp_path / "rgb", per_class=1, splits=(), mode="RGB")
    (tmp_path / "rgb" / "cat" / "0.png").rename(gray / "cat" / "rgb.png")
    ds = load_image_tree(gray)
    assert ds.x_train.shape[-1] == 1 and "converted to grayscale" in ds.notes[0]
    assert load_image_tree(write_tree(tmp_path / "pure", per_class=2, splits=())).notes == []
