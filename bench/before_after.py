"""trainlab at another commit against the working tree: the same recipes, interleaved, beside 0, 1 or 2
busy processes. What a refactoring costs or saves, measured rather than guessed.

    python bench/before_after.py d965765                               # mnist-mlp, fashion-mlp, mnist-tfjs-cnn; 3 rounds
    python bench/before_after.py d965765 --recipes walk-5-relu --rounds 5 --loads 0,1

The commit is checked out once into a temporary worktree (`git worktree add --detach`), and each run
is `python -m trainlab train RECIPE --quiet --json --no-save` as a fresh process with PYTHONPATH set to
that worktree's src/ (before) or this one's (after), so start-up and data loading count. Within a
round the two alternate, and which goes first alternates between rounds, so drift and the busy
programs hit both alike. The busy programs are `python -c "while True: pass"`, started before the
runs of a load and stopped after. Reports median train and wall seconds with min-max per side, the
ratio of medians (after / before: below 1 is faster), and the test accuracies (the same seed on both
sides: equal unless the arithmetic changed). Writes bench/results/before_after.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from recipes import machine  # noqa: E402

BUSY = [sys.executable, "-c", "while True: pass"]


@contextlib.contextmanager
def busy(n: int):
    procs = [subprocess.Popen(BUSY) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0)  # let them reach full speed
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def one_run(src: Path, recipe: str, seed: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "trainlab", "train", recipe, "--seed", str(seed), "--quiet", "--json", "--no-save"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{recipe} from {src} failed:\n{p.stderr.strip()[-2000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return {"wall_seconds": wall, "train_seconds": out["train_seconds"], "test_acc": out["test_acc"]}


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for key in dict.fromkeys((r["recipe"], r["load"]) for r in rows):
        sides = {}
        for side in ("before", "after"):
            rs = [r for r in rows if (r["recipe"], r["load"]) == key and r["side"] == side]
            sides[side] = {"n": len(rs), "train": spread([r["train_seconds"] for r in rs]),
                           "wall": spread([r["wall_seconds"] for r in rs]), "acc": sorted({round(r["test_acc"], 4) for r in rs})}
        out.append({"recipe": key[0], "load": key[1], **sides,
                    "train_ratio": sides["after"]["train"]["median"] / sides["before"]["train"]["median"],
                    "wall_ratio": sides["after"]["wall"]["median"] / sides["before"]["wall"]["median"]})
    return out


def table(summary: list[dict]) -> str:
    lines = ["| recipe | busy | before train s | after train s | after/before train | before wall s | after wall s | after/before wall | test acc before / after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        b, a = e["before"], e["after"]

        def cell(s):
            return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"
        lines.append(f"| {e['recipe']} | {e['load']} | {cell(b['train'])} | {cell(a['train'])} | {e['train_ratio']:.2f} | "
                     f"{cell(b['wall'])} | {cell(a['wall'])} | {e['wall_ratio']:.2f} | {b['acc']} / {a['acc']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the commit to measure against (before)")
    ap.add_argument("--recipes", default="mnist-mlp,fashion-mlp,mnist-tfjs-cnn")
    ap.add_argument("--loads", default="0", help="comma list of busy-process counts")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "before_after.json"))
    args = ap.parse_args()
    worktree = Path(tempfile.mkdtemp(prefix="trainlab-before-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(worktree), args.rev], check=True)
    sides = {"before": worktree / "src", "after": ROOT / "src"}
    rows = []
    try:
        for load in [int(x) for x in args.loads.split(",")]:
            with busy(load):
                for rnd in range(args.rounds):
                    order = ["before", "after"] if rnd % 2 == 0 else ["after", "before"]
                    for recipe in args.recipes.split(","):
                        for side in order:
                            row = {"recipe": recipe, "load": load, "round": rnd, "side": side,
                                   **one_run(sides[side], recipe, args.seed)}
                            rows.append(row)
                            print(f"{recipe:16s} busy {load} round {rnd} {side:6s}: train {row['train_seconds']:6.2f} s, "
                                  f"wall {row['wall_seconds']:6.2f} s, acc {row['test_acc']:.4f}", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    summary = summarize(rows)
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "before": args.rev, "after": f"{rev} + working tree",
              "command": " ".join(["bench/before_after.py", *sys.argv[1:]]), "rows": rows, "summary": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\n{result['machine']}; before {args.rev}, after {result['after']}\n")
    print(table(summary))


if __name__ == "__main__":
    main()
