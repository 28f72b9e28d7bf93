"""Batch augmentation on whole tensors: random flips, shifts and crops, no per-sample Python."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainlab.recipes import AugmentConfig


def random_crop(x: torch.Tensor, pad: int, mode: str, gen: torch.Generator) -> torch.Tensor:
    """Pad (B, C, H, W) by `pad` and cut each image back to H x W at its own random offset."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode)
    off = torch.randint(0, 2 * pad + 1, (2, b), generator=gen, device=gen.device).to(x.device)
    rows = (off[0, :, None] + torch.arange(h, device=x.device))  # (B, H)
    cols = (off[1, :, None] + torch.arange(w, device=x.device))  # (B, W)
    xp = xp.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))
    return xp.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    mask = torch.rand(x.shape[0], generator=gen, device=gen.device).to(x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def make_augment(cfg: AugmentConfig, gen: torch.Generator):
    """A function on 0-255 float batches (B, C, H, W), or None when the recipe augments nothing."""
    if not (cfg.flip or cfg.translate or cfg.crop):
        return None

    def augment(x: torch.Tensor) -> torch.Tensor:
        if cfg.crop:
            x = random_crop(x, cfg.crop, "reflect", gen)
        if cfg.translate:
            x = random_crop(x, cfg.translate, "constant", gen)  # zero-filled shift
        if cfg.flip:
            x = random_flip(x, gen)
        return x

    return augment
