"""Side-by-side benchmark: trainlab, Keras 3 + TensorFlow, and an idiomatic PyTorch DataLoader loop.

    python bench/compare.py                                   # the MNIST-family seed recipes, 3 seeds
    python bench/compare.py --recipes mnist-mlp --seeds 5
    python bench/compare.py --recipes cifar10-cnn --epochs 1 --seeds 1
    python bench/compare.py --markdown bench/results/compare.json   # re-print a saved table

Each run is a fresh process (start-up and data loading count in its wall time), the three tools
interleaved seed by seed so that the machine's drift hits them alike. All three train the same
recipe: the same layers and initialisation, optimizer, batch size, epochs, validation and data
(trainlab's loader exports the arrays once; the peers read them from an .npz).

The Keras peer needs TensorFlow, which is not a dependency of trainlab: the first run creates
bench/.venv-tf and installs tensorflow-cpu there (--tf-python to use another interpreter).

Reported per recipe and tool: median wall and train seconds with the min-max spread, samples/s
(training examples x epochs / train seconds), mean test accuracy with the spread, trainlab's
speed-up against each peer (ratio of medians), and trainlab's share of the machine's fp32 matmul
peak: training FLOPs (forward + backward per example, counted by torch's FlopCounterMode, plus
the forward passes of validation) / train seconds / the best GFLOP/s of square matmuls timed here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from recipes import MNIST_FAMILY, machine  # noqa: E402

HERE = Path(__file__).resolve().parent
TF_VENV = HERE / ".venv-tf"
TOOLS = ("trainlab", "keras", "torch", "trainlab-fp32", "keras-bf16", "trainlab-2threads", "trainlab-2threads-passive")
# trainlab-fp32: trainlab with `--set precision=fp32` (what `auto` picks is in run.json and the
# progress line); keras-bf16: the Keras peer under Keras' mixed_bfloat16 policy;
# trainlab-2threads(-passive): trainlab pinned to 2 threads (TRAINLAB_THREADS=2), with libgomp's
# default spinning or OMP_WAIT_POLICY=PASSIVE: what the thread policy decides against beside busy programs.
TOOL_NAMES = {"trainlab": "trainlab", "keras": "Keras 3 + TF", "torch": "PyTorch DataLoader",
              "trainlab-fp32": "trainlab, precision fp32", "keras-bf16": "Keras 3 + TF, mixed_bfloat16",
              "trainlab-2threads": "trainlab, 2 threads", "trainlab-2threads-passive": "trainlab, 2 threads, passive wait"}
TRAINLAB_ENV = {"trainlab-2threads": {"TRAINLAB_THREADS": "2"},
                "trainlab-2threads-passive": {"TRAINLAB_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}}


def matmul_peak() -> tuple[float, str]:
    """The best fp32 GFLOP/s of square matmuls (256..2048) with torch's own threads."""
    import torch
    best, where = 0.0, ""
    for n in (256, 512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        reps = max(3, int(2e10 / (2 * n ** 3)))
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            times.append((time.perf_counter() - t0) / reps)
        g = 2 * n ** 3 / min(times) / 1e9
        if g > best:
            best, where = g, f"{n}x{n}"
    return best, where


def model_flops(recipe, shape: tuple[int, ...], n_classes: int) -> tuple[int, int]:
    """(training FLOPs per example: forward + backward, inference FLOPs per example)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from trainlab.models import build_model
    model, _ = build_model(recipe.model, shape, n_classes)
    x = torch.randn(8, *shape)
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(model(x), torch.zeros(8, dtype=torch.long)).backward()
    train = fc.get_total_flops() // 8
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return train, fc.get_total_flops() // 8


def ensure_tf_python(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    py = TF_VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {TF_VENV} with tensorflow-cpu (once; a few minutes)", file=sys.stderr, flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(TF_VENV)], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "-q", "tensorflow-cpu"], check=True)
        except subprocess.CalledProcessError as exc:
            print(f"could not install tensorflow-cpu ({exc}); the Keras column is skipped", file=sys.stderr)
            return None
    return str(py)


def export_data(recipe, out: Path) -> tuple[Path, tuple[int, ...], int]:
    """The recipe's dataset as uint8 NHWC arrays in an .npz (limits applied), its model input shape."""
    import numpy as np

    from trainlab.data.registry import load_dataset
    d = recipe.data
    ds = load_dataset(d.name, source=d.source, test_fraction=d.test_fraction, split_seed=d.split_seed, progress=False)
    path = out / f"{Path(d.name).name}-{d.limit_train}-{d.limit_test}.npz"
    if not path.exists():
        np.savez(path, x_train=ds.x_train[:d.limit_train], y_train=ds.y_train[:d.limit_train],
                 x_test=ds.x_test[:d.limit_test], y_test=ds.y_test[:d.limit_test])
    h, w, c = ds.x_train.shape[1:]
    shape = (h * w * c,) if d.flatten else (c, h, w)
    return path, shape, len(ds.classes)


def run_tool(tool: str, recipe_name: str, recipe_json: Path, npz: Path, seed: int, sets: list[str],
             epochs: int | None, tf_python: str | None) -> dict:
    env = None
    if tool.startswith("trainlab"):
        env = {**os.environ, **TRAINLAB_ENV[tool]} if tool in TRAINLAB_ENV else None
        cmd = [sys.executable, "-m", "trainlab", "train", recipe_name, "--seed", str(seed), "--quiet", "--json", "--no-save"]
        for s in sets + (["precision=fp32"] if tool == "trainlab-fp32" else []):
            cmd += ["--set", s]
        if epochs:
            cmd += ["--epochs", str(epochs)]
    elif tool in ("keras", "keras-bf16"):
        cmd = [tf_python, str(HERE / "peers" / "keras_peer.py"), str(recipe_json), str(npz), str(seed)]
        if tool == "keras-bf16":
            env = {**os.environ, "KERAS_PEER_POLICY": "mixed_bfloat16"}
    else:
        cmd = [sys.executable, str(HERE / "peers" / "torch_peer.py"), str(recipe_json), str(npz), str(seed)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{tool} {recipe_name} seed {seed} failed:\n{p.stderr.strip()[-2000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return {"tool": tool, "recipe": recipe_name, "seed": seed, "wall_seconds": wall,
            "train_seconds": out["train_seconds"], "test_acc": out["test_acc"], "versions": out.get("versions")}


def summarize(rows: list[dict], meta: dict) -> list[dict]:
    out = []
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        m = meta[recipe]
        entry = {"recipe": recipe, "tools": {}}
        for tool in TOOLS:
            rs = [r for r in rows if r["recipe"] == recipe and r["tool"] == tool]
            if not rs:
                continue
            train = [r["train_seconds"] for r in rs]
            wall = [r["wall_seconds"] for r in rs]
            acc = [r["test_acc"] for r in rs]
            med = statistics.median(train)
            entry["tools"][tool] = {
                "n": len(rs), "train_median": med, "train_min": min(train), "train_max": max(train),
                "wall_median": statistics.median(wall), "wall_min": min(wall), "wall_max": max(wall),
                "acc_mean": statistics.mean(acc), "acc_min": min(acc), "acc_max": max(acc),
                "samples_per_s": m["samples"] / med,
                "peak_fraction": m["flops"] / med / (meta["_peak_gflops"] * 1e9)}
        tl = entry["tools"].get("trainlab")
        for tool in TOOLS[1:]:
            peer = entry["tools"].get(tool)
            if tl and peer:
                entry[f"speedup_{tool}_wall"] = peer["wall_median"] / tl["wall_median"]
                entry[f"speedup_{tool}_train"] = peer["train_median"] / tl["train_median"]
        out.append(entry)
    return out


def markdown(summary: list[dict], info: str) -> str:
    lines = [f"Machine: {info}", "",
             "| recipe | tool | seeds | wall s, median (min–max) | train s, median (min–max) | samples/s | test acc, mean (min–max) | % of matmul peak | trainlab speed-up (wall / train) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        for tool, t in e["tools"].items():
            speed = "—" if tool == "trainlab" else \
                f"{e.get(f'speedup_{tool}_wall', 0):.1f}× / {e.get(f'speedup_{tool}_train', 0):.1f}×"
            name = TOOL_NAMES[tool]
            lines.append(
                f"| {e['recipe'] if tool == 'trainlab' else ''} | {name} | {t['n']} | {t['wall_median']:.1f} ({t['wall_min']:.1f}–{t['wall_max']:.1f}) "
                f"| {t['train_median']:.1f} ({t['train_min']:.1f}–{t['train_max']:.1f}) | {t['samples_per_s']:,.0f} "
                f"| {t['acc_mean']:.4f} ({t['acc_min']:.4f}–{t['acc_max']:.4f}) | {100 * t['peak_fraction']:.1f}% | {speed} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default=",".join(MNIST_FAMILY))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tools", default=",".join(TOOLS), help="a comma list of " + ", ".join(TOOLS))
    ap.add_argument("--epochs", type=int, help="override every recipe's epochs (all tools alike)")
    ap.add_argument("--set", action="append", default=[], help="recipe override for all tools, as trainlab --set")
    ap.add_argument("--tf-python", help="a Python with tensorflow and keras (default: bench/.venv-tf, made on first use)")
    ap.add_argument("--out", default=str(HERE / "results" / "compare.json"))
    ap.add_argument("--markdown", help="print the table of a saved results file and exit")
    args = ap.parse_args()
    if args.markdown:
        saved = json.loads(Path(args.markdown).read_text())
        print(markdown(saved["summary"], saved["machine"]))
        return

    from trainlab.recipes import load_recipe, parse_set
    tools = [t for t in args.tools.split(",") if t]
    bad = [t for t in tools if t not in TOOLS]
    if bad:
        raise SystemExit(f"unknown tool {bad[0]}; allowed: {', '.join(TOOLS)}")
    wants_tf = any(t.startswith("keras") for t in tools)
    tf_python = ensure_tf_python(args.tf_python) if wants_tf else None
    if wants_tf and tf_python is None:
        tools = [t for t in tools if not t.startswith("keras")]
    peak, peak_at = matmul_peak()
    info = machine() + f", fp32 matmul peak {peak:.0f} GFLOP/s ({peak_at})"
    print(info, flush=True)
    meta: dict = {"_peak_gflops": peak}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="trainlab-bench-") as tmp:
        for name in [r for r in args.recipes.split(",") if r]:
            recipe = load_recipe(name, parse_set(args.set), epochs=args.epochs)
            npz, shape, n_classes = export_data(recipe, Path(tmp))
            recipe_json = Path(tmp) / f"{name}.json"
            recipe_json.write_text(recipe.model_dump_json(by_alias=True))
            import numpy as np
            n_all = len(np.load(npz)["y_train"])
            n_fit = int(n_all * (1 - recipe.data.validation)) if isinstance(recipe.data.validation, float) else n_all
            n_val = {"none": 0, "test": len(np.load(npz)["y_test"])}.get(recipe.data.validation, n_all - n_fit) \
                if not isinstance(recipe.data.validation, float) else n_all - n_fit
            train_f, infer_f = model_flops(recipe, shape, n_classes)
            meta[name] = {"samples": n_fit * recipe.epochs,
                          "flops": recipe.epochs * (n_fit * train_f + n_val * infer_f),
                          "train_flops_per_example": train_f}
            for seed in range(args.seeds):
                for tool in tools:
                    row = run_tool(tool, name, recipe_json, npz, seed, args.set, args.epochs, tf_python)
                    rows.append(row)
                    print(f"{name:20s} {tool:9s} seed {seed}: wall {row['wall_seconds']:6.1f} s, train "
                          f"{row['train_seconds']:6.1f} s, test acc {row['test_acc']:.4f}", flush=True)
    summary = summarize(rows, meta)
    versions = sorted({r["versions"] for r in rows if r.get("versions")})
    info += "; " + "; ".join(versions)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": info, "date": time.strftime("%Y-%m-%d"), "rows": rows,
                                          "meta": meta, "summary": summary,
                                          "command": " ".join(sys.argv)}, indent=1))
    print()
    print(markdown(summary, info))


if __name__ == "__main__":
    main()
