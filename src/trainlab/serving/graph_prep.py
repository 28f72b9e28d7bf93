"""The photo preparation of `images.py` written as tensor operations, so that it can live inside an
exported ONNX graph: one decoded photo of any size, uint8 (H, W, C) with C = 1, 3 or 4, in; the
run's dataset-format image out, float (C, h, w) with values 0-255.

Every step follows the PIL operation it stands for, written as the arithmetic PIL does:
a resize is PIL's separable resampling (the filter's support widened by the scale factor, weights
normalised per output pixel, a rounded 8-bit image after each pass) expressed as two weight
matrices; `reducing_gap` is PIL's box `reduce` before it; the max filter and box blur replicate
edges as PIL does; sizes that depend on the photo (the ink's bounding box, the fitted size, where
the centre of mass lands) are weights and masks on fixed-size tensors, never data-dependent shapes.
`tests/test_export.py` checks each step against PIL and the whole against `images.prepare_image`.

What stays outside the graph is decoding: give the pixels after EXIF rotation (what a browser,
PIL's `ImageOps.exif_transpose` or any camera library shows).
"""

from __future__ import annotations

import math

import torch
from torch import nn

SMALL = 64  # the paper estimate works on the photo at most 64 px long (as images._ink does)


def _filter(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "bilinear":
        return torch.clamp(1.0 - x.abs(), min=0.0)
    px = math.pi * x
    safe = torch.where(x == 0, torch.ones_like(px), px)
    sinc = torch.where(x == 0, torch.ones_like(px), torch.sin(safe) / safe)
    sinc3 = torch.where(x == 0, torch.ones_like(px), torch.sin(safe / 3) / (safe / 3))
    return torch.where((x >= -3.0) & (x < 3.0), sinc * sinc3, torch.zeros_like(px))


PRECISION = float(1 << 22)  # PIL's 8-bit resampling keeps its weights as 22-bit fixed point


def _fixed(w: torch.Tensor) -> torch.Tensor:
    """Weights as PIL's integers: (int)(0.5 + w * 2^22), or (int)(-0.5 + ...) for negative ones."""
    return torch.where(w < 0, torch.ceil(w * PRECISION - 0.5), torch.floor(w * PRECISION + 0.5))


def resample_weights(in_size: torch.Tensor, out_size: torch.Tensor, rows: int, cols: torch.Tensor, kind: str,
                     start: torch.Tensor | None = None, span: torch.Tensor | None = None) -> torch.Tensor:
    """PIL's resampling weights along one axis, (rows, len(cols)), in its 22-bit fixed point: output pixel i < out_size reads
    input pixels `cols` (positions 0..in_size-1 of a source that starts at `start` and is `span`
    long: a crop of it, or the whole of it); rows at or past out_size are zero."""
    start = torch.zeros((), dtype=torch.float64) if start is None else start.to(torch.float64)
    # PIL takes the box as C floats: 280/3 is 93.33333587646484 there, and ties tip on it
    span = in_size.to(torch.float64) if span is None else span.to(torch.float32).to(torch.float64)
    scale = span / out_size.to(torch.float64)
    filterscale = torch.clamp(scale, min=1.0)
    i = torch.arange(rows, dtype=torch.float64)[:, None]
    centre = (i + 0.5) * scale
    j = cols.to(torch.float64)[None, :] - start
    w = _filter((j - centre + 0.5) / filterscale, kind)
    inside = (j >= 0) & (j < in_size.to(torch.float64)) & (i < out_size.to(torch.float64))
    w = torch.where(inside, w, torch.zeros_like(w))
    total = w.sum(1, keepdim=True)
    return _fixed(w / torch.where(total == 0, torch.ones_like(total), total))


def _round8(x: torch.Tensor) -> torch.Tensor:
    """An 8-bit pass's output: PIL rounds half up and clips."""
    return torch.clamp(torch.floor(x + 0.5), 0.0, 255.0)


def _pass(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.floor((weights @ values + PRECISION / 2) / PRECISION), 0.0, 255.0)


def resize(g: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> torch.Tensor:
    """Separable resize of (..., H, W) with `resample_weights` for the rows (h, H) and the columns
    (w, W): the horizontal pass first, rounded to 8 bits, then the vertical one, as PIL does."""
    across = _pass(wx, g.transpose(-1, -2)).transpose(-1, -2)
    return _pass(wy, across)


def _size(n: torch.Tensor) -> torch.Tensor:
    return n.to(torch.float64)


def reduce_then_bilinear(g: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """PIL's `resize((out_w, out_h), BILINEAR, reducing_gap=3.0)` of (C, H, W): a box `reduce` by
    int(size / out / 3) per axis first (each block's mean, in PIL's fixed point), then the
    antialiased bilinear resize of the reduced image. The reduced size is shape arithmetic on the
    photo's size (symbolic in an exported graph), never on its pixels."""
    h_in, w_in = g.shape[-2], g.shape[-1]
    fy = torch.sym_max(1, h_in // (3 * out_h))
    fx = torch.sym_max(1, w_in // (3 * out_w))
    rh, rw = (h_in + fy - 1) // fy, (w_in + fx - 1) // fx
    y0, x0 = torch.arange(rh) * fy, torch.arange(rw) * fx
    y1, x1 = torch.clamp(y0 + fy, max=h_in), torch.clamp(x0 + fx, max=w_in)
    # block sums: down the columns in float32 (exact below 2^24: 65,000 rows of 255), rows at the
    # block edges picked, then along those few rows in float64
    down = torch.nn.functional.pad(g.to(torch.float32).cumsum(-2), (0, 0, 1, 0))
    strips = (down.index_select(-2, y1) - down.index_select(-2, y0)).to(torch.float64)
    across = torch.nn.functional.pad(strips.cumsum(-1), (1, 0))
    block = across.index_select(-1, x1) - across.index_select(-1, x0)
    count = ((y1 - y0)[:, None] * (x1 - x0)[None, :]).to(torch.float64)
    # PIL's reduce: ((sum + n // 2) * floor(2^24 / n)) >> 24 for a block of n pixels
    multiplier = torch.floor(float(1 << 24) / count)
    reduced = torch.floor((block + torch.floor(count / 2)) * multiplier / float(1 << 24))
    wy = resample_weights(torch.tensor(rh), torch.tensor(out_h), out_h, torch.arange(rh), "bilinear",
                          span=torch.tensor(h_in, dtype=torch.float64) / fy)
    wx = resample_weights(torch.tensor(rw), torch.tensor(out_w), out_w, torch.arange(rw), "bilinear",
                          span=torch.tensor(w_in, dtype=torch.float64) / fx)
    return resize(reduced, wy, wx)


def _median(v: torch.Tensor) -> torch.Tensor:
    """numpy's median of 1-D integer values 0-255 (the mean of the two middle values for an even
    count), from their histogram: one pass, where a sort of a 12-megapixel photo takes seconds."""
    n = v.shape[0]
    counts = torch.zeros(256, dtype=torch.int64).scatter_add(0, v.to(torch.int64), torch.ones_like(v, dtype=torch.int64))
    below = counts.cumsum(0)  # how many values are <= each level
    lower = torch.argmax((below >= (n - 1) // 2 + 1).to(torch.int64))
    upper = torch.argmax((below >= n // 2 + 1).to(torch.int64))
    return 0.5 * (lower + upper).to(torch.float64)


def _shift_max(x: torch.Tensor, valid: torch.Tensor, radius: torch.Tensor, dim: int, reach: int) -> torch.Tensor:
    """Max over a window of `radius` each side along `dim`, edges replicated within the first
    `valid` positions (the rest of the fixed-size tensor is padding)."""
    n = x.shape[dim]
    idx = torch.arange(n)
    out = x
    for d in range(-reach, reach + 1):
        src = torch.clamp(torch.clamp(idx + d, min=0), max=valid - 1)
        shifted = x.index_select(dim, src)
        out = torch.where(torch.tensor(abs(d)) <= radius, torch.maximum(out, shifted), out)
    return out


def _box_blur(x: torch.Tensor, valid: torch.Tensor, radius: torch.Tensor, dim: int, reach: int) -> torch.Tensor:
    """PIL's BoxBlur along `dim`: the mean of 2r+1 pixels, edges replicated, rounded to 8 bits."""
    n = x.shape[dim]
    idx = torch.arange(n)
    total = torch.zeros_like(x)
    for d in range(-reach, reach + 1):
        src = torch.clamp(torch.clamp(idx + d, min=0), max=valid - 1)
        total = total + torch.where(torch.tensor(abs(d)) <= radius, x.index_select(dim, src), torch.zeros_like(x))
    return _round8(total / (2 * radius + 1).to(x.dtype))


def gray(image: torch.Tensor) -> torch.Tensor:
    """uint8 (H, W, C), C = 1, 3 or 4 -> float (H, W) as PIL's convert('L') after `open_image`
    (alpha composited on white)."""
    return luminance(rgb(image))


def rgb(image: torch.Tensor) -> torch.Tensor:
    """uint8 (H, W, C), C = 1, 3 or 4 -> float (3, H, W): grey repeated, alpha composited on white.
    Exact in float32 (every value is an integer below 2^24); no branch on C: an opaque pixel goes
    through PIL's composite unchanged, so C = 3 takes the same arithmetic with alpha 255."""
    c = torch.tensor(image.shape[-1])
    x = image.permute(2, 0, 1)
    colour = x.index_select(0, torch.clamp(torch.arange(3), max=c - 1)).to(torch.float32)
    alpha = x.index_select(0, torch.clamp(torch.tensor([3]), max=c - 1)).to(torch.float32)
    alpha = 255.0 + (alpha - 255.0) * (c == 4).to(torch.float32)
    # PIL's alpha_composite over opaque white, in its 7-bit fixed point (SHIFTFORDIV255)
    t = colour * alpha * 128 + (255.0 - alpha) * (255.0 * 128) + 16384
    t = torch.floor((torch.floor(t / 256) + t) / 256)
    return torch.floor(t / 128).to(torch.float64)


def luminance(rgb3: torch.Tensor) -> torch.Tensor:
    """PIL's L: (R*19595 + G*38470 + B*7471 + 0x8000) >> 16 of (3, H, W) -> (H, W)."""
    r, g, b = rgb3[0], rgb3[1], rgb3[2]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536)


def ink(g: torch.Tensor) -> torch.Tensor:
    """`images._ink`: light-on-dark ink 0-255 of a grey (H, W) photo, the paper estimated locally."""
    h_in, w_in = g.shape
    hs, ws = torch.tensor(h_in), torch.tensor(w_in)
    border = torch.cat([g[0], g[-1], g[:, 0], g[:, -1]])
    g = torch.where(_median(border) <= 127, 255.0 - g, g)
    scale = torch.clamp(SMALL / _size(torch.maximum(hs, ws)), max=1.0)
    sh = torch.clamp(torch.round(_size(hs) * scale), min=1).to(torch.int64)
    sw = torch.clamp(torch.round(_size(ws) * scale), min=1).to(torch.int64)
    small = resize(g, resample_weights(hs, sh, SMALL, torch.arange(h_in), "bilinear"),
                   resample_weights(ws, sw, SMALL, torch.arange(w_in), "bilinear"))
    k = torch.clamp(torch.bitwise_or(torch.div(torch.minimum(sh, sw), 7, rounding_mode="floor"), 1), min=3)
    r = torch.div(k, 2, rounding_mode="floor")
    reach = (SMALL // 7) // 2  # the widest window: k <= 9 on a 64 px image
    paper = _shift_max(_shift_max(small, sw, r, 1, reach), sh, r, 0, reach)
    paper = _box_blur(_box_blur(paper, sw, r, 1, reach), sh, r, 0, reach)
    paper = resize(paper, resample_weights(sh, hs, h_in, torch.arange(SMALL), "bilinear"),
                   resample_weights(sw, ws, w_in, torch.arange(SMALL), "bilinear"))
    out = torch.clamp(torch.maximum(paper, _median(g.flatten())) - g, min=0.0)
    top = out.max()
    out = torch.clamp(out - 0.12 * top, min=0.0)
    peak = out.max()
    return torch.where(peak > 0, out * (255.0 / torch.where(peak > 0, peak, torch.ones_like(peak))), out)


def _ink_box(g: torch.Tensor, threshold: float) -> tuple[torch.Tensor, ...]:
    """`images._crop_to_ink`'s bounds (y0, x0, height, width); the whole image when nothing passes."""
    mask = g > threshold
    rows, cols = mask.any(1), mask.any(0)
    h, w = torch.tensor(g.shape[0]), torch.tensor(g.shape[1])
    y0 = torch.argmax(rows.to(torch.int64))
    y1 = h - 1 - torch.argmax(rows.flip(0).to(torch.int64))
    x0 = torch.argmax(cols.to(torch.int64))
    x1 = w - 1 - torch.argmax(cols.flip(0).to(torch.int64))
    found = rows.any()
    zero = torch.zeros_like(y0)
    return (torch.where(found, y0, zero), torch.where(found, x0, zero),
            torch.where(found, y1 - y0 + 1, h), torch.where(found, x1 - x0 + 1, w))


def _fitted(g: torch.Tensor, threshold: float, box: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`images._fit(_crop_to_ink(g))` on a (box, box) canvas (zero past the fitted size), and its size."""
    y0, x0, ch, cw = _ink_box(g, threshold)
    scale = box / _size(torch.maximum(ch, cw))
    nh = torch.clamp(torch.round(_size(ch) * scale), min=1).to(torch.int64)
    nw = torch.clamp(torch.round(_size(cw) * scale), min=1).to(torch.int64)
    src = torch.clamp(torch.round(g), 0.0, 255.0)
    wy = resample_weights(ch, nh, box, torch.arange(g.shape[0]), "lanczos", start=y0, span=ch)
    wx = resample_weights(cw, nw, box, torch.arange(g.shape[1]), "lanczos", start=x0, span=cw)
    return resize(src, wy, wx), nh, nw


def _place(g: torch.Tensor, top: torch.Tensor, left: torch.Tensor, nh: torch.Tensor, nw: torch.Tensor, size: int) -> torch.Tensor:
    """The (box, box) canvas g's first nh x nw pixels placed at (top, left) of a size x size image."""
    box = g.shape[0]
    r = torch.arange(size)[:, None]
    i = torch.arange(box)[None, :]
    py = ((r == top + i) & (i < nh)).to(g.dtype)
    px = ((r == left + i) & (i < nw)).to(g.dtype)
    return py @ g @ px.transpose(0, 1)


def prepare_digit(g: torch.Tensor, size: int = 28, box: int = 20) -> torch.Tensor:
    """`images.prepare_digit` of a grey photo (H, W): (size, size) 0-255."""
    fit, nh, nw = _fitted(ink(g), 40.0, box)
    total = fit.sum()
    ys = torch.arange(box, dtype=fit.dtype)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    cy = torch.where(total > 0, (ys[:, None] * fit).sum() / safe, (_size(nh) - 1) / 2)
    cx = torch.where(total > 0, (ys[None, :] * fit).sum() / safe, (_size(nw) - 1) / 2)
    top = torch.clamp(torch.clamp(torch.round(size / 2 - cy).to(torch.int64), min=0), max=size - nh)
    left = torch.clamp(torch.clamp(torch.round(size / 2 - cx).to(torch.int64), min=0), max=size - nw)
    return _place(fit, top, left, nh, nw, size)


def prepare_fashion(g: torch.Tensor, size: int = 28) -> torch.Tensor:
    """`images.prepare_fashion` of a grey photo (H, W): (size, size) 0-255, trimmed and centred."""
    fit, nh, nw = _fitted(ink(g), 10.0, size)
    top = torch.div(size - nh, 2, rounding_mode="floor")
    left = torch.div(size - nw, 2, rounding_mode="floor")
    return _place(fit, top, left, nh, nw, size)


class PreparePhoto(nn.Module):
    """One decoded photo, uint8 (H, W, C) with C = 1, 3 or 4, -> the run's input (1, C, h, w),
    float 0-255, prepared as `images.prepare_image(open_image(...), style, shape)` prepares it."""

    def __init__(self, style: str, shape: tuple[int, int, int]):
        super().__init__()
        self.style, self.shape = style, tuple(shape)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape
        if self.style == "digit" and c == 1:
            out = prepare_digit(gray(image), size=h, box=round(h * 20 / 28))[None]
        elif self.style == "fashion" and c == 1:
            out = prepare_fashion(gray(image), size=h)[None]
        else:
            colour = rgb(image)
            src = luminance(colour)[None] if c == 1 else colour
            out = reduce_then_bilinear(src, h, w)
        return out[None].to(torch.float32)
