"""Inference speed: the whole test set through `Run.predict` (images/s), and one image at a time
(latency p50 / p99), for each recipe's model.

    python bench/inference.py                         # mnist-mlp, mnist-tfjs-cnn, mnist-fast, fashion-fast
    python bench/inference.py --recipes mnist-fast --repeat 500

The weights come from a short training run (speed does not depend on their values); predictions
go through the public API a user calls: uint8 arrays in, probabilities with out-of-distribution
warnings out. Results land in bench/results/inference.json and print as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from recipes import machine  # noqa: E402

HERE = Path(__file__).resolve().parent


def measure(name: str, repeat: int, sets: list[str]) -> dict:
    import trainlab
    from trainlab.recipes import parse_set
    overrides = parse_set(sets)
    overrides.setdefault("data.limit_train", 2000)
    run = trainlab.train(name, epochs=1, overrides=overrides, save=False, progress="none")
    x_test = run.tensors().x_test.permute(0, 2, 3, 1).contiguous().numpy()  # the dataset's uint8 (N, H, W, C)
    run.predict(x_test[:256])  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        preds = run.predict(x_test)
        times.append(time.perf_counter() - t0)
    acc = float((preds.labels == run.tensors().y_test.numpy()).mean())
    lat = []
    for i in range(repeat + 10):
        one = x_test[i % len(x_test)][None]
        t0 = time.perf_counter()
        run.predict(one)
        lat.append(time.perf_counter() - t0)
    lat = sorted(lat[10:])
    return {"recipe": name, "n": len(x_test), "images_per_s": len(x_test) / min(times),
            "batch_seconds": min(times), "latency_p50_ms": 1e3 * statistics.median(lat),
            "latency_p99_ms": 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], "acc_short_run": acc}


def markdown(rows: list[dict], info: str) -> str:
    lines = [f"Machine: {info}", "", "| recipe | test images | images/s (whole test set) | single image p50 | p99 |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['n']:,} | {r['images_per_s']:,.0f} | {r['latency_p50_ms']:.2f} ms "
                     f"| {r['latency_p99_ms']:.2f} ms |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="mnist-mlp,mnist-tfjs-cnn,mnist-fast,fashion-fast")
    ap.add_argument("--repeat", type=int, default=300, help="single-image predictions per recipe")
    ap.add_argument("--set", action="append", default=[], help="recipe override, as trainlab --set")
    ap.add_argument("--out", default=str(HERE / "results" / "inference.json"))
    ap.add_argument("--markdown", help="print the table of a saved results file and exit")
    args = ap.parse_args()
    if args.markdown:
        saved = json.loads(Path(args.markdown).read_text())
        print(markdown(saved["rows"], saved["machine"]))
        return
    from trainlab.system.process_wide import prepare_short_process
    prepare_short_process()
    import torch
    info = machine() + f", {torch.get_num_threads()} threads"
    rows = []
    for name in [r for r in args.recipes.split(",") if r]:
        rows.append(measure(name, args.repeat, args.set))
        print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": info, "date": time.strftime("%Y-%m-%d"), "rows": rows,
                                          "command": " ".join(sys.argv)}, indent=1))
    print(markdown(rows, info))


if __name__ == "__main__":
    main()
