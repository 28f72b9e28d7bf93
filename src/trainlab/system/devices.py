"""The device a run trains on: `auto` is CUDA when there is one, else the CPU."""

from __future__ import annotations

import torch

from trainlab.errors import TrainlabError


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
