"""What watching the machine costs a run (issue #36: under 1% of step time).

    python bench/usage_cost.py            # 500 samples, beside whatever runs now

Times `UsageSampler.sample()` (its CPU times, memory, threads, other programs' load and, with a
GPU, NVML) plus writing its `system` event, as RunWriter does on the training thread, and reports
the share of training time that costs at the sampler's cadence (one sample per 2 s) and at its
worst (one per 0.2 s: epochs shorter than that sample at each epoch's end). Writes
bench/results/usage_cost.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from recipes import machine  # noqa: E402


def main(n: int = 500) -> None:
    import torch

    from trainlab.runs.events import EventLog
    from trainlab.system.usage import UsageSampler
    sampler = UsageSampler(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    log = EventLog(Path(tempfile.mkdtemp()) / "events.jsonl")
    times = []
    for i in range(n):
        t = time.perf_counter()
        sample = sampler.sample()
        log.append("system", epoch=1, step=i, steps=n, threads_torch=torch.get_num_threads(), **sample)
        times.append(time.perf_counter() - t)
    times.sort()
    med, p95 = statistics.median(times), times[int(0.95 * (n - 1))]
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "samples": n,
              "sample_ms_median": med * 1e3, "sample_ms_p95": p95 * 1e3, "sample_ms_max": times[-1] * 1e3,
              "share_at_2s": med / 2.0, "share_at_0.2s": med / 0.2, "gpu": torch.cuda.is_available()}
    (HERE / "results" / "usage_cost.json").write_text(json.dumps(result, indent=1))
    print(f"{result['machine']}\none sample and its event: median {med * 1e3:.3f} ms, p95 {p95 * 1e3:.3f} ms, "
          f"max {times[-1] * 1e3:.3f} ms; share of training time: {result['share_at_2s']:.4%} at one per 2 s, "
          f"{result['share_at_0.2s']:.3%} at one per 0.2 s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
