"""The GPU side by side (issue #35), in two stages that fit the device tool's calls (bench/gpu_check.sh):

    python bench/gpu_check.py mnist   # CUDA tests, start-up breakdown, MNIST recipes cold and warm, Keras 3 (JAX)
    python bench/gpu_check.py cifar   # CIFAR-10 recipes, Keras 3 (JAX) on cifar10-cnn, airbench94 (its pip package)
    GPU_CHECK_DRY=1 python bench/gpu_check.py mnist   # the same steps tiny, on the CPU: checks the script itself

Every trainlab run is a fresh `trainlab train --json` process: "cold" is the first of a recipe (empty
caches: cuDNN, the decoded image tree), "warm" the second. Each line of the table names the step
strategy and precision the run recorded. Results go to $OUT (or ./gpu-check-out): one JSON file and
one Markdown table per stage, a few hundred lines at most.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = Path(os.environ.get("OUT") or ROOT / "gpu-check-out")
DRY = bool(os.environ.get("GPU_CHECK_DRY"))
DATA = Path(os.environ.get("TRAINLAB_DATA") or ROOT / ".gpudata")
DEVICE = "cpu" if DRY else "cuda"
TINY = ["--set", "data.limit_train=600", "--set", "data.limit_test=200", "--epochs", "1"]  # dry runs only

# recipe -> (extra trainlab args, Keras peer epochs or None, the issue's Keras 3 (JAX) H200 seconds, target speed-up)
MNIST = {"mnist-mlp": ([], 12, 12.6, 8.0), "mnist-tfjs-cnn": ([], None, 8.9, 5.0), "mnist-fast": ([], None, None, None)}
CIFAR = {"cifar10-cnn": (["--epochs", "5"], 5, 14.4, 3.0), "cifar10-fast": ([], None, None, None),
         "cifar10-speedrun": ([], None, None, None)}


def log(*parts) -> None:
    print("==", *parts, flush=True)


def sh(cmd: list[str], timeout: float, env: dict | None = None, cwd: Path | None = None) -> tuple[int, str, str, float]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
        return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired as exc:
        return 124, exc.stdout or "", (exc.stderr or "") + f"\ntimed out after {timeout:.0f} s", time.perf_counter() - t0


def trainlab_run(recipe: str, extra: list[str], label: str, env_extra: dict | None = None, timeout: float = 240) -> dict:
    sets = TINY if DRY else []
    if recipe.startswith("cifar10"):
        sets = [*sets, "--set", f"data.source={DATA / 'cifar10-jpeg.zip'}"]
    cmd = [sys.executable, "-m", "trainlab", "train", recipe, "--device", DEVICE, "--quiet", "--json", *extra, *sets]
    env = {**os.environ, **(env_extra or {})}
    code, out, err, wall = sh(cmd, timeout, env)
    row = {"tool": "trainlab", "recipe": recipe, "label": label, "wall": wall, "code": code}
    if code == 0:
        r = json.loads(out.strip().splitlines()[-1])
        record = json.loads(Path(r["run_dir"], "run.json").read_text()) if r.get("run_dir") else {}
        row.update(train=r["train_seconds"], total=r["total_seconds"], acc=r["test_acc"], epochs=r["epochs"],
                   step=record.get("train_step"), precision=record.get("precision"),
                   data_seconds=(record.get("timings") or {}).get("data_seconds"))
    else:
        row["error"] = err.strip().splitlines()[-1:] if err.strip() else [f"exit {code}"]
    log(json.dumps(row))
    return row


def keras_run(recipe: str, epochs: int, tmp: Path) -> dict:
    """Keras 3 on JAX, the tutorial's model.fit, on the same arrays (bench/peers/keras_peer.py)."""
    sys.path.insert(0, str(HERE))
    from compare import export_data

    from trainlab.recipes import load_recipe
    sets = {"epochs": 1, "data.limit_train": 600, "data.limit_test": 200} if DRY else {"epochs": epochs}
    if recipe.startswith("cifar10"):
        sets["data.source"] = str(DATA / "cifar10-jpeg.zip")
    r = load_recipe(recipe, sets)
    npz, _, _ = export_data(r, tmp)
    spec = tmp / f"{recipe}.json"
    spec.write_text(json.dumps(r.to_dict()))
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    code, out, err, wall = sh([sys.executable, str(HERE / "peers" / "keras_peer.py"), str(spec), str(npz), "0"], 300, env)
    row = {"tool": "keras-jax", "recipe": recipe, "label": "keras", "wall": wall, "code": code}
    if code == 0:
        k = json.loads(out.strip().splitlines()[-1])
        row.update(train=k["train_seconds"], acc=k["test_acc"], epochs=k["epochs"], versions=k.get("versions"))
    else:
        row["error"] = err.strip().splitlines()[-3:]
    log(json.dumps(row))
    return row


STARTUP = r"""
import json, sys, time
t = {}; t0 = time.perf_counter()
import torch; t["import torch"] = time.perf_counter() - t0
t1 = time.perf_counter(); import trainlab; from trainlab.training import api; t["import trainlab"] = time.perf_counter() - t1
t1 = time.perf_counter()
dev = torch.device(sys.argv[1])
if dev.type == "cuda":
    torch.cuda.init(); torch.zeros(1, device=dev); torch.cuda.synchronize()
t["CUDA context"] = time.perf_counter() - t1
t1 = time.perf_counter(); from trainlab.data.registry import load_dataset; ds = load_dataset("mnist")
t["load MNIST"] = time.perf_counter() - t1
t1 = time.perf_counter(); x = torch.from_numpy(ds.x_train).to(dev); torch.cuda.synchronize() if dev.type == "cuda" else None
t["to the device"] = time.perf_counter() - t1
print(json.dumps(t))
"""


def startup() -> dict:
    code, out, err, wall = sh([sys.executable, "-c", STARTUP, DEVICE], 120)
    row = {"tool": "startup", "wall": wall, **(json.loads(out.strip().splitlines()[-1]) if code == 0 else {"error": err[-500:]})}
    log(json.dumps(row))
    return row


def cuda_tests() -> dict:
    code, out, err, wall = sh([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py",
                               "tests/test_graphed.py"], 300 if not DRY else 600, cwd=ROOT)
    tail = (out + err).strip().splitlines()[-1:] or ["no output"]
    (OUT / "tests.txt").write_text((out + err)[-20000:])
    row = {"tool": "pytest", "label": "CUDA tests", "code": code, "summary": tail[0], "wall": wall}
    log(json.dumps(row))
    return row


def airbench_data(root: Path) -> Path:
    """airbench's CifarLoader reads cifar10/{train,test}.pt (uint8 NHWC `images`, int64 `labels`,
    `classes`): written from the same JPEG tree trainlab trains on, decoded by trainlab's loader."""
    import torch

    from trainlab.data.registry import load_dataset
    folder = root / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("cifar10", source=str(DATA / "cifar10-jpeg.zip"))
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        torch.save({"images": torch.from_numpy(x.copy()), "labels": torch.from_numpy(y.astype("int64")),
                    "classes": list(ds.classes)}, folder / f"{split}.pt")
    return root


AIRBENCH = r"""
import json, time, torch, airbench
airbench.warmup94(verbose=False)
t0 = time.perf_counter(); model = airbench.train94(verbose=True); torch.cuda.synchronize()
wall = time.perf_counter() - t0
test = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
print(json.dumps({"wall": wall, "acc": airbench.evaluate(model, test, tta_level=2)}))
"""


def airbench_run(root: Path) -> list[dict]:
    rows = []
    for i in range(2):
        code, out, err, wall = sh([sys.executable, "-c", AIRBENCH], 300, cwd=root)
        row = {"tool": "airbench94", "recipe": "cifar10", "label": f"run {i + 1}", "code": code}
        if code == 0:
            r = json.loads(out.strip().splitlines()[-1])
            row.update(train=r["wall"], acc=r["acc"])
        else:
            row["error"] = (out + err).strip().splitlines()[-3:]
        log(json.dumps(row))
        rows.append(row)
    return rows


def table(rows: list[dict], stage: str) -> str:
    head = [f"# GPU check, stage {stage}: {machine()}", "",
            "| tool | recipe | run | step | precision | train s | total s | wall s | test acc | note |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    lines = []
    for r in rows:
        if r["tool"] in ("startup", "pytest"):
            continue
        f = lambda k, d=2: "" if r.get(k) is None else f"{r[k]:.{d}f}"  # noqa: E731
        note = "; ".join(r["error"]) if r.get("error") else r.get("versions") or ""
        lines.append(f"| {r['tool']} | {r.get('recipe', '')} | {r.get('label', '')} | {r.get('step') or ''} | "
                     f"{r.get('precision') or ''} | {f('train')} | {f('total')} | {f('wall', 1)} | {f('acc', 4)} | {note[:120]} |")
    extra = []
    for r in rows:
        if r["tool"] == "startup":
            extra.append("Start-up, seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items() if isinstance(v, float)))
        if r["tool"] == "pytest":
            extra.append(f"CUDA tests: {r['summary']} ({r['wall']:.0f} s)")
    extra += ratios(rows)
    return "\n".join(head + lines + [""] + extra) + "\n"


def ratios(rows: list[dict]) -> list[str]:
    out = []
    for recipe, (_, _, issue_keras, target) in {**MNIST, **CIFAR}.items():
        warm = [r for r in rows if r.get("recipe") == recipe and r["tool"] == "trainlab" and r.get("label") == "warm" and "train" in r]
        keras = [r for r in rows if r.get("recipe") == recipe and r["tool"] == "keras-jax" and "train" in r]
        if warm and keras:
            out.append(f"{recipe}: trainlab {warm[0]['train']:.2f} s against Keras 3 (JAX) {keras[0]['train']:.2f} s = "
                       f"{keras[0]['train'] / warm[0]['train']:.1f}x (target {target}x)")
    air = [r for r in rows if r["tool"] == "airbench94" and "train" in r]
    run = [r for r in rows if r.get("recipe") == "cifar10-speedrun" and r.get("label") == "warm" and "train" in r]
    if air and run:
        best = min(air, key=lambda r: r["train"])
        out.append(f"cifar10-speedrun: {run[0]['train']:.2f} s at {run[0]['acc']:.4f} against airbench94 {best['train']:.2f} s at "
                   f"{best['acc']:.4f}: {run[0]['train'] / best['train']:.2f}x its time (target 1.2x, accuracy within 0.3 points)")
    return out


def machine() -> str:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (dry run on the CPU)"
    return f"{gpu}, torch {torch.__version__} (CUDA {torch.version.cuda}), Python {platform.python_version()}"


def main() -> None:
    stage = sys.argv[1] if len(sys.argv) > 1 else "mnist"
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TRAINLAB_RUNS", str(OUT / "runs"))
    os.environ["TRAINLAB_DATA"] = str(DATA)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if stage == "mnist":
            rows += [cuda_tests(), startup()]
            for recipe, (extra, keras_epochs, _, _) in MNIST.items():
                rows += [trainlab_run(recipe, extra, "cold"), trainlab_run(recipe, extra, "warm")]
            rows.append(trainlab_run("mnist-mlp", [], "warm, TRAINLAB_STEP=autograd", {"TRAINLAB_STEP": "autograd"}))
            rows += [keras_run(r, e, Path(tmp)) for r, (_, e, _, _) in MNIST.items() if e]
        else:
            for recipe, (extra, keras_epochs, _, _) in CIFAR.items():
                rows += [trainlab_run(recipe, extra, "cold", timeout=400), trainlab_run(recipe, extra, "warm", timeout=400)]
            rows += [keras_run(r, e, Path(tmp)) for r, (_, e, _, _) in CIFAR.items() if e]
            if not DRY:
                rows += airbench_run(airbench_data(Path(tmp)))
    (OUT / f"gpu-{stage}.json").write_text(json.dumps(rows, indent=1))
    text = table(rows, stage)
    (OUT / f"gpu-{stage}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
