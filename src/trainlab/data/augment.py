"""Batch augmentation on whole tensors: random flips, shifts and crops, affine warps (rotation,
zoom, sub-pixel shift), stroke width, blur and contrast; no per-sample Python. Every random draw
comes from the run's generator, so a resumed run augments exactly as the uninterrupted one."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainlab.recipes import AugmentConfig


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, device=gen.device) * (high - low) + low).to(device)


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


def random_affine(x: torch.Tensor, degrees: float, scale: float, shift: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate by up to `degrees`, zoom by [1-scale, 1+scale] and shift by up to `shift` of the size,
    each image its own draw; one affine_grid + bilinear grid_sample for the batch, zeros outside."""
    b = x.shape[0]
    angle = _uniform(b, -degrees, degrees, gen, x.device) * (math.pi / 180)
    zoom = _uniform(b, 1 - scale, 1 + scale, gen, x.device)
    tx, ty = (_uniform(b, -2 * shift, 2 * shift, gen, x.device) for _ in range(2))  # grid units: the image is 2 wide
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_stroke(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """A fraction `p` of images get thicker strokes (3x3 max filter) or thinner ones (3x3 min
    filter), half each: the pen widths of drawn digits, which MNIST's scans lack."""
    r = _uniform(x.shape[0], 0, 1, gen, x.device)[:, None, None, None]
    thick = F.max_pool2d(x, 3, 1, 1)
    thin = -F.max_pool2d(-x, 3, 1, 1)
    return torch.where(r < p / 2, thick, torch.where(r < p, thin, x))


def random_blur(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """A fraction `p` of images blurred by a 3x3 Gaussian (sigma about 0.85), channel by channel."""
    k1 = torch.tensor([0.25, 0.5, 0.25], device=x.device)
    kernel = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
    r = _uniform(x.shape[0], 0, 1, gen, x.device)[:, None, None, None]
    return torch.where(r < p, blurred, x)


def random_contrast(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Scale each image's intensities by a factor in [1-amount, 1] (faint ink, grey strokes)."""
    return x * _uniform(x.shape[0], 1 - amount, 1, gen, x.device)[:, None, None, None]


def make_augment(cfg: AugmentConfig, gen: torch.Generator):
    """A function on 0-255 float batches (B, C, H, W), or None when the recipe augments nothing."""
    affine = bool(cfg.rotate or cfg.scale or cfg.shift)
    if not (cfg.flip or cfg.translate or cfg.crop or affine or cfg.stroke or cfg.blur or cfg.contrast):
        return None

    def augment(x: torch.Tensor) -> torch.Tensor:
        if cfg.crop:
            x = random_crop(x, cfg.crop, "reflect", gen)
        if cfg.translate:
            x = random_crop(x, cfg.translate, "constant", gen)  # zero-filled shift
        if cfg.stroke:
            x = random_stroke(x, cfg.stroke, gen)
        if affine:
            x = random_affine(x, cfg.rotate, cfg.scale, cfg.shift, gen)
        if cfg.blur:
            x = random_blur(x, cfg.blur, gen)
        if cfg.contrast:
            x = random_contrast(x, cfg.contrast, gen)
        if cfg.flip:
            x = random_flip(x, gen)
        return x

    return augment
