"""Batch augmentation on whole tensors: random flips, shifts and crops, affine warps (rotation,
zoom, sub-pixel shift), stroke width, blur and contrast; no per-sample Python.

Every random choice is a function of a few uniform numbers per example: `Augment.width` of them,
drawn for the whole epoch at once (`Augment.draw`, from the run's generator, beside the epoch's
shuffle) and sliced with the batch. So the batch's augmentation is a pure function of its rows and
their draws: a resumed run augments exactly as the uninterrupted one (the checkpoint keeps the
epoch's draws), and a captured CUDA graph replays it with no host work (engine/graphed.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainlab.recipes import AugmentConfig


def _between(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Uniform draws in [0, 1) mapped to [low, high)."""
    return u * (high - low) + low


def _whole(u: torch.Tensor, n: int) -> torch.Tensor:
    """Uniform draws in [0, 1) as whole numbers 0..n-1."""
    return (u * n).long().clamp_(max=n - 1)


def random_crop(x: torch.Tensor, pad: int, mode: str, u: torch.Tensor) -> torch.Tensor:
    """Pad (B, C, H, W) by `pad` and cut each image back to H x W at its own offset; u: (B, 2) draws."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode)
    off = _whole(u.to(x.device), 2 * pad + 1)  # (B, 2): row and column offsets
    rows = (off[:, 0, None] + torch.arange(h, device=x.device))  # (B, H)
    cols = (off[:, 1, None] + torch.arange(w, device=x.device))  # (B, W)
    xp = xp.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))
    return xp.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def random_flip(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Flip each image left-right with probability 1/2; u: (B,) draws."""
    return torch.where((u.to(x.device) < 0.5)[:, None, None, None], x.flip(3), x)


def random_affine(x: torch.Tensor, degrees: float, scale: float, shift: float, u: torch.Tensor) -> torch.Tensor:
    """Rotate by up to `degrees`, zoom by [1-scale, 1+scale] and shift by up to `shift` of the size,
    each image its own draw (u: (B, 4)); one affine_grid + bilinear grid_sample for the batch, zeros outside."""
    u = u.to(x.device)
    angle = _between(u[:, 0], -degrees, degrees) * (math.pi / 180)
    zoom = _between(u[:, 1], 1 - scale, 1 + scale)
    tx, ty = _between(u[:, 2], -2 * shift, 2 * shift), _between(u[:, 3], -2 * shift, 2 * shift)  # grid units: the image is 2 wide
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_stroke(x: torch.Tensor, p: float, u: torch.Tensor) -> torch.Tensor:
    """A fraction `p` of images get thicker strokes (3x3 max filter) or thinner ones (3x3 min
    filter), half each: the pen widths of drawn digits, which MNIST's scans lack. u: (B,) draws."""
    r = u.to(x.device)[:, None, None, None]
    thick = F.max_pool2d(x, 3, 1, 1)
    thin = -F.max_pool2d(-x, 3, 1, 1)
    return torch.where(r < p / 2, thick, torch.where(r < p, thin, x))


def random_blur(x: torch.Tensor, p: float, u: torch.Tensor) -> torch.Tensor:
    """A fraction `p` of images blurred by a 3x3 Gaussian (sigma about 0.85), channel by channel."""
    k1 = torch.tensor([0.25, 0.5, 0.25], device=x.device)
    kernel = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
    return torch.where(u.to(x.device)[:, None, None, None] < p, blurred, x)


def random_contrast(x: torch.Tensor, amount: float, u: torch.Tensor) -> torch.Tensor:
    """Scale each image's intensities by a factor in [1-amount, 1] (faint ink, grey strokes)."""
    return x * _between(u.to(x.device), 1 - amount, 1)[:, None, None, None]


class Augment:
    """The recipe's augmentations in their fixed order, each reading its own columns of the draws."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg
        self.affine = bool(cfg.rotate or cfg.scale or cfg.shift)
        self.columns = {name: n for name, n, on in [("crop", 2, cfg.crop), ("translate", 2, cfg.translate),
                                                    ("stroke", 1, cfg.stroke), ("affine", 4, self.affine),
                                                    ("blur", 1, cfg.blur), ("contrast", 1, cfg.contrast),
                                                    ("flip", 1, cfg.flip)] if on}
        self.width = sum(self.columns.values())  # uniform draws per example

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """The epoch's draws: (n, width) uniforms in [0, 1) from the run's generator."""
        return torch.rand((n, self.width), generator=gen, device=gen.device)

    def __call__(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Augment a 0-255 float batch (B, C, H, W) with its rows' draws u (B, width)."""
        cfg, at = self.cfg, 0
        cols = {}
        for name, n in self.columns.items():
            cols[name] = u[:, at] if n == 1 else u[:, at:at + n]
            at += n
        if cfg.crop:
            x = random_crop(x, cfg.crop, "reflect", cols["crop"])
        if cfg.translate:
            x = random_crop(x, cfg.translate, "constant", cols["translate"])  # zero-filled shift
        if cfg.stroke:
            x = random_stroke(x, cfg.stroke, cols["stroke"])
        if self.affine:
            x = random_affine(x, cfg.rotate, cfg.scale, cfg.shift, cols["affine"])
        if cfg.blur:
            x = random_blur(x, cfg.blur, cols["blur"])
        if cfg.contrast:
            x = random_contrast(x, cfg.contrast, cols["contrast"])
        if cfg.flip:
            x = random_flip(x, cols["flip"])
        return x


def make_augment(cfg: AugmentConfig) -> Augment | None:
    """The recipe's augmentation, or None when it augments nothing."""
    augment = Augment(cfg)
    return augment if augment.width else None
