"""The device a run trains on: `auto` is CUDA when there is one, else the CPU."""

from __future__ import annotations

import torch

from trainlab.errors import TrainlabError


def warm_up(device: torch.device):
    """Start CUDA's context on `device` in a background thread, so that it comes up while the data
    loads (a context takes ~0.5-2 s on a data-centre GPU, MNIST's loading about as long); the first
    use on the main thread waits for it. Returns the thread, or None on the CPU."""
    if device.type != "cuda":
        return None
    import threading

    def start() -> None:
        try:
            torch.zeros(1, device=device)
        except RuntimeError:  # the main thread's first use will say what is wrong, in one line
            pass

    t = threading.Thread(target=start, name="trainlab-cuda-warm-up", daemon=True)
    t.start()
    return t


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """auto: CUDA when there is one, else the CPU; a named device is checked to exist."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise TrainlabError(f"--device {device!r}: use auto, cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):
        raise TrainlabError(f"--device {device!r}: use auto, cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainlabError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return dev
