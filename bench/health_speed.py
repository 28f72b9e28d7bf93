"""How long `trainlab data check` takes and how much memory it holds: all 70,000 MNIST images
(5 folds) and a 10,000-image tree (Fashion-MNIST's test set written out as PNG files, 5 folds).

    python bench/health_speed.py              # writes bench/results/health_speed.json
    python bench/health_speed.py --busy 1     # the same beside one busy process (health_speed_busy1.json)

Each check runs as its own `trainlab data check ... --json` process (as a user runs it); wall time
from start to exit, peak memory from the process's maximum resident set (getrusage of children).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def write_tree(root: Path, data_dir: str) -> Path:
    from trainlab.data.registry import load_dataset
    from trainlab.settings import load_settings
    ds = load_dataset("fashion-mnist", settings=load_settings(data_dir=data_dir))
    for i, (x, y) in enumerate(zip(ds.x_test, ds.y_test)):
        folder = root / ds.classes[int(y)].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[..., 0]).save(folder / f"{i:05d}.png")
    return root


def timed_check(target: str, env: dict) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "trainlab", "data", "check", target, "--json"], capture_output=True, text=True,
                         env=env, check=True)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    kinds: dict[str, int] = {}
    for line in out.stdout.splitlines():
        k = json.loads(line)["kind"]
        kinds[k] = kinds.get(k, 0) + 1
    return {"target": target, "seconds": round(seconds, 1), "peak_rss_mb": round(max(peak, before) / 1024, 1), "findings": kinds,
            "summary": out.stderr.strip().splitlines()[-1:] or []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("TRAINLAB_DATA", ""))
    ap.add_argument("--busy", type=int, default=0, help="busy processes (python -c 'while True: pass') beside the checks")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out_path = args.out or Path(__file__).parent / "results" / (f"health_speed_busy{args.busy}.json" if args.busy else "health_speed.json")
    env = {**os.environ, "TRAINLAB_DATA": args.data_dir}
    rows = []
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        run_all(rows, env, args.data_dir)
    finally:
        for p in spinners:
            p.kill()
    load = os.getloadavg()
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}", "busy_processes": args.busy,
           "load_average_after": [round(v, 2) for v in load], "rows": rows}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=1))
    print(f"wrote {out_path}")


def run_all(rows: list, env: dict, data_dir: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env["TRAINLAB_CACHE"] = str(Path(tmp) / "cache")
        rows.append(timed_check("mnist", env))
        print(rows[-1], flush=True)
        tree = write_tree(Path(tmp) / "fashion-test-tree", data_dir)
        rows.append(timed_check(str(tree), env))
        rows[-1]["target"] = "a 10,000-image tree (Fashion-MNIST test as PNG)"
        print(rows[-1], flush=True)


if __name__ == "__main__":
    main()
