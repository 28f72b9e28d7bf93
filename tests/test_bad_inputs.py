"""Bad input of every kind through the real CLI, in a subprocess: exit status 2 (or the documented
one), exactly one line on stderr beginning `error:` (warnings aside), no traceback anywhere, and no
change to any file that was there before."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import TREE_RECIPE, idx_bytes, write_idx_dataset, write_tree
from helpers import trainlab_cli as cli
from helpers import trainlab_here


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_dir):
    """A small world to break: an image tree, a recipe for it, and a completed and an interrupted run."""
    root = tmp_path_factory.mktemp("world")
    tree = write_tree(root / "tree", classes=("dark", "light"), per_class=12, splits=(), size=(6, 6))
    (root / "tiny.yaml").write_text(TREE_RECIPE.format(tree=tree, epochs=2))
    env = _env(root, data_dir)
    p = cli("train", str(root / "tiny.yaml"), "--json", "--quiet", "--runs-dir", str(root / "runs"), env=env)
    assert p.returncode == 0, p.stderr
    run_dir = Path(json.loads(p.stdout.splitlines()[-1])["run_dir"])
    return {"root": root, "tree": tree, "recipe": root / "tiny.yaml", "run": run_dir, "env": env}


def _env(root: Path, data_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINLAB_")}
    env.update(TRAINLAB_DATA=str(data_dir), TRAINLAB_OFFLINE="1", XDG_CACHE_HOME=str(root / "cache"),
               TRAINLAB_RUNS=str(root / "default-runs"), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return env


def _snapshot(folder: Path) -> dict[str, str]:
    """Hashes of the files under `folder`; SQLite's transient -wal/-shm journals (which it removes when
    its last connection closes) and run locks are not user files."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and ".lock" not in p.name
            and not p.name.endswith(("-wal", "-shm"))}


def expect_errors(cases, env, folder: Path) -> list[str]:
    """expect_error for each (args, contains)."""
    return [expect_error(case[0], env, case[2] if len(case) > 2 else folder, case[1]) for case in cases]


def expect_error(args, env, folder: Path, contains: str, code: int = 2):
    """Run the command (in this process: the CLI's main(), as `trainlab` runs it) and check the
    contract for bad input: exit 2, one line on stderr that starts with error:, no traceback, no file
    that was there before changed."""
    before = _snapshot(folder)
    p = trainlab_here(*args, env=env)
    out = p.stdout + p.stderr
    assert "Traceback" not in out, out
    lines = [line for line in p.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert p.returncode == code, (p.returncode, out)
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    assert contains in lines[0], lines[0]
    after = _snapshot(folder)
    assert {k: v for k, v in after.items() if k in before} == before  # files there before are unchanged
    return lines[0]


# --- recipes ---------------------------------------------------------------------------------------

RECIPE_CASES = [
    (["show", "mnist-mpl"], "did you mean 'mnist-mlp'"),
    (["show", "nope.yaml"], "not found"),
    (["show", "mnist-mlp", "--set", "optimizer.lrr=0.1"], "unknown key (did you mean 'lr'?)"),
    (["show", "mnist-mlp", "--set", "optimizer.name=adamm"], "'adamm' is not allowed (did you mean 'adam'?)"),
    (["show", "mnist-mlp", "--set", "optimizer.lr=-1"], "optimizer.lr: Input should be greater than 0"),
    (["show", "mnist-mlp", "--set", "optimizer.lr"], "expected key.path=value"),
    (["show", "mnist-mlp", "--set", "model.layers.99.units=3"], "needs a list index below 2"),
    (["show", "mnist-mlp", "--set", "optimizer.lr.x=1"], "'optimizer.lr' is a value, not a section"),
    (["show", "mnist-mlp", "--set", "batch_size=0"], "batch_size: Input should be greater than 0"),
    (["show", "mnist-mlp", "--set", "epochs=-1"], "epochs: Input should be greater than 0"),
    (["show", "mnist-mlp", "--set", "data.validation=2"], "data.validation: 2 is not allowed"),
    (["show", "mnist-mlp", "--set", "model.layers.0.type=densse"], "'densse' is not allowed (did you mean 'dense'?)"),
    (["show", "mnist-mlp", "--set", "optimizer.nesterov=true"], "nesterov needs name: sgd"),
    (["show", "mnist-mlp", "--set", "schedule.name=onecycle", "--set", "callbacks.reduce_lr.patience=1"],
     "cannot be combined with a schedule"),
    (["show", "mnist-mlp", "--set", "data.validation=none", "--set", "callbacks.early_stopping.patience=1"],
     "monitor a val_ metric but data.validation is none"),
    (["show", "mnist-mlp", "--set", "seed=-1"], "seed: Input should be greater than or equal to 0"),
    (["show", "mnist-mlp", "--set", f"seed={2**64}"], "seed: Input should be less than"),
    (["summary", "mnist-mlp", "--set", "model.layers.1.units=7"], "the last layer outputs shape (7,)"),
    (["summary", "mnist-mlp", "--set", "data.flatten=false"], "put a flatten layer before it"),
    (["summary", "mnist-tfjs-cnn", "--set", "model.layers.0.kernel_size=40"], "cannot take input of shape"),
    (["train", "mnist-mlp", "--set", "model.layers.0.units=1000000000", "--no-save"], "make the layers smaller"),
]


def test_bad_recipes(world):
    expect_errors(RECIPE_CASES, world["env"], world["root"])


@pytest.mark.parametrize("content, contains", [
    (b"\xff\xfe\x00\x01binary\x00garbage", "not UTF-8 text"),
    (b"name: [unclosed\n", "not valid YAML at line"),
    (b"- a\n- list\n", "must be a mapping"),
    (b"name: x\nmodel: !!python/object/apply:os.system ['touch pwned']\n", "not valid YAML"),
    (b"name: x\n", "model: required key is missing"),
])
def test_bad_recipe_files(world, tmp_path, content, contains):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    expect_error(["train", path, "--no-save"], world["env"], world["root"], contains)
    assert not (Path.cwd() / "pwned").exists()


# --- flags -------------------------------------------------------------------------------------------

def test_bad_flags(world, tmp_path):
    env, root = world["env"], world["root"]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["train", "mnist-mlp", "--device", "foo"], "--device 'foo': use auto, cpu or cuda"),
        (["train", "mnist-mlp", "--checkpoint-every", "nan"], "--checkpoint-every nan"),
        (["train", "mnist-mlp", "--checkpoint-every", "inf"], "--checkpoint-every inf"),
        (["train", "mnist-mlp", "--checkpoint-every", "0"], "positive, finite"),
        (["train", "mnist-mlp", "--runs-dir", a_file], "is a file, not a folder"),
        (["train", "mnist-mlp", "--resume", "x"], "--resume continues a run with its own recipe"),
        (["train"], "give a recipe"),
        (["train", "--resume", "no-such-run", "--runs-dir", root / "runs"], "no run 'no-such-run'"),
        (["train", "--resume", "../../etc"], "is not a valid run id"),
        (["runs", "--sort", "colour", "--runs-dir", root / "runs"], "--sort 'colour'"),
        (["runs", "tag", world["run"].name, "--runs-dir", root / "runs"], "give tags to add"),
        (["runs", "compare", world["run"].name, "--runs-dir", root / "runs"], "compare needs two or more runs"),
        (["runs", "rm", world["run"].name, "--runs-dir", root / "runs"], "pass --yes when not at a terminal"),
        (["runs", "rm", "../..", "--yes", "--runs-dir", root / "runs"], "is not a valid run id"),
        (["runs", "show", "nosuch", "--runs-dir", root / "runs"], "no run 'nosuch'"),
        (["evaluate", world["run"], "--split", "foo"], "split 'foo': use test or val"),
        (["evaluate", "nosuch", "--runs-dir", root / "runs"], "no run 'nosuch'"),
        (["datasets", "verify", "mnsit"], "unknown dataset 'mnsit'"),
        (["datasets", "fetch", "mnsit"], "did you mean 'mnist'"),
        # the command line's own errors (typer): one line too, with where to look
        (["train", "mnist-mlp", "--nproc", "0"], "Invalid value for '--nproc'"),
        # checked before any rank starts: one line, not one from each process
        (["train", "walk-5-relu", "--nproc", "2", "--set", "data.limit=5"], "data.limit: unknown key"),
        (["train", "mnist-mlp", "--nosuch"], "No such option: --nosuch"),
        (["serve", "x", "--port", "70000"], "Invalid value for '--port'"),
        (["runs", "show"], "Missing argument 'run'"),
        (["nosuchcmd"], "No such command 'nosuchcmd'"),
    ]
    if not torch.cuda.is_available():
        cases.append((["train", "mnist-mlp", "--device", "cuda"], "no CUDA device is available"))
    expect_errors(cases, env, root)
    made = sorted(p.name for p in (root / "default-runs").rglob("*")) if (root / "default-runs").exists() else []
    assert made == [], f"a refused command wrote to the default runs folder: {made}"


def test_bad_predict_inputs(world, tmp_path):
    env, root, run = world["env"], world["root"], world["run"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    existing = tmp_path / "shown.png"
    existing.write_bytes(b"x")
    cases = [
        (["predict", run], "give image files or folders"),
        (["predict", run, "--style", "bogus", tmp_path / "notes.txt"], "--style 'bogus'"),
        (["predict", run, "--show", existing, tmp_path / "notes.txt"], "is a file; give a folder"),
        (["predict", run, "--test-index", "99999"], "the test set has items 0..3"),
        (["predict", run, empty], "a folder with no images"),
        (["predict", run, tmp_path / "missing.png"], "no such file"),
        (["predict", run, tmp_path / "notes.txt"], "not an image PIL can read"),
    ]
    expect_errors(cases, env, root)


def test_predict_with_some_bad_inputs_exits_1_and_names_each(world, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"garbage")
    good = next(world["tree"].rglob("*.png"))
    p = cli("predict", world["run"], good, tmp_path / "bad.png", env=world["env"])
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert [line for line in p.stderr.splitlines() if line.startswith("error:")] == \
        [f"error: {tmp_path / 'bad.png'}: not an image PIL can read (PNG, JPEG, BMP, GIF, WebP, TIFF)"]
    assert good.name in p.stdout


# --- datasets ------------------------------------------------------------------------------------

def _data_env(world, folder: Path) -> dict:
    return dict(world["env"], TRAINLAB_DATA=str(folder))


def test_bad_dataset_files(world, tmp_path):
    cases = []
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((empty, "mnist", "not found in", "(downloads are off)"))
    trunc = tmp_path / "trunc"
    write_idx_dataset(trunc / "mnist")
    data = (trunc / "mnist" / "train-images-idx3-ubyte.gz").read_bytes()
    (trunc / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    cases.append((trunc, "mnist", "truncated or not a valid gzip file", "fetch it again"))
    magic = tmp_path / "magic"
    write_idx_dataset(magic / "mnist")
    (magic / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(20)))
    cases.append((magic, "mnist", "wrong magic number", "are images and labels swapped?"))
    fake = tmp_path / "fake"
    write_idx_dataset(fake / "mnist")
    cases.append((fake, "mnist", "checksum mismatch", "not the original"))
    mismatch = tmp_path / "mismatch"
    write_idx_dataset(mismatch / "mnist", n_train=10)
    (mismatch / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(torch.zeros(7).numpy())))
    cases.append((mismatch, "mnist", "10 images but 7 labels", "do not belong together"))
    cases.append((empty, "cifar10", "cifar-10-python.tar.gz not found", "downloads are off"))
    cases.append((empty, "fashion-mnist", "fashion-mnist: train-images-idx3-ubyte.gz not found", "TRAINLAB_DATA"))
    lines = [expect_error(["train", "mnist-mlp", "--set", f"data.name={c[1]}", "--no-save"], _data_env(world, c[0]), tmp_path, c[2])
             for c in cases]
    assert all(c[3] in line for c, line in zip(cases, lines))
    expect_error(["datasets", "verify", "mnist"], _data_env(world, fake), tmp_path, "checksum mismatch")


def test_bad_image_trees(world, tmp_path):
    env, cases = world["env"], []
    cases.append((tmp_path / "nope", "no such file or folder"))
    empty_class = write_tree(tmp_path / "t1", per_class=2, splits=())
    (empty_class / "bird").mkdir()
    cases.append((empty_class, "class folder 'bird' has no images"))
    bad_image = write_tree(tmp_path / "t2", per_class=2, splits=())
    (bad_image / "cat" / "broken.png").write_bytes(b"\x89PNG garbage")
    cases.append((bad_image, "broken.png"))
    dangling = write_tree(tmp_path / "t3", per_class=2, splits=())
    (dangling / "cat" / "gone.png").symlink_to(tmp_path / "does-not-exist.png")
    cases.append((dangling, "'cat/gone.png' is a broken link"))
    extra = write_tree(tmp_path / "t4", per_class=2)
    write_tree(tmp_path / "t4", classes=("cow",), per_class=2, splits=("test",))
    cases.append((extra, "test has classes ['cow'] that train lacks"))
    zpath = tmp_path / "crc.zip"
    src = write_tree(tmp_path / "zsrc", per_class=2, splits=(), fmt="bmp")
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(src.rglob("*.bmp")):
            zf.write(p, p.relative_to(src).as_posix())
    raw = bytearray(zpath.read_bytes())
    at = raw.find(b"BM", 40) + 60  # inside the first stored image's pixels
    raw[at] ^= 0xFF
    zpath.write_bytes(bytes(raw))
    cases.append((zpath, "Bad CRC-32"))
    layout = tmp_path / "t5"
    (layout / "a" / "b" / "c" / "d").mkdir(parents=True)
    write_tree(layout / "a" / "b" / "c" / "d", per_class=1, splits=())
    (layout / "top.png").write_bytes((extra / "train" / "cat" / "0.png").read_bytes())
    cases.append((layout, "cannot tell the layout"))
    expect_errors([(["train", "mnist-mlp", "--set", f"data.name={tree}", "--no-save"], contains) for tree, contains in cases],
                  env, tmp_path)


# --- run folders --------------------------------------------------------------------------------

def _copy_run(world, tmp_path, status=None) -> Path:
    runs = tmp_path / "runs"
    run = runs / world["run"].name
    shutil.copytree(world["run"], run)
    if status:
        info = json.loads((run / "run.json").read_text())
        info["status"] = status
        (run / "run.json").write_text(json.dumps(info))
    return run


BROKEN_RUNS = [
    ("truncate model.safetensors", "evaluate", "cannot load these weights"),
    ("foreign model.safetensors", "evaluate", "cannot load these weights"),
    ("run.json not json", "evaluate", "run.json: not valid JSON"),
    ("run.json a list", "evaluate", "holds a JSON list, not an object"),
    ("run.json wrong fields", "evaluate", "run.json: status: Input should be"),
    ("no recipe.yaml", "evaluate", "recipe.yaml: missing"),
    ("no model.safetensors", "evaluate", "has no model.safetensors"),
    ("truncate checkpoint.pt", "resume", "corrupt or truncated checkpoint"),
    ("garbage checkpoint.pt", "resume", "corrupt or truncated checkpoint"),
    ("old-format checkpoint.pt", "resume", "checkpoint format 1"),
    ("no checkpoint.pt", "resume", "has no checkpoint"),
    ("completed", "resume", "already completed"),
    ("truncate history.csv", "plot", "history"),
]


def _break(world, where: Path, breakage: str, command: str) -> list:
    """A copy of the good run broken as `breakage` says; the command that must refuse it."""
    run = _copy_run(world, where, status=None if breakage == "completed" else "interrupted")
    target = run / ("run.json" if breakage.startswith("run.json") else breakage.split()[-1])
    if breakage.startswith("truncate"):
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 3] if target.suffix != ".csv" else b"epoch,loss\n1,abc\n")
    elif breakage.startswith("foreign"):
        from safetensors.torch import save_file
        save_file({"other.weight": torch.zeros(3, 3)}, target)
    elif breakage == "run.json not json":
        target.write_text("{not json")
    elif breakage == "run.json a list":
        target.write_text("[1, 2]")
    elif breakage == "run.json wrong fields":
        target.write_text(json.dumps(dict(json.loads((world["run"] / "run.json").read_text()), status="dancing")))
    elif breakage.startswith("no "):
        target.unlink()
    elif breakage.startswith("garbage"):
        target.write_bytes(os.urandom(500))
    elif breakage.startswith("old-format"):
        torch.save({"version": 1, "epoch": 0}, target)
    return {"evaluate": ["evaluate", run, "--no-pictures"], "resume": ["train", "--resume", run, "--runs-dir", run.parent],
            "plot": ["plot", run]}[command]


def test_broken_run_folders(world, tmp_path):
    cases = [(_break(world, tmp_path / f"case{i}", b, c), contains, tmp_path / f"case{i}")
             for i, (b, c, contains) in enumerate(BROKEN_RUNS)]
    expect_errors(cases, world["env"], tmp_path)


def test_resume_of_a_crafted_checkpoint_runs_no_code(world, tmp_path):
    run = _copy_run(world, tmp_path, status="interrupted")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buf = io.BytesIO()
    torch.save({"format": 2, "model": Evil()}, buf)
    (run / "checkpoint.pt").write_bytes(buf.getvalue())
    expect_error(["train", "--resume", run, "--runs-dir", run.parent], world["env"], tmp_path, "refused: it holds objects")
    assert not marker.exists()


def test_a_damaged_tree_cache_is_rebuilt(world, tmp_path):
    env = dict(world["env"], XDG_CACHE_HOME=str(tmp_path / "cache"))
    args = ["train", world["recipe"], "--no-save", "--quiet", "--json"]
    first = cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    (entry,) = (tmp_path / "cache" / "trainlab" / "trees").iterdir()
    data = (entry / "x_train.npy").read_bytes()
    (entry / "x_train.npy").write_bytes(data[: len(data) // 2])
    (entry / "meta.json").write_text("{broken")
    again = cli(*args, env=env)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["test_acc"] == json.loads(first.stdout.splitlines()[-1])["test_acc"]


# --- databases ------------------------------------------------------------------------------------

def test_bad_run_indexes(world, tmp_path):
    env, runs = world["env"], tmp_path / "runs"
    runs.mkdir()
    db = runs / "trainlab.db"
    db.write_bytes(b"garbage " * 1000)
    expect_error(["runs", "--runs-dir", runs], env, tmp_path, "not a trainlab run index")
    expect_error(["train", world["recipe"], "--runs-dir", runs], env, tmp_path, "not a trainlab run index")
    good = world["root"] / "runs" / "trainlab.db"
    data = good.read_bytes()
    db.write_bytes(data[:100] + bytes(len(data) - 100))  # the header survives, the pages are gone
    expect_error(["runs", "--runs-dir", runs], env, tmp_path, "not a trainlab run index")
    expect_error(["runs", "--db", "mysql+nodriver://x/y", "--runs-dir", runs], env, tmp_path, "cannot use this database URL")
    newer = tmp_path / "newer.db"
    shutil.copy(good, newer)
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE schema_info SET version = 99")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    expect_error(["runs", "--db", f"sqlite:///{newer}", "--runs-dir", runs], env, tmp_path, "newer than this trainlab")
